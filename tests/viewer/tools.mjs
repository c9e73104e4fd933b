// Uses the slide's tools in headless Chromium the way a person does (keys, mouse drags and clicks,
// buttons) and prints what it saw as one JSON line; tests/viewer/test_viewer_tools.py judges it.
// Input (JSON on stdin): { url, chromium, profile, password, slide (the page's hash), author, colleague,
// stranger, qupath (a QuPath GeoJSON file),
// downloads (a folder) }.
// Where a measure's expected value needs the view's mapping of screen to image pixels, the script
// reads it from OpenSeadragon (the element's slideViewer), after the mouse did its work.

import { WAIT, launch, readConfig, signIn, watch } from './browser.mjs';

const config = await readConfig();
const { context, page } = await launch(config);
const seen = {};
const VIEWER = '#viewer';

// Waits until the view no longer moves (zoom, centre and rotation at their targets).
async function settled() {
  await page.waitForFunction(() => {
    const viewport = document.querySelector('#viewer').slideViewer.osd.viewport;
    const [now, target] = [viewport.getCenter(true), viewport.getCenter(false)];
    return Math.abs(viewport.getZoom(true) - viewport.getZoom(false)) < 1e-9
      && Math.abs(now.x - target.x) < 1e-9 && Math.abs(now.y - target.y) < 1e-9
      && Math.abs(viewport.getRotation(true) - viewport.getRotation(false)) < 1e-9;
  }, null, { timeout: WAIT });
  await page.waitForTimeout(50);
}

// The level-0 image pixels under page points [[x, y]...], by the view's mapping now.
function imageAt(points) {
  return page.evaluate((points) => {
    const viewer = document.querySelector('#viewer').slideViewer;
    const box = viewer.element.getBoundingClientRect();
    return points.map(([x, y]) => {
      // eslint-disable-next-line no-undef
      const point = viewer.osd.viewport.pointFromPixel(new OpenSeadragon.Point(x - box.left, y - box.top), true);
      const image = viewer.mapper().viewportToImageCoordinates(point);
      return [image.x, image.y];
    });
  }, points);
}

const view = () => page.evaluate(() => {
  const viewer = document.querySelector('#viewer').slideViewer;
  const centre = viewer.osd.viewport.getCenter(true);
  return {
    readout: document.querySelector('#viewer .magnification-readout').textContent,
    centre: viewer.mapper().viewportToImageCoordinates(centre),
    image_zoom: viewer.imageZoom(),
    rotation: viewer.osd.viewport.getRotation(true),
    rotation_text: document.querySelector('.rotation-readout').textContent,
  };
});

async function press(key) {
  await page.keyboard.press(key);
  await settled();
  return view();
}

async function openSlide(person) {
  await page.goto(`${config.url}/${config.slide}`);
  const signed = await signIn(page, person, config.password);
  return signed;
}

async function drag(from, to, steps = 8) {
  await page.mouse.move(...from);
  await page.mouse.down();
  await page.mouse.move(...to, { steps });
  await page.mouse.up();
}

async function downloadOf(click, name) {
  const waiting = page.waitForEvent('download', { timeout: WAIT });
  await click();
  const download = await waiting;
  const path = `${config.downloads}/${name}`;
  await download.saveAs(path);
  return { path, suggested: download.suggestedFilename() };
}

// The annotation list as the panel shows it.
function listed() {
  return page.evaluate(() => [...document.querySelectorAll('.annotation-list li.annotation')].map((li) => ({
    id: li.dataset.id,
    mine: li.dataset.mine === 'true',
    labels: li.querySelector('.annotation-labels').textContent,
    deletable: Boolean(li.querySelector('.annotation-delete')),
    text: li.textContent,
  })));
}

async function listCount(count) {
  await page.waitForFunction((count) => document.querySelectorAll('.annotation-list li.annotation').length === count,
    count, { timeout: WAIT });
}

