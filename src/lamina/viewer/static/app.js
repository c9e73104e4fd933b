// lamina's viewer: the worklist, one slide in deep zoom, and two slides side by side.
// Pages are addressed by the hash, so the browser's back button and shared links work:
//   #/?AccessionNumber=...              the worklist and its search
//   #/slide/STUDY/SERIES                 one slide
//   #/compare/STUDY/SERIES/STUDY/SERIES  two slides (up to four: compare.js), pan and zoom linked
// Before any of them, the sign-in form (signin.js) when this tab holds no valid token, and
// whenever the server refuses it; once signed in, the page asked for is shown. Coming back from
// the OpenID provider (?code=&state=), the code is exchanged first.

import { h, message } from './dom.js';
import {
  DicomwebError, archiveImage, availability, dicomDate, personName, readSlide, searchSeries, seriesMetadata,
  seriesThumbnailUrl, slideTitle, value,
} from './dicomweb.js';
import {
  completeProviderSignIn, requireSignIn, resumeRenewal, session, signInView, signOutEverywhere, viewerConfig,
  whenSignInRequired, whenTokenChanges,
} from './signin.js';
import { readStack, resolveWindows, stackPanel } from './channels.js';
import { lifecyclePanel } from './lifecycle.js';
import {
  compareHref as compareList, comparePairs, fetchRelated, relatedPanel, reportLink, showCentre,
} from './compare.js';
import { MAGNIFICATIONS, SlideViewer, ViewerLink } from './slideview.js';
import { attachTools } from './tools.js';
import { availabilityBadge, slideHref, worklistView } from './worklist.js';

const root = document.getElementById('app');
const where = document.getElementById('where');
const account = document.getElementById('account');
let leave = () => {};

function compareHref(left, right) {
  return compareList([left, right]);
}

function slideName(slide) {
  return slide.specimen.identifier || slide.container || 'slide';
}

function slideDescription(slide) {
  return slide.specimen.description || [slide.specimen.organ, slide.specimen.stain].filter(Boolean).join(', ');
}

// A slide on the cold tier answers 202 while it is restored: say so, and ask again after the delay.
function restoring(seconds, detail) {
  root.replaceChildren(message(`Restoring the slide… ${detail ? `${detail} ` : ''}(trying again in ${seconds} s)`));
}

async function loadSlide(study, series, signal) {
  const metadata = await seriesMetadata(study, series, signal, restoring);
  const slide = readSlide(metadata, study, series);
  if (!slide.levels.length) throw new Error('this series has no tiled slide image (no VOLUME instance)');
  // focal planes and fluorescence channels (channels.js): each channel's window, read once
  slide.stack = readStack(metadata, slide.levels);
  if (slide.stack) await resolveWindows(slide.stack, slide.levels, signal);
  return slide;
}

// The other slides of the case, from QIDO-RS (the slide alone when the server has no QIDO-RS).
async function caseSlides(slide, signal) {
  try {
    // the slides: not the annotation (ANN), SR or SEG series other tools and the viewer store there
    const list = (await searchSeries(slide.study, signal)).filter((item) => ['SM', ''].includes(value(item, 'Modality')));
    list.sort((a, b) => Number(value(a, 'SeriesNumber', 0)) - Number(value(b, 'SeriesNumber', 0)));
    return list.map((item) => ({
      study: slide.study,
      series: value(item, 'SeriesInstanceUID'),
      badge: availabilityBadge(item),
      expired: availability(item) === 'UNAVAILABLE',
      ...slideTitle(item),
    }));
  } catch (error) {
    if (error.name === 'AbortError' || error.name === 'SignInRequired') throw error;
    return [{ study: slide.study, series: slide.series, name: slideName(slide), description: slideDescription(slide) }];
  }
}

function magnificationButtons(apply) {
  return h('div', { class: 'group', role: 'group', 'aria-label': 'Magnification' },
    h('button', { type: 'button', title: 'Whole slide (0)', dataset: { magnification: 'fit' }, onclick: () => apply('fit') },
      'Fit'),
    MAGNIFICATIONS.map((magnification, index) => h('button', {
      type: 'button', title: `${magnification}× objective (${index + 1})`,
      dataset: { magnification: String(magnification) }, onclick: () => apply(magnification),
    }, `${magnification}×`)));
}

