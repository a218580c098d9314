// Postern console: the browser SSH terminal (/ssh.html?vm=NAME).
//
// xterm.js draws the terminal (canvas renderer: the DOM renderer writes
// <style> elements, which the CSP forbids); the gateway is the SSH client.
// One WebSocket per session, /ws/ssh?vm=NAME, authenticated by the session
// cookie:
//
//   gateway -> page   text   {"type":"status","state","message"}: the state is
//                            awaiting_connect first, then connecting /
//                            negotiating / authenticating / connected; the
//                            page keys on it, the words are for people
//                     binary terminal output (UTF-8 bytes)
//                     text   {"type":"closed","message",exit_status?} or
//                            {"type":"error","reason","message"}, then a close frame
//   page -> gateway   text   {"type":"connect","username","password"|"private_key",
//                            "passphrase"?,"cols","rows"} (once, after "ready")
//                     binary keystrokes
//                     text   {"type":"resize","cols","rows"}
//
// The credentials form sits over the terminal until the session is
// connected. Submitting it takes the secrets out of the form at once; they
// live only in the connect message's closure until it is sent. Everything
// the gateway says is shown with textContent.
import { api, sentence, setMessage } from '/api.js';
import { FONT_FAMILY, FONT_SIZE, LINE_HEIGHT, THEME } from '/term-theme.js';

const KEY_MAX_BYTES = 32 * 1024;  // the gateway takes messages up to 64 KiB

const $ = function (id) { return document.getElementById(id); };

const ui = {
  vmName: $('vm-name'),
  who: $('who'),
  dot: $('state-dot'),
  status: $('status'),
  warning: $('warning'),
  clipHint: $('clip-hint'),
  disconnect: $('disconnect'),
  reconnect: $('reconnect'),
  region: $('terminal-region'),
  terminal: $('terminal'),
  overlay: $('connect-view'),
  blocked: $('blocked'),
  blockedText: $('blocked-text'),
  blockedLink: $('blocked-link'),
  form: $('connect-form'),
  formVm: $('form-vm'),
  user: $('ssh-user'),
  userHint: $('ssh-user-hint'),
  methods: document.querySelector('.methods'),
  methodGateway: $('method-gateway'),
  passwordFields: $('password-fields'),
  password: $('ssh-password'),
  keyFields: $('key-fields'),
  key: $('ssh-key'),
  keyFile: $('ssh-key-file'),
  passphrase: $('ssh-passphrase'),
  message: $('connect-message'),
  submit: $('connect-submit'),
};

const STATUS_WORDS = {
  connecting: 'Connecting to the machine\u2026',
  negotiating: 'Setting up encryption with the machine\u2026',
  authenticating: 'Signing in to the machine\u2026',
};

const CLOSE_WORDS = {
  1001: 'The gateway is going away (restarting or shutting down).',
  1006: 'The connection to the gateway was lost.',
  1009: 'A message was too large for the gateway.',
  1011: 'The gateway had a problem.',
  1013: 'The gateway is busy. Try again later.',
};

const vmName = new URLSearchParams(location.search).get('vm') || '';

const state = {
  // loading | blocked | form | connecting | connected | closed
  phase: 'loading',
  ws: null,
  opened: false,          // the current socket reached "open"
  connectSent: false,     // the connect message went out on it
  connected: false,       // the gateway said "connected" on it
  end: null,              // {error, message, exitStatus} from the gateway
  username: '',           // kept for a reconnect: not a secret
  method: 'password',
  mayLogin: false,        // ssh-login: the user's own credentials
  mayInject: false,       // ssh-admin-login: the gateway's key
  sizeSent: '',
  warningKind: null,
  fitQueued: false,
};

let term = null;
let fit = null;
const encoder = new TextEncoder();

// ---- small helpers -----------------------------------------------------

// The status line: words, and a dot for the state (pending, ok, error, off).
function setStatus(text, kind) {
  ui.status.textContent = text;
  ui.dot.className = 'dot dot-' + kind;
}

function setWarning(text, kind) {
  state.warningKind = text ? kind || 'other' : null;
  ui.warning.textContent = text || '';
  ui.warning.hidden = !text;
}

function isMac() {
  return /Mac|iPhone|iPad/.test(navigator.platform || '');
}

// ---- the view ------------------------------------------------------------

