// An SVG layer over a SlideViewer: shapes kept in level-0 image pixels (x right, y down, as the
// annotations' GeoJSON) and drawn again in screen pixels each time OpenSeadragon draws the view,
// so they follow pan, zoom and rotation; and the capture of a new shape with the mouse.
//
// Capture by kind: 'point' a click; 'line' and 'rectangle' a drag; 'freehand' a drag whose path
// is the outline; 'polygon' a click per vertex, closed by a double click or Enter (Escape or a
// call to cancel() drops it). While capturing, the layer takes the mouse (OpenSeadragon does not
// pan) and the wheel still zooms at the pointer.

/* global OpenSeadragon */

const SVG = 'http://www.w3.org/2000/svg';
// below this many screen pixels a drag is a click, and freehand points are not kept
const NEAR = 3;

function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  return element;
}

// The corners of the image-axis rectangle of two opposite corners.
export function rectangle([ax, ay], [bx, by]) {
  return [[ax, ay], [bx, ay], [bx, by], [ax, by]];
}

export class Overlay {
  constructor(viewer) {
    this.viewer = viewer;
    // each layer's group of shapes, in image pixels under one transform that maps them to the
    // screen (set each frame: the shapes are built again only when they change, so thousands of
    // outlines pan and zoom smoothly); their captions in screen pixels, placed each frame
    this.layers = new Map();  // name -> { group, captions: [{ text, anchor }] }
    this.draft = null;  // the shape being captured: { kind, color, points, cursor }
    this.svg = svg('svg', { class: 'tool-overlay', 'aria-hidden': 'true' });
    this.shapes = svg('g', { class: 'shapes' });
    this.captions = svg('g', { class: 'captions' });
    this.svg.append(this.shapes, this.captions);
    viewer.element.append(this.svg);
    this.redraw = this.redraw.bind(this);
    for (const event of ['update-viewport', 'resize', 'rotate', 'open']) viewer.osd.addHandler(event, this.redraw);
    this.listeners = [];
  }

  // Screen pixels (within the viewer's element) of a level-0 image point.
  toScreen([x, y]) {
    const point = this.viewer.mapper().imageToViewportCoordinates(x, y);
    const pixel = this.viewer.osd.viewport.pixelFromPoint(point, true);
    return [pixel.x, pixel.y];
  }

  // The level-0 image point under a mouse event.
  toImage(event) {
    const box = this.svg.getBoundingClientRect();
    const pixel = new OpenSeadragon.Point(event.clientX - box.left, event.clientY - box.top);
    const point = this.viewer.mapper().viewportToImageCoordinates(this.viewer.osd.viewport.pointFromPixel(pixel, true));
    return [point.x, point.y];
  }

  // Shapes of one layer: [{ kind, points, color, label, text, dashed }], drawn in that order; the
  // layers in the order they were first set, the shape being drawn over them.
  setLayer(name, shapes) {
    let layer = this.layers.get(name);
    if (!layer) {
      layer = { group: svg('g', { class: `layer layer-${name}` }), captions: [] };
      this.layers.set(name, layer);
      this.shapes.append(layer.group);
      const draft = this.layers.get('draft');
      if (draft && name !== 'draft') this.shapes.append(draft.group);  // the draft stays on top
    }
    layer.group.replaceChildren(...shapes.map((shape) => this.draw(shape)));
    layer.captions = shapes.map((shape) => this.caption(shape)).filter(Boolean);
    this.captions.replaceChildren(...[...this.layers.values()].flatMap((each) => each.captions.map((c) => c.text)));
    this.redraw();
  }

  showDraft() {
    this.setLayer('draft', this.draft ? [this.preview(this.draft)] : []);
  }

  // Each frame: the image-to-screen transform (OpenSeadragon's mapping is affine: zoom, rotation,
  // pan), and the captions beside their shapes.
  redraw() {
    const size = 10000;  // far apart, for precision
    const [ox, oy] = this.toScreen([0, 0]);
    const [ax, ay] = this.toScreen([size, 0]);
    const [bx, by] = this.toScreen([0, size]);
    const matrix = [(ax - ox) / size, (ay - oy) / size, (bx - ox) / size, (by - oy) / size, ox, oy];
    this.shapes.setAttribute('transform', `matrix(${matrix.join(' ')})`);
    for (const layer of this.layers.values()) {
      for (const { text, anchor } of layer.captions) {
        const [x, y] = this.toScreen(anchor);
        text.setAttribute('x', (x + 8).toFixed(1));
        text.setAttribute('y', (y - 8).toFixed(1));
      }
    }
  }

  // The shape being captured as it would be if the mouse were released (or clicked) now, dashed.
  preview({ kind, color, points, cursor }) {
    const shape = { kind, color, dashed: true };
    if (this.describe) {
      const drawn = kind === 'rectangle' ? rectangle(points[0], cursor) : [...points, cursor];
      shape.text = this.describe(drawn);
    }
    if (kind === 'rectangle') return { ...shape, points: rectangle(points[0], cursor) };
    if (kind === 'line') return { ...shape, points: [points[0], cursor] };
    return { ...shape, points: [...points, cursor], open: true };
  }

