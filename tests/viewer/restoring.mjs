// Drives lamina's viewer in headless Chromium to a slide on the cold tier and prints what it saw as
// one JSON line; tests/viewer/test_viewer_restoring.py judges it.
// Input (JSON on stdin): { url, chromium, profile, person, password, study, series }: the cold
// slide's Study and Series Instance UIDs, opened by its link (#/slide/STUDY/SERIES).

import { WAIT, launch, readConfig, signIn, watch } from './browser.mjs';

const config = await readConfig();
const { context, page } = await launch(config);
const seen = {};
try {
  const settle = watch(page, seen, config.url);
  const started = Date.now();
  await page.goto(`${config.url}/#/slide/${config.study}/${config.series}`);
  seen.sign_in = await signIn(page, config.person, config.password);

  // the opening answers 202: the page says the slide is being restored
  await page.waitForFunction(
    () => document.querySelector('#app .message')?.textContent.startsWith('Restoring the slide'),
    null, { timeout: WAIT },
  );
  seen.restoring = {
    message: await page.evaluate(() => document.querySelector('#app .message').textContent),
    deep_zoom: await page.evaluate(() => Boolean(document.querySelector('.osd'))),
  };

  // then, restored, the slide opens: every tile of the view drawn
  await page.waitForSelector('#viewer[data-loaded="true"]', { timeout: WAIT });
  seen.opened = await page.evaluate(() => {
    const canvas = [...document.querySelectorAll('#viewer canvas')]
      .sort((a, b) => b.width * b.height - a.width * a.height)[0];
    const copy = document.createElement('canvas');
    copy.width = canvas.width;
    copy.height = canvas.height;
    const context = copy.getContext('2d');
    context.drawImage(canvas, 0, 0);
    const data = context.getImageData(0, 0, copy.width, copy.height).data;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4) colours.add((data[i] >> 3) * 1024 + (data[i + 1] >> 3) * 32 + (data[i + 2] >> 3));
    return {
      width: canvas.width,
      distinct: colours.size,
      message: document.querySelector('#app .message')?.textContent ?? null,
    };
  });
  seen.seconds = (Date.now() - started) / 1000;
  await settle();
} finally {
  await context.close();
}
console.log(JSON.stringify(seen));
