// Times lamina's viewer (or dicom-microscopy-viewer) in headless Chromium, driven by
// playwright-core with the system's Chromium, and prints what it measured as one JSON line;
// benchmarks/viewer.py and tests/viewer/test_viewer_speed.py run it.
//
// Input (JSON on stdin):
//   { client: "lamina" | "dmv", url, chromium, profile, token, person, study, series,
//     width, height, views: [[x, y], ...] (image pixels of the largest level), magnification,
//     mpp, shipped (lamina: the path of another slideview.js to serve instead, e.g. the one of
//     an earlier commit), dmv: { bundle, lib } (URLs of the library under `url`), wait_ms }
// Output: { drawer, renderer, open_ms, views_ms: [...], requests, bytes, errors }
//
// lamina: the page is loaded at the worklist (signed in: the token put in sessionStorage, as the
// sign-in form does), then the slide is opened by its link (#/slide/STUDY/SERIES): `open_ms` is
// from there until OpenSeadragon says the home view is fully loaded and drawn. Each view then
// jumps (no animation) to a place at `magnification`; its time is until the frame drawn after
// which the tiled image is fully loaded (OpenSeadragon's getFullyLoaded(), checked after each
// draw: 'update-viewport').
//
// dicom-microscopy-viewer: its VolumeImageViewer on the same series, through dicomweb-client
// with the token; each view is set on its OpenLayers view (centre, resolution), and timed until
// the map's 'rendercomplete' event (every tile of the view loaded and drawn).

import { chromium } from 'playwright-core';

const config = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));
const WAIT = config.wait_ms || 120000;
const MICRONS_AT_1X = 10;  // slideview.js: 40x is 0.25 µm per screen pixel

const context = await chromium.launchPersistentContext(config.profile, {
  executablePath: config.chromium,
  headless: true,
  viewport: { width: config.width, height: config.height },
  args: [
    '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    // WebGL as on a PC or virtual desktop without a GPU: SwiftShader, Chrome's software GL
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
  ],
});
const seen = { errors: [], requests: 0, bytes: 0, statuses: {} };
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (error) => seen.errors.push(`page error: ${error.message}`));
  page.on('console', (entry) => {
    if (entry.type() === 'error') seen.errors.push(`console: ${entry.text()}`);
    else if (config.debug) seen.errors.push(`console ${entry.type()}: ${entry.text()}`);
  });
  if (config.debug) page.on('request', (request) => seen.errors.push(`request ${request.url().slice(-60)}`));
  page.on('requestfinished', async (request) => {
    if (!request.url().includes('/dicomweb/')) return;
    seen.requests += 1;
    try {
      const sizes = await request.sizes();
      seen.bytes += sizes.responseBodySize + sizes.responseHeadersSize;
      const response = await request.response();
      const status = response ? response.status() : 0;
      seen.statuses[status] = (seen.statuses[status] || 0) + 1;
    } catch {
      // the page went on: the sizes are no longer there
    }
  });
  if (config.client === 'dmv') await dmv(page); else await lamina(page);
} catch (error) {
  seen.failure = error.message;  // with the page's errors: printed, then exit status 1
  if (config.debug) {
    seen.state = await context.pages()[0].evaluate(() => {
      const viewer = window.laminaViewers && window.laminaViewers[0];
      const item = viewer && viewer.world.getItemAt(0);
      if (!item) return 'no item';
      return { loading: item._tilesLoading, fully: item.getFullyLoaded(), jobs: viewer.imageLoader.jobsInProgress,
        queue: viewer.imageLoader.jobQueue.length, failed: viewer.imageLoader.failedTiles.length,
        cached: viewer.tileCache.numTilesLoaded ? viewer.tileCache.numTilesLoaded() : null };
    }).catch((e) => String(e));
  }
} finally {
  await context.close();
}
process.stdout.write(`${JSON.stringify(seen)}\n`);
if (seen.failure) process.exitCode = 1;