// Keys 0 (fit) and 1 to 4 (5x to 40x) while a slide is shown, unless the user types in a field.
function magnificationKeys(apply) {
  const listener = (event) => {
    if (event.target.closest('input, textarea, select') || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === '0') apply('fit');
    const index = Number(event.key) - 1;
    if (index >= 0 && index < MAGNIFICATIONS.length) apply(MAGNIFICATIONS[index]);
  };
  document.addEventListener('keydown', listener);
  return () => document.removeEventListener('keydown', listener);
}

function magnify(viewer, magnification) {
  if (magnification === 'fit') viewer.home(); else viewer.goToMagnification(magnification);
}

// Marks the viewer's element once every tile needed for the view has been drawn.
function markLoaded(viewer) {
  viewer.osd.addHandler('open', () => {
    viewer.osd.world.getItemAt(0).addHandler('fully-loaded-change', (event) => {
      viewer.element.dataset.loaded = String(event.fullyLoaded);
    });
  });
}

function facts(slide) {
  const rows = [
    ['Slide', slide.container],
    ['Description', slide.specimen.description],
    ['Specimen', slide.specimen.identifier],
    ['Stain', slide.specimen.stain],
    ['Organ', slide.specimen.organ],
    ['Resolution', slide.mpp ? `${slide.mpp[0].toFixed(3)} µm/pixel` : 'unknown (no pixel spacing)'],
    ['Size', `${slide.levels[0].width} × ${slide.levels[0].height} pixels, ${slide.levels.length} levels`],
    ['Objective', slide.objective ? `${slide.objective}×` : ''],
    ['Scanner', slide.manufacturer],
  ].filter(([, text]) => text);
  return h('dl', { class: 'facts' }, rows.map(([name, text]) => [h('dt', {}, name), h('dd', {}, text)]));
}

// The full-size image over the page (a new tab could not send the token).
function showFullSize(title, url) {
  const close = () => dialog.remove();
  const dialog = h('dialog', { class: 'lightbox', 'aria-label': `${title}: full size` },
    h('div', { class: 'lightbox-bar' }, h('span', {}, title), h('button', { type: 'button', onclick: close }, 'Close')),
    archiveImage(url, { alt: `${title}, full size` }));
  dialog.addEventListener('close', close);
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
  document.body.append(dialog);
  dialog.showModal();
}

function associatedImage(title, image) {
  if (!image) return null;
  return h('figure', { class: 'associated' },
    h('button', {
      type: 'button', class: 'associated-open', title: `${title}: full size`,
      onclick: () => showFullSize(title, `${image.url}/rendered`),
    }, archiveImage(`${image.url}/rendered?viewport=280,280`, { alt: title, lazy: true })),
    h('figcaption', {}, title));
}

function caseHeader(slide) {
  const patient = [personName(slide.patientName), slide.patientId && `(${slide.patientId})`].filter(Boolean).join(' ');
  return h('div', { class: 'case-header' },
    h('div', { class: 'patient' }, patient || 'Unidentified patient'),
    h('div', { class: 'muted' },
      [slide.accession && `Case ${slide.accession}`, dicomDate(slide.studyDate), slide.sex, dicomDate(slide.birthDate)]
        .filter(Boolean).join(' · ')),
    slide.patientId
      ? h('a', { href: `#/?${new URLSearchParams({ PatientID: slide.patientId })}`, class: 'small' },
        'All cases of this patient')
      : null);
}

// An expired slide: the thumbnail its trace kept, and the server's one-line explanation.
function expiredView(study, series, explanation) {
  document.title = 'Expired slide — lamina';
  root.replaceChildren(h('section', { class: 'expired-slide' },
    message(explanation, 'warning'),
    archiveImage(seriesThumbnailUrl(study, series, 512), { alt: 'Thumbnail kept of the expired slide', class: 'trace' }),
    h('p', {}, h('a', { href: '#/' }, 'Back to the worklist'))));
  return () => {};
}

