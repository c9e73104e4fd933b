// DICOMweb for the viewer: QIDO-RS searches, WADO-RS metadata, URLs of rendered images,
// and reading DICOM JSON (PS3.18 Annex F) attributes by keyword. Every request sends the
// signed-in person's token (signin.js); images too, fetched and shown from blob: URLs, since an
// <img src> cannot send it.

import { h } from './dom.js';
import { authFetch } from './signin.js';

const ROOT = (document.body.dataset.dicomweb || 'dicomweb').replace(/\/$/, '');

// The tags the viewer reads, by DICOM keyword.
const TAGS = {
  SOPInstanceUID: '00080018',
  ImageType: '00080008',
  InstanceAvailability: '00080056',
  StudyDate: '00080020',
  AccessionNumber: '00080050',
  Modality: '00080060',
  ModalitiesInStudy: '00080061',
  Manufacturer: '00080070',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  ManufacturerModelName: '00081090',
  PatientName: '00100010',
  PatientID: '00100020',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  PixelSpacing: '00280030',
  PixelMeasuresSequence: '00289110',
  TotalPixelMatrixColumns: '00480006',
  TotalPixelMatrixRows: '00480007',
  ObjectiveLensPower: '00480112',
  OpticalPathSequence: '00480105',
  ContainerIdentifier: '00400512',
  SpecimenDescriptionSequence: '00400560',
  SpecimenIdentifier: '00400551',
  SpecimenShortDescription: '00400600',
  PrimaryAnatomicStructureSequence: '00082228',
  SpecimenPreparationSequence: '00400610',
  SpecimenPreparationStepContentItemSequence: '00400612',
  ConceptNameCodeSequence: '0040A043',
  ConceptCodeSequence: '0040A168',
  CodeValue: '00080100',
  CodeMeaning: '00080104',
  SharedFunctionalGroupsSequence: '52009229',
};

// The values of an attribute (always an array; empty when absent).
export function values(item, keyword) {
  const element = item && item[TAGS[keyword] || keyword];
  return (element && element.Value) || [];
}

// The first value of an attribute, a person name as "FAMILY^GIVEN" text, or fallback.
export function value(item, keyword, fallback = '') {
  const first = values(item, keyword)[0];
  if (first === undefined || first === null) return fallback;
  if (typeof first === 'object' && 'Alphabetic' in first) return first.Alphabetic || fallback;
  return first;
}

// "DUPONT^MARIE" -> "DUPONT Marie"; "20261128" -> "2026-11-28".
export function personName(text) {
  if (!text) return '';
  const [family, given] = text.split('^');
  const nice = (given || '').toLowerCase().replace(/(^|[\s-])\p{L}/gu, (c) => c.toUpperCase());
  return [family, nice].filter(Boolean).join(' ');
}

export function dicomDate(text) {
  return /^\d{8}$/.test(text || '') ? `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6)}` : text || '';
}

export class DicomwebError extends Error {
  constructor(status, detail, url) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.url = url;
  }
}

// Seconds to wait from a Retry-After header (seconds, or an HTTP date); null when absent.
function retryAfterSeconds(text) {
  if (!text) return null;
  if (/^\d+$/.test(text.trim())) return Number(text.trim());
  const when = Date.parse(text);
  return Number.isNaN(when) ? null : Math.max(1, Math.ceil((when - Date.now()) / 1000));
}

function pause(seconds, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new DOMException('aborted', 'AbortError'));
    }, { once: true });
  });
}

// authFetch that waits out "202 Accepted" with Retry-After (a slide on the cold tier while it is
// restored): `onWaiting(seconds, detail)` is told, then the request is sent again after the delay,
// until another answer comes (or `options.signal` aborts).
export async function readyFetch(url, options = {}, onWaiting = () => {}) {
  for (;;) {
    const response = await authFetch(url, options);
    if (response.status !== 202) return response;
    const seconds = Math.min(600, retryAfterSeconds(response.headers.get('Retry-After')) ?? 5);
    let detail = '';
    try {
      detail = (await response.json()).detail || '';
    } catch {
      detail = '';
    }
    onWaiting(seconds, detail);
    await pause(seconds, options.signal);
  }
}