async function lamina(page) {
  await page.addInitScript((token) => {
    if (!sessionStorage.getItem('lamina.session')) {
      sessionStorage.setItem('lamina.session', JSON.stringify({
        token: token.token, person: token.person, expiresAt: Date.now() + 4 * 3600 * 1000,
      }));
    }
  }, { token: config.token, person: config.person });
  if (config.shipped) {
    // another slideview.js (the viewer as it was): served in its place while the page loads
    await page.route('**/slideview.js', (route) => route.fulfill({
      path: config.shipped, contentType: 'text/javascript',
    }));
  }
  await page.goto(`${config.url}/#/`);
  await page.waitForSelector('.cases tbody tr.case', { timeout: WAIT });
  if (config.shipped) await page.unrouteAll();
  // every OpenSeadragon viewer the page makes, kept where the driver finds it
  await page.evaluate(() => {
    const made = window.OpenSeadragon;
    window.laminaViewers = [];
    window.OpenSeadragon = Object.assign(function wrapped(options) {
      const viewer = made(options);
      window.laminaViewers.push(viewer);
      return viewer;
    }, made);
  });
  seen.open_ms = await page.evaluate(({ study, series, wait }) => new Promise((resolve, reject) => {
    const start = performance.now();
    const timer = setTimeout(() => reject(new Error('the slide did not open in time')), wait);
    const poll = () => {
      const viewer = window.laminaViewers[0];
      const item = viewer && viewer.world.getItemAt(0);
      if (!item) {
        requestAnimationFrame(poll);
        return;
      }
      const check = () => {
        if (!item.getFullyLoaded()) return;
        viewer.removeHandler('update-viewport', check);
        clearTimeout(timer);
        resolve(performance.now() - start);
      };
      viewer.addHandler('update-viewport', check);
    };
    location.hash = `#/slide/${encodeURIComponent(study)}/${encodeURIComponent(series)}`;
    poll();
  }), { study: config.study, series: config.series, wait: WAIT });
  Object.assign(seen, await page.evaluate(() => {
    const viewer = window.laminaViewers[0];
    const canvas = document.createElement('canvas');
    const gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
    const info = gl && gl.getExtension('WEBGL_debug_renderer_info');
    return {
      drawer: viewer.drawer.getType(),
      drawer_attribute: viewer.element.dataset.drawer || null,
      renderer: gl ? String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER)) : null,
    };
  }));
  seen.views_ms = [];
  seen.views_network_ms = [];  // from the jump to the last tile's answer: the rest is drawing
  seen.views_requests = [];  // tile requests (a frame list is one)
  seen.views_frames = [];  // tiles fetched
  for (const [x, y] of config.views) {
    const [ms, network, requests, frames] = await page.evaluate(({ x, y, zoom, wait }) => new Promise((resolve, reject) => {
      const viewer = window.laminaViewers[0];
      const item = viewer.world.getItemAt(0);
      const timer = setTimeout(() => reject(new Error(`the view at ${x}, ${y} was not drawn in time`)), wait);
      performance.clearResourceTimings();
      const start = performance.now();
      const check = () => {
        if (!item.getFullyLoaded()) return;
        viewer.removeHandler('update-viewport', check);
        clearTimeout(timer);
        const done = performance.now();
        const tiles = performance.getEntriesByType('resource').filter((entry) => entry.name.includes('/frames/'));
        const last = Math.max(start, ...tiles.map((entry) => entry.responseEnd));
        // frames fetched: a frame list (frames/3,4,5) counts each of its frames
        const frames = tiles.reduce((sum, entry) => sum + entry.name.split('/frames/')[1].split('/')[0].split(',').length, 0);
        resolve([done - start, last - start, tiles.length, frames]);
      };
      viewer.addHandler('update-viewport', check);
      viewer.viewport.zoomTo(item.imageToViewportZoom(zoom), null, true);
      viewer.viewport.panTo(item.imageToViewportCoordinates(x, y), true);
      viewer.forceRedraw();
    }), { x, y, zoom: (config.mpp * config.magnification) / MICRONS_AT_1X, wait: WAIT });
    seen.views_ms.push(ms);
    seen.views_network_ms.push(network);
    seen.views_requests.push(requests);
    seen.views_frames.push(frames);
  }
}

async function dmv(page) {
  // a blank page of the same origin as the archive (no CORS, as lamina's viewer): the 404 page
  await page.goto(`${config.url}/dicomweb/`);
  await page.setContent(`<div id="viewport" style="position:fixed;inset:0"></div>`);
  await page.addScriptTag({ url: config.dmv.client });
  await page.evaluate((lib) => { window.PUBLIC_LIB_URL = lib; }, config.dmv.lib);
  await page.addScriptTag({ url: config.dmv.bundle });
  seen.drawer = 'openlayers-webgl';
  seen.open_ms = await page.evaluate(async ({ api, token, study, series, wait }) => {
    const start = performance.now();
    const dmv = window.dicomMicroscopyViewer;
    const client = new DICOMwebClient.api.DICOMwebClient({ url: api, headers: { Authorization: `Bearer ${token}` } });
    const metadata = await client.retrieveSeriesMetadata({ studyInstanceUID: study, seriesInstanceUID: series });
    const images = metadata
      .map((item) => new dmv.metadata.VLWholeSlideMicroscopyImage({ metadata: item }))
      .filter((image) => image.ImageType[2] === 'VOLUME');
    const viewer = new dmv.viewer.VolumeImageViewer({ client, metadata: images });
    window.dmvViewer = viewer;
    const map = viewer[Symbol.for('map')];
    window.dmvMap = map;
    const drawn = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('dicom-microscopy-viewer did not draw in time')), wait);
      map.once('rendercomplete', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    viewer.render({ container: document.getElementById('viewport') });
    await drawn;
    return performance.now() - start;
  }, { api: `${config.url}/dicomweb`, token: config.token, study: config.study, series: config.series, wait: WAIT });
  seen.views_ms = [];
  for (const [x, y] of config.views) {
    seen.views_ms.push(await page.evaluate(({ x, y, resolution, wait }) => new Promise((resolve, reject) => {
      const map = window.dmvMap;
      const view = map.getView();
      const timer = setTimeout(() => reject(new Error(`the view at ${x}, ${y} was not drawn in time`)), wait);
      const start = performance.now();
      map.once('rendercomplete', () => {
        clearTimeout(timer);
        resolve(performance.now() - start);
      });
      // dicom-microscopy-viewer's map: one unit per pixel of the largest level, y upwards
      view.setResolution(resolution);
      view.setCenter([x, -y]);
    }), { x, y, resolution: MICRONS_AT_1X / (config.mpp * config.magnification), wait: WAIT }));
  }
}
