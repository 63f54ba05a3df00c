// Entry point: token intake, sign-in, OAuth-return handling and hash routing.

import { api, clearToken, getToken, humanize, onUnauthorized, setAlert, setToken } from '/console/api.js';
import * as exportsPage from '/console/exports.js';
import * as errorsPage from '/console/errors.js';
import * as integrationsPage from '/console/integrations.js';
import * as schedulesPage from '/console/schedules.js';

const routes = {
  exports: { title: 'Exports', page: exportsPage },
  schedules: { title: 'Schedules', page: schedulesPage },
  errors: { title: 'Error queue', page: errorsPage },
  integrations: { title: 'Integrations', page: integrationsPage },
};

const $ = (id) => document.getElementById(id);
const pageEl = $('page');
const nav = $('console-nav');
const signOutButton = $('sign-out');
const signInSection = $('sign-in');
const signInForm = $('sign-in-form');
const signInError = $('sign-in-error');
const tokenInput = $('token-input');

let cleanup = null;
/** A message for the Integrations page after an OAuth round trip: {kind, message}. */
let pendingFlash = null;

const isConsoleRoot = (path) => ['/console', '/console/', '/console/index.html'].includes(path);

/** Reads `?success=…` / `?error=…&message=…` left by the gateway's OAuth callback. */
function flashFromQuery(search) {
  const params = new URLSearchParams(search);
  const success = params.get('success');
  const error = params.get('error');
  if (error) {
    const message = params.get('message') || params.get('reason') || humanize(error);
    return { kind: 'error', message };
  }
  if (success) {
    const match = /^(.+)_connected$/.exec(success);
    return { kind: 'success', message: match ? `${humanize(match[1])} connected` : humanize(success) };
  }
  return null;
}

function takeTokenFromUrl() {
  let target = null;
  if (!isConsoleRoot(location.pathname)) {
    pendingFlash = flashFromQuery(location.search);
    target = '/console/#integrations';
  }
  if (location.hash.startsWith('#token=')) {
    const raw = location.hash.slice('#token='.length);
    let token = raw;
    try {
      token = decodeURIComponent(raw);
    } catch {
      // Keep the raw text if it is not valid percent-encoding.
    }
    if (token.trim()) setToken(token.trim());
    target ??= '/console/#exports';
  }
  if (target) history.replaceState(null, '', target);
}

function currentRoute() {
  const name = location.hash.replace(/^#/, '');
  return Object.hasOwn(routes, name) ? name : 'exports';
}

function unmountPage() {
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
  }
  cleanup = null;
  pageEl.replaceChildren();
}

function showSignIn(message = '') {
  unmountPage();
  nav.hidden = true;
  signOutButton.hidden = true;
  signInSection.hidden = false;
  setAlert(signInError, message);
  document.title = 'Sign in · Haven console';
  (message ? tokenInput : $('sign-in-heading')).focus();
}

function render({ focus = false } = {}) {
  if (!getToken()) {
    showSignIn(signInError.hidden ? '' : signInError.textContent);
    return;
  }
  unmountPage();
  signInSection.hidden = true;
  setAlert(signInError, '');
  nav.hidden = false;
  signOutButton.hidden = false;

  const name = currentRoute();
  for (const link of nav.querySelectorAll('a[data-route]')) {
    if (link.dataset.route === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${routes[name].title} · Haven console`;
  const flash = name === 'integrations' ? pendingFlash : null;
  if (flash) pendingFlash = null;
  cleanup = routes[name].page.mount(pageEl, { flash }) ?? null;
  if (focus) pageEl.querySelector('h1')?.focus();
}

onUnauthorized((reason) => {
  if (!getToken()) return; // Already signed out by an earlier call.
  clearToken();
  showSignIn(`Your session ended: ${reason}`);
});

signInForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = tokenInput.value.trim();
  if (!token) {
    setAlert(signInError, 'Enter an access token');
    tokenInput.focus();
    return;
  }
  const button = signInForm.querySelector('button[type="submit"]');
  button.disabled = true;
  setAlert(signInError, '');
  setToken(token);
  try {
    await api('/api/export/configs', { skipAuthHandler: true });
  } catch (err) {
    // Only a refused token (or no gateway) stops sign-in; a 403 from the
    // export service still proves the token is valid for other pages.
    if (err.status === 401 || err.status === 0) {
      clearToken();
      setAlert(signInError, err.status === 401 ? `Sign-in failed: ${err.message}` : err.message);
      button.disabled = false;
      tokenInput.focus();
      return;
    }
  }
  button.disabled = false;
  tokenInput.value = '';
  render({ focus: true });
});

signOutButton.addEventListener('click', () => {
  clearToken();
  showSignIn('');
});

window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#token=')) takeTokenFromUrl();
  render({ focus: true });
});

takeTokenFromUrl();
render();
