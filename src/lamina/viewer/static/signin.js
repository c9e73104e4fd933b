// Sign-in: the form of lamina's own sign-in page, the token of this browser tab, and fetch with it.
//
// The token is kept in sessionStorage (this tab only, gone when the tab closes), never in
// localStorage, a cookie or a URL: every request to the archive sends it as
// `Authorization: Bearer TOKEN`. It is forgotten at its expiry (a little before), when the user
// signs out, and when the server answers 401 to it; the page then shows the sign-in form again.

import { h, message } from './dom.js';

const KEY = 'lamina.session';
// the token endpoint of lamina's own issuer, relative to the page (POST /auth/token)
const TOKEN_ENDPOINT = 'auth/token';
// a token this close to its expiry is not sent: the request could reach the server after it
const EARLY_MS = 30 * 1000;

// Thrown by a request that could not be made, or was refused, for want of a valid sign-in: the
// page is showing the sign-in form by then, so the caller only has to stop.
export class SignInRequired extends Error {
  constructor(text = 'sign in to continue') {
    super(text);
    this.name = 'SignInRequired';
  }
}

// A person, password or throttling refusal of the token endpoint, in words for the person.
export class SignInError extends Error {
  constructor(text, status) {
    super(text);
    this.name = 'SignInError';
    this.status = status;
  }
}

// { token, expiresAt (ms since the epoch), person } of this tab, or null (none, or expired).
export function session() {
  let stored = null;
  try {
    stored = JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    stored = null;
  }
  if (!stored || typeof stored.token !== 'string' || !(stored.expiresAt > Date.now() + EARLY_MS)) {
    if (stored) sessionStorage.removeItem(KEY);
    return null;
  }
  return stored;
}

let onSignInRequired = () => {};
let asking = false;  // the form is shown: further refusals change nothing

// What the page does when a sign-in is needed: `callback(notice)` shows the form.
export function whenSignInRequired(callback) {
  onSignInRequired = callback;
}

// Forget the token of this tab.
export function signOut() {
  sessionStorage.removeItem(KEY);
}

// The server refused `token` (401), or it expired: forget it and ask for a sign-in, once. A
// refusal of a token that is no longer the current one (a request sent before a new sign-in)
// changes nothing.
export function requireSignIn(notice, token = null) {
  const current = session();
  if (token !== null && current && current.token !== token) return;
  signOut();
  if (asking) return;
  asking = true;
  onSignInRequired(notice);
}

export const EXPIRED = 'Your sign-in has expired: sign in again.';
export const REFUSED = 'The server no longer accepts your sign-in (it expired or was revoked): sign in again.';

// The Authorization header's value; with no valid token, asks for a sign-in and throws SignInRequired.
export function authorization() {
  const current = session();
  if (!current) {
    requireSignIn(EXPIRED);
    throw new SignInRequired();
  }
  return `Bearer ${current.token}`;
}

// fetch() with the token; a 401 answer asks for a sign-in and throws SignInRequired.
export async function authFetch(url, options = {}) {
  const header = authorization();
  const response = await fetch(url, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: header },
    credentials: 'omit',
  });
  if (response.status === 401) {
    requireSignIn(REFUSED, header.slice('Bearer '.length));
    throw new SignInRequired();
  }
  return response;
}

// Seconds to wait from a Retry-After header (seconds, or an HTTP date); null when absent.
function retryAfterSeconds(text) {
  if (!text) return null;
  if (/^\d+$/.test(text.trim())) return Number(text.trim());
  const when = Date.parse(text);
  return Number.isNaN(when) ? null : Math.max(1, Math.ceil((when - Date.now()) / 1000));
}

// Sign in with lamina's own issuer: POST /auth/token (the password grant's form); keeps the token.
export async function signIn(person, password) {
  let response;
  try {
    response = await fetch(TOKEN_ENDPOINT, {
      method: 'POST',
      // URLSearchParams: sent as application/x-www-form-urlencoded, in the body
      body: new URLSearchParams({ grant_type: 'password', username: person, password }),
      headers: { Accept: 'application/json' },
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new SignInError('the server cannot be reached: check the network, then try again', 0);
  }
  if (response.status === 401) throw new SignInError('wrong person or password', 401);
  if (response.status === 429) {
    const wait = retryAfterSeconds(response.headers.get('Retry-After'));
    throw new SignInError(`too many failed attempts; try again in ${wait ?? 'a few'} s`, 429);
  }
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    answer = {};
  }
  if (!response.ok) {
    const why = answer.error_description || answer.detail || response.statusText;
    throw new SignInError(`the sign-in was refused (HTTP ${response.status}): ${why}`, response.status);
  }
  if (typeof answer.access_token !== 'string' || !(Number(answer.expires_in) > 0)) {
    throw new SignInError('the server answered the sign-in without a token: ask its administrator', 200);
  }
  const signedIn = {
    token: answer.access_token,
    expiresAt: Date.now() + Number(answer.expires_in) * 1000,
    person,
  };
  sessionStorage.setItem(KEY, JSON.stringify(signedIn));
  asking = false;
  return signedIn;
}

// The sign-in form; `onSignedIn()` once a token is kept. `notice` says why it is shown.
export function signInView(notice, onSignedIn) {
  const status = h('div', { class: 'signin-status', 'aria-live': 'polite' });
  const person = h('input', {
    name: 'username', id: 'signin-person', autocomplete: 'username', required: true, spellcheck: 'false',
    autocapitalize: 'none',
  });
  const password = h('input', {
    name: 'password', id: 'signin-password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  // method post: were the form ever sent by the browser itself, the password would not go in a URL
  const form = h('form', { id: 'signin', class: 'signin', method: 'post', novalidate: true },
    h('h2', {}, 'Sign in to lamina'),
    notice ? message(notice) : null,
    h('label', { for: 'signin-person' }, 'Person identifier'), person,
    h('label', { for: 'signin-password' }, 'Password'), password,
    status,
    button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!person.value.trim() || !password.value) {
      status.replaceChildren(message('Enter your person identifier and your password.', 'error'));
      return;
    }
    button.disabled = true;
    status.replaceChildren(message('Signing in…'));
    try {
      await signIn(person.value.trim(), password.value);
      password.value = '';
      onSignedIn();
    } catch (error) {
      password.value = '';
      status.replaceChildren(message(error instanceof SignInError ? error.message : `the sign-in failed: ${error.message}`,
        'error'));
      password.focus();
    } finally {
      button.disabled = false;
    }
  });
  setTimeout(() => (person.value ? password : person).focus(), 0);
  return h('section', { class: 'signin-page' }, form);
}
