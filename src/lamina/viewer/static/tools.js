// The slide's tools: pan, the ruler and the area tool (measure.js), the annotation shapes
// (annotate.js), rotation, full screen and a screenshot with its scale bar; and the keyboard:
//   arrows pan, + and - zoom, r and R rotate by 90° (clockwise, counter-clockwise),
//   f full screen, m the ruler, Escape back to panning (1 to 4 and 0 are app.js's magnifications).
// One tool at a time: a drawing tool takes the mouse from OpenSeadragon until Escape or Pan.

/* global OpenSeadragon */

import { h } from './dom.js';
import { Overlay } from './overlay.js';
import { Measures } from './measure.js';
import { annotationPanel } from './annotate.js';

const PAN_SHARE = 0.15;  // of the view's width or height per arrow key
const ZOOM_STEP = 1.4;

function toolButton(tool, text, title, choose) {
  return h('button', { type: 'button', title, dataset: { tool }, 'aria-pressed': 'false', onclick: () => choose(tool) },
    text);
}

// The tools of `viewer` (a SlideViewer): buttons appended to `toolbar`, the annotation panel to
// `side`. Returns the function that removes them.
export function attachTools(viewer, { toolbar, side, study, series }) {
  // for the browser tests and the console: the viewer behind the element
  viewer.element.slideViewer = viewer;
  const overlay = new Overlay(viewer);
  const readout = h('span', { class: 'measure-readout', role: 'status' });
  const measures = new Measures(viewer, overlay, readout);
  const rotation = h('span', { class: 'rotation-readout', title: 'Rotation' }, '0°');
  let current = 'pan';
  const buttons = [];

  const choose = (tool) => {
    overlay.cancel();
    current = tool;
    if (tool === 'ruler' || tool === 'area') measures.start(tool);
    else if (tool !== 'pan') annotations.start(tool);
    for (const button of document.querySelectorAll('button[data-tool]')) {
      button.setAttribute('aria-pressed', String(button.dataset.tool === current));
    }
    viewer.element.dataset.tool = current;
  };
  const annotations = annotationPanel(viewer, overlay, { study, series, choose });

  const rotate = (degrees) => {
    const viewport = viewer.osd.viewport;
    viewport.setRotation((((viewport.getRotation() + degrees) % 360) + 360) % 360);
  };
  const showRotation = () => {
    rotation.textContent = `${Math.round(viewer.osd.viewport.getRotation())}°`;
  };
  viewer.osd.addHandler('rotate', showRotation);

  // the stage (this toolbar and the slide) fills the screen, so the tools stay at hand
  const fullScreenTarget = toolbar.closest('.stage') || viewer.element;
  const toggleFullScreen = () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (fullScreenTarget.requestFullscreen) fullScreenTarget.requestFullscreen().catch(() => {});
  };

  buttons.push(
    h('div', { class: 'group tools', role: 'group', 'aria-label': 'Tools' },
      toolButton('pan', 'Pan', 'Pan and zoom with the mouse (Escape)', choose),
      toolButton('ruler', 'Ruler', 'Measure a length: drag (m)', choose),
      toolButton('area', 'Area', 'Measure an area: click the outline, double click or Enter to close', choose),
      h('button', { type: 'button', dataset: { action: 'clear-measures' }, title: 'Remove the measures',
        onclick: () => measures.clear() }, 'Clear'),
      readout),
    h('div', { class: 'group', role: 'group', 'aria-label': 'View' },
      h('button', { type: 'button', dataset: { action: 'rotate-left' }, title: 'Rotate 90° counter-clockwise (R)',
        onclick: () => rotate(-90) }, '⟲'),
      rotation,
      h('button', { type: 'button', dataset: { action: 'rotate-right' }, title: 'Rotate 90° clockwise (r)',
        onclick: () => rotate(90) }, '⟳'),
      h('button', { type: 'button', dataset: { action: 'fullscreen' }, title: 'Full screen (f)',
        onclick: toggleFullScreen }, 'Full screen'),
      h('button', { type: 'button', dataset: { action: 'screenshot' }, title: 'Save the view as a PNG with its scale bar',
        onclick: () => screenshot(viewer, overlay) }, 'Screenshot')),
  );
  toolbar.append(...buttons);
  side.append(annotations.element);

  // OpenSeadragon's own keys (w/a/s/d, f flips) would act twice, or otherwise than these
  const quiet = (event) => { event.preventDefaultAction = true; };
  viewer.osd.addHandler('canvas-key', quiet);
  const keys = (event) => {
    if (event.target.closest('input, textarea, select') || event.ctrlKey || event.metaKey || event.altKey) return;
    const viewport = viewer.osd.viewport;
    const size = viewport.getContainerSize();
    const pan = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[event.key];
    if (pan) {
      // in screen directions, whatever the rotation
      const delta = new OpenSeadragon.Point(pan[0] * size.x * PAN_SHARE, pan[1] * size.y * PAN_SHARE);
      viewport.panBy(viewport.deltaPointsFromPixels(delta));
      viewport.applyConstraints();
    } else if (event.key === '+' || event.key === '=') {
      viewport.zoomBy(ZOOM_STEP);
      viewport.applyConstraints();
    } else if (event.key === '-' || event.key === '_') {
      viewport.zoomBy(1 / ZOOM_STEP);
      viewport.applyConstraints();
    } else if (event.key === 'r') {
      rotate(90);
    } else if (event.key === 'R') {
      rotate(-90);
    } else if (event.key === 'f') {
      toggleFullScreen();
    } else if (event.key === 'm') {
      choose('ruler');
    } else if (event.key === 'Escape') {
      choose('pan');
    } else {
      return;
    }
    event.preventDefault();
  };
  document.addEventListener('keydown', keys);
  choose('pan');

  return () => {
    document.removeEventListener('keydown', keys);
    viewer.osd.removeHandler('canvas-key', quiet);
    viewer.osd.removeHandler('rotate', showRotation);
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    annotations.destroy();
    overlay.destroy();
    buttons.forEach((button) => button.remove());
  };
}

