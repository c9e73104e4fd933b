// Measurements on the slide, calibrated from its pixel spacing (µm per level-0 pixel, across and
// down): the ruler's length in µm or mm, an outline's area in mm². Points are level-0 image pixels,
// so a measure does not depend on the zoom or rotation it was drawn at.

const RULER_COLOR = '#ffd400';

// Micrometres along the path of `points`; image pixels when `mpp` is null.
export function lengthMicrons(points, mpp) {
  const [across, down] = mpp || [1, 1];
  let total = 0;
  for (let i = 1; i < points.length; i += 1) {
    total += Math.hypot((points[i][0] - points[i - 1][0]) * across, (points[i][1] - points[i - 1][1]) * down);
  }
  return total;
}

// Square micrometres inside the closed outline of `points` (shoelace); square pixels without `mpp`.
export function areaMicrons2(points, mpp) {
  const [across, down] = mpp || [1, 1];
  let twice = 0;
  for (let i = 0; i < points.length; i += 1) {
    const [x1, y1] = points[i];
    const [x2, y2] = points[(i + 1) % points.length];
    twice += x1 * y2 - x2 * y1;
  }
  return (Math.abs(twice) / 2) * across * down;
}

export function formatLength(microns, mpp) {
  if (!mpp) return `${microns.toFixed(0)} px`;
  return microns >= 1000 ? `${(microns / 1000).toFixed(3)} mm` : `${microns.toFixed(1)} µm`;
}

export function formatArea(microns2, mpp) {
  if (!mpp) return `${microns2.toFixed(0)} px²`;
  const mm2 = microns2 / 1e6;
  return `${mm2 >= 1 ? mm2.toFixed(3) : mm2.toPrecision(4)} mm²`;
}

// The measurement an annotation's shape carries (GeoJSON properties.measurement), or null.
export function measurementOf(kind, points, mpp) {
  if (!mpp) return null;
  if (kind === 'line') return { length_mm: lengthMicrons(points, mpp) / 1000 };
  if (kind === 'rectangle' || kind === 'polygon' || kind === 'freehand') return { area_mm2: areaMicrons2(points, mpp) / 1e6 };
  return null;
}

// The text that says a shape's measurement (its length or area), or ''.
export function measurementText(kind, points, mpp) {
  if (kind === 'line') return formatLength(lengthMicrons(points, mpp), mpp);
  if (kind === 'rectangle' || kind === 'polygon' || kind === 'freehand') {
    return points.length >= 3 ? formatArea(areaMicrons2(points, mpp), mpp) : '';
  }
  return '';
}

// The ruler and area tools: each measure stays on the slide until cleared; the last one is also
// said in `readout` (with data-microns or data-square-microns, its value unrounded).
export class Measures {
  constructor(viewer, overlay, readout) {
    this.mpp = viewer.slide.mpp || null;
    this.overlay = overlay;
    this.readout = readout;
    this.shapes = [];
  }

  // Starts the ruler ('ruler') or the area tool ('area') until another tool is chosen.
  start(tool) {
    const kind = tool === 'ruler' ? 'line' : 'polygon';
    const describe = (points) => measurementText(kind, points, this.mpp);
    const again = () => this.overlay.capture(kind, RULER_COLOR, (points) => {
      this.add(tool, kind, points);
      again();
    }, describe);
    again();
  }

  add(tool, kind, points) {
    const text = measurementText(kind, points, this.mpp);
    this.shapes.push({ kind, points, color: RULER_COLOR, text });
    this.overlay.setLayer('measures', this.shapes);
    this.readout.textContent = `${tool === 'ruler' ? 'Length' : 'Area'}: ${text}`;
    delete this.readout.dataset.microns;
    delete this.readout.dataset.squareMicrons;
    if (tool === 'ruler') this.readout.dataset.microns = String(lengthMicrons(points, this.mpp));
    else this.readout.dataset.squareMicrons = String(areaMicrons2(points, this.mpp));
  }

  clear() {
    this.shapes = [];
    this.overlay.setLayer('measures', this.shapes);
    this.readout.textContent = '';
  }
}
