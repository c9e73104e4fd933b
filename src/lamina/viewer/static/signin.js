// Sign-in: the form of lamina's own sign-in page, the sign-in at the OpenID provider lamina trusts
// (when it has one), the token of this browser tab, and fetch with it.
//
// The token is kept in sessionStorage (this tab only, gone when the tab closes), never in
// localStorage, a cookie or a URL: every request to the archive sends it as
// `Authorization: Bearer TOKEN`. It is forgotten at its expiry (a little before), when the user
// signs out, and when the server answers 401 to it; the page then shows the sign-in form again.
//
// At the provider (GET auth/viewer-config names it): authorization code with PKCE. The page goes
// to the provider's authorization endpoint with an S256 challenge, a state and a nonce (kept in
// sessionStorage meanwhile), and comes back with ?code=&state=; the state must be this tab's, the
// code and the verifier go to lamina (POST auth/oidc/token), which exchanges them at the
// provider as the viewer's client, its secret added there. The page thus talks to lamina only
// (connect-src 'self'); the provider is reached by navigation. The id token's nonce must be this
// sign-in's (its signature is not the page's to check: the access token's is lamina's job). The
// provider's refresh token renews the access token at 80% of its lifetime, and before a request
// made within 30 s of its expiry; a refused renewal brings back the sign-in form.

import { h, message } from './dom.js';

const KEY = 'lamina.session';
// the PKCE verifier, state and nonce of a sign-in under way at the provider
const PENDING = 'lamina.signin';
// the token endpoint of lamina's own issuer, relative to the page (POST /auth/token)
const TOKEN_ENDPOINT = 'auth/token';
// how the viewer signs in (GET), and the provider's code or refresh token exchanged (POST)
const CONFIG_ENDPOINT = 'auth/viewer-config';
const PROVIDER_TOKEN_ENDPOINT = 'auth/oidc/token';
// a token this close to its expiry is not sent: the request could reach the server after it
const EARLY_MS = 30 * 1000;
// the provider's token is renewed once this part of its lifetime is over
const RENEW_AT = 0.8;
// the parameters of the provider's answer that leave the address as soon as it is read
const ANSWER_PARAMETERS = ['code', 'state', 'iss', 'session_state', 'error', 'error_description', 'error_uri'];

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

function readJson(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key) || 'null');
  } catch {
    return null;
  }
}

// { token, expiresAt (ms since the epoch), person, and from the provider: refreshToken,
// lifetimeMs, idToken } of this tab, or null (none, or expired). A token near its expiry that a
// refresh token can renew is kept: authFetch renews it first.
export function session() {
  const stored = readJson(KEY);
  if (!stored || typeof stored.token !== 'string') {
    if (stored) sessionStorage.removeItem(KEY);
    return null;
  }
  if (stored.expiresAt > Date.now() + EARLY_MS || typeof stored.refreshToken === 'string') return stored;
  sessionStorage.removeItem(KEY);
  return null;
}

// Told the new token whenever one is kept (a sign-in or a renewal), e.g. to change the headers
// of the slide's tiles; returns a function that stops telling.
const tokens = new EventTarget();
export function whenTokenChanges(callback) {
  const listener = (event) => callback(event.detail);
  tokens.addEventListener('token', listener);
  return () => tokens.removeEventListener('token', listener);
}

function keep(signedIn) {
  sessionStorage.setItem(KEY, JSON.stringify(signedIn));
  asking = false;
  scheduleRenewal(signedIn);
  tokens.dispatchEvent(new CustomEvent('token', { detail: signedIn.token }));
  return signedIn;
}

let onSignInRequired = () => {};
let asking = false;  // the form is shown: further refusals change nothing

// What the page does when a sign-in is needed: `callback(notice)` shows the form.
export function whenSignInRequired(callback) {
  onSignInRequired = callback;
}

// Forget the token of this tab.
export function signOut() {
  clearTimeout(renewal);
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
  if (!current || !(current.expiresAt > Date.now())) {
    requireSignIn(EXPIRED);
    throw new SignInRequired();
  }
  return `Bearer ${current.token}`;
}

// fetch() with the token, renewed first when it is near its expiry; a 401 answer asks for a
// sign-in and throws SignInRequired.
export async function authFetch(url, options = {}) {
  const current = session();
  if (current && typeof current.refreshToken === 'string' && !(current.expiresAt > Date.now() + EARLY_MS)) {
    await refresh();
  }
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
  return keep({
    token: answer.access_token,
    expiresAt: Date.now() + Number(answer.expires_in) * 1000,
    person,
  });
}

// -- at the OpenID provider ----------------------------------------------------------------------

