// Postern console: the list of session recordings (/recordings.html), for
// auditors.
//
//   GET /api/recordings?user=&vm=&from=&to=&q=   {"recordings":[...]}, newest first
//   GET /api/recordings/ID                        one, with its signature check
//
// The filters live in the page's address (?user=...&vm=...), so a reload,
// the back button and a shared link show the same list; the player's
// "All recordings" link comes back to it through sessionStorage. Every
// value from the gateway goes into the page with textContent.
import { api, plural, setMessage } from '/api.js';
import {
  QUERY_KEY, formatClock, formatSize, formatStarted, recordedSeconds, verifyKind,
} from '/cast.js';

const FILTERS = ['user', 'vm', 'from', 'to', 'q'];

const $ = function (id) { return document.getElementById(id); };

const ui = {
  who: $('who'),
  whoName: $('who-name'),
  title: $('rec-title'),
  count: $('rec-count'),
  form: $('filters'),
  fields: {
    user: $('f-user'),
    vm: $('f-vm'),
    from: $('f-from'),
    to: $('f-to'),
    q: $('f-q'),
  },
  search: $('f-search'),
  clear: $('f-clear'),
  message: $('rec-message'),
  blocked: $('rec-blocked'),
  blockedText: $('rec-blocked-text'),
  blockedLink: $('rec-blocked-link'),
  box: $('rec-box'),
  rows: $('rec-rows'),
  empty: $('rec-empty'),
  template: $('row-template'),
};

let loadSeq = 0; // the latest listing asked for; older answers are dropped

// ---- small helpers -----------------------------------------------------------

// The filters in the address bar, as an object with the five keys.
function filtersFromUrl() {
  const p = new URLSearchParams(location.search);
  const f = {};
  for (const k of FILTERS) {
    f[k] = (p.get(k) || '').trim();
  }
  return f;
}

function filtersFromForm() {
  const f = {};
  for (const k of FILTERS) {
    f[k] = ui.fields[k].value.trim();
  }
  return f;
}

function fillForm(f) {
  for (const k of FILTERS) {
    ui.fields[k].value = f[k];
  }
}

// "?user=alice&from=2025-11-01", only the filters that are set.
function queryOf(f) {
  const p = new URLSearchParams();
  for (const k of FILTERS) {
    if (f[k]) {
      p.set(k, f[k]);
    }
  }
  const s = p.toString();
  return s ? '?' + s : '';
}

function anyFilter(f) {
  return FILTERS.some(function (k) { return f[k] !== ''; });
}

function rememberQuery(q) {
  try {
    sessionStorage.setItem(QUERY_KEY, q);
  } catch (err) {
    // storage disabled: the player links back to the plain list
  }
}

function block(text, linkText, href) {
  ui.blockedText.textContent = text;
  ui.blockedLink.textContent = linkText;
  ui.blockedLink.href = href;
  ui.blocked.hidden = false;
  ui.form.hidden = true;
  ui.box.hidden = true;
  ui.empty.hidden = true;
  ui.count.textContent = '';
  setMessage(ui.message, '', null);
}

// ---- one row ---------------------------------------------------------------------

const STATE_WORDS = {
  live: { text: 'recording\u2026', cls: 'badge-live', title: 'The session is still running.' },
  unfinished: {
    text: 'unfinished',
    cls: 'badge-warn',
    title: 'The gateway stopped before the session ended: the recording ends early and is not signed.',
  },
  finished: { text: 'finished', cls: 'badge-done', title: '' },
};

function stateBadge(state) {
  const w = STATE_WORDS[state] || { text: String(state || 'unknown'), cls: 'badge-done', title: '' };
  const span = document.createElement('span');
  span.className = 'badge ' + w.cls;
  span.textContent = w.text;
  if (w.title) {
    span.title = w.title;
  }
  return span;
}

function lengthText(rec) {
  if (rec.state === 'live') {
    return 'running';
  }
  const seconds = recordedSeconds(rec);
  return seconds === null ? '\u2014' : formatClock(seconds);
}

// The signature badge, fetched when asked for: checking means reading the
// whole file on the gateway, too much to do for every row of a list.
async function checkSignature(button, rec) {
  const cell = button.parentElement;
  button.disabled = true;
  button.textContent = 'Checking\u2026';
  let result = 'ERROR';
  let detail = '';
  try {
    const body = await api('GET', '/api/recordings/' + encodeURIComponent(rec.id));
    const v = body.recording && body.recording.verification;
    if (v && typeof v.result === 'string') {
      result = v.result;
      detail = typeof v.detail === 'string' ? v.detail : '';
    } else {
      detail = 'the gateway did not say';
    }
  } catch (err) {
    button.disabled = false;
    button.textContent = 'Check';
    setMessage(ui.message, 'Checking the signature failed. ' + err.message, 'error');
    return;
  }
  const badge = document.createElement('span');
  const kind = verifyKind(result, rec.state === 'live');
  const pending = kind === 'pending';
  badge.className = 'badge ' + (pending ? 'badge-warn' : 'badge-' + kind);
  badge.textContent = result;
  badge.title = pending ? 'Signed when the session ends.' : detail;
  if (detail && !pending) {
    badge.setAttribute('aria-description', detail);
  }
  const hadFocus = document.activeElement === button;
  cell.replaceChildren(badge);
  if (hadFocus) {
    // The button is gone: keep the keyboard user in the same row.
    badge.tabIndex = -1;
    badge.focus();
  }
}

