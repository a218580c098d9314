// Browser end-to-end test of the console's sign-in and machine list:
// Debian's Chromium (driven by playwright-core) against a real posternd.
//
//   node --test tests/e2e/test_login.mjs
//
// with POSTERND and POSTERN set (see fixtures.mjs). Screenshots land in
// tests/artifacts/e2e-*.png.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  Gateway, eventually, focusedId, launchBrowser, prerequisites, screenshot, stopAll,
  textMatches, totpCode, withPage,
} from './fixtures.mjs';

const skip = (await prerequisites()) || false;

// Never connected to: the test only lists these machines.
const HOST_KEY = 'SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0';
const RDP_CERT = Array.from({ length: 32 }, function (_, i) {
  return (i * 7 + 16).toString(16).toUpperCase().padStart(2, '0');
}).join(':');
const ssh = { port: 22, host_key_sha256: HOST_KEY };
const rdp = { port: 3389, cert_sha256: RDP_CERT };

const CONFIG = {
  roles: {
    ops: { vms: ['web*', 'tag:windows'], actions: ['ssh-login', 'rdp-login', 'tunnel'] },
    dba: { vms: ['db*'], actions: ['ssh-login'] },
    jump: { vms: ['jump*'], actions: ['tunnel'] },
  },
  vms: [
    { name: 'web01', address: '127.0.0.1', tags: ['linux', 'prod'], ssh },
    { name: 'web02', address: '127.0.0.1', tags: ['linux'], ssh, rdp, jit: { required: true } },
    { name: 'web03', address: '127.0.0.1', tags: ['linux', 'staging'], ssh },
    { name: 'web10', address: '127.0.0.1', tags: ['linux', 'staging'], ssh },
    { name: 'web11', address: '127.0.0.1', tags: ['linux', 'prod'], ssh },
    { name: 'win01', address: '127.0.0.1', tags: ['windows'], rdp },
    { name: 'db01', address: '127.0.0.1', tags: ['linux', 'db'], ssh },
    { name: 'jump01', address: '127.0.0.1', ssh },
  ],
};

const PASSWORD = 'correct horse battery staple';

let browser = null;
let gw = null;

before(async function () {
  if (skip) {
    return;
  }
  gw = await new Gateway({
    users: [
      { name: 'alice', password: PASSWORD, roles: ['ops', 'jump'] },
      { name: 'bob', password: PASSWORD, roles: ['ops'], totp: true },
    ],
    config: CONFIG,
  }).start();
  browser = await launchBrowser();
});

after(() => stopAll({ browser, gw }));

// ---- helpers -----------------------------------------------------------------

// Counts the requests a page makes to one path.
function countRequests(page, pathname) {
  const counter = { n: 0 };
  page.on('request', function (r) {
    if (new URL(r.url()).pathname === pathname) {
      counter.n++;
    }
  });
  return counter;
}

const login = {
  form: function (page) { return page.locator('#login-form'); },
  user: function (page) { return page.getByLabel('User name'); },
  password: function (page) { return page.getByLabel('Password'); },
  code: function (page) { return page.getByLabel('One-time code'); },
  submit: function (page) { return page.locator('#login-submit'); },
  message: function (page) { return page.getByRole('alert'); },
};

async function seeLoginForm(page) {
  await page.getByRole('heading', { name: 'Sign in' }).waitFor({ state: 'visible' });
  await login.user(page).waitFor({ state: 'visible' });
  assert.equal(await page.locator('#vms-view').isVisible(), false, 'the machine list is hidden');
  assert.equal(await page.locator('#who').isVisible(), false, 'no user shown before sign-in');
}

async function seeMachines(page) {
  await page.getByRole('heading', { name: 'Your machines' }).waitFor({ state: 'visible' });
  assert.equal(await login.form(page).isVisible(), false, 'the sign-in form is hidden');
  return page.locator('#vm-list .vm-name').allTextContents();
}