// Whether a QIDO-RS series (or study) is an expired slide's: InstanceAvailability UNAVAILABLE
// (its pyramid deleted after its care retention; its thumbnail and record kept); NEARLINE: on the
// cold tier, restored when opened.
export function availability(item) {
  return value(item, 'InstanceAvailability', 'ONLINE');
}

async function getJson(url, signal, onWaiting) {
  const response = await readyFetch(url, { headers: { Accept: 'application/dicom+json' }, signal }, onWaiting);
  if (response.status === 204) return [];
  if (!response.ok) {
    let detail = '';
    try {
      detail = (await response.json()).detail;
    } catch {
      detail = response.statusText;
    }
    throw new DicomwebError(response.status, detail, url);
  }
  return response.json();
}

// QIDO-RS: studies matching the search keys (empty ones are left out).
export function searchStudies(keys, { limit = 50, offset = 0, signal } = {}) {
  const query = new URLSearchParams({ includefield: 'all', limit: String(limit), offset: String(offset) });
  for (const [key, text] of Object.entries(keys)) {
    if (text) query.set(key, text);
  }
  return getJson(`${ROOT}/studies?${query}`, signal);
}

// QIDO-RS: the series (slides) of one study.
export function searchSeries(study, signal) {
  return getJson(`${ROOT}/studies/${study}/series?includefield=all`, signal);
}

// WADO-RS: the metadata of every instance of a series (the slide's opening): a 410 of an expired
// slide is a DicomwebError with its one-line explanation; a 202 is waited out (`onWaiting`).
export function seriesMetadata(study, series, signal, onWaiting) {
  return getJson(`${ROOT}/studies/${study}/series/${series}/metadata`, signal, onWaiting);
}

export function seriesUrl(study, series) {
  return `${ROOT}/studies/${study}/series/${series}`;
}

export function instanceUrl(study, series, sop) {
  return `${seriesUrl(study, series)}/instances/${sop}`;
}

// A thumbnail `side` CSS pixels wide at most, sharp on high-density screens too.
export function seriesThumbnailUrl(study, series, side = 128) {
  const pixels = side * Math.min(2, Math.ceil(window.devicePixelRatio || 1));
  return `${seriesUrl(study, series)}/thumbnail?viewport=${pixels},${pixels}`;
}

async function showImage(img, url) {
  try {
    const response = await readyFetch(url, {}, () => img.classList.add('restoring'));
    img.classList.remove('restoring');
    if (!response.ok) throw new DicomwebError(response.status, response.statusText, url);
    const shown = URL.createObjectURL(await response.blob());
    const done = () => URL.revokeObjectURL(shown);
    img.addEventListener('load', done, { once: true });
    img.addEventListener('error', done, { once: true });
    img.src = shown;
  } catch (error) {
    img.classList.add('broken');
    img.title = error.name === 'SignInRequired' ? '' : `not available (${error.message})`;
  }
}

// An <img> of a rendered resource or thumbnail at `url`, fetched with the token; `lazy`: only
// once it comes near the screen.
export function archiveImage(url, { lazy = false, ...attributes } = {}) {
  const img = h('img', attributes);
  if (!lazy || !('IntersectionObserver' in window)) {
    showImage(img, url);
    return img;
  }
  const observer = new IntersectionObserver((entries) => {
    if (!entries.some((entry) => entry.isIntersecting)) return;
    observer.disconnect();
    showImage(img, url);
  }, { rootMargin: '200px' });
  observer.observe(img);
  return img;
}

