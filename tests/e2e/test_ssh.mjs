// Browser end-to-end test of the SSH terminal page (ssh.html): Debian's
// Chromium (driven by playwright-core) against a real posternd, which
// connects to a real OpenSSH server on 127.0.0.1 (the postern-test account,
// see fixtures.mjs: Sshd).
//
//   node --test tests/e2e/test_ssh.mjs
//
// with POSTERND and POSTERN set (see fixtures.mjs); needs root for sshd.
// Screenshots land in tests/artifacts/e2e-ssh*.png.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  Gateway, REPO_ROOT, eventually, fillAndConnect, focusedId, launchBrowser, prerequisitesWithSshd,
  run, screenshot, seeConnected, signIn, stopAll, termLines, textMatches, typeLine, waitForLine,
  waitForPrompt, withPage,
} from './fixtures.mjs';

// The SSH server first: without root or sshd there is nothing to test.
const { skip, sshd } = await prerequisitesWithSshd();

const PASSWORD = 'correct horse battery staple';
const VM = 'linux01';

function gatewayConfig(more = {}) {
  return {
    roles: { ops: { vms: ['linux*'], actions: ['ssh-login'] } },
    vms: [sshd.vmConfig(VM, { tags: ['linux'] })],
    ...more,
  };
}

let browser = null;
let gw = null;

before(async function () {
  if (skip) {
    return;
  }
  gw = await new Gateway({
    users: [{ name: 'alice', password: PASSWORD, roles: ['ops'] }],
    config: gatewayConfig(),
  }).start();
  browser = await launchBrowser();
});

after(() => stopAll({ browser, gw, sshd }));

// ---- helpers -----------------------------------------------------------------

const form = {
  user(page) { return page.getByLabel('User name on the machine'); },
  password(page) { return page.locator('#ssh-password'); },
  submit(page) { return page.getByRole('button', { name: 'Connect', exact: true }); },
  message(page) { return page.locator('#connect-message'); },
  view(page) { return page.locator('#connect-form'); },
};

function status(page) { return page.locator('#status'); }

async function termSize(page) {
  return page.evaluate(function () {
    return { cols: window.posternTerm.cols, rows: window.posternTerm.rows };
  });
}

// The pty's size as the VM sees it (stty size: "rows cols").
async function ptySizeMatches(page, what) {
  const { cols, rows } = await termSize(page);
  const marker = 'sz-' + randomBytes(3).toString('hex');
  await typeLine(page, 'echo ' + marker + ' $(stty size)');
  await waitForLine(page, new RegExp('^' + marker + ' ' + rows + ' ' + cols + '$'),
    what + ': the pty is ' + rows + ' rows by ' + cols + ' columns');
  return { cols, rows };
}

// ---- tests -------------------------------------------------------------------

test('the committed xterm.js files are the ones package.json pins',
  { skip }, async function () {
    const r = await run([path.join(REPO_ROOT, 'web', 'vendor', 'update.sh'), '--check']);
    assert.equal(r.code, 0, 'web/vendor/update.sh --check:\n' + r.stdout + r.stderr);
  });