function setPhase(phase) {
  state.phase = phase;
  const overlay = phase === 'loading' || phase === 'blocked' || phase === 'form' ||
    phase === 'connecting';
  ui.overlay.hidden = !overlay;
  // While the form covers it, the terminal takes no focus or clicks.
  ui.region.inert = overlay;
  ui.blocked.hidden = phase !== 'blocked';
  ui.form.hidden = !(phase === 'form' || phase === 'connecting');
  ui.form.inert = phase === 'connecting';
  ui.form.classList.toggle('is-busy', phase === 'connecting');
  ui.form.setAttribute('aria-busy', phase === 'connecting' ? 'true' : 'false');
  ui.submit.disabled = phase === 'connecting';
  ui.submit.textContent = phase === 'connecting' ? 'Connecting\u2026' : 'Connect';
  ui.disconnect.hidden = !(phase === 'connecting' || phase === 'connected');
  ui.disconnect.textContent = phase === 'connecting' ? 'Cancel' : 'Disconnect';
  ui.reconnect.hidden = phase !== 'closed';
  ui.clipHint.hidden = !(phase === 'connected' || phase === 'closed');
}

function block(text, linkText, href) {
  ui.blockedText.textContent = text;
  ui.blockedLink.textContent = linkText || 'Back to your machines';
  ui.blockedLink.href = href || '/';
  setStatus('Not connected', 'off');
  setPhase('blocked');
  ui.blockedLink.focus();
}

function selectedMethod() {
  const r = ui.form.querySelector('input[name="method"]:checked');
  return r ? r.value : 'password';
}

function setMethod(method) {
  state.method = method;
  for (const r of ui.form.querySelectorAll('input[name="method"]')) {
    r.checked = r.value === method;
  }
  ui.passwordFields.hidden = method !== 'password';
  ui.keyFields.hidden = method !== 'key';
  ui.userHint.hidden = method !== 'gateway';
  ui.user.required = method !== 'gateway';
}

// The form over the terminal, with a message (an error, usually) and the
// user name kept from the last attempt.
function showForm(message) {
  clearSecrets();
  ui.user.value = state.username;
  setMethod(state.method);
  setPhase('form');
  setMessage(ui.message, message || '', message ? 'error' : null);
  if (!message) {
    setStatus('Not connected', 'off');
  }
  if (state.method === 'gateway' || !state.username) {
    ui.user.focus();
  } else if (state.method === 'key') {
    ui.key.focus();
  } else {
    ui.password.focus();
  }
}

// Takes every secret out of the page. JavaScript strings cannot be wiped;
// dropping the last reference is as far as a page can go.
function clearSecrets() {
  ui.password.value = '';
  ui.key.value = '';
  ui.passphrase.value = '';
  ui.keyFile.value = '';
}

// ---- the terminal ----------------------------------------------------------

function createTerminal() {
  term = new window.Terminal({
    cursorBlink: true,
    fontFamily: FONT_FAMILY,
    fontSize: FONT_SIZE,
    lineHeight: LINE_HEIGHT,
    scrollback: 5000,
    theme: THEME,
    macOptionIsMeta: true,
  });
  // Before open(): the canvas renderer is used from the start, so the DOM
  // renderer (and its <style> elements) never exists.
  term.loadAddon(new window.CanvasAddon.CanvasAddon());
  fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(ui.terminal);
  fitNow();

  term.onData(function (data) { sendInput(encoder.encode(data)); });
  term.onBinary(function (data) {
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) {
      bytes[i] = data.charCodeAt(i) & 0xff;
    }
    sendInput(bytes);
  });
  term.onResize(sendResize);
  term.attachCustomKeyEventHandler(onTerminalKey);

  new ResizeObserver(queueFit).observe(ui.region);
  window.posternTerm = term; // for the browser tests, and the curious
}

function fitNow() {
  state.fitQueued = false;
  if (!term || !ui.terminal.clientWidth || !ui.terminal.clientHeight) {
    return;
  }
  try {
    fit.fit();
  } catch (err) {
    // Not laid out yet: the next resize tries again.
  }
}

function queueFit() {
  if (!state.fitQueued) {
    state.fitQueued = true;
    requestAnimationFrame(fitNow);
  }
}

// Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes (the browser's own
// paste, which xterm.js receives): Ctrl+C and Ctrl+V belong to the shell.
// On a Mac, Cmd+C and Cmd+V work without help.
function onTerminalKey(ev) {
  if (!ev.ctrlKey || !ev.shiftKey || ev.altKey || ev.metaKey) {
    return true;
  }
  // The letter on the key (any Latin layout), else its place (other scripts).
  const key = (ev.key || '').toUpperCase();
  const latin = /^[A-Z]$/.test(key);
  const is = function (letter) { return latin ? key === letter : ev.code === 'Key' + letter; };
  if (is('C')) {
    if (ev.type === 'keydown') {
      ev.preventDefault(); // also keeps the browser's inspector shortcut away
      copySelection();
    }
    return false;
  }
  if (is('V')) {
    return false; // no preventDefault: the browser pastes into xterm's textarea
  }
  return true;
}

function copySelection() {
  const text = term.getSelection();
  if (!text) {
    return;
  }
  if (!navigator.clipboard || !navigator.clipboard.writeText) {
    setWarning('This browser does not let the page copy. Use the context menu instead.');
    return;
  }
  navigator.clipboard.writeText(text).then(function () {
    if (state.warningKind === 'copy') {
      setWarning('');
    }
  }, function () {
    setWarning('Copying was not allowed by the browser. Use the context menu instead.', 'copy');
  });
}

// ---- the session -----------------------------------------------------------

function sendInput(bytes) {
  const ws = state.ws;
  if (!ws || !state.connectSent || ws.readyState !== WebSocket.OPEN) {
    return;
  }
  ws.send(bytes);
  if (state.warningKind === 'idle') {
    setWarning(''); // the gateway restarts its idle clock on input
  }
}

function sendResize() {
  const ws = state.ws;
  if (!ws || !state.connectSent || ws.readyState !== WebSocket.OPEN) {
    return;
  }
  const size = term.cols + 'x' + term.rows;
  if (size === state.sizeSent) {
    return;
  }
  state.sizeSent = size;
  ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
}

