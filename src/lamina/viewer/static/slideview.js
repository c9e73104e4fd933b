// Deep zoom of one DICOM WSI pyramid with OpenSeadragon, its scale bar and magnification,
// and the link that keeps two of them on the same place of the slide.

/* global OpenSeadragon */

import { frameNumber, windowQuery } from './channels.js';
import { REFUSED, authorization, requireSignIn } from './signin.js';

// Objective magnification of 1 µm per screen pixel: 40x is about 0.25 µm per pixel.
const MICRONS_AT_1X = 10;
export const MAGNIFICATIONS = [5, 10, 20, 40];

// An OpenSeadragon tile source reading the DICOM pyramid directly: one OpenSeadragon level per
// VOLUME instance, frames in TILED_FULL (row-major) order, each tile a rendered frame.
// Edge frames are padded to the full tile size; OpenSeadragon draws only their part inside
// the image (the tile's source bounds), so nothing is stretched. With `stack` (channels.js) and
// a `channel` of it: the frames of the stack's current plane of that channel, with its window.
export function dicomTileSource(levels, stack = null, channel = null) {
  const ladder = [...levels].sort((a, b) => a.width - b.width);  // OpenSeadragon level 0 = smallest
  const full = ladder[ladder.length - 1];
  const at = (level) => ladder[Math.max(0, Math.min(ladder.length - 1, level))];
  const across = (image) => Math.ceil(image.width / image.tileWidth);
  const source = new OpenSeadragon.TileSource({
    width: full.width,
    height: full.height,
    tileWidth: full.tileWidth,
    tileHeight: full.tileHeight,
    tileOverlap: 0,
    minLevel: 0,
    maxLevel: ladder.length - 1,
    getLevelScale: (level) => at(level).width / full.width,
    getNumTiles: (level) => {
      const image = at(level);
      return new OpenSeadragon.Point(across(image), Math.ceil(image.height / image.tileHeight));
    },
    getTileWidth: (level) => at(level).tileWidth,
    getTileHeight: (level) => at(level).tileHeight,
    getTileUrl: (level, x, y) => {
      const image = at(level);
      if (!stack) return `${image.url}/frames/${y * across(image) + x + 1}/rendered`;
      const frame = frameNumber(image, stack, x, y, stack.plane, channel ? channel.index : 0);
      return `${image.url}/frames/${frame}/rendered${channel ? windowQuery(channel) : ''}`;
    },
    // a tile is its URL: OpenSeadragon's default key adds the request's headers, the token
    getTileHashKey: (level, x, y, url) => url,
  });
  if (!stack && TILES_PER_REQUEST > 1) batchTiles(source);
  return source;
}

// Several tiles a request (WADO-RS frame lists, PS3.18 10.4.1.1.2): the tiles OpenSeadragon starts
// together (a view's, in one update) go as one request per level and TILES_PER_REQUEST frames,
// as JPEG (the stored frames of a JPEG slide, byte for byte; others transcoded by the server).
// Over a thin link a view costs a round trip or two, not one per six tiles (a browser's
// connections per host). A list that fails (but with 401) is asked again tile by tile, as
// rendered frames (each tile's own URL), and lists are left off for that slide from then on
// (a server without them, frames it cannot give as JPEG). OpenSeadragon 6's own batching
// (batchEnabled) is not used: its loader drops the batches not yet sent at every redraw
// (ImageLoader.clear) and their tiles stay "loading" for ever.
export const TILES_PER_REQUEST = 8;
const FRAMES_ACCEPT = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50';
const RENDERED_TILE = /^(.*)\/frames\/(\d+)\/rendered$/;

function batchTiles(source) {
  const single = source.downloadTileStart.bind(source);
  let pending = null;  // instance URL -> [[frame number, job]], sent at the end of this task
  let broken = false;  // frame lists refused here (not JPEG, a server without them): one at a time
  const fallBack = (members) => {
    broken = true;
    for (const [, job] of members) single(job);
  };
  const send = () => {
    const groups = pending;
    pending = null;
    for (const [instance, members] of groups) {
      for (let at = 0; at < members.length; at += TILES_PER_REQUEST) {
        const some = members.slice(at, at + TILES_PER_REQUEST);
        if (some.length === 1) single(some[0][1]);
        else fetchFrames(instance, some, fallBack);
      }
    }
  };
  source.downloadTileStart = (job) => {
    const [, instance, frame] = (!broken && job.src.match(RENDERED_TILE)) || [];
    if (!instance || !job.loadWithAjax) {
      single(job);
      return;
    }
    if (!pending) {
      pending = new Map();
      queueMicrotask(send);
    }
    if (!pending.has(instance)) pending.set(instance, []);
    pending.get(instance).push([frame, job]);
  };
}