test('from the machine list to a shell: type, read back, resize, copy, paste, exit, reconnect',
  { skip, timeout: 120000 }, async function () {
    await withPage(browser, 'ssh', {
      logs: [gw, sshd],
      allowHttpErrors: [{ path: '/api/me', status: 401 }],
    }, async function (page, context) {
      await context.grantPermissions(['clipboard-read', 'clipboard-write'],
        { origin: gw.baseUrl });

      // Sign in on the console and follow the machine's Connect button.
      await page.goto(gw.baseUrl + '/');
      await page.getByLabel('User name').fill('alice');
      await page.getByLabel('Password').fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('link', { name: 'Connect to linux01 via SSH' }).click();
      await page.waitForURL(gw.baseUrl + '/ssh.html?vm=linux01');

      // The credentials form, over an empty terminal.
      await page.getByRole('heading', { name: 'Connect to linux01' }).waitFor();
      assert.equal(await page.title(), 'linux01 \u2013 SSH \u2013 Postern');
      assert.equal(await page.locator('#vm-name').textContent(), 'linux01');
      assert.equal(await focusedId(page), 'ssh-user', 'the user name field has focus');
      assert.equal(await status(page).textContent(), 'Not connected');
      assert.equal(await page.getByRole('link', { name: 'All machines' }).getAttribute('href'), '/');
      assert.equal(await page.locator('#reconnect').isVisible(), false);

      // Nothing typed: said in words, nothing sent.
      let sockets = 0;
      page.on('websocket', function () { sockets++; });
      await form.submit(page).click();
      await textMatches(form.message(page), /^Enter your user name on linux01\.$/, 'the empty-form message');
      assert.equal(await focusedId(page), 'ssh-user');
      assert.equal(sockets, 0, 'no WebSocket for an empty form');

      // The right credentials: the status line follows the gateway's steps.
      const sentFrames = [];
      page.on('websocket', function (ws) {
        ws.on('framesent', function (f) { sentFrames.push(f.payload); });
      });
      const seen = [];
      await page.exposeFunction('__statusSeen', function (t) { seen.push(t); });
      await page.evaluate(function () {
        const el = document.getElementById('status');
        new MutationObserver(function () { window.__statusSeen(el.textContent); })
          .observe(el, { childList: true, characterData: true, subtree: true });
      });
      await fillAndConnect(page, sshd.user, sshd.password);
      await seeConnected(page);
      assert.ok(seen.some(function (t) { return /^Signing in to linux01/.test(t); }),
        'the status line said it was signing in: ' + JSON.stringify(seen));

      // The secrets left the page; the connect message carried the size.
      assert.equal(await form.password(page).inputValue(), '', 'the password field is cleared');
      const connect = sentFrames.filter(function (p) {
        return typeof p === 'string' && p.indexOf('"connect"') >= 0;
      });
      assert.equal(connect.length, 1, 'one connect message');
      const sent = JSON.parse(connect[0]);
      const size = await termSize(page);
      assert.deepEqual(Object.keys(sent).sort(), ['cols', 'password', 'rows', 'type', 'username']);
      assert.equal(sent.username, sshd.user);
      assert.equal(sent.cols, size.cols);
      assert.equal(sent.rows, size.rows);
      assert.ok(size.cols > 100 && size.rows > 20, 'the terminal fills the window: ' +
        JSON.stringify(size));
      assert.equal(await page.evaluate(function () {
        return document.activeElement.classList.contains('xterm-helper-textarea');
      }), true, 'the terminal has the keyboard focus');
      assert.equal(await page.locator('#disconnect').isVisible(), true);
      // The canvas renderer draws it: no <style> element (the CSP would
      // refuse one) and no inline style attribute from the renderer.
      assert.equal(await page.locator('style').count(), 0, 'no <style> element');
      assert.equal(await page.locator('.xterm canvas').count() > 0, true, 'canvas layers');
      assert.equal(await page.locator('.xterm-rows').count(), 0, 'no DOM renderer rows');

      // Type a command, read its output back from the terminal.
      const marker = 'hello-' + randomBytes(6).toString('hex');
      await typeLine(page, 'echo ' + marker);
      await waitForLine(page, new RegExp('^' + marker + '$'), 'the echoed marker');
      await typeLine(page, "printf '\\033[1;32mgreen\\033[0m \\033[33myellow\\033[0m \\033[1;34mblue\\033[0m\\n'");
      await waitForLine(page, /^green yellow blue$/, 'the coloured line');
      await ptySizeMatches(page, 'at connect');
      await waitForPrompt(page);
      const shot = await screenshot(page, 'e2e-ssh');
      assert.ok(fs.statSync(shot).size > 10000, 'a real screenshot');

      // The window shrinks: the terminal follows and the VM's pty too.
      await page.setViewportSize({ width: 900, height: 560 });
      await eventually(async function () {
        const s = await termSize(page);
        return s.cols < size.cols && s.rows < size.rows;
      }, 'the terminal to get smaller');
      await ptySizeMatches(page, 'after the resize');
      await page.setViewportSize({ width: 1280, height: 800 });
      await eventually(async function () {
        return (await termSize(page)).cols === size.cols;
      }, 'the terminal to grow back');

      // Copy: select the marker (double click on it), Ctrl+Shift+C.
      const lines = await termLines(page);
      const row = lines.lastIndexOf(marker);
      const where = await page.evaluate(function (r) {
        const t = window.posternTerm;
        const box = t.element.querySelector('.xterm-screen').getBoundingClientRect();
        const y = r - t.buffer.active.viewportY;
        return { x: box.x + (box.width / t.cols) * 3, y: box.y + (box.height / t.rows) * (y + 0.5),
          visible: y >= 0 && y < t.rows };
      }, row);
      assert.ok(where.visible, 'the marker is on screen');
      await page.mouse.dblclick(where.x, where.y);
      assert.equal(await page.evaluate(function () { return window.posternTerm.getSelection(); }),
        marker, 'the double click selected the marker');
      await page.keyboard.press('Control+Shift+C');
      await eventually(async function () {
        return (await page.evaluate(function () { return navigator.clipboard.readText(); })) === marker;
      }, 'the marker on the clipboard');

      // Paste: Ctrl+Shift+V puts the clipboard into the shell.
      const pasted = 'pasted-' + randomBytes(4).toString('hex');
      await page.evaluate(function (t) { return navigator.clipboard.writeText(t); }, 'echo ' + pasted);
      await page.keyboard.press('Control+Shift+V');
      await page.keyboard.press('Enter');
      await waitForLine(page, new RegExp('^' + pasted + '$'), 'the pasted command\'s output');

      // exit 3: the status line says so, with the exit status; Reconnect.
      await typeLine(page, 'exit 3');
      await textMatches(status(page),
        /^Session closed: The session ended \(exit status 3\)\.$/, 'the closed status');
      await page.locator('#reconnect').waitFor({ state: 'visible' });
      assert.equal(await focusedId(page), 'reconnect', 'Reconnect has the focus');
      assert.equal(await page.locator('#disconnect').isVisible(), false);
      await waitForLine(page, /^\[The session ended \(exit status 3\)\.\]$/, 'the end in the terminal');
      await screenshot(page, 'e2e-ssh-closed');

      // Reconnect: the form again, the user name kept, the password not.
      await page.locator('#reconnect').click();
      await form.view(page).waitFor({ state: 'visible' });
      assert.equal(await form.user(page).inputValue(), sshd.user);
      assert.equal(await form.password(page).inputValue(), '');
      assert.equal(await focusedId(page), 'ssh-password');
      await form.password(page).fill(sshd.password);
      await form.password(page).press('Enter');
      await seeConnected(page);
      const again = 'again-' + randomBytes(4).toString('hex');
      await typeLine(page, 'echo ' + again);
      await waitForLine(page, new RegExp('^' + again + '$'), 'output after reconnecting');

      // Disconnect from the page.
      await page.locator('#disconnect').click();
      await textMatches(status(page), /^Disconnected\.$/, 'the disconnected status');
      assert.equal(await page.locator('#reconnect').isVisible(), true);
      await eventually(function () {
        return /session\.end .*vm=linux01/.test(gw.logText().split('session.start').pop());
      }, 'the gateway to end the session');
    });
  });

