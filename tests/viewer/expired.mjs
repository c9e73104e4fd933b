// Drives lamina's viewer in headless Chromium over a case with an expired slide and prints what it
// saw as one JSON line; tests/viewer/test_viewer_expired.py judges it.
// Input (JSON on stdin): { url, chromium, profile, person, password, expired }: `expired` is the
// Series Instance UID of the expired slide.

import { WAIT, launch, readConfig, signIn, watch } from './browser.mjs';

const config = await readConfig();
const { context, page } = await launch(config);
const seen = {};
try {
  const settle = watch(page, seen, config.url);
  await page.goto(`${config.url}/`);
  seen.sign_in = await signIn(page, config.person, config.password);

  // the worklist: the case's slides, the expired one with its badge and its thumbnail
  const expired = `.thumbs li[data-availability="UNAVAILABLE"] a[href*="${config.expired}"]`;
  await page.waitForSelector(expired, { timeout: WAIT });
  await page.waitForFunction(
    (selector) => document.querySelector(selector)?.querySelector('img')?.naturalWidth > 0,
    `${expired}`, { timeout: WAIT },
  );
  seen.worklist = await page.evaluate((selector) => {
    const link = document.querySelector(selector);
    return {
      badge: link.querySelector('.badge')?.textContent ?? null,
      thumbnail: link.querySelector('img').naturalWidth,
      slides: document.querySelectorAll('.thumbs li').length,
      badges: document.querySelectorAll('.thumbs .badge').length,
    };
  }, expired);

  // opening it: the thumbnail its trace kept and the server's one line, no deep zoom
  await page.click(expired);
  await page.waitForSelector('.expired-slide img.trace', { timeout: WAIT });
  await page.waitForFunction(
    () => document.querySelector('.expired-slide img.trace').naturalWidth > 0, null, { timeout: WAIT },
  );
  seen.opened = await page.evaluate(() => ({
    message: document.querySelector('.expired-slide .message')?.textContent ?? null,
    thumbnail: document.querySelector('.expired-slide img.trace').naturalWidth,
    deep_zoom: Boolean(document.querySelector('.osd')),
  }));
  await settle();
} finally {
  await context.close();
}
console.log(JSON.stringify(seen));
