// The care lifecycle of the open slide, in its side panel: what lamina keeps of it and why, in a
// pathologist's words (GET api/slides/SLIDE/lifecycle), and the changes the signed-in person may
// make, as that answer's `may` says (the server decides; nothing here knows the roles): a
// pathologist of the slide's lab flags it as a slide of interest (PUT .../interest) or takes the
// flag off (DELETE .../interest?reason=), its lab admin puts it under a legal hold (POST .../holds)
// or releases its holds (DELETE .../holds?reason=). Every change says why; the server audits it
// with the person as actor. A refusal is shown as the server's one line (the problem's detail).

import { h, message } from './dom.js';
import { readyFetch } from './dicomweb.js';

const API = (document.body.dataset.api || 'api').replace(/\/$/, '');

// The categories of a slide of interest: [value in the API, what a pathologist reads].
export const CATEGORIES = [
  ['research', 'Research'],
  ['teaching', 'Teaching'],
  ['innovation', 'Innovation'],
  ['expertise', 'Expertise'],
  ['follow-up', 'Patient follow-up'],
];
const MAX_REASON = 1000;  // lifecycle/marks.py
const DAY_MS = 86400000;

export class LifecycleError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

// lamina's id of the slide of a series: the first 12 hex digits of the SHA-256 of its Series
// Instance UID (model/ids.py: derived from the series, so it never changes).
export async function slideId(series) {
  if (!window.isSecureContext || !crypto.subtle) {
    throw new LifecycleError(0, 'the lifecycle panel needs a secure connection (HTTPS)');
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(series)));
  return Array.from(digest.slice(0, 6), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

async function call(method, path, { body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (body) headers['Content-Type'] = 'application/json';
  const response = await readyFetch(`${API}/${path}`, {
    method, headers, signal, body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    let detail = '';
    try {
      detail = (await response.json()).detail;
    } catch {
      detail = response.statusText;
    }
    throw new LifecycleError(response.status, detail);
  }
  return response.json();
}

const day = (iso) => (iso ? iso.slice(0, 10) : '');  // the API's times are UTC ISO 8601
const category = (value) => (CATEGORIES.find(([name]) => name === value) || [value, value])[1];
const rule = (name) => (name ? `rule '${name}'` : 'the default rule');

// Where the slide stands on its way to the archive (lamina push), in words.
const TRANSFER = {
  queued: 'Queued for the archive',
  sent: 'Sent to the archive, awaiting its verification',
  verified: 'At the archive, de-identified and verified',
  refused: 'Refused by the archive',
  quarantined: 'Held back for review before leaving (de-identification not certain)',
  withdrawn: 'Withdrawn from research at the archive (the patient opposed)',
};
function transferLine(transfer) {
  const said = TRANSFER[transfer.status] || transfer.status;
  const when = transfer.status === 'verified' ? ` on ${day(transfer.verified_at)}` : '';
  const retry = transfer.status === 'queued' && transfer.attempts > 0 && transfer.next_attempt_at
    ? `; next attempt ${transfer.next_attempt_at.slice(0, 16).replace('T', ' ')} UTC` : '';
  return `${said}${when}${transfer.reason ? ` — ${transfer.reason}` : ''}${retry}`;
}

// The state in words, one line each: [kind, text]; kind names a CSS class and the test's hook.
export function describe(state) {
  if (state.expired) {
    const trace = state.trace || {};
    return [['expired', `Expired on ${day(state.expired_at)}${trace.rule ? ` (${rule(trace.rule)})` : ''}: `
      + 'only its thumbnail and record are kept']];
  }
  const lines = [];
  for (const hold of state.holds) {
    lines.push(['hold', `Under legal hold since ${day(hold.held_at)} — '${hold.reason}' (${hold.held_by})`]);
  }
  if (state.interest) {
    const { interest } = state;
    lines.push(['interest', `Slide of interest: ${category(interest.category).toLowerCase()} — '${interest.reason}' `
      + `(${interest.flagged_by}, ${day(interest.flagged_at)}): never expired`]);
  }
  if (state.transfer) {
    lines.push(['transfer', transferLine(state.transfer)]);
  }
  if (!state.report_at) {
    lines.push(['clock', state.action === 'review'
      ? `No final report yet: to review (${rule(state.rule)})`
      : 'No final report yet: kept (never expired by age)']);
  } else if (state.held || state.interest) {
    lines.push(['clock', `Final report of ${day(state.report_at)}`]);
  } else if (!state.retain_until) {
    lines.push(['clock', `Care slide — final report of ${day(state.report_at)}, no care expiry (${rule(state.rule)})`]);
  } else {
    const days = Math.round((Date.parse(state.retain_until) - Date.parse(state.report_at)) / DAY_MS);
    const why = `${days} days after the final report of ${day(state.report_at)}, ${rule(state.rule)}`;
    lines.push(['clock', state.action === 'expire'
      ? `Care slide — retention ended on ${day(state.retain_until)} (${why}): expired at the next lifecycle run`
      : `Care slide — kept until ${day(state.retain_until)} (${why})`]);
  }
  const tier = state.tier === 'cold'
    ? 'Cold storage: restored when opened (a minute or more)'
    : 'Hot storage: opens at once';
  const move = { 'move-cold': ': to cold storage at the next lifecycle run', 'move-hot': ': back to hot storage at the next lifecycle run' };
  lines.push(['tier', `${tier}${move[state.action] || ''}`]);
  return lines;
}

// A change behind a <details> (keyboard-reachable by its summary): its fields, a reason, a button.
function changeForm(name, title, button, fields, submit) {
  const reason = h('input', {
    name: 'reason', type: 'text', required: true, maxlength: MAX_REASON, autocomplete: 'off',
    'aria-label': `${title}: reason`, placeholder: 'Reason (required)',
  });
  const form = h('form', { class: 'lifecycle-form' }, fields, reason,
    h('button', { type: 'submit', class: 'primary' }, button));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    values.reason = String(values.reason || '').trim();
    if (!values.reason) {
      reason.setCustomValidity('Say why.');
      reason.reportValidity();
      return;
    }
    submit(values, form);
  });
  reason.addEventListener('input', () => reason.setCustomValidity(''));
  return h('details', { class: 'lifecycle-change', dataset: { change: name } }, h('summary', {}, title), form);
}

// The panel for the series `series` (its element; filled once the state comes). `signal` ends it.
export function lifecyclePanel(series, signal) {
  const panel = h('section', { class: 'lifecycle', id: 'lifecycle', 'aria-labelledby': 'lifecycle-title' },
    h('h3', { id: 'lifecycle-title' }, 'Lifecycle'),
    h('div', { class: 'lifecycle-body' }, message('Reading what is kept of this slide…')));
  const body = panel.querySelector('.lifecycle-body');
  let id = null;

  function show(state, notice = null, focus = null) {
    const may = state.may || {};
    const changes = [];
    const refused = h('div', { class: 'lifecycle-error' });
    const act = (method, path, payload, done) => async (values, form) => {
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      refused.replaceChildren();
      try {
        const query = method === 'DELETE' ? `?${new URLSearchParams({ reason: values.reason })}` : '';
        const answer = await call(method, `slides/${id}/${path}${query}`, { body: payload?.(values), signal });
        show(answer, message(done(answer), 'info'), 'notice');
      } catch (error) {
        if (error.name === 'AbortError' || error.name === 'SignInRequired') return;
        button.disabled = false;
        refused.replaceChildren(message(error.message, 'error'));
      }
    };
    if (!state.expired && may.flag) {
      changes.push(state.interest
        ? changeForm('unflag', 'Unflag', 'Unflag', [],
          act('DELETE', 'interest', null, () => 'No longer a slide of interest.'))
        : changeForm('flag', 'Flag as slide of interest', 'Flag', [
          h('select', { name: 'category', required: true, 'aria-label': 'Category' },
            CATEGORIES.map(([value, label]) => h('option', { value }, label)))],
        act('PUT', 'interest', ({ category: chosen, reason }) => ({ category: chosen, reason }),
          (answer) => `Flagged as a slide of interest: ${category(answer.interest.category).toLowerCase()}.`)));
    }
    if (!state.expired && may.hold) {
      changes.push(changeForm('hold', 'Hold', 'Hold', [],
        act('POST', 'holds', ({ reason }) => ({ reason }), () => 'Put under a legal hold.')));
      if (state.held) {
        changes.push(changeForm('release', 'Release hold', 'Release', [],
          act('DELETE', 'holds', null, () => 'Every hold on this slide is released.')));
      }
    }
    const notes = h('div', { class: 'lifecycle-notice', tabindex: '-1' }, notice);
    body.replaceChildren(
      h('ul', { class: 'lifecycle-state' },
        describe(state).map(([kind, text]) => h('li', { class: `lifecycle-${kind}`, dataset: { kind } }, text))),
      changes.length ? h('div', { class: 'lifecycle-changes' }, changes) : null,
      refused,
      notes);
    if (focus === 'notice') notes.focus();
  }

  (async () => {
    id = await slideId(series);
    panel.dataset.slide = id;
    show(await call('GET', `slides/${id}/lifecycle`, { signal }));
  })().catch((error) => {
    if (error.name === 'AbortError' || error.name === 'SignInRequired') return;
    body.replaceChildren(message(`What is kept of this slide cannot be shown: ${error.message}`, 'error'));
  });
  return panel;
}