async function measures() {
  const stage = await page.locator(VIEWER).boundingBox();
  const cx = Math.round(stage.x + stage.width / 2);
  const cy = Math.round(stage.y + stage.height / 2);

  // keys 1 to 4: 5x to 40x; arrows pan in screen directions; + and - zoom
  seen.magnifications = [];
  for (const key of ['1', '2', '3', '4']) seen.magnifications.push((await press(key)).readout);
  const before = await press('2');
  seen.arrows = { before, right: await press('ArrowRight'), down: await press('ArrowDown') };
  seen.zoom_keys = { plus: await press('+'), minus: await press('-') };

  // the ruler at 10x: a drag of known screen pixels
  await page.keyboard.press('2');
  await settled();
  await page.click('button[data-tool="ruler"]');
  const from = [cx - 160, cy - 50];
  const to = [cx + 140, cy + 70];
  await drag(from, to);
  seen.ruler = await page.evaluate(() => {
    const readout = document.querySelector('.measure-readout');
    return { text: readout.textContent, microns: Number(readout.dataset.microns) };
  });
  seen.ruler.image = await imageAt([from, to]);
  seen.ruler.readout = (await view()).readout;

  // rotated a quarter turn (r), the area tool: four clicks, Enter closes
  seen.rotated = await press('r');
  await page.click('button[data-tool="area"]');
  const corners = [[cx - 120, cy - 80], [cx + 100, cy - 90], [cx + 130, cy + 60], [cx - 90, cy + 100]];
  for (const corner of corners) await page.mouse.click(...corner);
  await page.keyboard.press('Enter');
  seen.area = await page.evaluate(() => {
    const readout = document.querySelector('.measure-readout');
    return { text: readout.textContent, square_microns: Number(readout.dataset.squareMicrons) };
  });
  seen.area.image = await imageAt(corners);
  seen.area.shapes = await page.locator('.tool-overlay .shape').count();
  await page.keyboard.press('Escape');
  seen.rotated_back = await press('R');
  await page.click('button[data-action="rotate-left"]');
  await settled();
  seen.rotated_button = await view();
  await page.click('button[data-action="rotate-right"]');
  await settled();

  // the screenshot: a PNG of the view as drawn, the measures and the scale bar
  await page.waitForSelector(`${VIEWER}[data-loaded="true"]`, { timeout: WAIT });
  const shot = await downloadOf(() => page.click('button[data-action="screenshot"]'), 'screenshot.png');
  seen.screenshot = {
    ...shot,
    ...(await page.evaluate(() => {
      const viewer = document.querySelector('#viewer').slideViewer;
      const canvas = viewer.osd.drawer.canvas;
      return {
        canvas: [canvas.width, canvas.height],
        ratio: canvas.width / canvas.clientWidth,
        bar_css_pixels: parseFloat(document.querySelector('#viewer .scale-bar-line').style.width),
        bar_text: document.querySelector('#viewer .scale-bar-text').textContent,
        drawer: viewer.element.dataset.drawer || viewer.osd.drawer.getType(),
      };
    })),
  };

  // full screen (f) and back (f)
  await page.keyboard.press('f');
  await page.waitForFunction(() => Boolean(document.fullscreenElement), null, { timeout: 10000 }).catch(() => {});
  seen.fullscreen = await page.evaluate(() => document.fullscreenElement?.className ?? null);
  await page.keyboard.press('f');
  await page.waitForFunction(() => !document.fullscreenElement, null, { timeout: 10000 }).catch(() => {});
  seen.fullscreen_after = await page.evaluate(() => document.fullscreenElement?.className ?? null);
}

