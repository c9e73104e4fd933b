// The worklist: cases (DICOM studies) found by QIDO-RS, each with its slides' thumbnails.

import { h, message } from './dom.js';
import {
  DicomwebError, archiveImage, availability, dicomDate, personName, searchSeries, searchStudies, seriesThumbnailUrl,
  slideTitle, value,
} from './dicomweb.js';

const PAGE = 50;

// The search form's fields: [name in the form and in the page's address, label, hint].
const FIELDS = [
  ['AccessionNumber', 'Accession number', 'S26-00123'],
  ['PatientID', 'Patient ID', ''],
  ['PatientName', 'Patient name', 'DUPONT'],
  ['ContainerIdentifier', 'Slide barcode', ''],
  ['from', 'Date from', ''],
  ['to', 'Date to', ''],
  ['stain', 'Stain', 'HE'],
  ['organ', 'Organ', 'Colon'],
];

// The QIDO-RS search keys for what the form holds.
export function qidoKeys(params) {
  const keys = {};
  for (const name of ['AccessionNumber', 'PatientID', 'ContainerIdentifier', 'stain', 'organ']) {
    const text = (params.get(name) || '').trim();
    if (text) keys[name] = text;
  }
  const patientName = (params.get('PatientName') || '').trim().toUpperCase();
  // names are searched by their beginning unless the user wrote a wildcard
  if (patientName) keys.PatientName = /[*?]/.test(patientName) ? patientName : `${patientName}*`;
  const from = (params.get('from') || '').replaceAll('-', '');
  const to = (params.get('to') || '').replaceAll('-', '');
  if (from || to) keys.StudyDate = from === to ? from : `${from}-${to}`;
  return keys;
}

export function slideHref(study, series) {
  return `#/slide/${encodeURIComponent(study)}/${encodeURIComponent(series)}`;
}

// The badge of a slide that cannot be opened at once (InstanceAvailability), or null.
export function availabilityBadge(item) {
  const state = availability(item);
  if (state === 'UNAVAILABLE') {
    return h('span', { class: 'badge badge-expired', title: 'Expired after its care retention: only its thumbnail and record are kept' },
      'expired');
  }
  if (state === 'NEARLINE') {
    return h('span', { class: 'badge badge-cold', title: 'On the cold tier: opening it restores it first' }, 'cold');
  }
  return null;
}

function slideStrip(study, seriesList) {
  if (!seriesList.length) return h('span', { class: 'muted' }, 'no slide');
  return h('ul', { class: 'thumbs' }, seriesList.map((series) => {
    const uid = value(series, 'SeriesInstanceUID');
    const { name, description } = slideTitle(series);
    const state = availability(series);
    return h('li', { class: state === 'UNAVAILABLE' ? 'expired' : null, dataset: { availability: state } },
      h('a', { class: 'thumb', href: slideHref(study, uid), title: [name, description].filter(Boolean).join(' — ') },
        archiveImage(seriesThumbnailUrl(study, uid, 128), { lazy: true, alt: name, width: 128, height: 96 }),
        availabilityBadge(series),
        h('span', { class: 'thumb-name' }, name),
        description ? h('span', { class: 'thumb-name muted' }, description) : null));
  }));
}

function caseRow(study) {
  const uid = value(study, 'StudyInstanceUID');
  const slides = h('td', { class: 'slides' }, h('span', { class: 'muted' }, 'loading slides…'));
  const row = h('tr', { class: 'case', dataset: { study: uid } },
    h('td', {}, dicomDate(value(study, 'StudyDate'))),
    h('td', { class: 'accession' }, value(study, 'AccessionNumber')),
    h('td', {}, personName(value(study, 'PatientName'))),
    h('td', {}, value(study, 'PatientID')),
    h('td', { class: 'count' }, value(study, 'NumberOfStudyRelatedSeries')),
    slides);
  // the whole row opens the case's first slide; a thumbnail opens its own
  row.addEventListener('click', (event) => {
    if (event.target.closest('a')) return;
    const first = row.querySelector('a.thumb');
    if (first) location.hash = first.getAttribute('href');
  });
  searchSeries(uid)
    .then((seriesList) => {
      seriesList.sort((a, b) => Number(value(a, 'SeriesNumber', 0)) - Number(value(b, 'SeriesNumber', 0)));
      slides.replaceChildren(slideStrip(uid, seriesList));
    })
    .catch((error) => slides.replaceChildren(h('span', { class: 'muted' }, `slides unavailable (${error.message})`)));
  return row;
}

function explain(error) {
  if (error instanceof DicomwebError && (error.status === 404 || error.status === 405)) {
    return 'This server does not answer QIDO-RS searches (/dicomweb/studies): search is not available.';
  }
  if (error instanceof DicomwebError && error.status === 400) return `The search was refused: ${error.message}`;
  return `The search failed: ${error.message}. Check that the server is running, then search again.`;
}

// The worklist page for the search in `params` (URLSearchParams of the page's address).
export function worklistView(root, params) {
  const clear = () => {
    for (const input of form.querySelectorAll('input')) input.value = '';
    if (params.toString()) location.hash = '#/';
  };
  const form = h('form', { id: 'search', class: 'search', autocomplete: 'off' },
    FIELDS.map(([name, label, hint]) =>
      h('label', {}, h('span', {}, label),
        h('input', {
          name, type: name === 'from' || name === 'to' ? 'date' : 'search', placeholder: hint,
          value: params.get(name) || '',
        }))),
    h('div', { class: 'search-buttons' },
      h('button', { type: 'submit', class: 'primary' }, 'Search'),
      h('button', { type: 'button', onclick: clear }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name, text] of new FormData(form)) {
      if (String(text).trim()) query.set(name, String(text).trim());
    }
    const hash = `#/?${query}`;
    if (location.hash === hash) run(0); else location.hash = hash;
  });

  const status = h('div', { class: 'status' });
  const body = h('tbody');
  const table = h('table', { class: 'cases' },
    h('thead', {}, h('tr', {},
      ['Date', 'Accession', 'Patient', 'Patient ID', 'Slides', ''].map((title) => h('th', {}, title)))),
    body);
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'More cases');
  root.replaceChildren(h('section', { class: 'worklist' }, form, status, table, more));

  const controller = new AbortController();
  const keys = qidoKeys(params);
  let offset = 0;

  async function run(start) {
    offset = start;
    if (start === 0) body.replaceChildren();
    status.replaceChildren(message('Searching…'));
    try {
      const studies = await searchStudies(keys, { limit: PAGE, offset, signal: controller.signal });
      studies.sort((a, b) => String(value(b, 'StudyDate')).localeCompare(String(value(a, 'StudyDate'))));
      body.append(...studies.map(caseRow));
      const shown = body.children.length;
      status.replaceChildren(shown
        ? message(`${shown} case${shown > 1 ? 's' : ''}${studies.length === PAGE ? ' (more below)' : ''}`)
        : message(Object.keys(keys).length ? 'No case matches this search.' : 'The archive holds no case yet.'));
      more.hidden = studies.length < PAGE;
    } catch (error) {
      if (error.name === 'AbortError' || error.name === 'SignInRequired') return;
      status.replaceChildren(message(explain(error), 'error'));
    }
  }
  more.addEventListener('click', () => run(offset + PAGE));
  run(0);
  const first = form.querySelector('input');
  if (!params.toString()) first.focus();
  return () => controller.abort();
}
