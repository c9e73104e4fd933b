// Runs the JavaScript DICOMweb clients that web viewers are built on against lamina, in headless
// Chromium (playwright-core, the system's Chromium), and prints what they got as one JSON line;
// tests/viewer/test_js_clients.py judges it.
//
// The page is served from another origin than the DICOMweb root (http://localhost:PORT against
// http://127.0.0.1:PORT), as a viewer application usually is: every request is a CORS one.
//
// Input (JSON on stdin): { mode: "client" | "viewer", page, api, token, chromium, profile, ... }
//   token: the bearer token the clients are built with (`headers: {Authorization: 'Bearer ...'}`,
//     as an application gives them its signed-in person's token); null: none.
//   mode "client": dicomweb-client's searches and retrievals; `frames` and `rendered` list the
//     requests to make, `search` the queries; the bytes received are reported as length + SHA-256.
//   mode "viewer": dicom-microscopy-viewer's VolumeImageViewer over one series (`slide`), with a
//     screenshot of the viewport written to `shot`.

import { chromium } from 'playwright-core';

const config = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));

const WAIT = 60000;  // generous for a loaded 2-core CI machine

const context = await chromium.launchPersistentContext(config.profile, {
  executablePath: config.chromium,
  headless: true,
  viewport: { width: 900, height: 700 },
  args: [
    '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    // WebGL without a GPU (dicom-microscopy-viewer draws with OpenLayers' WebGL tile layers)
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
  ],
});

const seen = { errors: [], requests: [] };
const pending = [];
try {
  const page = context.pages()[0] || await context.newPage();
  // every answer from the API, with the request's Origin and the answer's CORS header
  page.on('response', (response) => {
    if (response.status() >= 400) seen.errors.push(`${response.status()} ${response.url()}`);
    if (!response.url().startsWith(config.api)) return;
    pending.push((async () => {
      const [sent, got] = [await response.request().allHeaders(), await response.allHeaders()];
      seen.requests.push({
        url: response.url(),
        status: response.status(),
        authorization: sent.authorization || null,
        accept: sent.accept || null,
        origin: sent.origin || null,
        allow_origin: got['access-control-allow-origin'] || null,
      });
    })());
  });
  page.on('requestfailed', (request) => {
    seen.errors.push(`failed ${request.url()}: ${request.failure()?.errorText}`);
  });
  page.on('pageerror', (error) => seen.errors.push(`page error: ${error.message}`));
  page.on('console', (entry) => {
    if (entry.type() === 'error') seen.errors.push(`console: ${entry.text()}`);
  });

  await page.goto(config.page);
  await page.addScriptTag({ url: config.scripts.client });
  seen.origin = await page.evaluate(() => window.location.origin);
  seen.secure = await page.evaluate(() => window.isSecureContext);

  if (config.mode === 'client') {
    Object.assign(seen, await page.evaluate(runClient, config));
  } else {
    await viewer(page);
  }
  await Promise.all(pending);
} finally {
  await context.close();
}
process.stdout.write(`${JSON.stringify(seen)}\n`);

