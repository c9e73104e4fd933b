// Signs in to lamina's viewer in headless Chromium, wrongly then rightly, and prints what it saw
// as one JSON line; tests/viewer/test_viewer.py judges it.
// Input (JSON on stdin): { url, chromium, profile, person, password, wrong_password, accession,
// other_lab_accession }.

import { WAIT, launch, readConfig, signIn, storage, watch } from './browser.mjs';

const config = await readConfig();
const KEY = 'lamina.session';

const count = (page, selector) => page.locator(selector).count();
const accessions = (page) => page.locator('.cases tbody tr.case td.accession').allTextContents();
const notice = (page) => page.evaluate(() => document.querySelector('form#signin > .message')?.textContent ?? null);

async function settled(page) {
  await page.waitForSelector('.cases', { timeout: WAIT });
  await page.waitForFunction(() => {
    const status = document.querySelector('.worklist .status')?.textContent || '';
    return status && !status.includes('Searching');
  }, null, { timeout: WAIT });
}

const { context, page } = await launch(config);
const seen = { issued: [] };
try {
  const settle = watch(page, seen, config.url);
  // what the page keeps, and the token of this tab (null when none)
  const keep = async () => {
    const kept = await storage(page);
    const session = kept.session[KEY] ? JSON.parse(kept.session[KEY]) : null;
    return { ...kept, token: session?.token ?? null, person: session?.person ?? null };
  };

  // no token in this tab: the form, and no request to the archive
  await page.goto(`${config.url}/`);
  await page.waitForSelector('form#signin', { timeout: WAIT });
  seen.first = { cases: await count(page, '.cases'), storage: await keep(), api: seen.api.length };

  // a wrong password, then again until the server slows the attempts down
  seen.wrong = [];
  for (let attempt = 0; attempt < 6; attempt += 1) {
    const answer = await signIn(page, config.person, config.wrong_password);
    seen.wrong.push({ ...answer, cases: await count(page, '.cases'), storage: await keep() });
    if (answer.status === 429) break;
  }

  // the right one, once the wait is over: the worklist of the person's lab
  const last = seen.wrong[seen.wrong.length - 1];
  await page.waitForTimeout((Number(last.retry_after || 0) + 0.5) * 1000);
  seen.right = await signIn(page, config.person, config.password);
  await settled(page);
  await page.waitForFunction(() => [...document.querySelectorAll('.cases a.thumb img')]
    .every((img) => img.complete && img.naturalWidth > 0), null, { timeout: WAIT });
  seen.right.accessions = (await accessions(page)).sort();
  seen.issued.push((await keep()).token);
  seen.right.account = await page.evaluate(() => ({
    hidden: document.getElementById('account').hidden,
    person: document.getElementById('person').textContent,
  }));
  // the other lab's case is not found by its accession number either
  await page.fill('input[name="AccessionNumber"]', config.other_lab_accession);
  await page.press('input[name="AccessionNumber"]', 'Enter');
  await page.waitForFunction(() => document.querySelector('.worklist .status')?.textContent.includes('No case'),
    null, { timeout: WAIT });
  seen.other_lab = { accessions: await accessions(page), status: await page.locator('.worklist .status').textContent() };
  seen.signed_in = await keep();

  // the server refuses the token (here: one whose signature no longer matches): the form again,
  // and the page asked for once signed in again
  seen.tampered = await page.evaluate((key) => {
    const session = JSON.parse(sessionStorage.getItem(key));
    const token = `${session.token.slice(0, -4)}${session.token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    sessionStorage.setItem(key, JSON.stringify({ ...session, token }));
    return token;
  }, KEY);
  await page.evaluate((accession) => { location.hash = `#/?AccessionNumber=${accession}`; }, config.accession);
  await page.waitForSelector('form#signin', { timeout: WAIT });
  seen.refused = { notice: await notice(page), storage: await keep(), cases: await count(page, '.cases') };
  seen.again = await signIn(page, config.person, config.password);
  await settled(page);
  seen.again.accessions = await accessions(page);
  seen.again.storage = await keep();
  seen.issued.push(seen.again.storage.token);

  // a tile refused mid-session: the server no longer accepts the token the slide's tiles are
  // fetched with (here: the tab's token and OpenSeadragon's headers both changed to one it refuses)
  await page.click('.cases tbody tr.case a.thumb');
  await page.waitForSelector('#viewer[data-loaded="true"]', { timeout: WAIT });
  seen.tile_tampered = await page.evaluate((key) => {
    const session = JSON.parse(sessionStorage.getItem(key));
    const token = `${session.token.slice(0, -4)}${session.token.endsWith('CCCC') ? 'DDDD' : 'CCCC'}`;
    sessionStorage.setItem(key, JSON.stringify({ ...session, token }));
    OpenSeadragon.getViewer(document.getElementById('viewer')).setAjaxHeaders({ Authorization: `Bearer ${token}` }, true);
    return token;
  }, KEY);
  await page.click('button[data-magnification="40"]');
  await page.waitForSelector('form#signin', { timeout: WAIT });
  seen.tile_refused = {
    notice: await notice(page),
    storage: await keep(),
    viewer: await count(page, '#viewer'),
    hash: await page.evaluate(() => location.hash),
  };
  seen.third = await signIn(page, config.person, config.password);
  await page.waitForSelector('#viewer[data-loaded="true"]', { timeout: WAIT });
  seen.third.hash = await page.evaluate(() => location.hash);
  seen.issued.push((await keep()).token);

  // sign out: the form, the token forgotten
  await page.click('#sign-out');
  await page.waitForSelector('form#signin', { timeout: WAIT });
  seen.signed_out = {
    notice: await notice(page),
    storage: await keep(),
    account_hidden: await page.evaluate(() => document.getElementById('account').hidden),
  };
  await settle();
} finally {
  await context.close();
}
process.stdout.write(`${JSON.stringify(seen)}\n`);