// Opens the WebSocket and sends `creds` ({username?, password | private_key,
// passphrase?}) once the gateway says it is ready.
function startSession(creds) {
  let pending = creds;
  fitNow();
  term.reset();
  setWarning('');
  state.end = null;
  state.opened = false;
  state.connectSent = false;
  state.connected = false;
  state.sizeSent = '';
  setPhase('connecting');
  setMessage(ui.message, '', null);
  setStatus('Contacting the gateway\u2026', 'pending');

  const ws = new WebSocket('wss://' + location.host + '/ws/ssh?vm=' + encodeURIComponent(vmName));
  ws.binaryType = 'arraybuffer';
  state.ws = ws;

  ws.addEventListener('open', function () {
    if (ws === state.ws) {
      state.opened = true;
    }
  });
  ws.addEventListener('message', function (ev) {
    if (ws !== state.ws) {
      return;
    }
    if (typeof ev.data !== 'string') {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (err) {
      return;
    }
    if (!msg || typeof msg !== 'object') {
      return;
    }
    const text = typeof msg.message === 'string' ? msg.message : '';
    if (msg.type === 'status' && msg.state === 'awaiting_connect' && !state.connectSent) {
      if (pending) {
        const connect = { type: 'connect' };
        for (const k of ['username', 'password', 'private_key', 'passphrase']) {
          if (typeof pending[k] === 'string' && pending[k] !== '') {
            connect[k] = pending[k];
          }
        }
        pending = null;
        connect.cols = term.cols;
        connect.rows = term.rows;
        ws.send(JSON.stringify(connect));
        state.connectSent = true;
        state.sizeSent = term.cols + 'x' + term.rows;
        setStatus('Connecting to ' + vmName + '\u2026', 'pending');
      }
    } else if (msg.type === 'status') {
      onStatus(msg, text);
    } else if (msg.type === 'closed' || msg.type === 'error') {
      state.end = {
        error: msg.type === 'error',
        message: text,
        exitStatus: Number.isInteger(msg.exit_status) ? msg.exit_status : null,
      };
      if (msg.type === 'error' && state.connected) {
        // Usually the end (the close frame follows); if not, it was a
        // complaint about one message and the session goes on.
        setWarning(sentence(text), 'error');
      }
    }
  });
  ws.addEventListener('close', function (ev) {
    pending = null;
    if (ws !== state.ws) {
      return;
    }
    state.ws = null;
    sessionEnded(ev);
  });
}

function onStatus(msg, text) {
  if (msg.state === 'connected' && !state.connected) {
    state.connected = true;
    setPhase('connected');
    setStatus('Connected to ' + vmName + (state.username ? ' as ' + state.username : ''), 'ok');
    queueFit();
    term.focus();
    return;
  }
  if (typeof msg.warning === 'string') {
    setWarning(sentence(text), msg.warning === 'idle' ? 'idle' : 'other');
    return;
  }
  if (!state.connected) {
    const words = STATUS_WORDS[msg.state];
    setStatus(words ? words.replace('the machine', vmName) : sentence(text), 'pending');
  } else {
    // A notice on a live session ("no longer recorded"): it must be seen.
    setWarning(sentence(text), 'other');
  }
}

function endWords(ev) {
  const end = state.end;
  if (end && end.message) {
    let text = sentence(end.message);
    if (end.exitStatus !== null && !/exit status/.test(text)) {
      text = text.replace(/\.$/, '') + ' (exit status ' + end.exitStatus + ').';
    }
    return text;
  }
  if (!state.opened) {
    return 'The gateway refused the terminal connection.';
  }
  if (ev.reason) {
    return sentence(ev.reason);
  }
  return CLOSE_WORDS[ev.code] || 'The connection closed (code ' + ev.code + ').';
}

async function sessionEnded(ev) {
  const words = endWords(ev);
  const failed = state.end ? state.end.error : ev.code !== 1000;

  if (!state.opened) {
    // Refused before the upgrade (the reason is not visible to a page):
    // the usual cause is a session that has ended.
    try {
      await api('GET', '/api/me');
    } catch (err) {
      if (err.status === 401) {
        block('Your sign-in has ended. Sign in again, then reconnect.', 'Sign in', '/');
        return;
      }
    }
  }
  if (!state.connected) {
    // Never got a shell: the form again, with the reason.
    setStatus('Could not connect: ' + words, 'error');
    showForm(words);
    return;
  }
  setWarning('');
  setStatus((failed ? 'Session ended with an error: ' : 'Session closed: ') + words,
    failed ? 'error' : 'off');
  endLine(words);
  setPhase('closed');
  ui.reconnect.focus();
}

// The end, said in the terminal too (dim, on a line of its own); the
// cursor goes away as nothing can be typed any more.
function endLine(words) {
  const t = term;
  t.write('', function () { // once the output before it has been parsed
    const fresh = t.buffer.active.cursorX === 0;
    t.write((fresh ? '' : '\r\n') + '\x1b[0m\x1b[2m[' + words + ']\x1b[0m\r\n\x1b[?25l');
  });
}

function disconnect() {
  const ws = state.ws;
  if (!ws) {
    return;
  }
  state.ws = null;
  try {
    ws.close(1000, 'closed by the user');
  } catch (err) {
    // already closing
  }
  const wasConnected = state.connected;
  setWarning('');
  if (!wasConnected) {
    setStatus('Cancelled.', 'off');
    showForm('');
    return;
  }
  setStatus('Disconnected.', 'off');
  endLine('Disconnected.');
  setPhase('closed');
  ui.reconnect.focus();
}

function reconnect() {
  if (state.method === 'gateway' && !state.mayLogin) {
    // Nothing secret to ask for: straight back in.
    startSession({ username: state.username });
    return;
  }
  showForm('');
}

// ---- the form ---------------------------------------------------------------

function formError(text, field) {
  setMessage(ui.message, text, 'error');
  field.focus();
}

async function readKey() {
  const file = ui.keyFile.files && ui.keyFile.files[0];
  if (file) {
    if (file.size > KEY_MAX_BYTES) {
      return { error: 'That file is too large to be a private key.', field: ui.keyFile };
    }
    try {
      return { key: await file.text(), field: ui.keyFile };
    } catch (err) {
      return { error: 'The key file could not be read.', field: ui.keyFile };
    }
  }
  return { key: ui.key.value, field: ui.key };
}

function keyProblem(key) {
  const k = key.trim();
  if (!k) {
    return 'Paste your private key or choose its file.';
  }
  if (key.length > KEY_MAX_BYTES) {
    return 'That is too large to be a private key.';
  }
  if (/^(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+/.test(k) || /PUBLIC KEY-----/.test(k)) {
    return 'That is a public key. Use the private key (the file without .pub).';
  }
  if (/^PuTTY-User-Key-File/.test(k)) {
    return 'PuTTY keys are not supported. Export the key in OpenSSH format first.';
  }
  if (!/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(k)) {
    return 'That does not look like a private key (it should begin with ' +
      '\u201c-----BEGIN\u201d and contain \u201cPRIVATE KEY\u201d).';
  }
  return null;
}

async function onSubmit(ev) {
  ev.preventDefault();
  if (state.phase !== 'form') {
    return;
  }
  const method = selectedMethod();
  const username = ui.user.value.trim();
  if (method !== 'gateway' && !username) {
    formError('Enter your user name on ' + vmName + '.', ui.user);
    return;
  }
  let creds = { username };
  if (method === 'password') {
    if (!ui.password.value) {
      formError('Enter the password.', ui.password);
      return;
    }
    creds.password = ui.password.value;
  } else if (method === 'key') {
    const got = await readKey();
    if (got.error) {
      formError(got.error, got.field);
      return;
    }
    const problem = keyProblem(got.key);
    if (problem) {
      formError(problem, got.field);
      return;
    }
    creds.private_key = got.key;
    creds.passphrase = ui.passphrase.value;
  }
  state.method = method;
  state.username = username;
  clearSecrets();
  startSession(creds);
  creds = null;
}

// ---- start -----------------------------------------------------------------

async function boot() {
  ui.vmName.textContent = vmName || 'No machine';
  ui.formVm.textContent = vmName;
  document.title = (vmName ? vmName + ' \u2013 ' : '') + 'SSH \u2013 Postern';
  if (isMac()) {
    ui.clipHint.textContent = 'Copy: select, then \u2318C. Paste: \u2318V.';
  }
  ui.form.addEventListener('submit', onSubmit);
  for (const r of ui.form.querySelectorAll('input[name="method"]')) {
    r.addEventListener('change', function () {
      setMethod(selectedMethod());
      setMessage(ui.message, '', null);
    });
  }
  ui.keyFile.addEventListener('change', function () {
    if (ui.keyFile.files && ui.keyFile.files.length) {
      ui.key.value = ''; // one source of key at a time
    }
  });
  // Leaving the page ends the shell: the browser asks first while one runs.
  window.addEventListener('beforeunload', function (ev) {
    if (state.phase === 'connected') {
      ev.preventDefault();
      ev.returnValue = '';
    }
  });
  ui.disconnect.addEventListener('click', disconnect);
  ui.reconnect.addEventListener('click', reconnect);
  setPhase('loading');
  setStatus('Loading\u2026', 'pending');

  if (!vmName) {
    block('No machine was named. Choose one from your machines.');
    return;
  }
  if (typeof window.Terminal !== 'function' || !window.CanvasAddon || !window.FitAddon) {
    block('The terminal could not be loaded. Reload the page to try again.', 'Reload',
      location.href);
    return;
  }
  let me;
  try {
    me = await api('GET', '/api/me');
  } catch (err) {
    if (err.status === 401) {
      block('Sign in first: you are not signed in, or your session has ended.', 'Sign in', '/');
    } else {
      block(err.message);
    }
    return;
  }
  ui.who.textContent = typeof me.user === 'string' ? me.user : '';
  ui.who.hidden = !ui.who.textContent;
  const vm = (Array.isArray(me.vms) ? me.vms : []).find(function (v) {
    return v && v.name === vmName;
  });
  const actions = vm && Array.isArray(vm.actions) ? vm.actions : [];
  const protocols = vm && Array.isArray(vm.protocols) ? vm.protocols : [];
  state.mayLogin = actions.indexOf('ssh-login') >= 0;
  state.mayInject = actions.indexOf('ssh-admin-login') >= 0;
  if (!vm || protocols.indexOf('ssh') < 0 || !(state.mayLogin || state.mayInject)) {
    block('No machine named \u201c' + vmName + '\u201d is available to you over SSH.');
    return;
  }

  // Which ways in the user has: their own credentials, the gateway's key, or both.
  ui.methodGateway.hidden = !state.mayInject;
  for (const r of ui.form.querySelectorAll('input[name="method"]')) {
    if (r.value !== 'gateway') {
      r.closest('label').hidden = !state.mayLogin;
    }
  }
  ui.methods.hidden = !state.mayLogin; // the gateway's key alone: nothing to choose
  state.method = state.mayLogin ? 'password' : 'gateway';

  createTerminal();
  showForm('');
}

boot();
