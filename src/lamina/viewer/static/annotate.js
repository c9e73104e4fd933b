// The slide's annotations: points, lines, rectangles, polygons and free hand outlines drawn with
// the mouse, each with a label and a colour, saved together to the server (api/annotations, with
// the person's token) as one annotation of their own; every annotation the person may read listed
// and drawn (their author's, and the ANN, SR and SEG objects other tools stored: read-only), their
// own deleted; an annotation exported as GeoJSON (QuPath's) and a GeoJSON file imported.
// Geometry is in level-0 image pixels (x right, y down), as the server keeps it.

import { h } from './dom.js';
import { authFetch } from './signin.js';
import { measurementOf, measurementText } from './measure.js';

const API = 'api/annotations';
export const KINDS = [
  ['point', 'Point', 'A point: click'],
  ['line', 'Line', 'A line: drag'],
  ['rectangle', 'Rectangle', 'A rectangle: drag from corner to corner'],
  ['polygon', 'Polygon', 'A polygon: click each corner, double click or Enter to close'],
  ['freehand', 'Free hand', 'A free hand outline: drag along it'],
];
const DEFAULT_COLOR = '#00a0ff';
const round = (value) => Math.round(value * 100) / 100;

// A drawn shape as a GeoJSON feature (level-0 pixels, rounded to a hundredth), cut at the edges of
// the image of `size` [width, height] (the server refuses points outside it).
export function toFeature({ kind, points, label, color }, mpp, size) {
  const inside = (value, limit) => Math.min(Math.max(value, 0), limit);
  const coordinates = points.map(([x, y]) => [round(inside(x, size[0])), round(inside(y, size[1]))]);
  const geometry = kind === 'point' ? { type: 'Point', coordinates: coordinates[0] }
    : kind === 'line' ? { type: 'LineString', coordinates }
      : { type: 'Polygon', coordinates: [[...coordinates, coordinates[0]]] };
  const properties = { label, color, kind };
  const measurement = measurementOf(kind, coordinates, mpp);
  if (measurement) properties.measurement = measurement;
  return { type: 'Feature', geometry, properties };
}

// The shapes of a feature the overlay draws ([] for a geometry it does not know).
export function toShapes(feature) {
  const geometry = feature.geometry || {};
  const properties = feature.properties || {};
  const base = { label: properties.label || properties.name || '', color: properties.color || '#ffd400' };
  const ring = (points) => {
    const last = points.length - 1;
    const closed = last > 0 && points[0][0] === points[last][0] && points[0][1] === points[last][1];
    return closed ? points.slice(0, last) : points;
  };
  const polygonKind = ['rectangle', 'freehand', 'polygon'].includes(properties.kind) ? properties.kind : 'polygon';
  switch (geometry.type) {
    case 'Point': return [{ ...base, kind: 'point', points: [geometry.coordinates] }];
    case 'MultiPoint': return geometry.coordinates.map((point) => ({ ...base, kind: 'point', points: [point] }));
    case 'LineString': return [{ ...base, kind: 'line', points: geometry.coordinates }];
    case 'Polygon': return [{ ...base, kind: polygonKind, points: ring(geometry.coordinates[0]) }];
    case 'MultiPolygon': return geometry.coordinates.map((rings) => ({ ...base, kind: 'polygon', points: ring(rings[0]) }));
    default: return [];
  }
}

