// Signs in to lamina's viewer at the OpenID provider (tests/oidc/provider.mjs) in headless
// Chromium, has the token renewed (asked, before a request near its expiry, by the timer), signs
// out at the provider, has a renewal refused, and brings back an answer whose state was changed;
// prints what it saw as one JSON line. tests/viewer/test_viewer_oidc.py judges it.
// Input (JSON on stdin): { url, issuer, chromium, profile, login, password, accession,
// other_lab_accession }.

import { WAIT, launch, readConfig, storage, watch } from './browser.mjs';

const config = await readConfig();
const KEY = 'lamina.session';

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
const seen = { authorize: [], exchanges: [], pages: [] };
try {
  const settle = watch(page, seen, config.url);
  // the page's requests to the provider's authorization endpoint, and to lamina's exchange
  page.on('request', (request) => {
    if (request.url().startsWith(`${config.issuer}/auth?`)) seen.authorize.push(request.url());
  });
  page.on('response', async (response) => {
    if (!response.url().startsWith(`${config.url}/auth/oidc/token`)) return;
    const form = Object.fromEntries(new URLSearchParams(response.request().postData() || ''));
    seen.exchanges.push({ form, status: response.status(), at: Date.now() });
  });
  // console errors with the address of the page and of what failed (the provider's pages ask for
  // web fonts that cannot be reached from here)
  seen.console = [];
  page.on('console', (entry) => {
    if (entry.type() === 'error') seen.console.push({ text: entry.text(), url: entry.location().url, page: page.url() });
  });
  const keep = async () => {
    const kept = await storage(page);
    const session = kept.session[KEY] ? JSON.parse(kept.session[KEY]) : null;
    return { ...kept, token: session?.token ?? null, person: session?.person ?? null, session_object: session };
  };
  const token = async () => (await keep()).token;
  const changed = (from, timeout = WAIT) => page.waitForFunction(([key, previous]) => {
    const session = JSON.parse(sessionStorage.getItem(key) || 'null');
    return session && session.token !== previous;
  }, [KEY, from], { timeout });
  // a search from the worklist's form: the QIDO-RS answer's status, the token it was sent with,
  // and the cases shown
  const search = async (accession) => {
    const answered = page.waitForResponse((response) => response.url().startsWith(`${config.url}/dicomweb/studies?`),
      { timeout: WAIT });
    await page.fill('input[name="AccessionNumber"]', accession);
    await page.press('input[name="AccessionNumber"]', 'Enter');
    const response = await answered;
    await settled(page);
    return {
      status: response.status(),
      authorization: (await response.request().allHeaders()).authorization || null,
      accessions: (await accessions(page)).sort(),
    };
  };
  // at the provider's login form (oidc-provider's development interactions): sign in
  const logIn = async () => {
    await page.waitForURL((url) => url.href.startsWith(`${config.issuer}/interaction/`), { timeout: WAIT });
    await page.fill('input[name="login"]', config.login);
    await page.fill('input[name="password"]', config.password);
    await page.click('button[type="submit"]');
  };

  // the sign-in form offers the provider beside the password
  await page.goto(`${config.url}/#/?AccessionNumber=`);
  await page.waitForSelector('#signin-provider', { timeout: WAIT });
  seen.form = {
    button: await page.locator('#signin-provider').textContent(),
    password: await page.locator('#signin-password').count(),
  };

  // to the provider, signed in there, and back: the worklist of the person's labs
  await page.click('#signin-provider');
  await logIn();
  await page.waitForURL((url) => url.href.startsWith(`${config.url}/`), { timeout: WAIT });
  await settled(page);
  seen.signed_in = {
    ...(await keep()),
    href: await page.evaluate(() => location.href),
    accessions: (await accessions(page)).sort(),
    account: await page.evaluate(() => document.getElementById('person').textContent),
    signed_at: Date.now(),
  };
  // the other lab's case is not found by its accession number either
  seen.other_lab = await search(config.other_lab_accession);

  // a renewal asked for (the function the page uses), then a search with the renewed token
  const first = await token();
  seen.asked = await page.evaluate(async () => {
    const { refresh } = await import('./signin.js');
    return (await refresh()).token;
  });
  seen.asked_kept = await token();
  seen.after_asked = await search(config.accession);

  // within 30 s of its expiry, a request renews the token first
  const lifetime = (await keep()).session_object.lifetimeMs;
  const keptAt = Date.now();
  await page.waitForTimeout(Math.max(0, lifetime - 30000) + 1500);
  const before = await token();
  seen.near_expiry = { before, search: await search(''), after: await token(), waited_ms: Date.now() - keptAt };

  // left alone, the timer renews it at 80% of its lifetime
  const idle = await token();
  const idleSince = Date.now();
  await changed(idle, lifetime + WAIT);
  seen.timer = { before: idle, after: await token(), waited_ms: Date.now() - idleSince, lifetime_ms: lifetime };
  seen.tokens = [first, seen.asked, seen.near_expiry.after, seen.timer.after];

  // a slide open while the token is renewed: its tiles are fetched with the new token from then on
  await page.click('.cases tbody tr.case a.thumb');
  await page.waitForSelector('#viewer[data-loaded="true"]', { timeout: WAIT });
  await settle();
  const tilesFrom = seen.api.length;
  const forTiles = await page.evaluate(async () => (await (await import('./signin.js')).refresh()).token);
  await page.click('button[data-magnification="40"]');
  await page.waitForTimeout(500);
  await page.waitForSelector('#viewer[data-loaded="true"]', { timeout: WAIT });
  await settle();
  seen.tiles = { token: forTiles, api: seen.api.slice(tilesFrom).filter((request) => request.url.includes('/frames/')) };
  seen.tokens.push(forTiles);

  // sign out: the provider's session is ended too (its end-session page), then back to the form
  await page.click('#sign-out');
  await page.waitForURL((url) => url.href.startsWith(`${config.issuer}/session/end`), { timeout: WAIT });
  seen.end_session = page.url();
  await page.click('button[name="logout"][value="yes"]');
  await page.waitForURL((url) => url.href.startsWith(`${config.url}/`), { timeout: WAIT });
  await page.waitForSelector('form#signin', { timeout: WAIT });
  seen.signed_out = await keep();

  // signed in again (the provider asks for the login again), then a renewal the provider refuses
  await page.click('#signin-provider');
  await logIn();
  await page.waitForURL((url) => url.href.startsWith(`${config.url}/`), { timeout: WAIT });
  await settled(page);
  seen.again = await accessions(page);
  await page.evaluate((key) => {
    const session = JSON.parse(sessionStorage.getItem(key));
    sessionStorage.setItem(key, JSON.stringify({ ...session, refreshToken: `${session.refreshToken}x` }));
  }, KEY);
  seen.refused_renewal = await page.evaluate(async () => {
    const { refresh } = await import('./signin.js');
    try {
      await refresh();
      return 'renewed';
    } catch (error) {
      return error.name;
    }
  });
  await page.waitForSelector('form#signin', { timeout: WAIT });
  seen.after_refused = { notice: await notice(page), storage: await keep() };

  // the provider's answer, its state changed on the way: refused, the code not exchanged. (The
  // provider still has the person's session: its answer is the redirect of the authorization
  // request itself, taken here; a redirect's target cannot be routed.)
  let answer = null;
  const isAuthorize = (url) => url.href.startsWith(`${config.issuer}/auth?`);
  await page.route(isAuthorize, async (route) => {
    const response = await route.fetch({ maxRedirects: 0 });
    answer = response.headers().location ?? null;
    return route.fulfill({ status: 204 });
  });
  await page.click('#signin-provider');
  const deadline = Date.now() + WAIT;
  while (!answer && Date.now() < deadline) await new Promise((resolve) => { setTimeout(resolve, 100); });
  await page.unroute(isAuthorize);
  if (!answer || !answer.startsWith(`${config.url}/?`)) throw new Error(`not the viewer's answer: ${answer}`);
  const forged = new URL(answer);
  forged.searchParams.set('state', `${forged.searchParams.get('state')}x`);
  const exchanged = seen.exchanges.length;
  await page.goto(forged.href);
  await page.waitForSelector('form#signin > .message', { timeout: WAIT });
  seen.forged = {
    notice: await notice(page),
    href: await page.evaluate(() => location.href),
    storage: await keep(),
    exchanges: seen.exchanges.length - exchanged,
  };
  await settle();
} finally {
  await context.close();
}
process.stdout.write(`${JSON.stringify(seen)}\n`);