// ---- tests -------------------------------------------------------------------

test('sign in, see the permitted machines, stay signed in on reload, log out',
  { skip, timeout: 90000 }, async function () {
    await withPage(browser, 'login', {
      logs: [gw],
      allowHttpErrors: [{ path: '/api/me', status: 401 }, { path: '/api/login', status: 401 }],
    }, async function (page, context) {
      await page.goto(gw.baseUrl + '/');
      await seeLoginForm(page);
      assert.equal(await page.title(), 'Sign in \u2013 Postern');
      assert.equal(await focusedId(page), 'login-user', 'the user name field has focus');
      assert.match(await page.locator('#health').textContent(), /ok|checking/);

      // Nothing typed: said in words, no request sent.
      const logins = countRequests(page, '/api/login');
      await login.submit(page).click();
      await textMatches(login.message(page), /^Enter your user name and password\.$/,
        'the empty-form message');
      assert.equal(await focusedId(page), 'login-user');
      assert.equal(logins.n, 0, 'no sign-in request for an empty form');

      // A wrong password: the server's words, the form usable again.
      await login.user(page).fill('alice');
      await login.password(page).fill('not the password');
      await login.submit(page).click();
      await textMatches(login.message(page), /^Invalid user name or password\.$/,
        'the error message');
      assert.equal(await login.submit(page).isEnabled(), true, 'the button is enabled again');
      assert.equal(await login.password(page).inputValue(), '', 'the wrong password is cleared');
      assert.equal(await focusedId(page), 'login-password', 'the password field has focus');
      assert.equal(await login.code(page).isVisible(), false, 'no code field for alice');
      await screenshot(page, 'e2e-login-error');

      // The right one, submitted with Enter. The request is held back a
      // moment to see the button disabled while the gateway answers.
      let released;
      const held = new Promise(function (resolve) { released = resolve; });
      await page.route('**/api/login', async function (route) {
        await held;
        await route.continue();
      });
      await login.password(page).fill(PASSWORD);
      await login.password(page).press('Enter');
      await eventually(async function () {
        return !(await login.submit(page).isEnabled()) &&
          /Signing in/.test(await login.submit(page).textContent());
      }, 'the button to be disabled while signing in');
      released();
      const names = await seeMachines(page);
      await page.unroute('**/api/login');

      // Permitted machines only, sorted; db01 belongs to another role.
      assert.deepEqual(names, ['jump01', 'web01', 'web02', 'web03', 'web10', 'web11', 'win01']);
      assert.equal(await page.getByText('db01').count(), 0, 'db01 is not shown');
      assert.equal(await page.title(), 'Your machines \u2013 Postern');
      assert.equal(await focusedId(page), 'vms-title', 'focus moves to the list heading');
      assert.equal(await page.locator('#who-name').textContent(), 'alice');
      assert.equal(await page.locator('#who-roles').textContent(), 'ops, jump');
      assert.equal(await page.locator('#vms-count').textContent(), '7 machines');

      const web01 = page.locator('#vm-list > li').filter({ hasText: 'web01' });
      assert.deepEqual(await web01.locator('.tag').allTextContents(), ['linux', 'prod']);
      const ssh01 = page.getByRole('link', { name: 'Connect to web01 via SSH' });
      assert.equal(await ssh01.getAttribute('href'), '/ssh.html?vm=web01');
      assert.equal(await web01.getByRole('link').count(), 1, 'web01 has SSH only');
      assert.equal(await web01.locator('.badge-jit').isVisible(), false);

      const web02 = page.locator('#vm-list > li').filter({ hasText: 'web02' });
      assert.deepEqual(await web02.getByRole('link').allTextContents(),
        ['Connect to web02 via SSH', 'Connect to web02 via RDP']);
      assert.equal(await page.getByRole('link', { name: 'Connect to web02 via RDP' })
        .getAttribute('href'), '/rdp.html?vm=web02');
      assert.equal(await web02.locator('.badge-jit').isVisible(), true, 'web02 needs JIT');

      const win01 = page.locator('#vm-list > li').filter({ hasText: 'win01' });
      assert.deepEqual(await win01.getByRole('link').allTextContents(),
        ['Connect to win01 via RDP']);

      // Tunnel only: no browser button, the native-client command instead.
      const jump01 = page.locator('#vm-list > li').filter({ hasText: 'jump01' });
      assert.equal(await jump01.getByRole('link').count(), 0);
      assert.equal(await jump01.locator('code').textContent(), 'postern tunnel --vm jump01');

      // Seven machines: the filter box is there; it matches names and tags.
      const filter = page.getByLabel('Filter by name or tag');
      await filter.fill('win');
      assert.deepEqual(await page.locator('#vm-list > li:visible .vm-name').allTextContents(),
        ['win01']);
      assert.equal(await page.locator('#vms-count').textContent(), '1 of 7 machines');
      await filter.fill('prod');
      assert.deepEqual(await page.locator('#vm-list > li:visible .vm-name').allTextContents(),
        ['web01', 'web11']);
      await filter.fill('nothing-like-this');
      assert.equal(await page.locator('#vm-list > li:visible').count(), 0);
      assert.equal(await page.locator('#vms-nomatch').isVisible(), true);
      await filter.fill('');
      assert.equal(await page.locator('#vm-list > li:visible').count(), 7);

      await screenshot(page, 'e2e-machines-wide');
      await page.setViewportSize({ width: 390, height: 844 });
      await screenshot(page, 'e2e-machines-narrow');
      await page.setViewportSize({ width: 1280, height: 800 });
      await page.emulateMedia({ colorScheme: 'dark' });
      await screenshot(page, 'e2e-machines-dark');
      await page.emulateMedia({ colorScheme: 'light' });

      // A reload keeps the session: straight to the list.
      const before = logins.n;
      await page.reload();
      assert.deepEqual(await seeMachines(page), ['jump01', 'web01', 'web02', 'web03', 'web10', 'web11', 'win01']);
      assert.equal(await page.locator('#who-name').textContent(), 'alice');
      assert.equal(logins.n, before, 'no new sign-in after the reload');

      // Log out: the form again, the cookie gone, the session dead.
      await page.getByRole('button', { name: 'Log out' }).click();
      await seeLoginForm(page);
      await textMatches(login.message(page), /^You have logged out\.$/, 'the logout message');
      assert.equal(await focusedId(page), 'login-user');
      assert.equal(await login.user(page).inputValue(), '', 'the form is reset');
      const cookies = await context.cookies(gw.baseUrl);
      assert.equal(cookies.filter(function (c) { return c.name === 'postern_session' && c.value; })
        .length, 0, 'no session cookie left');
      const me = await context.request.get(gw.baseUrl + '/api/me');
      assert.equal(me.status(), 401);

      await page.reload();
      await seeLoginForm(page);
    });
  });

