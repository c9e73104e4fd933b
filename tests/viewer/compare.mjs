// Drives "Compare and report" (compare.js) in headless Chromium with the mouse and prints what it
// saw as one JSON line; tests/viewer/test_viewer_compare.py judges it.
// Input (JSON on stdin): { url, chromium, profile, person, password, study, series }: the slide to
// open first.

import { WAIT, launch, readConfig, signIn, watch } from './browser.mjs';

const config = await readConfig();
const { context, page } = await launch(config);
const seen = {};

async function loaded(selector) {
  await page.waitForSelector(`${selector}[data-loaded="true"]:not([data-old])`, { timeout: WAIT });
}

// The panel once the server answered: each list's series in order, and the report link. Read in
// one step from the panel that holds the lists, never from a page being replaced (a panel marked
// `data-old` before leaving it is not taken).
async function panel() {
  const handle = await page.waitForFunction(() => {
    const section = document.querySelector('.related:not([data-old])');
    if (!section || !section.querySelector('[data-list="priors"]')) return null;
    const list = (name) => [...section.querySelectorAll(`[data-list="${name}"] li`)].map((li) => li.dataset.series);
    const link = section.querySelector('a.report-link');
    return {
      same_block: list('same_block'),
      priors: list('priors'),
      report: link ? { href: link.href, target: link.target, rel: link.rel, text: link.textContent } : null,
    };
  }, null, { timeout: WAIT });
  return handle.jsonValue();
}

// Marks the page being left, so that what follows waits for the next one (the address changes at
// the click, the page a moment later).
const leaving = () => page.evaluate(() => {
  for (const element of document.querySelectorAll('.related, #viewer')) element.dataset.old = '1';
});

const centres = () => page.evaluate(() => [...document.querySelectorAll('.pane .osd')]
  .map((element) => element.dataset.centre.split(',').map(Number)));

try {
  const settle = watch(page, seen, config.url);
  await page.goto(`${config.url}/#/slide/${config.study}/${config.series}`);
  seen.sign_in = await signIn(page, config.person, config.password);
  await loaded('#viewer');
  seen.first = await panel();

  // a prior slide from the panel, with the mouse: it opens in the viewer
  await leaving();
  await page.click('.related [data-list="priors"] li:first-child a.thumb');
  await page.waitForFunction((series) => location.hash.endsWith(encodeURIComponent(series)),
    seen.first.priors[0], { timeout: WAIT });
  await loaded('#viewer');
  seen.prior = await panel();
  seen.prior.hash = await page.evaluate(() => decodeURIComponent(location.hash));

  // three more ticked, side by side: four panes, linked
  for (const tick of (await page.$$('.related:not([data-old]) input.compare-tick')).slice(0, 3)) await tick.click();
  seen.prior.button = await page.locator('#compare-ticked').textContent();
  await page.click('#compare-ticked');
  for (let index = 0; index < 4; index += 1) await loaded(`#viewer-${index}`);
  await page.waitForFunction(() => document.querySelectorAll('.pane .osd[data-centre]').length === 4,
    null, { timeout: WAIT });
  seen.compare = {
    hash: await page.evaluate(() => decodeURIComponent(location.hash)),
    panes: await page.locator('.pane').count(),
    reports: await page.evaluate(() => [...document.querySelectorAll('.pane')]
      .map((pane) => pane.querySelector('a.report-link')?.href ?? null)),
  };
  // 10x in all four (the toolbar's button), then a drag in the third pane
  await page.click('.compare-page .toolbar button[data-magnification="10"]');
  await page.waitForTimeout(1500);
  seen.compare.readouts = await page.locator('.pane .magnification-readout').allTextContents();
  seen.compare.before = await centres();
  const box = await page.locator('#viewer-2').boundingBox();
  const [x, y] = [box.x + box.width / 2, box.y + box.height / 2];
  await page.mouse.move(x, y);
  await page.mouse.down();
  for (let step = 1; step <= 10; step += 1) await page.mouse.move(x - 12 * step, y - 8 * step);
  await page.mouse.up();
  await page.waitForTimeout(2000);
  seen.compare.after = await centres();
  seen.compare.mpp = await page.evaluate(() => document.querySelector('.pane .scale-bar-text')?.textContent);
  await settle();
} catch (error) {
  // what the page showed and reported, for the test's message
  seen.failed = String(error).slice(0, 600);
  seen.page = await page.evaluate(() => document.getElementById("app")?.innerText.slice(0, 200)).catch(() => null);
  seen.loaded = await page.evaluate(() => [...document.querySelectorAll(".osd")].map((e) => e.dataset.loaded ?? "unset")).catch(() => null);
  seen.frames = seen.urls.filter((u) => u.includes("/frames/")).slice(-5);
  seen.nframes = seen.urls.filter((u) => u.includes("/frames/")).length;
  process.exitCode = 1;
} finally {
  await context.close();
}
console.log(JSON.stringify(seen));