// The view as drawn (OpenSeadragon's canvas: its canvas drawer draws there, and its WebGL drawer
// copies each frame there), the shapes over it, and the scale bar, as a PNG download.
export async function screenshot(viewer, overlay) {
  const source = viewer.osd.drawer.canvas;
  const ratio = source.width / (source.clientWidth || source.width);
  const canvas = document.createElement('canvas');
  canvas.width = source.width;
  canvas.height = source.height;
  const context = canvas.getContext('2d');
  context.fillStyle = getComputedStyle(viewer.element).backgroundColor || '#000';
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(source, 0, 0);
  await drawShapes(context, overlay.svg, canvas.width, canvas.height);
  drawScaleBar(context, viewer, ratio);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  const url = URL.createObjectURL(blob);
  const name = `${viewer.slide.container || viewer.slide.series || 'slide'}`.replace(/[^\w.-]+/g, '_');
  const magnification = viewer.magnification();
  const link = h('a', { href: url, download: `${name}${magnification ? `-${magnification.toFixed(0)}x` : ''}.png` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function drawShapes(context, layer, width, height) {
  if (!layer.childElementCount) return;
  const copy = layer.cloneNode(true);
  copy.setAttribute('xmlns', 'http://www.w3.org/2000/svg');
  copy.setAttribute('width', String(layer.clientWidth));
  copy.setAttribute('height', String(layer.clientHeight));
  copy.setAttribute('viewBox', `0 0 ${layer.clientWidth} ${layer.clientHeight}`);
  const url = URL.createObjectURL(new Blob([new XMLSerializer().serializeToString(copy)], { type: 'image/svg+xml' }));
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    context.drawImage(image, 0, 0, width, height);
  } finally {
    URL.revokeObjectURL(url);
  }
}

// The scale bar as the viewer shows it (slideview.js's length and text), bottom left, black on a
// white box so it reads on any stain.
function drawScaleBar(context, viewer, ratio) {
  const line = viewer.element.querySelector('.scale-bar-line');
  const text = viewer.element.querySelector('.scale-bar-text');
  const bar = viewer.element.querySelector('.scale-bar');
  if (!line || !text || !bar || bar.hidden) return;
  const length = Math.round(parseFloat(line.style.width) * ratio);
  if (!(length > 0)) return;
  const pad = Math.round(8 * ratio);
  const font = Math.round(13 * ratio);
  const thick = Math.max(2, Math.round(4 * ratio));
  context.font = `${font}px system-ui, sans-serif`;
  const width = Math.max(length, context.measureText(text.textContent).width) + 2 * pad;
  const height = font + thick + 3 * pad;
  const left = Math.round(12 * ratio);
  const top = context.canvas.height - Math.round(12 * ratio) - height;
  context.fillStyle = '#ffffff';
  context.fillRect(left, top, width, height);
  context.fillStyle = '#000000';
  context.textBaseline = 'top';
  context.fillText(text.textContent, left + pad, top + pad);
  context.fillRect(left + pad, top + height - pad - thick, length, thick);
}