// What the metadata says about the specimen: stain, organ, short description.
export function specimen(item) {
  const description = values(item, 'SpecimenDescriptionSequence')[0] || {};
  const organ = value(values(description, 'PrimaryAnatomicStructureSequence')[0], 'CodeMeaning');
  const substances = [];
  for (const step of values(description, 'SpecimenPreparationSequence')) {
    for (const content of values(step, 'SpecimenPreparationStepContentItemSequence')) {
      const name = value(values(content, 'ConceptNameCodeSequence')[0], 'CodeValue');
      if (name === '424361007') {  // SCT "Using substance"
        substances.push(value(values(content, 'ConceptCodeSequence')[0], 'CodeMeaning'));
      }
    }
  }
  return {
    identifier: value(description, 'SpecimenIdentifier'),
    description: value(description, 'SpecimenShortDescription'),
    organ,
    stain: substances.join(' + '),
  };
}

// What a person calls a slide in a QIDO-RS series answer or metadata: the specimen's identifier
// (as on the label), else the slide's barcode; and its short description (organ, stain).
export function slideTitle(item) {
  const about = specimen(item);
  const name = about.identifier || value(item, 'ContainerIdentifier') || value(item, 'SeriesDescription')
    || `Slide ${value(item, 'SeriesNumber', '')}`.trim();
  return { name, description: about.description || [about.organ, about.stain].filter(Boolean).join(' ') };
}

// One image of a slide from its instance metadata: a pyramid level, label, overview or thumbnail.
export function slideImage(item, study, series) {
  const sop = value(item, 'SOPInstanceUID');
  const shared = values(item, 'SharedFunctionalGroupsSequence')[0];
  const measures = values(shared, 'PixelMeasuresSequence')[0];
  const spacing = values(measures, 'PixelSpacing').map(Number);  // mm: [between rows, between columns]
  return {
    sop,
    flavor: values(item, 'ImageType')[2] || '',
    width: Number(value(item, 'TotalPixelMatrixColumns', value(item, 'Columns', 0))),
    height: Number(value(item, 'TotalPixelMatrixRows', value(item, 'Rows', 0))),
    tileWidth: Number(value(item, 'Columns', 0)),
    tileHeight: Number(value(item, 'Rows', 0)),
    frames: Number(value(item, 'NumberOfFrames', 1)),
    // micrometres per pixel, across then down
    mpp: spacing.length === 2 ? [spacing[1] * 1000, spacing[0] * 1000] : null,
    url: instanceUrl(study, series, sop),
  };
}

// A slide from its series metadata: pyramid levels (largest first), associated images, facts.
export function readSlide(metadata, study, series) {
  const images = metadata.map((item) => slideImage(item, study, series));
  const seen = new Set();
  const levels = images
    .filter((image) => image.flavor === 'VOLUME' && image.tileWidth > 0 && image.tileHeight > 0)
    .sort((a, b) => b.width - a.width)
    .filter((image) => {
      // one level per size: a second focal plane or optical path is not another level
      const key = `${image.width}x${image.height}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  const first = metadata[0] || {};
  return {
    study,
    series,
    levels,
    label: images.find((image) => image.flavor === 'LABEL') || null,
    overview: images.find((image) => image.flavor === 'OVERVIEW') || null,
    mpp: levels.length && levels[0].mpp ? levels[0].mpp : null,
    container: value(first, 'ContainerIdentifier'),
    patientName: value(first, 'PatientName'),
    patientId: value(first, 'PatientID'),
    birthDate: value(first, 'PatientBirthDate'),
    sex: value(first, 'PatientSex'),
    accession: value(first, 'AccessionNumber'),
    studyDate: value(first, 'StudyDate'),
    manufacturer: [value(first, 'Manufacturer'), value(first, 'ManufacturerModelName')]
      .filter((text) => text && text.toLowerCase() !== 'unknown').join(' '),
    objective: values(values(first, 'OpticalPathSequence')[0], 'ObjectiveLensPower')[0] || null,
    specimen: specimen(first),
  };
}