  // A shape in image pixels; its strokes keep their screen width whatever the zoom.
  draw(shape) {
    const group = svg('g', { class: `shape shape-${shape.kind}` });
    const color = shape.color || '#ffd400';
    const listed = shape.points.map(([x, y]) => `${x},${y}`).join(' ');
    const stroke = { 'vector-effect': 'non-scaling-stroke', fill: 'none' };
    const line = { ...stroke, stroke: color, 'stroke-width': 2, 'stroke-dasharray': shape.dashed ? '6 4' : null };
    if (shape.kind === 'point') {
      // a dot of a zero-length path with round caps: 10 screen pixels at any zoom, outlined
      const [x, y] = shape.points[0];
      const dot = { ...stroke, d: `M${x} ${y}h0`, 'stroke-linecap': 'round' };
      group.append(svg('path', { ...dot, stroke: '#000', 'stroke-width': 12 }), svg('path', { ...dot, stroke: color, 'stroke-width': 10 }));
    } else if (shape.kind === 'line' || shape.open) {
      group.append(svg('polyline', { points: listed, ...line }));
    } else {
      group.append(svg('polygon', { points: listed, ...line, fill: color, 'fill-opacity': 0.12 }));
    }
    return group;
  }

  // A shape's label and measure, beside its right-most point, on a dark halo so it reads on any
  // stain; null without either. Styled here, not in CSS: the screenshot draws this SVG as an
  // image, without the page's CSS.
  caption(shape) {
    const words = [shape.label, shape.text].filter(Boolean).join(' · ');
    if (!words || !shape.points.length) return null;
    const text = svg('text', {
      class: 'shape-text', fill: '#fff', stroke: '#000', 'stroke-width': 3,
      'paint-order': 'stroke', 'font-size': 13, 'font-family': 'system-ui, sans-serif',
    });
    text.textContent = words;
    return { text, anchor: shape.points.reduce((a, b) => (b[0] > a[0] ? b : a)) };
  }

  // Starts capturing a shape of `kind` in `color`; done(points) once drawn. One capture at a time.
  // describe(points), if given, is the text shown beside the shape while it is drawn.
  capture(kind, color, done, describe = null) {
    this.cancel();
    this.describe = describe;
    this.svg.classList.add('capturing');
    const on = (target, type, handler, options) => {
      target.addEventListener(type, handler, options);
      this.listeners.push(() => target.removeEventListener(type, handler, options));
    };
    const finish = (points) => {
      this.cancelDraft();
      done(points);
    };
    const screenDistance = (a, b) => {
      const [ax, ay] = this.toScreen(a);
      const [bx, by] = this.toScreen(b);
      return Math.hypot(ax - bx, ay - by);
    };
    on(this.svg, 'pointerdown', (event) => {
      if (event.button !== 0) return;
      // no text selection or drag of the page; the focus leaves the tool's button, so that Enter
      // closes the polygon rather than pressing the button again
      event.preventDefault();
      if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
      const point = this.toImage(event);
      if (kind === 'point') { finish([point]); return; }
      if (kind === 'polygon') {
        // a vertex per click; the second press of a double click adds none
        this.draft = this.draft || { kind, color, points: [] };
        const last = this.draft.points[this.draft.points.length - 1];
        if (!last || screenDistance(last, point) >= NEAR) this.draft.points.push(point);
        this.draft.cursor = point;
      } else {
        this.svg.setPointerCapture(event.pointerId);
        this.draft = { kind, color, points: [point], cursor: point };
      }
      this.showDraft();
    });
    on(this.svg, 'pointermove', (event) => {
      if (!this.draft) return;
      const point = this.toImage(event);
      const points = this.draft.points;
      if (kind === 'freehand' && screenDistance(points[points.length - 1], point) >= NEAR) points.push(point);
      this.draft.cursor = point;
      this.showDraft();
    });
    on(this.svg, 'pointerup', (event) => {
      if (!this.draft || kind === 'polygon') return;
      const points = this.draft.points;
      const end = this.toImage(event);
      if (kind === 'freehand') {
        if (screenDistance(points[points.length - 1], end) >= NEAR) points.push(end);
        if (points.length >= 3) finish(points); else this.cancelDraft();
      } else if (screenDistance(points[0], end) < NEAR) {
        this.cancelDraft();  // a click, not a drag
      } else {
        finish(kind === 'rectangle' ? rectangle(points[0], end) : [points[0], end]);
      }
    });
    const closePolygon = () => {
      if (!this.draft || kind !== 'polygon') return;
      if (this.draft.points.length >= 3) finish(this.draft.points); else this.cancelDraft();
    };
    on(this.svg, 'dblclick', (event) => {
      event.preventDefault();
      closePolygon();
    });
    on(document, 'keydown', (event) => {
      if (event.key === 'Enter' && !event.target.closest('input, textarea, select, button')) closePolygon();
    });
    on(this.svg, 'wheel', (event) => {
      event.preventDefault();
      const box = this.svg.getBoundingClientRect();
      const at = this.viewer.osd.viewport.pointFromPixel(
        new OpenSeadragon.Point(event.clientX - box.left, event.clientY - box.top), true);
      this.viewer.osd.viewport.zoomBy(event.deltaY < 0 ? 1.2 : 1 / 1.2, at);
      this.viewer.osd.viewport.applyConstraints();
    }, { passive: false });
  }

  cancelDraft() {
    this.draft = null;
    this.showDraft();
  }

  // Ends any capture: the layer gives the mouse back to OpenSeadragon.
  cancel() {
    for (const remove of this.listeners) remove();
    this.listeners = [];
    this.svg.classList.remove('capturing');
    this.cancelDraft();
  }

  destroy() {
    this.cancel();
    for (const event of ['update-viewport', 'resize', 'rotate', 'open']) this.viewer.osd.removeHandler(event, this.redraw);
    this.svg.remove();
  }
}
