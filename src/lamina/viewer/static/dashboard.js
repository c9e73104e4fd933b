// lamina's dashboard: the storage report of a lab (or of every lab, for a platform admin) with
// its plots, and the report's cost model as a calculator. Tabs by the hash: #storage, #costs.
// It signs in as the viewer does (signin.js: the token of this tab, in sessionStorage), and
// reads lamina's API: GET api/tenants, api/tenants/FINESS/report[/plots/NAME], api/report[/plots/NAME]
// (platform admins), api/costs. Plots are fetched with the token and shown from blob: URLs.

import { h, message } from './dom.js';
import {
  authFetch, requireSignIn, resumeRenewal, session, signInView, signOutEverywhere, viewerConfig, whenSignInRequired,
} from './signin.js';

const API = document.body.dataset.api || 'api';
const root = document.getElementById('app');
const account = document.getElementById('account');
const PLOTS = [
  ['volume', 'Live volume per lab and tier'],
  ['months', 'Ingested and expired per month'],
  ['projection', 'Projected volume'],
  ['co2', 'Storage CO2 per year'],
];
const COST_FIELDS = [
  ['slides', 'Slides a year'], ['cases', 'Cases a year (instead of slides)'], ['slides-per-case', 'Slides per case'],
  ['pathologists', 'Pathologists'], ['sites', 'Sites'], ['scanners', 'Scanners'],
  ['retention-days', 'Care retention (days)'], ['interest-share', 'Share of slides of interest (0–1)'],
];
const number = (value, digits = 0) => Number(value).toLocaleString('en', {
  minimumFractionDigits: digits, maximumFractionDigits: digits,
});
const euros = (value, digits = 0) => `${number(value, digits)} €`;
let objectUrls = [];

