// Fixtures for Postern's browser end-to-end tests: a real posternd on a free
// loopback port, users made with the real `postern user` command, a real
// OpenSSH server standing for a Linux VM, and Debian's Chromium driven by
// playwright-core.
//
// Binaries come from the environment, as for the Python integration tests:
// POSTERND and POSTERN (or POSTERN_BUILD_DIR holding both). Without them the
// tests skip when run by hand; under ctest (POSTERN_REQUIRE_ALL=1) a missing
// prerequisite is a failure instead.
//
// Only 127.0.0.0/8 is ever used. Every process runs in its own process group
// and is stopped (the whole group) by stop().
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const LOOPBACK = '127.0.0.1';
export const START_TIMEOUT_MS = 20000; // generous: ASan builds on two shared cores
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ARTIFACTS_DIR = path.join(REPO_ROOT, 'tests', 'artifacts');
export const CHROMIUM = process.env.POSTERN_CHROMIUM || '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--no-sandbox', // tests run as root
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

// ---- prerequisites ----------------------------------------------------------

export class Missing extends Error {}

// A reason to skip, or (POSTERN_REQUIRE_ALL=1) to fail: a missing package or
// binary must never turn the suite green by skipping what it was meant to test.
export function missingPrerequisite(reason) {
  if (process.env.POSTERN_REQUIRE_ALL === '1') {
    throw new Error('prerequisite missing: ' + reason);
  }
  return new Missing(reason);
}

function binary(envName, file) {
  let p = process.env[envName];
  if (!p && process.env.POSTERN_BUILD_DIR) {
    p = path.join(process.env.POSTERN_BUILD_DIR, file);
  }
  if (!p) {
    throw missingPrerequisite('set ' + envName + ' to the ' + file + ' binary');
  }
  try {
    fs.accessSync(p, fs.constants.X_OK);
  } catch {
    throw new Error(envName + '=' + p + ' is not an executable file');
  }
  return p;
}

export function posterndPath() { return binary('POSTERND', 'posternd'); }
export function posternPath() { return binary('POSTERN', 'postern'); }

// The reason the browser tests cannot run here, or null. Call from a
// `before` hook and pass the result to the test's { skip }.
export async function prerequisites() {
  try {
    posterndPath();
    posternPath();
    try {
      fs.accessSync(CHROMIUM, fs.constants.X_OK);
    } catch {
      throw missingPrerequisite('needs ' + CHROMIUM + ' (Debian package chromium)');
    }
    try {
      await import('playwright-core');
    } catch {
      throw missingPrerequisite('needs playwright-core: run tests/e2e/install.sh');
    }
  } catch (err) {
    if (err instanceof Missing) {
      return err.message;
    }
    throw err;
  }
  return null;
}

// ---- small helpers ------------------------------------------------------------

export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, LOOPBACK);
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

export function sleep(ms) {
  return new Promise(function (resolve) { setTimeout(resolve, ms); });
}