async function slideView(study, series, signal) {
  root.replaceChildren(message('Opening the slide…'));
  let slide;
  try {
    slide = await loadSlide(study, series, signal);
  } catch (error) {
    if (error instanceof DicomwebError && error.status === 410) return expiredView(study, series, error.message);
    throw error;
  }
  where.textContent = [slide.accession, slideName(slide)].filter(Boolean).join(' — ');
  document.title = `${slideName(slide)} — lamina`;

  const stage = h('div', { class: 'osd', id: 'viewer' });
  const slidesList = h('ul', { class: 'case-slides' });
  const compareMenu = h('div', { class: 'group compare-menu' });
  const stackHolder = h('div', { class: 'stack-holder' });
  const annotationsHolder = h('div', { class: 'annotations-holder' });
  const toolbar = h('div', { class: 'toolbar' }, magnificationButtons((m) => magnify(viewer, m)), compareMenu);
  root.replaceChildren(h('section', { class: 'slide-page' },
    h('aside', { class: 'side' },
      caseHeader(slide),
      h('h3', {}, 'Slides of this case'), slidesList,
      relatedPanel({ study, series }, slideHref, signal),
      stackHolder,
      annotationsHolder,
      h('h3', {}, 'Slide'), facts(slide),
      lifecyclePanel(series, signal),
      associatedImage('Label', slide.label),
      associatedImage('Overview', slide.overview)),
    h('div', { class: 'stage' }, toolbar, stage)));

  const viewer = new SlideViewer(stage, slide);
  markLoaded(viewer);
  if (slide.stack) stackHolder.append(stackPanel(slide.stack, () => viewer.showStack()));
  const keys = magnificationKeys((m) => magnify(viewer, m));
  const tools = attachTools(viewer, { toolbar, side: annotationsHolder, study, series });
  const renewed = followToken([viewer]);

  caseSlides(slide, signal).then((others) => {
    slidesList.replaceChildren(...others.map((other) => {
      const current = other.series === series;
      return h('li', { class: current ? 'current' : '' },
        h('a', { href: slideHref(other.study, other.series), class: 'thumb', 'aria-current': current ? 'page' : null },
          archiveImage(seriesThumbnailUrl(other.study, other.series, 96), { alt: other.name, lazy: true }),
          h('span', { class: 'thumb-text' },
            h('span', { class: 'thumb-name' }, other.name, other.badge ? ' ' : null, other.badge),
            other.description ? h('span', { class: 'thumb-name muted' }, other.description) : null)),
        current ? null : h('a', {
          href: compareHref(slide, other), class: 'compare-link', title: `Side by side with ${other.name}`,
        }, 'Side by side'));
    }));
    const partner = others.find((other) => other.series !== series) || { study, series };
    compareMenu.replaceChildren(h('a', { class: 'button', href: compareHref(slide, partner), id: 'compare' },
      'Side by side'));
  }).catch(() => {});

  return () => {
    keys();
    tools();
    renewed();
    viewer.destroy();
  };
}

// The tiles fetched from now on carry the renewed token (OpenSeadragon keeps its headers).
function followToken(viewers) {
  return whenTokenChanges((token) => viewers.forEach((viewer) => {
    viewer.osd.setAjaxHeaders({ Authorization: `Bearer ${token}` }, true);
  }));
}

