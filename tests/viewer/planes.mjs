// Drives lamina's viewer in headless Chromium over a z-stack of fluorescence channels and prints
// what it saw as one JSON line; tests/viewer/test_viewer_planes.py judges it.
// Input (JSON on stdin): { url, chromium, profile, person, password, slide, planes }: `slide` is
// the hash of the slide's page (#/slide/STUDY/SERIES), `planes` its number of focal planes.

import { WAIT, launch, readConfig, signIn, watch } from './browser.mjs';

const config = await readConfig();
const { context, page } = await launch(config);
const seen = {};
// the tiles asked for (frame number and window), in order; the windows' own probes left out
const tiles = [];
const tile = (url) => {
  const found = url.match(/\/frames\/(\d+)\/rendered(\?.*)?$/);
  if (!found || (found[2] || '').includes('viewport=')) return null;
  return { frame: Number(found[1]), window: new URLSearchParams(found[2] || '').get('window') };
};
// waits until the frames `wanted` have been asked for as tiles since `from`
const asked = async (wanted, from) => {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const frames = new Set(tiles.slice(from).map((one) => one.frame));
    if (wanted.every((frame) => frames.has(frame))) return;
    if (Date.now() > deadline) throw new Error(`frames ${wanted} never asked for (asked: ${[...frames]})`);
    await page.waitForTimeout(50);
  }
};
const since = (from) => {
  const counts = {};
  for (const one of tiles.slice(from)) counts[one.frame] = (counts[one.frame] || 0) + 1;
  return counts;
};
try {
  const settle = watch(page, seen, config.url);
  page.on('request', (request) => {
    const found = tile(request.url());
    if (found) tiles.push(found);
  });
  await page.goto(`${config.url}/`);
  seen.sign_in = await signIn(page, config.person, config.password);
  await page.goto(`${config.url}/${config.slide}`);
  await page.waitForSelector('#focus', { timeout: WAIT });
  const frame = (z, c) => 1 + z + c * config.planes;  // one tile per plane in this slide
  const middle = Math.floor(config.planes / 2);
  await asked([frame(middle, 0), frame(middle, 1)], 0);
  seen.panel = await page.evaluate(() => ({
    focus: Number(document.querySelector('#focus').value),
    focus_max: Number(document.querySelector('#focus').max),
    focus_text: document.querySelector('.focus-text').textContent,
    channels: [...document.querySelectorAll('.channel')].map((li) => ({
      name: li.querySelector('.channel-name').textContent,
      colour: li.querySelector('.swatch').style.background,
      on: li.querySelector('.channel-on').checked,
      low: li.querySelector('.channel-low').value,
      high: li.querySelector('.channel-high').value,
    })),
  }));
  seen.opened = { frames: since(0), windows: [...new Set(tiles.map((one) => one.window))] };

  // the focus slider: the tiles of that plane, of both channels
  let from = tiles.length;
  await page.locator('#focus').fill('8');
  await asked([frame(8, 0), frame(8, 1)], from);
  await page.waitForTimeout(250);
  seen.focused = { frames: since(from), text: await page.locator('.focus-text').textContent() };

  // a channel switched off: its frames are asked for no more, at any plane
  await page.locator('.channel[data-channel="1"] .channel-on').uncheck();
  await page.waitForTimeout(150);
  from = tiles.length;
  await page.locator('#focus').fill('2');
  await asked([frame(2, 0)], from);
  await page.waitForTimeout(400);
  seen.one_channel = { frames: since(from) };

  // a window set by hand: the tiles asked again with it
  from = tiles.length;
  await page.evaluate(() => {  // both bounds typed, then the window applied once
    for (const [field, text] of [['low', '10'], ['high', '110']]) {
      const input = document.querySelector(`.channel[data-channel="0"] .channel-${field}`);
      input.value = text;
      input.dispatchEvent(new Event('change'));
    }
  });
  await asked([frame(2, 0)], from);
  await page.waitForTimeout(250);
  seen.windowed = { frames: since(from), windows: [...new Set(tiles.slice(from).map((one) => one.window))] };
  const lit = () => page.evaluate(() => {
    const canvas = [...document.querySelectorAll('#viewer canvas')].sort((a, b) => b.width * b.height - a.width * a.height)[0];
    const copy = document.createElement('canvas');
    copy.width = canvas.width;
    copy.height = canvas.height;
    const context = copy.getContext('2d');
    context.drawImage(canvas, 0, 0);
    const data = context.getImageData(0, 0, copy.width, copy.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 30) lit += 1;
    return lit / (data.length / 4);
  });
  // the tile is drawn once it has loaded and decoded: a loaded machine takes longer than a fixed wait
  const drawnBy = Date.now() + WAIT;
  seen.lit = await lit();
  while (seen.lit <= 0.001 && Date.now() < drawnBy) {
    await page.waitForTimeout(100);
    seen.lit = await lit();
  }
  await page.screenshot({ path: `${config.shots}-planes.png` });
  await settle();
} finally {
  await context.close();
}
console.log(JSON.stringify(seen));