test('a wrong VM password is told in words; the right one then works',
  { skip, timeout: 60000 }, async function () {
    await withPage(browser, 'ssh-auth', { logs: [gw, sshd] }, async function (page, context) {
      await signIn(context, gw, 'alice', PASSWORD);
      await page.goto(gw.baseUrl + '/ssh.html?vm=' + VM);
      await form.user(page).waitFor();

      await fillAndConnect(page, sshd.user, 'not the password');
      await textMatches(form.message(page),
        /^Authentication failed: wrong user name, password or key\.$/, 'the error', 20000);
      assert.match(await status(page).textContent(),
        /^Could not connect: Authentication failed: wrong user name, password or key\.$/);
      assert.equal(await form.view(page).isVisible(), true, 'the form stays');
      assert.equal(await form.submit(page).isEnabled(), true, 'the button is enabled again');
      assert.equal(await form.user(page).inputValue(), sshd.user, 'the user name is kept');
      assert.equal(await form.password(page).inputValue(), '', 'the wrong password is cleared');
      assert.equal(await focusedId(page), 'ssh-password', 'the password field has focus');
      await screenshot(page, 'e2e-ssh-auth-error');
      await page.setViewportSize({ width: 390, height: 844 });
      await page.emulateMedia({ colorScheme: 'dark' });
      await screenshot(page, 'e2e-ssh-form-narrow-dark');
      await page.emulateMedia({ colorScheme: 'light' });
      await page.setViewportSize({ width: 1280, height: 800 });

      await form.password(page).fill(sshd.password);
      await form.submit(page).click();
      await seeConnected(page);
      await typeLine(page, 'exit');
      await textMatches(status(page), /^Session closed: The session ended \(exit status 0\)\.$/,
        'the closed status');
    });
  });