// One request for the frames of `members` ([frame number, job]); a 401 fails them (the sign-in
// form comes back), any other failure hands them to `fallBack`.
function fetchFrames(instance, members, fallBack) {
  const request = new XMLHttpRequest();
  request.open('GET', `${instance}/frames/${members.map(([frame]) => frame).join(',')}`);
  request.responseType = 'arraybuffer';
  for (const [name, text] of Object.entries(members[0][1].ajaxHeaders || {})) request.setRequestHeader(name, text);
  request.setRequestHeader('Accept', FRAMES_ACCEPT);
  const fail = (why) => members.forEach(([, job]) => job.fail(why, request));
  request.onload = () => {
    if (request.status === 401) {
      fail('frames: 401');
      return;
    }
    const parts = request.status === 200
      ? multipartParts(new Uint8Array(request.response), request.getResponseHeader('Content-Type'))
      : null;
    if (!parts || parts.length !== members.length) {
      fallBack(members);
      return;
    }
    members.forEach(([, job], index) => job.finish(new Blob([parts[index]], { type: 'image/jpeg' }), request, 'rasterBlob'));
  };
  request.onerror = () => fail('frames: network error');
  for (const [, job] of members) job.userData.request = request;  // OpenSeadragon's abort aborts it
  request.send();
}

// The bodies of a multipart/related answer, in order (null when it is not one).
export function multipartParts(bytes, contentType) {
  const match = /boundary="?([^";]+)"?/i.exec(contentType || '');
  if (!match) return null;
  const delimiter = new TextEncoder().encode(`--${match[1]}`);
  const find = (from) => {
    for (let at = bytes.indexOf(delimiter[0], from); at !== -1; at = bytes.indexOf(delimiter[0], at + 1)) {
      let same = at + delimiter.length <= bytes.length;
      for (let k = 1; same && k < delimiter.length; k += 1) same = bytes[at + k] === delimiter[k];
      if (same) return at;
    }
    return -1;
  };
  const parts = [];
  let at = find(0);
  while (at !== -1) {
    const after = at + delimiter.length;
    if (bytes[after] === 45 && bytes[after + 1] === 45) break;  // "--": the closing delimiter
    let head = after;  // the part's headers end at the first empty line
    while (head + 3 < bytes.length && !(bytes[head] === 13 && bytes[head + 1] === 10 && bytes[head + 2] === 13 && bytes[head + 3] === 10)) head += 1;
    const next = find(head + 4);
    if (next === -1) return null;
    parts.push(bytes.subarray(head + 4, next - 2));  // less the CRLF before the delimiter
    at = next;
  }
  return parts;
}

// Which OpenSeadragon drawer to use, measured (benchmarks/viewer.py, docs/serving.md "Speed"):
// WebGL on a software renderer (SwiftShader, llvmpipe: a PC or virtual desktop without a GPU)
// spends seconds a view; the canvas drawer there draws the same view in tens of milliseconds.
// With a GPU, OpenSeadragon's own choice, WebGL. Decided once per page.
const SOFTWARE_GL = /swiftshader|llvmpipe|softpipe|software|basic render|mesa offscreen/i;
let chosenDrawer = null;

export function glRenderer() {
  try {
    const canvas = document.createElement('canvas');
    const gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
    if (!gl) return null;
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    const name = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER) || '');
    gl.getExtension('WEBGL_lose_context')?.loseContext();
    return name;
  } catch {
    return null;
  }
}

export function chooseDrawer() {
  if (!chosenDrawer) {
    const renderer = glRenderer();
    chosenDrawer = renderer && !SOFTWARE_GL.test(renderer) ? 'webgl' : 'canvas';
  }
  return chosenDrawer;
}

