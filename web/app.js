// Postern console: sign-in and the list of machines the user may reach.
//
// One page, three states (loading, sign-in, machines) switched by the
// `hidden` attribute. Everything the server sends is put into the page with
// textContent, never parsed as HTML. Loaded as a module from /app.js: the
// CSP (script-src 'self') forbids inline scripts.
import { api, plural, setMessage } from '/api.js';

const HEALTH_INTERVAL_MS = 30000;
const REFRESH_MIN_MS = 30000;   // re-check the session on return at most this often
const FILTER_FROM = 7;          // show the filter box from this many machines on

// Browser pages per protocol, and the actions that allow each.
const PROTOCOLS = {
  ssh: { label: 'SSH', page: '/ssh.html', actions: ['ssh-login', 'ssh-admin-login'] },
  rdp: { label: 'RDP', page: '/rdp.html', actions: ['rdp-login', 'rdp-admin-login'] },
};

const $ = function (id) { return document.getElementById(id); };

const ui = {
  loading: $('loading'),
  who: $('who'),
  whoName: $('who-name'),
  whoRoles: $('who-roles'),
  logout: $('logout'),
  recordings: $('recordings-link'),
  loginView: $('login-view'),
  form: $('login-form'),
  user: $('login-user'),
  password: $('login-password'),
  totpField: $('totp-field'),
  totp: $('login-totp'),
  loginMsg: $('login-message'),
  submit: $('login-submit'),
  vmsView: $('vms-view'),
  vmsTitle: $('vms-title'),
  vmsCount: $('vms-count'),
  filterBox: $('filter-box'),
  filter: $('vm-filter'),
  vmsMsg: $('vms-message'),
  list: $('vm-list'),
  empty: $('vms-empty'),
  nomatch: $('vms-nomatch'),
  template: $('vm-template'),
  health: $('health'),
};

const state = {
  view: 'loading',
  busy: false,          // a sign-in request is on its way
  mfa: false,           // the server asked for a one-time code
  waitUntil: 0,         // throttled: no attempt before this (ms since epoch)
  waitTimer: null,
  lastRefresh: 0,
};

// ---- small helpers -----------------------------------------------------

function formatWait(seconds) {
  if (seconds < 60) {
    return plural(seconds, 'second', 'seconds');
  }
  return plural(Math.ceil(seconds / 60), 'minute', 'minutes');
}

function show(view) {
  state.view = view;
  ui.loading.hidden = view !== 'loading';
  ui.loginView.hidden = view !== 'login';
  ui.vmsView.hidden = view !== 'vms';
  ui.who.hidden = view !== 'vms';
  document.title = view === 'vms' ? 'Your machines \u2013 Postern'
    : view === 'login' ? 'Sign in \u2013 Postern' : 'Postern';
}

// ---- sign-in -----------------------------------------------------------

function waiting() {
  return state.waitUntil > Date.now();
}

function updateSubmit() {
  const left = Math.ceil((state.waitUntil - Date.now()) / 1000);
  ui.submit.disabled = state.busy || left > 0;
  ui.form.setAttribute('aria-busy', state.busy ? 'true' : 'false');
  if (state.busy) {
    ui.submit.textContent = 'Signing in\u2026';
  } else if (left > 0) {
    ui.submit.textContent = 'Try again in ' + formatWait(left);
  } else {
    ui.submit.textContent = state.mfa ? 'Verify and sign in' : 'Sign in';
  }
}

function setMfa(on) {
  state.mfa = on;
  ui.totpField.hidden = !on;
  ui.totp.required = on;
  if (!on) {
    ui.totp.value = '';
  }
  updateSubmit();
}

function startWait(seconds) {
  clearInterval(state.waitTimer);
  state.waitUntil = Date.now() + seconds * 1000;
  state.waitTimer = setInterval(function () {
    if (!waiting()) {
      clearInterval(state.waitTimer);
      state.waitTimer = null;
      if (state.view === 'login') {
        setMessage(ui.loginMsg, 'You can try again now.', 'info');
      }
    }
    updateSubmit();
  }, 250);
  updateSubmit();
}

function showLogin(message, kind) {
  ui.form.reset();
  setMfa(false);
  renderVms([]);
  ui.filter.value = '';
  setMessage(ui.vmsMsg, '', null);
  setMessage(ui.loginMsg, message || '', message ? kind || 'error' : null);
  show('login');
  ui.user.focus();
}

