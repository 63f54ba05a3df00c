// Shared helpers: the token store, the `api` fetch helper, and small DOM and
// formatting utilities used by every page module.

const TOKEN_KEY = 'haven.token';

export const getToken = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (token) => sessionStorage.setItem(TOKEN_KEY, token);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

export const NETWORK_ERROR = 'Cannot reach the gateway';

/** An error answered by the gateway (or a network failure, with status 0). */
export class ApiError extends Error {
  constructor(message, status = 0, code = null, field = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

let unauthorizedHandler = () => {};
/** Registers what to do when any call answers 401 (app.js shows the sign-in form). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

export function authHeaders(extra = {}) {
  return { ...extra, Authorization: `Bearer ${getToken() ?? ''}` };
}

/**
 * Turns a non-2xx response into an ApiError carrying the body's `error` text.
 * A 401 also signs the user out, unless `notifyUnauthorized` is false.
 */
export async function responseError(res, notifyUnauthorized = true) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // Not JSON: fall back to the status line.
  }
  const message = body && typeof body.error === 'string' && body.error
    ? body.error
    : `The gateway answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  const err = new ApiError(message, res.status, body?.code ?? null, body?.field ?? null);
  if (res.status === 401 && notifyUnauthorized) unauthorizedHandler(message);
  return err;
}

/**
 * Calls the gateway with the bearer token. `options.json` is sent as a JSON
 * body. Resolves with the parsed JSON (or null for an empty body); rejects with
 * an ApiError whose message is the body's `error`.
 */
export async function api(path, options = {}) {
  const { json, skipAuthHandler = false, headers = {}, ...rest } = options;
  const init = { ...rest, headers: authHeaders({ Accept: 'application/json', ...headers }) };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(NETWORK_ERROR);
  }
  if (!res.ok) throw await responseError(res, !skipAuthHandler);
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError('The gateway sent an unreadable answer', res.status);
  }
}

// ---------------------------------------------------------------- DOM helpers

const PROPS = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'open']);

/**
 * Creates an element. `attrs`: `class`, `text` (textContent), `on<event>`
 * listeners, DOM properties from PROPS, anything else as an attribute.
 * Children may be nodes, strings (inserted as text) or arrays; null is skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (PROPS.has(key)) node[key] = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

let idCounter = 0;
export const uid = (prefix) => `${prefix}-${++idCounter}`;

/** Shows `message` in an alert element, or hides it when empty. */
export function setAlert(el, message) {
  el.textContent = message || '';
  el.hidden = !message;
}

/** A `role="alert"` paragraph, hidden until it has something to say. */
export const alertBox = () => h('p', { class: 'alert', role: 'alert', hidden: true });

/** A `role="status"` live region; it stays in the DOM so updates are announced. */
export const statusBox = () => h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });

/** Wraps a table so it scrolls sideways on narrow screens (keyboard-scrollable). */
export function tableWrap(table, label) {
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);
}

/** A page heading that receives focus after navigation. */
export const pageHeading = (text) => h('h1', { tabindex: '-1', class: 'page-heading', text });

// ---------------------------------------------------------------- formatting

export const formatNumber = (n) => (Number.isFinite(Number(n)) ? Number(n).toLocaleString('en-US') : '—');

export function plural(n, one, many = `${one}s`) {
  return `${formatNumber(n)} ${Number(n) === 1 ? one : many}`;
}

export function formatBytes(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toLocaleString('en-US', { maximumFractionDigits: value < 10 ? 1 : 0 })} ${units[unit]}`;
}

export function formatTime(value) {
  if (!value) return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function formatDuration(ms) {
  const n = Number(ms);
  if (ms === null || ms === undefined || !Number.isFinite(n)) return '—';
  if (n < 1000) return `${n} ms`;
  return `${(n / 1000).toLocaleString('en-US', { maximumFractionDigits: 1 })} s`;
}

/** "shop_domain" / "shopDomain" → "Shop domain"; "connected" → "Connected". */
export function humanize(text) {
  const words = String(text ?? '')
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/[_-]+/g, ' ')
    .trim()
    .toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Is the error a cancelled fetch? */
export const isAbort = (err) => err?.name === 'AbortError';