// The author draws every kind of shape, saves them, exports and imports them as GeoJSON.
async function annotate() {
  await page.click('button[data-tool="pan"]');
  await page.keyboard.press('2');
  await settled();
  await page.waitForSelector('.annotations', { timeout: WAIT });
  const stage = await page.locator(VIEWER).boundingBox();
  const cx = Math.round(stage.x + stage.width / 2);
  const cy = Math.round(stage.y + stage.height / 2);
  await page.fill('#annotation-label', 'tumour');
  await page.fill('#annotation-color', '#ff0000');
  await page.click('button[data-tool="rectangle"]');
  await drag([cx - 200, cy - 150], [cx - 60, cy - 40]);
  await page.fill('#annotation-label', 'margin');
  await page.fill('#annotation-color', '#00ff00');
  await page.click('button[data-tool="line"]');
  await drag([cx, cy - 150], [cx + 200, cy - 150]);
  await page.click('button[data-tool="point"]');
  await page.mouse.click(cx + 60, cy + 20);
  await page.click('button[data-tool="polygon"]');
  for (const corner of [[cx - 200, cy + 40], [cx - 100, cy + 40], [cx - 150, cy + 140]]) await page.mouse.click(...corner);
  await page.mouse.dblclick(cx - 150, cy + 140);
  await page.click('button[data-tool="freehand"]');
  await page.mouse.move(cx + 60, cy + 60);
  await page.mouse.down();
  for (let step = 0; step <= 24; step += 1) {
    const angle = (step / 24) * 2 * Math.PI;
    await page.mouse.move(cx + 120 + 60 * Math.cos(angle), cy + 100 + 40 * Math.sin(angle));
  }
  await page.mouse.up();
  seen.drafts = await page.locator('.annotation-drafts').textContent();
  seen.rectangle_image = await imageAt([[cx - 200, cy - 150], [cx - 60, cy - 40]]);
  seen.line_image = await imageAt([[cx, cy - 150], [cx + 200, cy - 150]]);
  await page.keyboard.press('Escape');
  const saved = page.waitForResponse((r) => r.url().includes('/api/annotations') && r.request().method() === 'POST',
    { timeout: WAIT });
  await page.click('#annotation-save');
  seen.save_status = (await saved).status();
  await listCount(1);
  seen.author_list = await listed();

  // exported as GeoJSON, then imported back: a second annotation with the same shapes
  const exported = await downloadOf(() => page.click('.annotation-list li.annotation .annotation-export'), 'exported.geojson');
  seen.exported = exported.path;
  await page.setInputFiles('#annotation-import', exported.path);
  await listCount(2);
  // a file QuPath wrote
  await page.setInputFiles('#annotation-import', config.qupath);
  await listCount(3);
  seen.imported_list = await listed();
  seen.imported_shapes = await page.locator('.tool-overlay .shape').count();
  // the two imported deleted (the author's own): the drawn one stays
  for (const item of seen.imported_list.slice(1)) {
    await page.click(`.annotation-list li.annotation[data-id="${item.id}"] .annotation-delete`);
    await listCount(seen.imported_list.length - 1 - seen.imported_list.slice(1).indexOf(item));
  }
  seen.after_delete = await listed();
  await page.screenshot({ path: `${config.downloads}/page-annotated.png` });
}

async function signOut() {
  await page.click('#sign-out');
  await page.waitForSelector('form#signin', { timeout: WAIT });
}

try {
  const settle = watch(page, seen, config.url);
  seen.sign_in = await openSlide(config.author);
  await page.waitForSelector(`${VIEWER}[data-loaded="true"]`, { timeout: WAIT });
  await settled();
  await measures();
  await annotate();
  // a colleague of the lab reads it, read-only
  await signOut();
  seen.colleague_sign_in = await signIn(page, config.colleague, config.password);
  await page.waitForSelector(`${VIEWER}[data-loaded="true"]`, { timeout: WAIT });
  await page.reload();  // the tab keeps its sign-in: the slide and its annotations read afresh
  await page.waitForSelector(`${VIEWER}[data-loaded="true"]`, { timeout: WAIT });
  await listCount(1);
  seen.colleague_list = await listed();
  seen.colleague_shapes = await page.locator('.tool-overlay .shape').count();
  // a person of another lab: not the slide, nor its annotations
  await signOut();
  seen.stranger_sign_in = await signIn(page, config.stranger, config.password);
  await page.waitForSelector('.message-error, #viewer[data-loaded="true"]', { timeout: WAIT });
  seen.stranger_page = await page.locator('#app').textContent();
  seen.stranger_list = await listed();
  await settle();
} finally {
  await context.close();
}
process.stdout.write(`${JSON.stringify(seen)}\n`);