function niceLength(maxMicrons) {
  // the largest 1, 2 or 5 x 10^k micrometres not over maxMicrons
  const power = 10 ** Math.floor(Math.log10(maxMicrons));
  for (const step of [5, 2, 1]) {
    if (step * power <= maxMicrons) return step * power;
  }
  return power;
}

function lengthText(microns) {
  return microns >= 1000 ? `${microns / 1000} mm` : `${microns} µm`;
}

export class SlideViewer {
  // element: where the viewer goes; slide: from dicomweb.readSlide.
  constructor(element, slide, { onChange = () => {} } = {}) {
    this.slide = slide;
    this.element = element;
    this.onChange = onChange;
    // micrometres per pixel of the largest level; without it, magnification is unknown
    this.mpp = slide.mpp ? slide.mpp[0] : null;
    const header = authorization();
    this.stack = slide.stack || null;
    if (this.stack) element.classList.add('osd-stack');
    this.osd = OpenSeadragon({
      element,
      tileSources: this.stack ? this.stackSources() : dicomTileSource(slide.levels),
      drawer: chooseDrawer(),
      // tiles by XMLHttpRequest, with the token (an <img> cannot send it)
      loadTilesWithAjax: true,
      ajaxHeaders: { Authorization: header },
      prefixUrl: 'vendor/openseadragon/images/',
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: 'TOP_RIGHT',
      navigatorAutoFade: false,
      // speed (measured, benchmarks/viewer.py): no fade-in of tiles; the level a view needs is
      // fetched at once, the lower ones already held (the whole slide, loaded on opening) shown
      // under it meanwhile, not every level in between fetched first
      animationTime: 0.3,
      blendTime: 0,
      immediateRender: true,
      springStiffness: 9,
      // beyond the scan's own resolution by up to 4x (digital zoom), like a 40x view of a 20x scan
      maxZoomPixelRatio: 4,
      minZoomImageRatio: 0.8,
      visibilityRatio: 0.3,
      // a view's tiles asked for at once, not one a frame (OpenSeadragon's default: a 1920 x 1080
      // view of 240-pixel tiles at 40x is 45 tiles, 45 frames, most of a second on a busy PC)
      maxTilesPerFrame: 64,
      imageLoaderLimit: 48,  // tiles in flight: six connections of TILES_PER_REQUEST
      timeout: 30000,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    });
    element.dataset.drawer = this.osd.drawer ? this.osd.drawer.getType() : '';
    this.scaleBar = document.createElement('div');
    this.scaleBar.className = 'scale-bar';
    this.scaleBar.innerHTML = '<span class="scale-bar-line"></span><span class="scale-bar-text"></span>';
    this.readout = document.createElement('div');
    this.readout.className = 'magnification-readout';
    element.append(this.scaleBar, this.readout);
    this.osd.addHandler('viewport-change', () => this.changed());
    this.osd.addHandler('open', () => this.changed());
    this.osd.addHandler('resize', () => this.changed());
    this.osd.addHandler('tile-load-failed', (event) => {
      if (event.tileRequest && event.tileRequest.status === 401) {
        const sent = (event.tile && event.tile.ajaxHeaders && event.tile.ajaxHeaders.Authorization) || header;
        requireSignIn(REFUSED, sent.slice('Bearer '.length));
      }
    });
  }

  // One tiled image per visible channel of the stack's current plane, added on the canvas.
  stackSources() {
    const shown = this.stack.channels.filter((channel) => channel.on);
    return shown.map((channel) => ({
      tileSource: dicomTileSource(this.slide.levels, this.stack, channel),
      compositeOperation: 'lighter',
    }));
  }

  // Shows the stack as it now is (plane, channels on, windows): the tiled images replaced.
  showStack() {
    const world = this.osd.world;
    while (world.getItemCount()) world.removeItem(world.getItemAt(0));
    for (const source of this.stackSources()) this.osd.addTiledImage(source);
  }

  // What maps viewport to image coordinates: the viewport, or with several tiled images (the
  // channels of a stack, all on the same place) the first of them (the viewport's own methods
  // warn then, though they would be right).
  mapper() {
    const world = this.osd.world;
    return world.getItemCount() > 1 ? world.getItemAt(0) : this.osd.viewport;
  }

  // Screen pixels per pixel of the largest level.
  imageZoom() {
    return this.mapper().viewportToImageZoom(this.osd.viewport.getZoom(true));
  }

