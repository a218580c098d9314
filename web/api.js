// The gateway's JSON API, as the console's pages use it. Shared by every
// page (imported as an ES module: the CSP allows scripts from 'self' only).
//
// Every call sends the session cookie (same origin only) and never lets a
// cache answer. A failed call throws ApiError whose message is the gateway's
// own "error" text made into a sentence, or words for what went wrong on
// the way.

const TIMEOUT_MS = 30000;

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;     // HTTP status; 0 when no answer arrived
    this.body = body;         // the parsed JSON answer, or null
  }
}

// "invalid user name or password" -> "Invalid user name or password."
export function sentence(text) {
  const t = String(text).trim();
  if (!t) {
    return t;
  }
  const first = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(first) ? first : first + '.';
}

// 1, 'machine', 'machines' -> "1 machine"; 3 -> "3 machines".
export function plural(n, one, many) {
  return n + ' ' + (n === 1 ? one : many);
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const init = {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    redirect: 'error',
  };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const ctl = new AbortController();
  const timer = setTimeout(function () { ctl.abort(); }, TIMEOUT_MS);
  init.signal = ctl.signal;

  let res;
  let data = null;
  try {
    res = await fetch(path, init);
    const type = res.headers.get('Content-Type') || '';
    if (type.indexOf('application/json') === 0) {
      try {
        data = await res.json();
      } catch (err) {
        data = null;
      }
    }
  } catch (err) {
    if (err && err.name === 'AbortError') {
      throw new ApiError(0, null, 'The gateway did not answer in time. Try again.');
    }
    throw new ApiError(0, null, 'Cannot reach the gateway. Check your connection and try again.');
  } finally {
    clearTimeout(timer);
  }

  if (res.ok) {
    return data || {};
  }
  let message;
  if (data && typeof data.error === 'string' && data.error.trim()) {
    message = sentence(data.error);
  } else if (res.status >= 500) {
    message = 'The gateway had a problem (HTTP ' + res.status + '). Try again later.';
  } else {
    message = 'The gateway refused the request (HTTP ' + res.status + ').';
  }
  const e = new ApiError(res.status, data, message);
  e.retryAfter = retryAfter(res, data);
  throw e;
}

// Seconds to wait, from the body's retry_after or the Retry-After header.
function retryAfter(res, data) {
  if (data && Number.isInteger(data.retry_after) && data.retry_after >= 0) {
    return data.retry_after;
  }
  const h = Number.parseInt(res.headers.get('Retry-After') || '', 10);
  return Number.isFinite(h) && h >= 0 ? h : null;
}

// The latest setMessage() call per element: a re-announcement waiting for
// the next frame is dropped when another message came in the meantime.
const messageSeq = new WeakMap();

// Shows text in a message element with a kind (error, info, ok). The same
// words again are cleared first so that screen readers announce them again.
export function setMessage(el, text, kind) {
  const seq = (messageSeq.get(el) || 0) + 1;
  messageSeq.set(el, seq);
  el.classList.remove('message-error', 'message-info', 'message-ok');
  if (kind) {
    el.classList.add('message-' + kind);
  }
  if (text && el.textContent === text) {
    el.textContent = '';
    requestAnimationFrame(function () {
      if (messageSeq.get(el) === seq) {
        el.textContent = text;
      }
    });
    return;
  }
  el.textContent = text || '';
}