test('a user with a second factor is asked for the one-time code',
  { skip, timeout: 60000 }, async function () {
    await withPage(browser, 'mfa', {
      logs: [gw],
      allowHttpErrors: [{ path: '/api/me', status: 401 }, { path: '/api/login', status: 401 }],
    }, async function (page) {
      const secret = gw.user('bob').totpSecret;
      await page.goto(gw.baseUrl + '/');
      await seeLoginForm(page);
      assert.equal(await login.code(page).isVisible(), false, 'no code field at first');

      await login.user(page).fill('bob');
      await login.password(page).fill(PASSWORD);
      await login.submit(page).click();
      await login.code(page).waitFor({ state: 'visible' });
      await textMatches(login.message(page), /^Password accepted\. Now enter your one-time code\.$/,
        'the request for a code');
      assert.equal(await focusedId(page), 'login-totp', 'the code field has focus');
      assert.equal(await login.password(page).inputValue(), PASSWORD, 'the password is kept');
      assert.equal(await login.submit(page).textContent(), 'Verify and sign in');
      await screenshot(page, 'e2e-login-mfa');

      // A wrong code (one that is valid in no step the server accepts).
      const now = Date.now() / 1000;
      const valid = [now - 30, now, now + 30, now + 60].map(function (t) { return totpCode(secret, t); });
      let wrong = 0;
      while (valid.includes(String(wrong).padStart(6, '0'))) {
        wrong++;
      }
      await login.code(page).fill(String(wrong).padStart(6, '0'));
      await login.code(page).press('Enter');
      await textMatches(login.message(page), /^Invalid or already used one-time code\.$/,
        'the wrong-code message');
      assert.equal(await login.code(page).isVisible(), true, 'the code field stays');
      assert.equal(await login.code(page).inputValue(), '', 'the wrong code is cleared');
      assert.equal(await focusedId(page), 'login-totp');

      await login.code(page).fill(totpCode(secret));
      await login.submit(page).click();
      assert.deepEqual(await seeMachines(page), ['web01', 'web02', 'web03', 'web10', 'web11', 'win01']);
      assert.equal(await page.locator('#who-name').textContent(), 'bob');
    });
  });