// Runs argv to its end with `input` on stdin; resolves {code, stdout, stderr}.
export function run(argv, { input = '', timeoutMs = 30000, env } = {}) {
  return new Promise(function (resolve, reject) {
    const child = spawn(argv[0], argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: env || process.env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', function (d) { stdout += d; });
    child.stderr.on('data', function (d) { stderr += d; });
    const timer = setTimeout(function () {
      child.kill('SIGKILL');
      reject(new Error(argv.join(' ') + ': no exit within ' + timeoutMs + ' ms'));
    }, timeoutMs);
    child.on('error', function (err) { clearTimeout(timer); reject(err); });
    child.on('close', function (code) {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', function () { /* exited before reading: code tells */ });
    child.stdin.end(input);
  });
}

// One HTTPS request without certificate checks (the gateway's certificate is
// generated and self-signed). Resolves {status, headers, body}.
export function httpsRequest(port, method, urlPath, { headers = {}, body, timeoutMs = 5000 } = {}) {
  return new Promise(function (resolve, reject) {
    const req = https.request({
      host: LOOPBACK, port, method, path: urlPath, headers,
      rejectUnauthorized: false, timeout: timeoutMs, agent: false,
    }, function (res) {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', function (d) { data += d; });
      res.on('end', function () { resolve({ status: res.statusCode, headers: res.headers, body: data }); });
    });
    req.on('timeout', function () { req.destroy(new Error('timed out')); });
    req.on('error', reject);
    req.end(body);
  });
}

// ---- TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30 s), for users with a second factor ----

export function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let acc = 0;
  const out = [];
  for (const ch of text.replace(/=+$/, '').toUpperCase()) {
    const v = alphabet.indexOf(ch);
    if (v < 0) {
      throw new Error('not base32: ' + text);
    }
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((acc >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

export function totpCode(secretB32, unixSeconds = Date.now() / 1000) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const mac = createHmac('sha1', base32Decode(secretB32)).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const n = (mac.readUInt32BE(off) & 0x7fffffff) % 1000000;
  return String(n).padStart(6, '0');
}

// ---- the gateway --------------------------------------------------------------

// posternd with a JSON config. Options:
//   users:  [{ name, password, roles: [...], totp: true? }] made with
//           `postern user add ... --password-stdin` (and `postern user totp`);
//           a user with totp gets .totpSecret (base32) after start()
//   config: more top-level keys (roles, vms, auth, limits, ...); listen,
//           state_dir, users_file and log_level are filled in
export class Gateway {
  label = 'posternd'; // names its log in withPage's failure report

  constructor({ users = [], config = {} } = {}) {
    this.users = users.map(function (u) { return { ...u }; });
    this.extra = config;
    this.proc = null;
    this.dir = null;
    this.port = null;
    this.exited = null;
  }

  get baseUrl() { return 'https://' + LOOPBACK + ':' + this.port; }
  get logPath() { return path.join(this.dir, 'posternd.stderr'); }

  user(name) {
    return this.users.find(function (u) { return u.name === name; });
  }

  async start() {
    const posternd = posterndPath();
    const postern = posternPath();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'postern-e2e-'));
    const state = path.join(this.dir, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
    const usersFile = path.join(this.dir, 'users.json');

    for (const u of this.users) {
      const argv = [postern, 'user', 'add', u.name];
      for (const r of u.roles || []) {
        argv.push('--role', r);
      }
      argv.push('--users-file', usersFile, '--password-stdin');
      const r = await run(argv, { input: u.password + '\n' });
      if (r.code !== 0) {
        throw new Error('postern user add ' + u.name + ' exited ' + r.code + ': ' + r.stderr);
      }
      if (u.totp) {
        const t = await run([postern, 'user', 'totp', u.name, '--users-file', usersFile]);
        const m = /[?&]secret=([A-Z2-7]+)/.exec(t.stdout);
        if (t.code !== 0 || !m) {
          throw new Error('postern user totp ' + u.name + ' exited ' + t.code + ': ' + t.stderr);
        }
        u.totpSecret = m[1];
      }
    }

    this.port = await freePort();
    const config = {
      listen: LOOPBACK + ':' + this.port,
      state_dir: state,
      log_level: 'info',
      ...(this.users.length ? { users_file: usersFile } : {}),
      ...this.extra,
    };
    this.configPath = path.join(this.dir, 'posternd.json');
    fs.writeFileSync(this.configPath, JSON.stringify(config, null, 2) + '\n');

    const err = fs.openSync(this.logPath, 'a');
    this.proc = spawn(posternd, ['--config', this.configPath], {
      stdio: ['ignore', 'ignore', err],
      detached: true, // its own process group, stopped whole
    });
    fs.closeSync(err);
    this.proc.on('exit', (code, signal) => { this.exited = { code, signal }; });
    await this.waitHealthy();
    return this;
  }

  async waitHealthy(timeoutMs = START_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    let last = null;
    for (;;) {
      if (this.exited) {
        throw new Error('posternd exited (' + JSON.stringify(this.exited) +
          ') before answering /healthz\n' + this.logTail());
      }
      try {
        const r = await httpsRequest(this.port, 'GET', '/healthz');
        if (r.status === 200) {
          return;
        }
        last = 'HTTP ' + r.status;
      } catch (e) {
        last = e.message;
      }
      if (Date.now() >= deadline) {
        throw new Error('posternd did not answer /healthz 200 within ' + timeoutMs +
          ' ms (last: ' + last + ')\n' + this.logTail());
      }
      await sleep(50);
    }
  }

  logText() {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  logTail(lines = 40) {
    return this.logText().split('\n').slice(-lines).join('\n');
  }

  // SIGTERM to the group; SIGKILL if it outlives timeoutMs. Resolves to the
  // exit {code, signal}. Removes the temp dir.
  async stop(timeoutMs = 15000) {
    if (this.proc && !this.exited) {
      const exited = once(this.proc, 'exit');
      signalGroup(this.proc.pid, 'SIGTERM');
      let timer;
      const late = new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs, 'late'); });
      const first = await Promise.race([exited, late]);
      clearTimeout(timer); // a pending timer would keep node alive
      if (first === 'late') {
        signalGroup(this.proc.pid, 'SIGKILL');
        await exited;
        this.killed = true;
      }
    }
    if (this.proc) {
      signalGroup(this.proc.pid, 'SIGKILL'); // anything left in the group
    }
    if (this.dir && process.env.POSTERN_KEEP_TMP !== '1') {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    return this.exited;
  }
}

function signalGroup(pid, sig) {
  try {
    process.kill(-pid, sig);
  } catch (err) {
    if (err.code !== 'ESRCH') {
      throw err;
    }
  }
}

// ---- an SSH server standing for a Linux VM ------------------------------------

export const PYTHON = '/usr/bin/python3';
const SSHD_HELPER = path.join(REPO_ROOT, 'tests', 'e2e', 'sshd_helper.py');

// A real OpenSSH server on 127.0.0.1:<free port> for the postern-test
// account, made by the integration tests' own fixture (postern_fixtures.Sshd,
// through tests/e2e/sshd_helper.py): one way of creating the account and
// its random password for both suites, safe when they run at once. Needs
// root, /usr/sbin/sshd and ssh-keygen (skipped, or failed under
// POSTERN_REQUIRE_ALL=1, without them).
//
// After start(): host, port, user, password, hostKeySha256, clientKey (an
// unencrypted ed25519 private key file), clientKeyEncrypted and
// clientKeyPassphrase (the same key under a passphrase), vmConfig(name).
// stop() closes the helper's stdin: it stops sshd and releases the account.
export class Sshd {
  label = 'sshd'; // names its log in withPage's failure report

  constructor() {
    this.proc = null;
    this.info = null;
    this.exited = null;
  }

  get host() { return this.info.host; }
  get port() { return this.info.port; }
  get user() { return this.info.user; }
  get password() { return this.info.password; }
  get hostKeySha256() { return this.info.host_key_sha256; }
  get clientKey() { return this.info.client_key; }
  get clientKeyEncrypted() { return this.info.client_key_encrypted; }
  get clientKeyPassphrase() { return this.info.client_key_passphrase; }

  // A gateway `vms` entry for this server, its host key pinned.
  vmConfig(name, more = {}) {
    return {
      name,
      address: this.host,
      ssh: { port: this.port, host_key_sha256: this.hostKeySha256 },
      ...more,
    };
  }

  logTail(lines = 30) {
    try {
      return fs.readFileSync(this.info.log, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  // Resolves once sshd answers; the account's lock may make it wait for
  // another suite's tests for a while.
  async start(timeoutMs = START_TIMEOUT_MS + 60000) {
    try {
      fs.accessSync(PYTHON, fs.constants.X_OK);
    } catch {
      throw missingPrerequisite('needs ' + PYTHON);
    }
    this.proc = spawn(PYTHON, [SSHD_HELPER], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // its own process group, as every fixture here
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    });
    this.proc.on('exit', (code, signal) => { this.exited = { code, signal }; });
    this.proc.stdin.on('error', function () { /* gone: its exit tells */ });
    let stderr = '';
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', function (d) { stderr += d; });
    this.proc.stdout.setEncoding('utf8');

    const line = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(function () {
        reject(new Error('sshd_helper.py said nothing within ' + timeoutMs + ' ms\n' + stderr));
      }, timeoutMs);
      const onData = (d) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          this.proc.stdout.off('data', onData);
          this.proc.stdout.resume(); // nothing more is expected; never let it block
          resolve(buf.slice(0, nl));
        }
      };
      this.proc.stdout.on('data', onData);
      this.proc.on('exit', function (code) {
        clearTimeout(timer);
        reject(new Error('sshd_helper.py exited ' + code + ' before starting sshd\n' + stderr));
      });
      this.proc.on('error', function (err) { clearTimeout(timer); reject(err); });
    });
    const info = JSON.parse(line);
    if (info.skip || info.error) {
      await this.stop();
      if (info.skip) {
        throw missingPrerequisite(info.skip);
      }
      throw new Error('sshd_helper.py: ' + info.error + '\n' + stderr);
    }
    this.info = info;
    return this;
  }

  // Ends the helper (which stops sshd and releases the account): its stdin
  // closed, then SIGTERM, then SIGKILL to its group. Resolves to its exit.
  async stop(timeoutMs = 20000) {
    if (this.proc && !this.exited) {
      const exited = once(this.proc, 'exit');
      this.proc.stdin.end();
      if (await exitsWithin(exited, timeoutMs) === 'late') {
        signalGroup(this.proc.pid, 'SIGTERM');
        if (await exitsWithin(exited, 5000) === 'late') {
          signalGroup(this.proc.pid, 'SIGKILL');
          await exited;
        }
      }
    }
    return this.exited;
  }
}

// Resolves to 'late' when the promise `exited` has not settled within ms.
async function exitsWithin(exited, ms) {
  let timer;
  const late = new Promise(function (resolve) { timer = setTimeout(resolve, ms, 'late'); });
  try {
    return await Promise.race([exited, late]);
  } finally {
    clearTimeout(timer); // a pending timer would keep node alive
  }
}

// ---- the browser ----------------------------------------------------------------

/**
 * What a test file that needs the SSH server starts with: the prerequisites,
 * then a real sshd. Returns {skip, sshd}: skip is false or the reason
 * (a missing prerequisite, or no root for sshd), sshd null when skipped.
 */
export async function prerequisitesWithSshd() {
  let skip = (await prerequisites()) || false;
  let sshd = null;
  if (!skip) {
    try {
      sshd = await new Sshd().start();
    } catch (err) {
      if (!(err instanceof Missing)) {
        throw err;
      }
      skip = err.message;
    }
  }
  return { skip, sshd };
}

/**
 * The end of a test file: closes the browser, stops the gateway (which must
 * exit cleanly on SIGTERM) and the SSH server; any of them may be null.
 */
export async function stopAll({ browser = null, gw = null, sshd = null }) {
  if (browser) {
    await browser.close();
  }
  try {
    if (gw) {
      const exit = await gw.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, 'posternd exits cleanly on SIGTERM\n' +
        gw.logTail());
    }
  } finally {
    if (sshd) {
      await sshd.stop();
    }
  }
}