test('a private key from a file, with its passphrase; a public key is refused in words',
  { skip, timeout: 60000 }, async function () {
    await withPage(browser, 'ssh-key', { logs: [gw, sshd] }, async function (page, context) {
      await signIn(context, gw, 'alice', PASSWORD);
      await page.goto(gw.baseUrl + '/ssh.html?vm=' + VM);
      await form.user(page).fill(sshd.user);
      await page.getByRole('radio', { name: 'Private key' }).check();
      assert.equal(await form.password(page).isVisible(), false, 'no password field for a key');

      // A public key pasted by mistake.
      await page.getByRole('textbox', { name: 'Private key' })
        .fill(fs.readFileSync(sshd.clientKey + '.pub', 'utf8'));
      await form.submit(page).click();
      await textMatches(form.message(page),
        /^That is a public key\. Use the private key \(the file without \.pub\)\.$/,
        'the public-key message');

      await screenshot(page, 'e2e-ssh-key-form');

      // The encrypted key from its file, and its passphrase.
      await page.getByRole('textbox', { name: 'Private key' }).fill('');
      await page.getByLabel('Key file').setInputFiles(sshd.clientKeyEncrypted);
      await page.getByLabel('Passphrase').fill(sshd.clientKeyPassphrase);
      const sentFrames = [];
      page.on('websocket', function (ws) {
        ws.on('framesent', function (f) { sentFrames.push(f.payload); });
      });
      await form.submit(page).click();
      await seeConnected(page);
      const connect = JSON.parse(sentFrames.find(function (p) {
        return typeof p === 'string' && p.indexOf('"connect"') >= 0;
      }));
      assert.match(connect.private_key, /^-----BEGIN OPENSSH PRIVATE KEY-----/);
      assert.equal(connect.passphrase, sshd.clientKeyPassphrase);
      assert.equal(connect.password, undefined);
      assert.equal(await page.getByLabel('Passphrase').inputValue(), '', 'the passphrase is cleared');
      assert.equal(await page.getByLabel('Key file').inputValue(), '', 'the file is cleared');

      const marker = 'key-' + randomBytes(4).toString('hex');
      await typeLine(page, 'echo ' + marker + '-$(id -un)');
      await waitForLine(page, new RegExp('^' + marker + '-postern-test$'), 'the key user\'s name');
      await typeLine(page, 'exit');
      await textMatches(status(page), /^Session closed: /, 'the closed status');
    });
  });

test('not signed in, or a machine that is not yours: said in words, with the way back',
  { skip, timeout: 60000 }, async function () {
    await withPage(browser, 'ssh-refused', {
      logs: [gw, sshd],
      allowHttpErrors: [{ path: '/api/me', status: 401 }],
    }, async function (page, context) {
      await page.goto(gw.baseUrl + '/ssh.html?vm=' + VM);
      await textMatches(page.locator('#blocked-text'),
        /^Sign in first: you are not signed in, or your session has ended\.$/, 'the sign-in message');
      assert.equal(await page.getByRole('link', { name: 'Sign in' }).getAttribute('href'), '/');
      assert.equal(await form.view(page).isVisible(), false, 'no credentials form');

      await signIn(context, gw, 'alice', PASSWORD);
      await page.goto(gw.baseUrl + '/ssh.html?vm=db99');
      await textMatches(page.locator('#blocked-text'),
        /^No machine named \u201cdb99\u201d is available to you over SSH\.$/, 'the no-machine message');
      assert.equal(await page.getByRole('link', { name: 'Back to your machines' })
        .getAttribute('href'), '/');
      assert.equal(await focusedId(page), 'blocked-link');
      await screenshot(page, 'e2e-ssh-no-machine');
    });
  });

test('an idle session is warned, then closed by the gateway, in words',
  { skip, timeout: 60000 }, async function () {
    // Its own gateway: 4 s of idleness ends a session (warned 2 s before).
    const igw = await new Gateway({
      users: [{ name: 'alice', password: PASSWORD, roles: ['ops'] }],
      config: gatewayConfig({ limits: { idle_timeout_seconds: 4 } }),
    }).start();
    try {
      await withPage(browser, 'ssh-idle', { logs: [igw, sshd] }, async function (page, context) {
        await signIn(context, igw, 'alice', PASSWORD);
        await page.goto(igw.baseUrl + '/ssh.html?vm=' + VM);
        await fillAndConnect(page, sshd.user, sshd.password);
        await seeConnected(page);
        const warning = page.locator('#warning');
        await warning.waitFor({ state: 'visible' });
        assert.match(await warning.textContent(), /^The session will close in \d+ s unless you type\.$/);
        await textMatches(status(page),
          /^Session closed: The session was idle for 4 s and has been closed\.$/, 'the idle end');
        assert.equal(await warning.isVisible(), false, 'the warning is gone');
      });
    } finally {
      const exit = await igw.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, 'posternd exits cleanly on SIGTERM');
    }
  });