test('too many failures: the wait is shown, then sign-in works',
  { skip, timeout: 90000 }, async function () {
    // Its own gateway: a throttle that slows down from the first failure.
    const tgw = await new Gateway({
      users: [{ name: 'carol', password: PASSWORD, roles: ['ops'] }],
      config: {
        ...CONFIG,
        auth: { throttle: { free_failures: 0, max_delay_seconds: 4, lock_failures: 100,
          lock_seconds: 60 } },
      },
    }).start();
    try {
      await withPage(browser, 'throttle', {
        logs: [tgw],
        allowHttpErrors: [{ path: '/api/me', status: 401 }, { path: '/api/login', status: 401 },
          { path: '/api/login', status: 429 }],
      }, async function (page) {
        await page.goto(tgw.baseUrl + '/');
        await seeLoginForm(page);
        await login.user(page).fill('carol');

        // Wrong passwords until the gateway asks to wait (the first failure
        // already sets a 2 s wait; a slow machine may need one more try).
        let throttled = null;
        for (let i = 0; i < 4 && !throttled; i++) {
          await login.password(page).fill('wrong ' + i);
          const answer = page.waitForResponse('**/api/login');
          await login.submit(page).click();
          const res = await answer;
          if (res.status() === 429) {
            throttled = await res.json();
          } else {
            assert.equal(res.status(), 401);
          }
          await eventually(async function () {
            return /\S/.test(await login.message(page).textContent());
          }, 'a message after attempt ' + i);
        }
        assert.ok(throttled, 'the gateway answered 429');
        assert.ok(throttled.retry_after >= 1, 'retry_after ' + throttled.retry_after);

        await textMatches(login.message(page),
          /^Too many failed sign-in attempts\. Try again in \d+ seconds?\.$/, 'the wait message');
        assert.equal(await login.submit(page).isEnabled(), false, 'the button waits');
        assert.match(await login.submit(page).textContent(), /^Try again in \d+ seconds?$/);
        await screenshot(page, 'e2e-login-throttled');

        // The button comes back by itself once the wait is over.
        await eventually(function () { return login.submit(page).isEnabled(); },
          'the button to be enabled again', (throttled.retry_after + 3) * 1000);
        await textMatches(login.message(page), /^You can try again now\.$/, 'the retry message');
        assert.equal(await login.submit(page).textContent(), 'Sign in');

        await login.password(page).fill(PASSWORD);
        await login.submit(page).click();
        assert.deepEqual(await seeMachines(page), ['web01', 'web02', 'web03', 'web10', 'web11', 'win01']);
      }, tgw);
    } finally {
      const exit = await tgw.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, 'posternd exits cleanly on SIGTERM');
    }
  });