export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
}

// A fresh context (own cookies) and page that record what the page
// reports: console errors and warnings, uncaught exceptions, crashes, and
// CSP violations. Chromium logs a violation as a console error; the page's
// own securitypolicyviolation events are reported too, through a binding
// that an init script calls (both are injected by the browser, so the CSP
// does not stop them, and they survive reloads).
//
// problems() lists everything unexpected so far. A failed fetch is logged by
// Chromium as a console error ("Failed to load resource: ... 401"); those
// are expected for the API answers a test provokes and are passed over
// when their path and status are listed in `allowHttpErrors`:
// [{ path: '/api/me', status: 401 }, ...].
export async function openPage(browser, { viewport = { width: 1280, height: 800 }, allowHttpErrors = [] } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  const seen = [];
  await context.exposeFunction('__posternCspViolation', function (text) {
    seen.push('CSP violation: ' + text);
  });
  await context.addInitScript(function () {
    document.addEventListener('securitypolicyviolation', function (e) {
      window.__posternCspViolation(e.violatedDirective + ' blocked ' +
        (e.blockedURI || 'inline') + ' at ' + e.sourceFile + ':' + e.lineNumber);
    });
  });
  const page = await context.newPage();
  page.on('console', function (msg) {
    const type = msg.type();
    if (type !== 'error' && type !== 'warning') {
      return;
    }
    const url = (msg.location() && msg.location().url) || '';
    const m = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(msg.text());
    if (m && url) {
      const p = new URL(url).pathname;
      const expected = allowHttpErrors.some(function (a) {
        return a.path === p && a.status === Number(m[1]);
      });
      if (expected) {
        return;
      }
    }
    seen.push('console.' + type + ': ' + msg.text() + (url ? ' (' + url + ')' : ''));
  });
  page.on('pageerror', function (err) { seen.push('pageerror: ' + err.message); });
  page.on('crash', function () { seen.push('page crashed'); });

  return { context, page, problems: function () { return seen.slice(); } };
}