function loginFailed(err) {
  const body = err.body || {};
  if (err.status === 401 && body.mfa_required === true) {
    const first = !state.mfa;
    setMfa(true);
    setMessage(ui.loginMsg, first ? 'Password accepted. Now enter your one-time code.'
      : err.message, first ? 'info' : 'error');
    ui.totp.focus();
    return;
  }
  if (err.status === 429) {
    const wait = err.retryAfter;
    if (wait !== null && wait !== undefined && wait > 0) {
      startWait(wait);
      setMessage(ui.loginMsg, 'Too many failed sign-in attempts. Try again in ' +
        formatWait(wait) + '.', 'error');
    } else {
      setMessage(ui.loginMsg, err.message, 'error');
    }
    return;
  }
  setMessage(ui.loginMsg, err.message, 'error');
  if (err.status === 401 && state.mfa) {
    // A wrong or reused code: the password stays for the next try.
    ui.totp.value = '';
    ui.totp.focus();
  } else if (err.status === 401) {
    ui.password.value = '';
    ui.password.focus();
  }
}

async function onSubmit(ev) {
  ev.preventDefault();
  if (state.busy || waiting()) {
    return;
  }
  const body = { user: ui.user.value.trim(), password: ui.password.value };
  if (!body.user || !body.password) {
    setMessage(ui.loginMsg, 'Enter your user name and password.', 'error');
    (body.user ? ui.password : ui.user).focus();
    return;
  }
  if (state.mfa) {
    const code = ui.totp.value.replace(/\s+/g, '');
    if (!/^[0-9]{6}$/.test(code)) {
      setMessage(ui.loginMsg, 'Enter the 6-digit one-time code.', 'error');
      ui.totp.focus();
      return;
    }
    body.totp = code;
  }
  state.busy = true;
  updateSubmit();
  setMessage(ui.loginMsg, '', null);
  try {
    await api('POST', '/api/login', body);
    const me = await api('GET', '/api/me');
    ui.form.reset();
    setMfa(false);
    enter(me, true);
  } catch (err) {
    loginFailed(err);
  } finally {
    state.busy = false;
    updateSubmit();
  }
}

// ---- the machines --------------------------------------------------------

function mayUse(vm, proto) {
  const actions = Array.isArray(vm.actions) ? vm.actions : [];
  return PROTOCOLS[proto].actions.some(function (a) { return actions.indexOf(a) >= 0; });
}

function connectLink(vm, proto) {
  const p = PROTOCOLS[proto];
  const a = document.createElement('a');
  a.className = 'btn btn-primary';
  a.href = p.page + '?vm=' + encodeURIComponent(vm.name);
  // One flex item, so the button's gap does not split the words; the
  // machine's name is for screen readers ("Connect to web01 via SSH").
  const label = document.createElement('span');
  const hidden = document.createElement('span');
  hidden.className = 'visually-hidden';
  hidden.textContent = ' to ' + vm.name;
  label.append('Connect', hidden, ' via ' + p.label);
  a.append(label);
  return a;
}

function vmCard(vm) {
  const li = ui.template.content.firstElementChild.cloneNode(true);
  const tags = Array.isArray(vm.tags) ? vm.tags.map(String) : [];
  const protocols = Array.isArray(vm.protocols) ? vm.protocols : [];
  const actions = Array.isArray(vm.actions) ? vm.actions : [];
  li.dataset.name = vm.name.toLowerCase();
  li.dataset.tags = tags.join(' ').toLowerCase();

  li.querySelector('.vm-name').textContent = vm.name;
  li.querySelector('.badge-jit').hidden = !vm.jit_required;

  const tagList = li.querySelector('.tags');
  if (tags.length) {
    tagList.setAttribute('aria-label', 'Tags');
    for (const t of tags) {
      const item = document.createElement('li');
      item.className = 'tag';
      item.textContent = t;
      tagList.append(item);
    }
  } else {
    tagList.remove();
  }

  const browser = protocols.filter(function (p) {
    return Object.prototype.hasOwnProperty.call(PROTOCOLS, p) && mayUse(vm, p);
  });
  const box = li.querySelector('.vm-actions');
  for (const p of browser) {
    box.append(connectLink(vm, p));
  }
  // Only a tunnel: say how to use it, as there is no button.
  if (!browser.length && actions.indexOf('tunnel') >= 0) {
    const code = document.createElement('code');
    code.textContent = 'postern tunnel --vm ' + vm.name;
    li.querySelector('.vm-access').append('Reach it with a native client:', code);
  }
  return li;
}