  // Micrometres per screen pixel, or null when the slide has no pixel spacing.
  micronsPerScreenPixel() {
    return this.mpp ? this.mpp / this.imageZoom() : null;
  }

  magnification() {
    const microns = this.micronsPerScreenPixel();
    return microns ? MICRONS_AT_1X / microns : null;
  }

  goToMagnification(magnification, immediately = false) {
    if (!this.mpp) return;
    const imageZoom = (this.mpp * magnification) / MICRONS_AT_1X;
    this.osd.viewport.zoomTo(this.mapper().imageToViewportZoom(imageZoom), null, immediately);
  }

  home() {
    this.osd.viewport.goHome();
  }

  // The centre of the view in micrometres from the slide's top-left corner (pixels without spacing).
  centerMicrons() {
    const centre = this.mapper().viewportToImageCoordinates(this.osd.viewport.getCenter(true));
    const mpp = this.mpp || 1;
    return { x: centre.x * mpp, y: centre.y * mpp };
  }

  // Show the place at `microns` (centre) with `micronsPerPixel` on screen, at once.
  showAt(microns, micronsPerPixel) {
    const mpp = this.mpp || 1;
    const viewport = this.osd.viewport;
    const mapper = this.mapper();
    viewport.zoomTo(mapper.imageToViewportZoom(mpp / micronsPerPixel), null, true);
    viewport.panTo(mapper.imageToViewportCoordinates(microns.x / mpp, microns.y / mpp), true);
  }

  changed() {
    this.drawScaleBar();
    this.onChange(this);
  }

  drawScaleBar() {
    const microns = this.micronsPerScreenPixel();
    if (!microns || !Number.isFinite(microns)) {
      this.scaleBar.hidden = true;
      this.readout.textContent = 'no pixel spacing';
      return;
    }
    this.scaleBar.hidden = false;
    const length = niceLength(microns * 160);
    this.scaleBar.querySelector('.scale-bar-line').style.width = `${Math.round(length / microns)}px`;
    this.scaleBar.querySelector('.scale-bar-text').textContent = lengthText(length);
    const magnification = MICRONS_AT_1X / microns;
    this.readout.textContent = `${magnification >= 10 ? magnification.toFixed(0) : magnification.toFixed(1)}×`;
  }

  destroy() {
    this.osd.destroy();
    this.element.replaceChildren();
  }
}

// Keeps viewers at the same magnification and moving together, in micrometres on the slides:
// the offset between their centres when they were linked stays, so a pathologist aligns two
// sections by hand, links them, and pans both from there. The viewer the user last touched
// leads; the others follow it frame by frame, so an animated zoom stays smooth in all of them.
export class ViewerLink {
  constructor(viewers) {
    this.viewers = viewers;
    this.linked = false;
    this.leader = viewers[0];
    for (const viewer of viewers) {
      for (const event of ['canvas-enter', 'canvas-press', 'canvas-scroll', 'canvas-key']) {
        viewer.osd.addHandler(event, () => this.lead(viewer));
      }
      viewer.osd.addHandler('viewport-change', () => {
        if (viewer === this.leader) this.follow();
      });
    }
  }

  lead(viewer) {
    this.leader = viewer;
  }

  // Micrometres per screen pixel (image pixels per screen pixel for a slide without spacing).
  scale(viewer) {
    return viewer.micronsPerScreenPixel() || 1 / viewer.imageZoom();
  }

  link() {
    const centre = this.leader.centerMicrons();
    this.offsets = new Map(this.viewers.map((viewer) => {
      const there = viewer.centerMicrons();
      return [viewer, { x: there.x - centre.x, y: there.y - centre.y }];
    }));
    this.linked = true;
    this.follow();
  }

  unlink() {
    this.linked = false;
  }

  follow() {
    if (!this.linked) return;
    const leader = this.leader;
    const base = this.offsets.get(leader);
    const centre = leader.centerMicrons();
    const scale = this.scale(leader);
    for (const viewer of this.viewers) {
      if (viewer === leader) continue;
      const offset = this.offsets.get(viewer);
      viewer.showAt({ x: centre.x - base.x + offset.x, y: centre.y - base.y + offset.y }, scale);
    }
  }
}
