// Drives lamina's viewer in headless Chromium (playwright-core, the system's Chromium) and prints
// what it saw as one JSON line; tests/viewer/test_viewer.py judges it.
// Input (JSON on stdin): { url, chromium, profile, accession, shots, person, password }: the
// viewer is signed in to through its form.

import { WAIT, launch, readConfig, signIn, storage, watch } from './browser.mjs';

const config = await readConfig();

// Share of "stained" pixels (clearly coloured, as H&E is) and number of distinct colours of the
// largest canvas in `selector`: a blank or grey canvas has neither.
async function canvasPixels(page, selector) {
  return page.evaluate((selector) => {
    const canvases = [...document.querySelectorAll(`${selector} canvas`)];
    const canvas = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
    const copy = document.createElement('canvas');
    copy.width = canvas.width;
    copy.height = canvas.height;
    const context = copy.getContext('2d');
    context.drawImage(canvas, 0, 0);
    const data = context.getImageData(0, 0, copy.width, copy.height).data;
    let stained = 0;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      if (Math.max(r, g, b) - Math.min(r, g, b) > 40) stained += 1;
      colours.add((r >> 3) * 1024 + (g >> 3) * 32 + (b >> 3));
    }
    return { width: canvas.width, height: canvas.height, stained: stained / (data.length / 4), distinct: colours.size };
  }, selector);
}

async function loaded(page, selector) {
  await page.waitForSelector(`${selector}[data-loaded="true"]`, { timeout: WAIT });
}

function instancesOf(urls) {
  return [...new Set(urls.map((url) => url.match(/\/instances\/([^/]+)\/frames\//)[1]))];
}

const { context, page } = await launch(config);
const seen = {};
try {
  const settle = watch(page, seen, config.url);
  const frames = [];
  page.on('request', (request) => {
    if (request.url().includes('/frames/')) frames.push(request.url());
  });

  // the sign-in form, then the worklist and a search by accession number
  await page.goto(`${config.url}/`);
  seen.sign_in = await signIn(page, config.person, config.password);
  await page.waitForSelector('.cases tbody tr.case', { timeout: WAIT });
  await page.waitForFunction(() => !document.querySelector('.status')?.textContent.includes('Searching'));
  seen.cases_before = await page.locator('.cases tbody tr.case').count();
  await page.fill('input[name="AccessionNumber"]', config.accession);
  await page.press('input[name="AccessionNumber"]', 'Enter');
  await page.waitForFunction(
    (accession) => {
      const cells = [...document.querySelectorAll('.cases tbody tr.case td.accession')];
      return cells.length === 1 && cells[0].textContent === accession;
    },
    config.accession,
    { timeout: WAIT },
  );
  seen.cases_found = await page.locator('.cases tbody tr.case td.accession').allTextContents();
  await page.waitForSelector('.cases tbody tr.case a.thumb img', { timeout: WAIT });
  const thumbnails = page.locator('.cases tbody tr.case a.thumb img');
  seen.thumbnails_in_row = await thumbnails.count();
  await page.waitForFunction(
    () => [...document.querySelectorAll('.cases a.thumb img')].every((img) => img.complete && img.naturalWidth > 0),
    null,
    { timeout: WAIT },
  );
  seen.thumbnails_loaded = true;
  await page.screenshot({ path: `${config.shots}-worklist.png` });

  // one slide: tiles drawn, label and overview beside it, the case's slides one click away
  await thumbnails.first().click();
  await loaded(page, '#viewer');
  await page.waitForSelector('.case-slides li', { timeout: WAIT });
  const [, series] = decodeURIComponent(new URL(page.url()).hash).match(/#\/slide\/[^/]+\/([^/]+)/);
  seen.slide = {
    series,
    pixels: await canvasPixels(page, '#viewer'),
    case_slides: await page.locator('.case-slides li').count(),
    scale_bar: (await page.locator('#viewer .scale-bar-text').textContent()).trim(),
    associated: await page.evaluate(() => [...document.querySelectorAll('.associated img')]
      .map((img) => img.naturalWidth > 0)),
  };
  await page.screenshot({ path: `${config.shots}-slide.png` });

  // zoom in to 40x: frames of the full-resolution level are fetched and drawn
  const before = frames.length;
  const fetched = page.waitForRequest((request) => request.url().includes('/frames/'), { timeout: WAIT });
  await page.click('button[data-magnification="40"]');
  await fetched;
  await page.waitForFunction(() => document.querySelector('#viewer .magnification-readout').textContent === '40×',
    null, { timeout: WAIT });
  await page.waitForTimeout(300);
  await loaded(page, '#viewer');
  seen.zoom = {
    readout: await page.locator('#viewer .magnification-readout').textContent(),
    frames_before: before,
    frames_after: frames.length,
    instances_after: instancesOf(frames.slice(before)),
    pixels: await canvasPixels(page, '#viewer'),
  };
  await page.screenshot({ path: `${config.shots}-zoom.png` });

  // side by side with the case's other slide; a zoom in the left pane is followed by the right one
  await page.click('#compare');
  await loaded(page, '#viewer-0');
  await loaded(page, '#viewer-1');
  const readouts = () => page.locator('.pane .magnification-readout').allTextContents();
  const comparedSeries = decodeURIComponent(new URL(page.url()).hash).split('/').filter((part, i) => i === 3 || i === 5);
  await page.waitForTimeout(500);
  seen.compare = { series: comparedSeries.sort(), readouts_before: await readouts() };
  const box = await page.locator('#viewer-0').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  for (let i = 0; i < 4; i += 1) {
    await page.mouse.wheel(0, -240);
    await page.waitForTimeout(120);
  }
  await page.waitForTimeout(1200);
  await loaded(page, '#viewer-0');
  await loaded(page, '#viewer-1');
  seen.compare.readouts_after = await readouts();
  seen.compare.pixels = [await canvasPixels(page, '#viewer-0'), await canvasPixels(page, '#viewer-1')];
  await page.screenshot({ path: `${config.shots}-compare.png` });
  seen.storage = await storage(page);
  await settle();
} finally {
  await context.close();
}
process.stdout.write(`${JSON.stringify(seen)}\n`);
