// Compare and report: beside the open slide, the other slides of its block and the patient's prior
// slides (GET api/slides/related: only the slides the signed-in person may see, the server
// decides), each one click away, ticked to show two to four side by side (#/compare/...); and the
// case's diagnostic report (the CR-ACP) as a link, where the LIS gave its URL.

import { h } from './dom.js';
import { archiveImage, readyFetch, seriesThumbnailUrl } from './dicomweb.js';

const API = (document.body.dataset.api || 'api').replace(/\/$/, '');
// the slides side by side: the open one and up to three more
export const MAX_PANES = 4;

// #/compare/STUDY/SERIES/STUDY/SERIES[/...]: two to four slides, pan and zoom linked.
export function compareHref(slides) {
  return `#/compare/${slides.flatMap((slide) => [slide.study, slide.series]).map(encodeURIComponent).join('/')}`;
}

// The [study, series] pairs of a #/compare/ address's parts (after "compare"), or null.
export function comparePairs(parts) {
  if (parts.length % 2 || parts.length < 4 || parts.length > 2 * MAX_PANES) return null;
  const pairs = [];
  for (let index = 0; index < parts.length; index += 2) pairs.push([parts[index], parts[index + 1]]);
  return pairs;
}

// The report's URL when a browser may open it as a link (http or https), else null: the server
// refuses others, and the page checks again (never a javascript: link).
export function reportUrl(report) {
  if (!report || typeof report.url !== 'string') return null;
  try {
    const url = new URL(report.url);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

// The "Report" link of a case (opens in a new tab, with no access to this page), or null.
export function reportLink(report) {
  const href = reportUrl(report);
  if (!href) return null;
  const about = [report.title, report.content_type, report.issued_at && `validated ${report.issued_at.slice(0, 10)}`]
    .filter(Boolean).join(' · ');
  return h('a', {
    class: 'button report-link', href, target: '_blank', rel: 'noopener noreferrer',
    title: about || 'The diagnostic report, from the LIS',
  }, 'Report');
}

// The related answer for a slide; null when the server has no such route (an older lamina).
export async function fetchRelated(study, series, signal) {
  const query = new URLSearchParams({ study, series });
  const response = await readyFetch(`${API}/slides/related?${query}`, { headers: { Accept: 'application/json' }, signal });
  if (response.status === 404 || response.status === 405) return null;
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

function relatedItem(item, slideHref, onTick) {
  const name = item.label || 'slide';
  const about = [item.date, item.accession && `Case ${item.accession}`, item.description].filter(Boolean).join(' · ');
  const tick = h('input', {
    type: 'checkbox', class: 'compare-tick', 'aria-label': `Compare with ${name}`, title: 'Side by side',
    dataset: { study: item.study, series: item.series },
  });
  tick.addEventListener('change', onTick);
  return h('li', { class: item.expired ? 'expired' : null, dataset: { series: item.series } },
    tick,
    h('a', { href: slideHref(item.study, item.series), class: 'thumb', title: `Open ${name}` },
      archiveImage(seriesThumbnailUrl(item.study, item.series, 96), { alt: name, lazy: true }),
      h('span', { class: 'thumb-text' },
        h('span', { class: 'thumb-name' }, name),
        about ? h('span', { class: 'thumb-name muted' }, about) : null)));
}

// The side panel's "Compare" section for the open `slide` ({study, series}); `slideHref` makes a
// slide's address (worklist.js). Filled when the server answers; empty when it cannot.
export function relatedPanel(slide, slideHref, signal) {
  const report = h('p', { class: 'report' });
  const lists = h('div', { class: 'related-lists' }, h('span', { class: 'muted' }, 'Looking for related slides…'));
  const compare = h('button', { type: 'button', id: 'compare-ticked', disabled: true }, 'Side by side');
  const section = h('section', { class: 'related', 'aria-label': 'Compare and report' },
    h('h3', {}, 'Compare'), report, lists, compare);
  const ticks = () => [...lists.querySelectorAll('input.compare-tick')];
  const onTick = () => {
    const ticked = ticks().filter((tick) => tick.checked);
    // the open slide and up to three more
    for (const tick of ticks()) tick.disabled = !tick.checked && ticked.length >= MAX_PANES - 1;
    compare.disabled = !ticked.length;
    compare.textContent = ticked.length ? `Side by side (${ticked.length + 1})` : 'Side by side';
  };
  compare.addEventListener('click', () => {
    const ticked = ticks().filter((tick) => tick.checked).map((tick) => ({ ...tick.dataset }));
    if (ticked.length) location.hash = compareHref([slide, ...ticked]);
  });
  fetchRelated(slide.study, slide.series, signal).then((found) => {
    if (!found) { section.hidden = true; return; }
    const link = reportLink(found.report);
    report.replaceChildren(link || h('span', { class: 'muted' }, 'No report link from the LIS'));
    const list = (title, items, more, empty) => [
      h('h4', {}, title),
      items.length
        ? h('ul', { class: 'case-slides related-list' }, items.map((item) => relatedItem(item, slideHref, onTick)))
        : h('span', { class: 'muted' }, empty),
      more ? h('span', { class: 'muted small' }, 'more in the worklist') : null,
    ];
    lists.replaceChildren(
      h('div', { dataset: { list: 'same_block' } },
        list(found.block_by === 'case' ? 'Same case' : 'Same block', found.same_block, found.more.same_block,
          'no other slide of this block')),
      h('div', { dataset: { list: 'priors' } },
        list('Prior slides', found.priors, found.more.priors, 'no prior slide of this patient')));
  }).catch((error) => {
    if (error.name === 'AbortError' || error.name === 'SignInRequired') return;
    lists.replaceChildren(h('span', { class: 'muted' }, `related slides unavailable (${error.message})`));
  });
  return section;
}

// Keeps the centre of `viewer`'s view in micrometres from the slide's corner on its element
// (data-centre="x,y"): what a pane shows, readable by a script or a test without the viewer object.
export function showCentre(viewer) {
  const mark = () => {
    const centre = viewer.centerMicrons();
    viewer.element.dataset.centre = `${centre.x.toFixed(2)},${centre.y.toFixed(2)}`;
  };
  viewer.osd.addHandler('open', mark);
  viewer.osd.addHandler('viewport-change', mark);
  viewer.osd.addHandler('animation-finish', mark);
}