const PASSWORD_ONLY = { password: true, provider: null };
let viewerConfigAnswer = null;
let viewerConfigLoaded = PASSWORD_ONLY;

// How this node's viewer signs in: { password, provider: null | { issuer, authorization_endpoint,
// end_session_endpoint, client_id, scope, resource } } (asked once; a password only when the
// server cannot say).
export function viewerConfig() {
  viewerConfigAnswer ??= fetch(CONFIG_ENDPOINT, {
    headers: { Accept: 'application/json' }, credentials: 'omit', cache: 'no-store',
  }).then((response) => (response.ok ? response.json() : PASSWORD_ONLY))
    .catch(() => PASSWORD_ONLY)
    .then((answer) => {
      viewerConfigLoaded = {
        password: answer.password !== false,
        provider: answer.provider && typeof answer.provider.authorization_endpoint === 'string' ? answer.provider : null,
      };
      return viewerConfigLoaded;
    });
  return viewerConfigAnswer;
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// `size` random bytes as base64url text (32 bytes: 43 characters).
function randomText(size = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

// The claims of a JWT (its payload decoded, not verified), or null.
function jwtClaims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const text = new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(text);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

// The host name of the provider, for the sign-in button.
export function providerName(provider) {
  try {
    return new URL(provider.issuer).host;
  } catch {
    return 'the identity provider';
  }
}

// The page's address without its query and hash: the redirect URI registered at the provider.
function redirectUri() {
  return location.origin + location.pathname;
}

// Goes to the provider's authorization endpoint (PKCE S256, state, nonce); the page asked for
// (the hash) is shown once back.
export async function startProviderSignIn(provider) {
  if (!window.isSecureContext || !crypto.subtle) {
    throw new SignInError('signing in at the identity provider needs the viewer served over HTTPS', 0);
  }
  const verifier = randomText(48);  // 64 characters (RFC 7636: 43 to 128)
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  const pending = {
    verifier, state: randomText(), nonce: randomText(), redirectUri: redirectUri(), issuer: provider.issuer,
    hash: location.hash,
  };
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  const url = new URL(provider.authorization_endpoint);
  const parameters = {
    response_type: 'code',
    client_id: provider.client_id,
    redirect_uri: pending.redirectUri,
    scope: provider.scope || 'openid',
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: 'S256',
  };
  if (provider.resource) parameters.resource = provider.resource;
  for (const [name, value] of Object.entries(parameters)) url.searchParams.set(name, value);
  location.assign(url.href);
}

// The provider's token endpoint, through lamina; its answer, checked.
async function providerToken(form) {
  let response;
  try {
    response = await fetch(PROVIDER_TOKEN_ENDPOINT, {
      method: 'POST',
      body: new URLSearchParams(form),
      headers: { Accept: 'application/json' },
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new SignInError('the server cannot be reached: check the network, then try again', 0);
  }
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    answer = {};
  }
  if (!response.ok) {
    const why = answer.error_description || answer.error || answer.detail || response.statusText;
    throw new SignInError(`the identity provider refused the sign-in (HTTP ${response.status}): ${why}`,
      response.status);
  }
  if (typeof answer.access_token !== 'string' || !(Number(answer.expires_in) > 0)) {
    throw new SignInError('the identity provider answered without a token: ask the administrator', 200);
  }
  return answer;
}

function keepProviderTokens(answer, person, previous = {}) {
  const lifetimeMs = Number(answer.expires_in) * 1000;
  return keep({
    token: answer.access_token,
    expiresAt: Date.now() + lifetimeMs,
    lifetimeMs,
    person,
    refreshToken: typeof answer.refresh_token === 'string' ? answer.refresh_token : (previous.refreshToken ?? null),
    idToken: typeof answer.id_token === 'string' ? answer.id_token : (previous.idToken ?? null),
  });
}

// When the address is the provider's answer (?code=&state=, or ?error=&state=): checks it is the
// answer to this tab's sign-in, takes it out of the address, and exchanges the code. Returns the
// session (or null: not an answer); throws SignInError when refused.
export async function completeProviderSignIn() {
  const answered = new URLSearchParams(location.search);
  if (!answered.has('state') || !(answered.has('code') || answered.has('error'))) return null;
  const pending = readJson(PENDING);
  sessionStorage.removeItem(PENDING);  // one answer per sign-in
  const clean = new URL(location.href);
  for (const name of ANSWER_PARAMETERS) clean.searchParams.delete(name);
  history.replaceState(null, '', `${clean.pathname}${clean.search}${pending?.hash || clean.hash}`);
  if (!pending || typeof pending.state !== 'string' || answered.get('state') !== pending.state) {
    throw new SignInError('this answer of the identity provider is not for a sign-in started in this tab '
      + '(its state does not match): sign in again', 400);
  }
  if (answered.has('error')) {
    const why = answered.get('error_description') || answered.get('error');
    throw new SignInError(`the identity provider did not sign you in: ${why}`, 400);
  }
  if (answered.has('iss') && answered.get('iss') !== pending.issuer) {  // RFC 9207: not a mix-up
    throw new SignInError('this answer comes from another identity provider than the one asked: sign in again', 400);
  }
  const answer = await providerToken({
    grant_type: 'authorization_code',
    code: answered.get('code'),
    code_verifier: pending.verifier,
    redirect_uri: pending.redirectUri,
  });
  let person = providerName({ issuer: pending.issuer });
  if (typeof answer.id_token === 'string') {
    const claims = jwtClaims(answer.id_token);
    if (!claims || claims.nonce !== pending.nonce) {
      throw new SignInError('the identity provider\'s answer is not for this sign-in (its nonce does not match): '
        + 'sign in again', 400);
    }
    person = claims.SubjectNameID || claims.preferred_username || claims.name || claims.sub || person;
  }
  return keepProviderTokens(answer, String(person));
}

let renewal = 0;
let renewing = null;

// Renews the provider's token with its refresh token (one renewal at a time); a refusal brings
// back the sign-in form and throws SignInRequired.
export function refresh() {
  renewing ??= (async () => {
    const current = session();
    if (!current || typeof current.refreshToken !== 'string') {
      requireSignIn(EXPIRED);
      throw new SignInRequired();
    }
    try {
      const answer = await providerToken({ grant_type: 'refresh_token', refresh_token: current.refreshToken });
      return keepProviderTokens(answer, current.person, current);
    } catch {
      requireSignIn(EXPIRED, current.token);
      throw new SignInRequired();
    }
  })().finally(() => {
    renewing = null;
  });
  return renewing;
}

// A renewal at 80% of the token's lifetime, when it has a refresh token.
function scheduleRenewal(current) {
  clearTimeout(renewal);
  if (!current || typeof current.refreshToken !== 'string') return;
  const lifetimeMs = Number(current.lifetimeMs) > 0 ? Number(current.lifetimeMs) : 0;
  const due = current.expiresAt - lifetimeMs * (1 - RENEW_AT);
  renewal = setTimeout(() => refresh().catch(() => {}), Math.max(0, due - Date.now()));
}

// Once the page is loaded: the renewal of the token this tab kept.
export function resumeRenewal() {
  scheduleRenewal(session());
}

// Signs out: the token forgotten, and, for a sign-in at the provider that has an end-session
// endpoint, the provider's session ended too (the page goes there, then comes back).
export function signOutEverywhere(notice) {
  const current = session();
  requireSignIn(notice);
  const provider = viewerConfigLoaded.provider;
  if (!current || !current.idToken || !provider || !provider.end_session_endpoint) return;
  const url = new URL(provider.end_session_endpoint);
  url.searchParams.set('id_token_hint', current.idToken);
  url.searchParams.set('client_id', provider.client_id);
  url.searchParams.set('post_logout_redirect_uri', redirectUri());
  location.assign(url.href);
}

// The provider's button: "Sign in with HOST".
function providerSignIn(provider) {
  const status = h('div', { class: 'signin-status', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', id: 'signin-provider', class: 'primary' },
    `Sign in with ${providerName(provider)}`);
  button.addEventListener('click', async () => {
    button.disabled = true;
    status.replaceChildren(message(`Going to ${providerName(provider)}…`));
    try {
      await startProviderSignIn(provider);
    } catch (error) {
      status.replaceChildren(message(error instanceof SignInError ? error.message : `the sign-in failed: ${error.message}`,
        'error'));
      button.disabled = false;
    }
  });
  return h('div', { class: 'signin-provider' }, button, status);
}

// The sign-in form; `onSignedIn()` once a token is kept. `notice` says why it is shown. With a
// provider configured (viewerConfig(), loaded before), its button; the password fields unless
// the node has none.
export function signInView(notice, onSignedIn) {
  const config = viewerConfigLoaded;
  if (!config.password && config.provider) {
    return h('section', { class: 'signin-page' },
      h('form', { id: 'signin', class: 'signin', method: 'post', novalidate: true },
        h('h2', {}, 'Sign in to lamina'),
        notice ? message(notice) : null,
        providerSignIn(config.provider)));
  }
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
    button,
    config.provider ? [h('p', { class: 'muted' }, 'or'), providerSignIn(config.provider)] : null);
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