function row(rec) {
  const tr = ui.template.content.firstElementChild.cloneNode(true);
  const id = String(rec.id);
  const who = String(rec.user || '?');
  const vm = String(rec.vm || '?');
  const started = Number(rec.started);
  tr.dataset.id = id;
  tr.dataset.state = String(rec.state || '');

  const time = tr.querySelector('time');
  if (Number.isFinite(started)) {
    time.dateTime = new Date(started).toISOString();
    time.textContent = formatStarted(started);
  } else {
    time.textContent = '\u2014';
  }
  tr.querySelector('.c-user').textContent = who;
  tr.querySelector('.c-vm').textContent = vm;
  tr.querySelector('.c-source').textContent = String(rec.source || '\u2014');
  tr.querySelector('.c-length').textContent = lengthText(rec);
  tr.querySelector('.c-size').textContent = formatSize(Number(rec.size));
  tr.querySelector('.c-state').append(stateBadge(rec.state));

  const context = ' the recording of ' + who + ' on ' + vm +
    (Number.isFinite(started) ? ', ' + formatStarted(started) : '');
  const verify = tr.querySelector('.verify-btn');
  verify.setAttribute('aria-label', 'Check the signature of' + context);
  verify.addEventListener('click', function () { checkSignature(verify, rec); });

  const playLink = tr.querySelector('.play-link');
  playLink.href = '/player.html?id=' + encodeURIComponent(id);
  playLink.textContent = rec.state === 'live' ? 'Watch' : 'Play';
  playLink.setAttribute('aria-label', playLink.textContent + context);

  const download = tr.querySelector('.download-link');
  download.href = '/api/recordings/' + encodeURIComponent(id) + '/cast';
  download.setAttribute('download', id + '.cast');
  download.setAttribute('aria-label', 'Download' + context + ' (.cast)');
  return tr;
}

// ---- the list -------------------------------------------------------------------------

function render(list, f) {
  const recs = list.filter(function (r) {
    return r && typeof r.id === 'string' && /^[0-9a-f]{1,64}$/.test(r.id);
  });
  ui.rows.replaceChildren.apply(ui.rows, recs.map(row));
  ui.box.hidden = recs.length === 0;
  ui.empty.hidden = recs.length > 0;
  ui.empty.textContent = anyFilter(f) ? 'No recording matches these filters.'
    : 'No session has been recorded yet. Recording is switched on per machine ' +
      '("recording" in the gateway\u2019s configuration).';
  const live = recs.filter(function (r) { return r.state === 'live'; }).length;
  ui.count.textContent = plural(recs.length, 'recording', 'recordings') +
    (live ? ', ' + live + ' still recording' : '');
}

// For the browser tests: body[data-listed] counts the listings answered.
function listed(seq) {
  document.body.dataset.listed = String(seq);
}

async function load(f, focusTitle) {
  const seq = ++loadSeq;
  const q = queryOf(f);
  rememberQuery(q);
  ui.search.disabled = true;
  ui.box.setAttribute('aria-busy', 'true');
  setMessage(ui.message, f.q ? 'Searching the recordings\u2026' : 'Loading\u2026', 'info');
  let body;
  try {
    body = await api('GET', '/api/recordings' + q);
  } catch (err) {
    if (seq !== loadSeq) {
      return;
    }
    ui.search.disabled = false;
    ui.box.removeAttribute('aria-busy');
    listed(seq);
    if (err.status === 401) {
      block('Sign in first: you are not signed in, or your session has ended.', 'Sign in', '/');
    } else if (err.status === 403) {
      block('Only auditors can see session recordings. Ask an administrator for a role ' +
        'with the \u201cauditor\u201d action. (' + err.message + ')', 'Back to your machines', '/');
    } else if (err.status === 400) {
      setMessage(ui.message, err.message, 'error');
    } else {
      setMessage(ui.message, 'The recordings could not be loaded. ' + err.message, 'error');
    }
    return;
  }
  if (seq !== loadSeq) {
    return;
  }
  ui.search.disabled = false;
  ui.box.removeAttribute('aria-busy');
  setMessage(ui.message, '', null);
  render(Array.isArray(body.recordings) ? body.recordings : [], f);
  listed(seq);
  if (focusTitle) {
    ui.title.focus();
  }
}

function onSubmit(ev) {
  ev.preventDefault();
  const f = filtersFromForm();
  if (f.from && f.to && f.from > f.to) {
    setMessage(ui.message, 'The \u201cFrom\u201d day is after the \u201cTo\u201d day.', 'error');
    ui.fields.from.focus();
    return;
  }
  const q = queryOf(f);
  if (q !== location.search) {
    history.pushState(null, '', location.pathname + q);
  }
  load(f, false);
}

function onClear() {
  fillForm({ user: '', vm: '', from: '', to: '', q: '' });
  if (location.search) {
    history.pushState(null, '', location.pathname);
  }
  load(filtersFromForm(), false);
  ui.fields.user.focus();
}

// ---- start ----------------------------------------------------------------------------

async function boot() {
  ui.form.addEventListener('submit', onSubmit);
  ui.clear.addEventListener('click', onClear);
  window.addEventListener('popstate', function () {
    const f = filtersFromUrl();
    fillForm(f);
    load(f, false);
  });

  const f = filtersFromUrl();
  fillForm(f);
  // Who is signed in, beside the list (not needed for it: a failure here
  // is told by the listing itself).
  api('GET', '/api/me').then(function (me) {
    ui.whoName.textContent = typeof me.user === 'string' ? me.user : '';
    ui.who.hidden = !ui.whoName.textContent;
  }, function () { /* the listing says what went wrong */ });
  await load(f, false);
}

boot();