function applyFilter() {
  const q = ui.filter.value.trim().toLowerCase();
  const items = Array.from(ui.list.children);
  let shown = 0;
  for (const li of items) {
    const match = !q || li.dataset.name.indexOf(q) >= 0 ||
      li.dataset.tags.split(' ').some(function (t) { return t && t.indexOf(q) >= 0; });
    li.hidden = !match;
    if (match) {
      shown++;
    }
  }
  ui.nomatch.hidden = !(q && items.length && shown === 0);
  ui.vmsCount.textContent = q ? shown + ' of ' + plural(items.length, 'machine', 'machines')
    : plural(items.length, 'machine', 'machines');
}

function renderVms(vms) {
  const list = vms.filter(function (vm) { return vm && typeof vm.name === 'string'; })
    .sort(function (a, b) {
      return a.name.localeCompare(b.name, undefined, { numeric: true });
    });
  ui.list.replaceChildren.apply(ui.list, list.map(vmCard));
  ui.empty.hidden = list.length > 0;
  ui.filterBox.hidden = list.length < FILTER_FROM;
  applyFilter();
}

function enter(me, focus) {
  state.lastRefresh = Date.now();
  ui.whoName.textContent = me.user || '';
  const roles = Array.isArray(me.roles) ? me.roles : [];
  ui.whoRoles.textContent = roles.length ? roles.join(', ') : '';
  ui.whoRoles.hidden = roles.length === 0;
  // /api/me always says whether this user may replay recordings.
  ui.recordings.hidden = me.auditor !== true;
  renderVms(Array.isArray(me.vms) ? me.vms : []);
  show('vms');
  if (focus) {
    ui.vmsTitle.focus();
  }
}

async function refresh() {
  state.lastRefresh = Date.now();
  try {
    enter(await api('GET', '/api/me'), false);
  } catch (err) {
    if (err.status === 401) {
      showLogin('Your session has ended. Sign in again.', 'info');
    }
  }
}

async function onLogout() {
  ui.logout.disabled = true;
  setMessage(ui.vmsMsg, '', null);
  try {
    await api('POST', '/api/logout');
    showLogin('You have logged out.', 'ok');
  } catch (err) {
    if (err.status === 401) {
      showLogin('You have logged out.', 'ok'); // the session had ended already
    } else {
      setMessage(ui.vmsMsg, 'Logging out failed. ' + err.message, 'error');
    }
  } finally {
    ui.logout.disabled = false;
  }
}

// ---- gateway health, in the footer -------------------------------------

async function checkHealth() {
  if (document.visibilityState === 'hidden') {
    return;
  }
  let text = 'unreachable';
  let kind = 'error';
  try {
    const res = await fetch('/healthz', { cache: 'no-store', credentials: 'same-origin' });
    if (res.ok) {
      text = 'ok';
      kind = 'ok';
    } else if (res.status === 503) {
      text = 'draining';
      kind = 'draining';
    } else {
      text = 'HTTP ' + res.status;
    }
  } catch (err) {
    // unreachable
  }
  ui.health.textContent = text;
  ui.health.className = 'state state-' + kind;
}

// ---- start -----------------------------------------------------------------

async function boot() {
  ui.form.addEventListener('submit', onSubmit);
  // Another user or another password after the code was asked for: start
  // over (the gateway asks for the code again if it needs one).
  function credentialsChanged() {
    if (state.mfa) {
      setMfa(false);
      setMessage(ui.loginMsg, '', null);
    }
  }
  ui.user.addEventListener('input', credentialsChanged);
  ui.password.addEventListener('input', credentialsChanged);
  ui.logout.addEventListener('click', onLogout);
  ui.filter.addEventListener('input', applyFilter);
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState !== 'visible') {
      return;
    }
    checkHealth();
    if (state.view === 'vms' && Date.now() - state.lastRefresh > REFRESH_MIN_MS) {
      refresh();
    }
  });
  checkHealth();
  setInterval(checkHealth, HEALTH_INTERVAL_MS);

  try {
    enter(await api('GET', '/api/me'), false);
  } catch (err) {
    showLogin(err.status === 401 ? '' : err.message, 'error');
  }
}

boot();