// -- dicomweb-client, in the page ------------------------------------------------------------------
async function runClient(config) {
  const headers = config.token ? { Authorization: `Bearer ${config.token}` } : {};
  const client = new DICOMwebClient.api.DICOMwebClient({ url: config.api, headers });
  const uids = (items, tag) => items.map((item) => item[tag].Value[0]);
  const digest = async (buffer) => {
    const bytes = new Uint8Array(await crypto.subtle.digest('SHA-256', buffer));
    return [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
  };
  const describe = async (buffer) => ({ length: buffer.byteLength, sha256: await digest(buffer) });
  // each call on its own, so that one failure does not hide what the others did
  const attempt = async (call) => {
    try {
      return { ok: await call() };
    } catch (error) {
      return { error: `${error.message}${error.status ? ` (HTTP ${error.status})` : ''}` };
    }
  };
  const out = {};
  out.studies = await attempt(async () => uids(await client.searchForStudies(), '0020000D'));
  out.studies_of_patient = await attempt(async () => uids(
    await client.searchForStudies({ queryParams: { PatientID: config.search.patient_id } }), '0020000D'));
  out.series = await attempt(async () => (
    await client.searchForSeries({ studyInstanceUID: config.search.study })
  ).map((item) => ({ uid: item['0020000E'].Value[0], modality: item['00080060'].Value[0] })));
  out.metadata = await attempt(async () => (
    await client.retrieveSeriesMetadata({
      studyInstanceUID: config.search.study, seriesInstanceUID: config.search.series,
    })
  ).map((item) => ({
    sop: item['00080018'].Value[0],
    flavor: item['00080008'].Value[2],
    frames: Number(item['00280008'].Value[0]),
  })));
  out.frames = {};
  for (const request of config.frames) {
    out.frames[request.name] = await attempt(async () => {
      const options = {
        studyInstanceUID: request.study,
        seriesInstanceUID: request.series,
        sopInstanceUID: request.sop,
        frameNumbers: request.frame_numbers,
      };
      if (request.media_types) options.mediaTypes = request.media_types;
      const parts = await client.retrieveInstanceFrames(options);
      return Promise.all(parts.map(describe));
    });
  }
  out.rendered = {};
  for (const request of config.rendered) {
    out.rendered[request.name] = await attempt(async () => {
      const options = {
        studyInstanceUID: request.study, seriesInstanceUID: request.series, sopInstanceUID: request.sop,
      };
      if (request.media_types) options.mediaTypes = request.media_types;
      const answer = await client.retrieveInstanceRendered(options);
      const buffer = Array.isArray(answer) ? answer[0] : answer;
      const bitmap = await createImageBitmap(new Blob([buffer]));
      return { ...(await describe(buffer)), width: bitmap.width, height: bitmap.height };
    });
  }
  return out;
}

// -- dicom-microscopy-viewer ----------------------------------------------------------------------
async function viewer(page) {
  seen.webgl = await page.evaluate(() => {
    const gl = document.createElement('canvas').getContext('webgl2');
    return gl ? gl.getParameter(gl.RENDERER) : null;
  });
  // the bundle looks for its decoding worker under window.PUBLIC_LIB_URL
  await page.evaluate((lib) => { window.PUBLIC_LIB_URL = lib; }, config.scripts.viewer_lib);
  await page.addScriptTag({ url: config.scripts.viewer });
  seen.library = await page.evaluate(() => typeof window.dicomMicroscopyViewer?.viewer?.VolumeImageViewer);
  seen.viewer = await page.evaluate(async (config) => {
    const dmv = window.dicomMicroscopyViewer;
    // the viewer reads through the client it is given: the token goes in the client's headers
    const headers = config.token ? { Authorization: `Bearer ${config.token}` } : {};
    const client = new DICOMwebClient.api.DICOMwebClient({ url: config.api, headers });
    let metadata;
    try {
      metadata = await client.retrieveSeriesMetadata({
        studyInstanceUID: config.slide.study, seriesInstanceUID: config.slide.series,
      });
    } catch (error) {
      return { refused: error.status || error.message };
    }
    const images = metadata
      .map((item) => new dmv.metadata.VLWholeSlideMicroscopyImage({ metadata: item }))
      .filter((image) => ['VOLUME', 'THUMBNAIL'].includes(image.ImageType[2]));
    const instance = new dmv.viewer.VolumeImageViewer({ client, metadata: images });
    instance.render({ container: document.getElementById('viewport') });
    window.lamina = instance;
    return { images: images.length };
  }, config);
  const frames = () => seen.requests.filter((request) => request.url.includes('/frames/')).length;
  if (seen.viewer.refused) {
    await page.waitForTimeout(500);
    seen.frames = frames();
    return;
  }
  // frames requested, then a quiet moment: the viewport is drawn
  const deadline = Date.now() + WAIT;
  while (frames() === 0 && Date.now() < deadline) await page.waitForTimeout(100);
  let last = -1;
  while (Date.now() < deadline && last !== seen.requests.length) {
    last = seen.requests.length;
    await page.waitForTimeout(1500);
  }
  seen.frames = frames();
  seen.canvases = await page.evaluate(() => [...document.querySelectorAll('#viewport canvas')]
    .map((canvas) => [canvas.width, canvas.height]));
  await page.locator('#viewport').screenshot({ path: config.shot });
}