// Saves a full-page screenshot as tests/artifacts/NAME.png; returns the path.
export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const file = path.join(ARTIFACTS_DIR, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// ---- waiting and pages ----------------------------------------------------------

// Polls fn until it returns a true value (which is returned); fails naming
// `what` at the deadline.
export async function eventually(fn, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) {
        return v;
      }
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      throw new Error('timed out after ' + timeoutMs + ' ms waiting for ' + what +
        ' (last: ' + (last instanceof Error ? last.message : JSON.stringify(last)) + ')');
    }
    await sleep(50);
  }
}

// Waits until the locator's text matches re; returns the text.
export async function textMatches(locator, re, what, timeoutMs) {
  return eventually(async function () {
    const t = (await locator.textContent()) || '';
    return re.test(t) ? t : null;
  }, what + ' to match ' + re, timeoutMs);
}

export async function focusedId(page) {
  return page.evaluate(function () { return document.activeElement && document.activeElement.id; });
}

// xterm.js itself warns when a background task (the canvas renderer's
// glyph cache warm-up) overran its idle slot: a note about a busy machine,
// not a fault of the page.
const XTERM_BUSY = /^console\.warning: task queue exceeded allotted deadline by \d+ms \(\S+\/vendor\/xterm\/[a-z-]+\.js\)$/;

