// Drives the open slide's lifecycle panel (lifecycle.js) in headless Chromium and prints what it saw
// as one JSON line; tests/viewer/test_viewer_interest.py judges it.
// Input (JSON on stdin): { url, chromium, profile, password, study, series, pathologist, technician,
// operator }: the slide to open, and three people of its lab who sign in with `password` in turn.

import { WAIT, launch, readConfig, signIn, watch } from './browser.mjs';

const config = await readConfig();
const { context, page } = await launch(config);
const seen = {};

// The panel once it shows the slide's state: its lines, by kind, and the changes it offers.
async function panel() {
  await page.waitForSelector('#lifecycle .lifecycle-state li', { timeout: WAIT });
  return page.evaluate(() => {
    const section = document.getElementById('lifecycle');
    return {
      slide: section.dataset.slide,
      lines: Object.fromEntries([...section.querySelectorAll('.lifecycle-state li')]
        .map((li) => [li.dataset.kind, li.textContent])),
      changes: [...section.querySelectorAll('details.lifecycle-change')].map((d) => d.dataset.change),
      notice: section.querySelector('.lifecycle-notice')?.textContent ?? '',
      error: section.querySelector('.lifecycle-error')?.textContent ?? '',
    };
  });
}

// Opens the change `name` from the keyboard (its summary focused, Enter), fills its reason, and
// sends the form with Enter in the reason field; the answer's status and the panel, drawn again or
// with the refusal.
async function change(name, reason, fill = async () => {}) {
  const details = `#lifecycle details[data-change="${name}"]`;
  if (!(await page.$(`${details}[open]`))) {
    await page.focus(`${details} summary`);
    await page.keyboard.press('Enter');
  }
  await page.waitForSelector(`${details}[open] input[name="reason"]`, { state: 'visible', timeout: WAIT });
  await fill(details);
  await page.fill(`${details} input[name="reason"]`, reason);
  const answered = page.waitForResponse((r) => r.url().includes('/api/slides/') && r.request().method() !== 'GET',
    { timeout: WAIT });
  // the state drawn before: a new one replaces it, or a refusal shows beside it
  await page.evaluate(() => { document.querySelector('#lifecycle .lifecycle-state').dataset.before = ''; });
  await page.press(`${details} input[name="reason"]`, 'Enter');
  const response = await answered;
  await page.waitForFunction(
    () => !document.querySelector('#lifecycle .lifecycle-state[data-before]')
      || document.querySelector('#lifecycle .lifecycle-error').textContent,
    null, { timeout: WAIT },
  );
  return { status: response.status(), ...(await panel()) };
}

async function signOut() {
  await page.click('#sign-out');
  await page.waitForSelector('form#signin', { timeout: WAIT });
}

try {
  const settle = watch(page, seen, config.url);
  await page.goto(`${config.url}/#/slide/${config.study}/${config.series}`);

  // the pathologist: no final report yet; flags the slide for teaching, from the keyboard
  seen.pathologist = { sign_in: await signIn(page, config.pathologist, config.password) };
  seen.pathologist.opened = await panel();
  seen.pathologist.flagged = await change('flag', 'a fine sarcoma', async (details) => {
    await page.selectOption(`${details} select[name="category"]`, 'teaching');
  });
  // unflagging with an over-long reason: the server's one line; then with a reason
  seen.pathologist.refused = await change('unflag', 'x'.repeat(1001), async (details) => {
    await page.evaluate((selector) => document.querySelector(`${selector} input[name="reason"]`)
      .removeAttribute('maxlength'), details);
  });
  seen.pathologist.unflagged = await change('unflag', 'published already');
  await signOut();

  // a technician of the lab reads the state, and is offered no change
  seen.technician = { sign_in: await signIn(page, config.technician, config.password) };
  seen.technician.opened = await panel();
  await signOut();

  // a person who administers the lab (and reads its slides): holds the slide, then releases it
  seen.operator = { sign_in: await signIn(page, config.operator, config.password) };
  seen.operator.opened = await panel();
  seen.operator.held = await change('hold', 'proceedings 2026/117');
  seen.operator.released = await change('release', 'proceedings closed');

  // the panel's words for states this slide did not go through (shaped as the API's): with a
  // final report, a flag, a hold, the cold tier, an expiry
  seen.words = await page.evaluate(async () => {
    const { describe } = await import(new URL('lifecycle.js', document.baseURI).href);
    const last = {
      tier: 'hot', expired: false, expired_at: null, trace: null, interest: null, held: false, holds: [],
      report_at: null, rule: 'default', action: 'keep', retain_until: null,
    };
    const report = { ...last, report_at: '2026-12-13T09:30:00+00:00', rule: 'default' };
    const kept = { ...report, retain_until: '2027-01-12T09:30:00+00:00', action: 'keep' };
    const interest = { category: 'teaching', reason: 'a fine sarcoma', flagged_by: 'p', flagged_at: '2027-01-02T08:00:00+00:00' };
    const hold = { id: 'h1', reason: 'proceedings', held_by: 'a', held_at: '2027-01-03T08:00:00+00:00' };
    const states = {
      kept,
      due: { ...kept, action: 'expire' },
      interest: { ...report, interest, retain_until: null },
      held_cold: { ...report, held: true, holds: [hold], tier: 'cold', action: 'move-hot', retain_until: null },
      review: { ...last, action: 'review', rule: 'biopsies' },
      expired: { ...last, expired: true, expired_at: '2027-01-13T02:00:00+00:00', trace: { rule: 'default' } },
    };
    return Object.fromEntries(Object.entries(states).map(([name, state]) => [name, describe(state)]));
  });
  await settle();
} finally {
  await context.close();
}
console.log(JSON.stringify(seen));