// The one line a refused request says (a problem's detail or title), or its status.
async function refusal(response) {
  try {
    const problem = await response.json();
    return problem.detail || problem.title || `${response.status}`;
  } catch {
    return `the server answered ${response.status}`;
  }
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// The annotation panel of a slide; choose(tool) is tools.js's (one tool at a time). Returns
// { element, start(kind), destroy() }.
export function annotationPanel(viewer, overlay, { study, series, choose }) {
  const mpp = viewer.slide.mpp || null;
  const drafts = [];
  let listed = [];
  const controller = new AbortController();
  const label = h('input', { type: 'text', id: 'annotation-label', maxlength: 200, placeholder: 'Label',
    'aria-label': 'Label of the next shapes' });
  const color = h('input', { type: 'color', id: 'annotation-color', value: DEFAULT_COLOR, 'aria-label': 'Colour of the next shapes' });
  const status = h('p', { class: 'annotation-status', role: 'status' });
  const draftLine = h('span', { class: 'annotation-drafts' });
  const save = h('button', { type: 'button', id: 'annotation-save', class: 'primary', disabled: true, onclick: () => saveDrafts() },
    'Save');
  const discard = h('button', { type: 'button', id: 'annotation-discard', disabled: true, onclick: () => {
    drafts.length = 0;
    showDrafts();
  } }, 'Discard');
  const list = h('ul', { class: 'annotation-list' });
  const importer = h('input', { type: 'file', id: 'annotation-import', accept: '.geojson,.json,application/geo+json,application/json',
    'aria-label': 'Import a GeoJSON file' });
  importer.addEventListener('change', () => importFile(importer.files[0]));

  const element = h('section', { class: 'annotations' },
    h('h3', {}, 'Annotations'),
    h('div', { class: 'annotation-kinds', role: 'group', 'aria-label': 'Draw' },
      KINDS.map(([kind, text, title]) => h('button', {
        type: 'button', title, dataset: { tool: kind }, 'aria-pressed': 'false', onclick: () => choose(kind),
      }, text))),
    h('div', { class: 'annotation-style' }, label, color),
    h('div', { class: 'annotation-save' }, draftLine, save, discard),
    status,
    list,
    h('label', { class: 'annotation-import' }, 'Import GeoJSON ', importer));

  const say = (text, kind = 'info') => {
    status.textContent = text;
    status.dataset.kind = kind;
  };

  function showDrafts() {
    overlay.setLayer('drafts', drafts.map((draft) => ({ ...draft, dashed: true, text: measurementText(draft.kind, draft.points, mpp) })));
    draftLine.textContent = drafts.length ? `${drafts.length} unsaved shape${drafts.length > 1 ? 's' : ''}` : '';
    save.disabled = discard.disabled = !drafts.length;
  }

  function start(kind) {
    const describe = (points) => measurementText(kind, points, mpp);
    const again = () => overlay.capture(kind, color.value, (points) => {
      drafts.push({ kind, points, label: label.value.trim(), color: color.value });
      showDrafts();
      again();
    }, describe);
    again();
  }

  async function request(url, options = {}) {
    const response = await authFetch(url, { signal: controller.signal, ...options });
    if (!response.ok) throw new Error(await refusal(response));
    return response;
  }

  async function load() {
    const query = new URLSearchParams({ study, series });
    const answer = await (await request(`${API}?${query}`)).json();
    listed = answer.annotations || [];
    overlay.setLayer('annotations', listed.flatMap((annotation) => ((annotation.features || {}).features || [])
      .flatMap(toShapes)
      .map((shape) => ({ ...shape, text: measurementText(shape.kind, shape.points, mpp) }))));
    list.replaceChildren(...listed.map(item));
  }

  function item(annotation) {
    const features = (annotation.features || {}).features || [];
    const labels = [...new Set(features.map((feature) => (feature.properties || {}).label).filter(Boolean))];
    const colors = [...new Set(features.map((feature) => (feature.properties || {}).color).filter(Boolean))];
    const when = annotation.created ? new Date(annotation.created).toLocaleString() : '';
    return h('li', { class: 'annotation', dataset: { id: annotation.id, mine: String(Boolean(annotation.mine)) } },
      h('div', { class: 'annotation-head' },
        colors.map((value) => h('span', { class: 'swatch', style: `background:${/^#[0-9a-f]{6}$/i.test(value) ? value : '#999'}` })),
        h('span', { class: 'annotation-labels' }, labels.join(', ') || 'no label'),
        annotation.source && annotation.source !== 'ANN' ? h('span', { class: 'badge' }, annotation.source) : null),
      h('div', { class: 'muted small' },
        `${features.length} shape${features.length === 1 ? '' : 's'} · ${annotation.mine ? 'yours' : annotation.author || 'another tool'}`
        + `${when ? ` · ${when}` : ''}`),
      h('div', { class: 'annotation-actions' },
        h('button', { type: 'button', class: 'annotation-export', onclick: () => exportAnnotation(annotation) }, 'GeoJSON'),
        annotation.mine
          ? h('button', { type: 'button', class: 'annotation-delete', onclick: () => remove(annotation) }, 'Delete')
          : null));
  }

  const failed = (error) => {
    if (error.name === 'AbortError' || error.name === 'SignInRequired') return;
    say(`Annotations: ${error.message}`, 'error');
  };

  async function saveDrafts() {
    if (!drafts.length) return;
    save.disabled = true;
    try {
      const size = [viewer.slide.levels[0].width, viewer.slide.levels[0].height];
      const features = { type: 'FeatureCollection', features: drafts.map((draft) => toFeature(draft, mpp, size)) };
      await request(API, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ study, series, features }),
      });
      drafts.length = 0;
      showDrafts();
      await load();
      say('Saved.');
    } catch (error) {
      save.disabled = false;
      failed(error);
    }
  }

  async function remove(annotation) {
    try {
      await request(`${API}/${encodeURIComponent(annotation.id)}`, { method: 'DELETE' });
      await load();
      say('Deleted.');
    } catch (error) {
      failed(error);
    }
  }

  async function exportAnnotation(annotation) {
    try {
      const response = await request(`${API}/${encodeURIComponent(annotation.id)}/geojson`);
      download(await response.blob(), `annotation-${annotation.id}.geojson`);
    } catch (error) {
      failed(error);
    }
  }

  async function importFile(file) {
    if (!file) return;
    try {
      const query = new URLSearchParams({ study, series });
      await request(`${API}/geojson?${query}`, {
        method: 'POST', headers: { 'Content-Type': 'application/geo+json' }, body: await file.text(),
      });
      await load();
      say(`Imported ${file.name}.`);
    } catch (error) {
      failed(error);
    } finally {
      importer.value = '';
    }
  }

  load().catch(failed);
  return {
    element,
    start,
    destroy: () => {
      controller.abort();
      element.remove();
    },
  };
}