// Runs body(page, context) with a fresh page (openPage's options:
// viewport, allowHttpErrors). On failure saves a screenshot
// (e2e-FAILED-<name>) and prints the logs of options.logs (fixtures with
// logTail() and a label: [gw, sshd]) before rethrowing. Fails when the page
// reported console errors, uncaught exceptions or CSP violations.
export async function withPage(browser, name, options, body) {
  const { logs = [], ...pageOptions } = options;
  const { context, page, problems } = await openPage(browser, pageOptions);
  page.setDefaultTimeout(10000);
  let failure = null;
  try {
    await body(page, context);
  } catch (err) {
    failure = err;
    try {
      const file = await screenshot(page, 'e2e-FAILED-' + name);
      console.error('screenshot of the failure: ' + file);
    } catch (e) {
      console.error('no failure screenshot: ' + e.message);
    }
    for (const f of logs) {
      if (f) {
        console.error((f.label || 'log') + ' log:\n' + f.logTail());
      }
    }
  }
  const found = problems().filter(function (p) { return !XTERM_BUSY.test(p); });
  await context.close();
  if (failure) {
    if (found.length) {
      console.error('the page also reported:\n' + found.join('\n'));
    }
    throw failure;
  }
  assert.deepEqual(found, [], 'the page reported problems');
}

// ---- signing in and the SSH terminal ----------------------------------------------

// Signs `user` in to the gateway through the API; the context then holds
// the session cookie.
export async function signIn(context, gw, user, password) {
  const res = await context.request.post(gw.baseUrl + '/api/login', {
    data: { user, password },
  });
  assert.equal(res.status(), 200, 'sign-in of ' + user + ': ' + (await res.text()));
}

// The terminal's lines as text, from xterm.js's buffer (ssh.html and
// player.html expose window.posternTerm).
export async function termLines(page) {
  return page.evaluate(function () {
    const buf = window.posternTerm.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) {
      lines.push(buf.getLine(i).translateToString(true));
    }
    return lines;
  });
}

// Waits until a terminal line matches re; returns that line.
export async function waitForLine(page, re, what, timeoutMs = 10000) {
  return eventually(async function () {
    return (await termLines(page)).find(function (l) { return re.test(l); });
  }, what + ' in the terminal (' + re + ')', timeoutMs);
}

// Waits until the last non-empty terminal line is a shell prompt ("$ " from sh).
export async function waitForPrompt(page, what = 'a shell prompt') {
  return eventually(async function () {
    const lines = (await termLines(page)).filter(function (l) { return l.trim() !== ''; });
    return lines.length && /\$\s*$/.test(lines[lines.length - 1]);
  }, what);
}

// Types a command line into the focused terminal, as a user would.
export async function typeLine(page, text) {
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

// Fills ssh.html's credentials form with a user name and password and
// submits it (Enter).
export async function fillAndConnect(page, user, password) {
  await page.getByLabel('User name on the machine').fill(user);
  await page.locator('#ssh-password').fill(password);
  await page.locator('#ssh-password').press('Enter');
}

// Waits until ssh.html is connected to linux01 as postern-test (the Sshd
// account), its form gone, a prompt shown.
export async function seeConnected(page) {
  await textMatches(page.locator('#status'), /^Connected to linux01 as postern-test$/,
    'the status line', 20000);
  assert.equal(await page.locator('#connect-form').isVisible(), false, 'the form is gone');
  await waitForPrompt(page);
}