class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function getJson(path) {
  const response = await authFetch(`${API}/${path}`, { headers: { Accept: 'application/json' } });
  if (!response.ok) {
    let detail = '';
    try { detail = (await response.json()).detail; } catch { /* not a problem document */ }
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

function table(headers, rows) {
  return h('table', { class: 'figures' },
    h('thead', {}, h('tr', {}, headers.map((name) => h('th', {}, name)))),
    h('tbody', {}, rows.map((row) => h('tr', {},
      row.map((cell, index) => h('td', { class: index ? 'number' : null }, cell))))));
}

// A plot fetched with the token, shown from a blob: URL (an <img src> could not send the token).
function plot(path, caption) {
  const img = h('img', { alt: caption, dataset: { plot: path } });
  authFetch(`${API}/${path}`).then(async (response) => {
    if (!response.ok) throw new ApiError(response.status, response.statusText);
    const url = URL.createObjectURL(await response.blob());
    objectUrls.push(url);
    img.src = url;
  }).catch((error) => {
    if (error.name !== 'SignInRequired') img.replaceWith(message(`${caption}: ${error.message}`, 'error'));
  });
  return h('figure', {}, img, h('figcaption', {}, caption));
}

function reportView(report, base) {
  const tiers = Object.entries(report.tiers).map(([tier, row]) => [
    tier, number(row.slides), number(row.gb, 3), euros(row.eur_per_year, 2), number(row.kg_co2_per_year, 3),
  ]);
  const labs = report.labs.map((lab) => [
    [lab.tenant, lab.name].filter(Boolean).join(' '), number(lab.tiers.hot.gb, 3), number(lab.tiers.cold.gb, 3),
    number(lab.live.slides), number(lab.expired.slides), number(lab.expired.gb, 3),
  ]);
  const months = report.months.filter((m) => m.ingested.slides || m.expired.slides).map((m) => [
    m.month, number(m.ingested.slides), number(m.ingested.gb, 3), number(m.expired.slides), number(m.expired.gb, 3),
  ]);
  const projections = report.projections.map((p) => [
    `in ${p.years} year${p.years === 1 ? '' : 's'}`, number(p.gb.hot, 3), number(p.gb.cold, 3),
    euros(p.eur_per_year.hot + p.eur_per_year.cold, 2), number(p.kg_co2_per_year.hot + p.kg_co2_per_year.cold, 3),
  ]);
  const interest = report.interest;
  const glass = report.glass;
  const hot = glass.tiers.hot;
  return h('div', { class: 'report' },
    h('h3', {}, `Live slides on ${report.now.slice(0, 10)}`),
    table(['Tier', 'Slides', 'GB', '€ a year', 'kg CO2 a year'], tiers),
    h('h3', {}, 'Per lab'),
    table(['Lab', 'Hot GB', 'Cold GB', 'Live slides', 'Expired', 'GB freed'], labs),
    h('h3', {}, 'Slides of interest'),
    h('p', { class: 'interest' }, `${number(interest.total.slides)} slides, ${number(interest.total.gb, 3)} GB`,
      Object.entries(interest.categories).map(([name, row]) => ` · ${name} ${number(row.slides)}`)),
    h('h3', {}, 'Per month (UTC)'),
    months.length ? table(['Month', 'Ingested', 'GB in', 'Expired', 'GB freed'], months) : h('p', { class: 'muted' }, 'Nothing in the last 24 months.'),
    h('h3', {}, 'Projection'),
    table(['', 'Hot GB', 'Cold GB', '€ a year', 'kg CO2 a year'], projections),
    h('p', { class: 'method muted' }, `Method: ${report.projection_method}.`),
    hot.kg_co2_per_slide_year ? h('p', { class: 'glass' },
      `One digital slide (${number(glass.gb_per_digital_slide, 2)} GB) stored hot emits `
      + `${number(hot.kg_co2_per_slide_year, 3)} kg CO2 a year: one glass slide's ${glass.glass_slide_kg_co2} kg `
      + `after ${number(hot.years_to_one_glass_slide, 1)} years.`) : null,
    h('div', { class: 'plots' }, PLOTS.map(([name, caption]) => plot(`${base}/plots/${name}.png`, caption))));
}

async function storageTab(panel) {
  panel.replaceChildren(message('Loading the report…'));
  const labs = await getJson('tenants');
  let node = null;
  try {
    node = await getJson('report');
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;  // 403: not a platform admin
  }
  const choices = [...(node ? [['', 'Every lab']] : []), ...labs.map((lab) => [lab.finess, `${lab.finess} ${lab.name}`])];
  const select = h('select', { id: 'lab', 'aria-label': 'Lab' },
    choices.map(([value, text]) => h('option', { value }, text)));
  const shown = h('div', {});
  const show = async () => {
    objectUrls.forEach((url) => URL.revokeObjectURL(url));
    objectUrls = [];
    const finess = select.value;
    const base = finess ? `tenants/${encodeURIComponent(finess)}/report` : 'report';
    shown.replaceChildren(message('Loading the report…'));
    try {
      const report = finess || !node ? await getJson(base) : node;
      shown.replaceChildren(reportView(report, base));
    } catch (error) {
      if (error.name === 'SignInRequired') return;
      const text = error.status === 403 ? 'Only the lab\'s admins and platform admins see its storage report.' : error.message;
      shown.replaceChildren(message(text, 'error'));
    }
  };
  select.addEventListener('change', show);
  panel.replaceChildren(choices.length
    ? h('div', { class: 'lab-choice' }, h('label', { for: 'lab' }, 'Lab'), select)
    : message('You hold a role in no lab.'), shown);
  if (choices.length) await show();
}

function costsTab(panel, labs) {
  const inputs = COST_FIELDS.map(([name, label]) => [name, h('input', { name, id: `cost-${name}`, inputmode: 'decimal' }), label]);
  const preset = h('select', { name: 'preset', id: 'cost-preset' },
    h('option', { value: '' }, 'none'), h('option', { value: 'private' }, 'private, 500,000 cases'),
    h('option', { value: 'public' }, 'public sector'));
  const sector = h('select', { name: 'sector', id: 'cost-sector' },
    h('option', { value: '' }, 'default'), h('option', { value: 'public' }, 'public (HT)'), h('option', { value: 'private' }, 'private (TTC)'));
  const measured = h('select', { name: 'tenant', id: 'cost-measured' },
    h('option', { value: '' }, 'no'), labs.map((lab) => h('option', { value: lab.finess }, `${lab.finess} ${lab.name}`)));
  const result = h('div', { class: 'costs-result' });
  const form = h('form', { class: 'costs-form', id: 'costs' },
    h('label', {}, 'Preset', preset),
    inputs.map(([, input, label]) => h('label', {}, label, input)),
    h('label', {}, 'Sector', sector),
    h('label', {}, 'Measured volumes of', measured),
    h('div', { class: 'search-buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Compute')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (preset.value) query.set('preset', preset.value);
    for (const [name, input] of inputs) if (input.value.trim()) query.set(name, input.value.trim());
    if (sector.value) query.set('sector', sector.value);
    if (measured.value) { query.set('measured', 'true'); query.set('tenant', measured.value); }
    result.replaceChildren(message('Computing…'));
    try {
      const found = await getJson(`costs?${query}`);
      result.replaceChildren(table(['Figure', 'Value'], [
        ['Slides a year', number(found.slides_per_year)],
        ['Cases a year', number(found.cases_per_year)],
        ['Scanners', number(found.scanners)],
        ['Investment', euros(found.investment)],
        ['Operation a year', euros(found.operation_per_year)],
        ['Archive a year', euros(found.archive_per_year)],
        ['Cost a year', euros(found.cost_per_year)],
        [`Total over ${found.prices.depreciation_years} years`, euros(found.total_over_period)],
        ['Cost per slide', euros(found.cost_per_slide, 2)],
        ['Cost per case', euros(found.cost_per_case, 2)],
        ['Storage CO2 a year', `${number(found.co2_kg_per_year)} kg`],
      ]), found.notes.map((note) => h('p', { class: 'muted small' }, note)));
    } catch (error) {
      if (error.name !== 'SignInRequired') result.replaceChildren(message(error.message, 'error'));
    }
  });
  panel.replaceChildren(form, result);
  form.requestSubmit();
}

function showAccount() {
  const current = session();
  account.hidden = !current;
  document.getElementById('person').textContent = current ? current.person : '';
}

async function show() {
  if (!session()) {
    requireSignIn('');
    return;
  }
  showAccount();
  const tab = location.hash === '#costs' ? 'costs' : 'storage';
  const panel = h('section', { class: 'dashboard', id: `${tab}-panel` });
  const tabs = h('div', { class: 'tabs', role: 'tablist' },
    [['storage', 'Storage'], ['costs', 'Costs']].map(([name, text]) => h('button', {
      type: 'button', role: 'tab', id: `tab-${name}`, 'aria-selected': String(name === tab),
      onclick: () => { location.hash = `#${name}`; },
    }, text)));
  root.replaceChildren(tabs, panel);
  try {
    if (tab === 'costs') costsTab(panel, await getJson('tenants')); else await storageTab(panel);
  } catch (error) {
    if (error.name !== 'SignInRequired') panel.replaceChildren(message(error.message, 'error'));
  }
}

whenSignInRequired((notice) => {
  showAccount();
  root.replaceChildren(signInView(notice, () => show()));
});
document.getElementById('sign-out').addEventListener('click', () => signOutEverywhere('You are signed out.'));
window.addEventListener('hashchange', show);
await viewerConfig();
resumeRenewal();
show();