async function compareView(slides, signal) {
  root.replaceChildren(message('Opening the slides…'));
  const loaded = await Promise.all(slides.map(([study, series]) => loadSlide(study, series, signal)));
  where.textContent = `Side by side: ${loaded.map(slideName).join(' | ')}`;
  document.title = `${loaded.map(slideName).join(' | ')} — lamina`;

  const linkBox = h('input', { type: 'checkbox', checked: true, id: 'link' });
  const panes = loaded.map((slide, index) => {
    const stage = h('div', { class: 'osd', id: `viewer-${index}` });
    const choose = h('select', { 'aria-label': 'Slide in this pane' },
      h('option', { value: slide.series, selected: true }, slideName(slide)));
    const pane = h('div', { class: 'pane' },
      h('header', {},
        h('a', { href: slideHref(slide.study, slide.series), title: 'Open this slide alone' }, '⤢'),
        choose,
        h('span', { class: 'muted' }, slideDescription(slide))),
      stage);
    // the case's report beside its slide, where the LIS gave its link (compare.js)
    fetchRelated(slide.study, slide.series, signal).then((found) => {
      const link = found && reportLink(found.report);
      if (link) pane.querySelector('header').append(link);
    }).catch(() => {});
    caseSlides(slide, signal).then((others) => {
      choose.replaceChildren(...others.map((other) =>
        h('option', { value: other.series, selected: other.series === slide.series }, other.name)));
    }).catch(() => {});
    choose.addEventListener('change', () => {
      const chosen = loaded.map((each) => ({ study: each.study, series: each.series }));
      chosen[index] = { study: slide.study, series: choose.value };
      location.hash = compareList(chosen);
    });
    return { pane, stage };
  });
  const toolbar = h('div', { class: 'toolbar' },
    magnificationButtons((m) => apply(m)),
    h('label', { class: 'group' }, linkBox, 'Link pan and zoom'),
    h('a', { class: 'button', href: slideHref(loaded[0].study, loaded[0].series) }, 'Close'));
  root.replaceChildren(h('section', { class: 'compare-page' }, toolbar,
    h('div', { class: `panes${panes.length > 2 ? ' panes-grid' : ''}` }, panes.map(({ pane }) => pane))));

  const viewers = loaded.map((slide, index) => new SlideViewer(panes[index].stage, slide));
  viewers.forEach(markLoaded);
  viewers.forEach(showCentre);
  const link = new ViewerLink(viewers);
  let opened = 0;
  for (const viewer of viewers) {
    viewer.osd.addHandler('open', () => {
      opened += 1;
      // both start at the whole slide; the link keeps the offset they have from then on
      if (opened === viewers.length && linkBox.checked) link.link();
    });
  }
  linkBox.addEventListener('change', () => (linkBox.checked ? link.link() : link.unlink()));
  const apply = (magnification) => {
    const targets = link.linked ? [link.leader] : viewers;
    if (magnification === 'fit') {
      // the whole slides: unlinked while both go home, then linked again from there
      const wasLinked = link.linked;
      link.unlink();
      viewers.forEach((viewer) => viewer.osd.viewport.goHome(true));
      if (wasLinked) link.link();
      return;
    }
    targets.forEach((viewer) => viewer.goToMagnification(magnification));
  };
  const keys = magnificationKeys(apply);
  const renewed = followToken(viewers);
  return () => {
    keys();
    renewed();
    viewers.forEach((viewer) => viewer.destroy());
  };
}

// The person signed in and the sign-out button in the top bar, or nothing.
function showAccount() {
  const current = session();
  account.hidden = !current;
  document.getElementById('person').textContent = current ? current.person : '';
}

// The sign-in form in place of the page; the page asked for (the address's hash) once signed in.
function showSignIn(notice = '') {
  leave();
  leave = () => {};
  document.querySelectorAll('dialog.lightbox').forEach((dialog) => dialog.remove());
  where.textContent = '';
  document.title = 'Sign in — lamina';
  showAccount();
  root.replaceChildren(signInView(notice, () => {
    showAccount();
    route();
  }));
}

function route() {
  leave();
  leave = () => {};
  if (!session()) {
    requireSignIn('');  // shows the form (once)
    return;
  }
  showAccount();
  const controller = new AbortController();
  const [path, query = ''] = (location.hash.slice(1) || '/').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  where.textContent = '';
  document.title = 'lamina';
  let shown;
  if (parts[0] === 'slide' && parts.length === 3) {
    shown = slideView(parts[1], parts[2], controller.signal);
  } else if (parts[0] === 'compare' && comparePairs(parts.slice(1))) {
    shown = compareView(comparePairs(parts.slice(1)), controller.signal);
  } else {
    shown = Promise.resolve(worklistView(root, new URLSearchParams(query)));
  }
  leave = () => controller.abort();
  shown.then((close) => {
    if (controller.signal.aborted) { close(); return; }
    leave = () => { controller.abort(); close(); };
  }).catch((error) => {
    if (error.name === 'AbortError' || error.name === 'SignInRequired') return;
    root.replaceChildren(message(`This slide cannot be shown: ${error.message}.`, 'error'),
      h('p', {}, h('a', { href: '#/' }, 'Back to the worklist')));
  });
}

if (!window.OpenSeadragon) {
  root.replaceChildren(message(
    'OpenSeadragon, the deep-zoom library, did not load from vendor/openseadragon/: '
    + 'run scripts/install on the server (it runs npm ci), then reload this page.', 'error'));
} else {
  whenSignInRequired(showSignIn);
  document.getElementById('sign-out').addEventListener('click', () => signOutEverywhere('You are signed out.'));
  start();
}

// How this node signs in, then the provider's answer when the address is one, then the page.
async function start() {
  root.replaceChildren(message('Loading…'));
  await viewerConfig();
  let refused = null;
  try {
    await completeProviderSignIn();
  } catch (error) {
    refused = error.message;
  }
  resumeRenewal();
  window.addEventListener('hashchange', route);
  if (refused) requireSignIn(refused); else route();
}
