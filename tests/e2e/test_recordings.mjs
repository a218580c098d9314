// Browser end-to-end test of the auditor pages (recordings.html and
// player.html): Debian's Chromium (driven by playwright-core) against a
// real posternd recording real SSH sessions to a real OpenSSH server on
// 127.0.0.1 (the postern-test account, see fixtures.mjs: Sshd).
//
//   node --test tests/e2e/test_recordings.mjs
//
// with POSTERND and POSTERN set (see fixtures.mjs); needs root for sshd.
// Screenshots land in tests/artifacts/e2e-recordings*.png and
// e2e-player*.png.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  Gateway, eventually, fillAndConnect, launchBrowser, prerequisitesWithSshd, screenshot,
  seeConnected, signIn, sleep, stopAll, termLines, textMatches, typeLine, waitForLine, withPage,
} from './fixtures.mjs';

// The SSH server first: without root or sshd there is nothing to test.
const { skip, sshd } = await prerequisitesWithSshd();

const PASSWORD = 'correct horse battery staple';
const VM = 'linux01';

let browser = null;
let gw = null;

// The gateway's audit log, one object per line.
function readAudit() {
  return fs.readFileSync(path.join(gw.dir, 'state', 'audit.log'), 'utf8')
    .split('\n').filter(Boolean).map(function (l) { return JSON.parse(l); });
}

before(async function () {
  if (skip) {
    return;
  }
  gw = await new Gateway({
    users: [
      { name: 'alice', password: PASSWORD, roles: ['ops'] },
      { name: 'audrey', password: PASSWORD, roles: ['auditors'] },
    ],
    config: {
      roles: {
        ops: { vms: ['linux*'], actions: ['ssh-login'] },
        auditors: { vms: ['*'], actions: ['auditor'] },
      },
      vms: [sshd.vmConfig(VM, { recording: 'on' })],
    },
  }).start();
  browser = await launchBrowser();
});

after(() => stopAll({ browser, gw, sshd }));

// ---- helpers -----------------------------------------------------------------

// alice's shell on the VM through ssh.html, signed in and connected.
async function openShell(page, context) {
  await signIn(context, gw, 'alice', PASSWORD);
  await page.goto(gw.baseUrl + '/ssh.html?vm=' + VM);
  await fillAndConnect(page, sshd.user, sshd.password);
  await seeConnected(page);
}

// The recordings the auditor's context sees, by the API.
async function listRecordings(context, query = '') {
  const res = await context.request.get(gw.baseUrl + '/api/recordings' + query);
  assert.equal(res.status(), 200, 'GET /api/recordings' + query + ': ' + (await res.text()));
  const body = await res.json();
  assert.ok(Array.isArray(body.recordings), 'a list of recordings');
  return body.recordings;
}

// Waits for the one recording of alice not in `known` (ids) to reach `state`.
async function waitForRecording(context, known, state, timeoutMs = 30000) {
  return eventually(async function () {
    const recs = await listRecordings(context);
    return recs.find(function (r) {
      return r.user === 'alice' && r.vm === VM && !known.includes(r.id) && r.state === state;
    });
  }, 'a ' + state + ' recording of alice on ' + VM, timeoutMs);
}

// Sets the player's seek bar as a pointer would (value, then input and
// change events) and waits until the terminal shows that time.
async function seek(page, where) {
  const before = await page.evaluate(function () { return document.body.dataset.seeked || null; });
  const target = await page.evaluate(function (w) {
    const s = document.getElementById('seek');
    s.value = w === 'end' ? s.max : String(w);
    s.dispatchEvent(new Event('input', { bubbles: true }));
    s.dispatchEvent(new Event('change', { bubbles: true }));
    return Number(s.value);
  }, where);
  const expected = String(Math.round(target * 1000) / 1000);
  await eventually(async function () {
    return page.evaluate(function (e) { return document.body.dataset.seeked === e; }, expected);
  }, 'the seek to ' + expected + ' s to settle (it was ' + before + ')');
  return target;
}

// Compares the player's screen (size, buffer, cursor, visible lines) with
// a terminal that was given every event up to the seek bar's time, one
// after the other from the start.
async function sameAsReplay(page) {
  return page.evaluate(async function () {
    const { parser, timeline } = window.posternPlayer;
    const t = Number(document.getElementById('seek').value);
    const n = timeline.countAt(t, document.getElementById('idle').checked);
    const ref = new window.Terminal({
      cols: parser.header.width, rows: parser.header.height, scrollback: 1000,
    });
    const write = function (t2, d) { return new Promise(function (r) { t2.write(d, r); }); };
    let out = '';
    for (let i = 0; i < n; i++) {
      const e = parser.events[i];
      const m = e.code === 'r' ? /^(\d+)x(\d+)$/.exec(e.data) : null;
      if (e.code === 'o') {
        out += e.data;
      } else if (m) {
        await write(ref, out);
        out = '';
        ref.resize(Number(m[1]), Number(m[2]));
      }
    }
    await write(ref, out);
    await write(window.posternTerm, '');
    const dump = function (term) {
      const b = term.buffer.active;
      const lines = [];
      for (let i = b.baseY; i < b.baseY + term.rows; i++) {
        lines.push(b.getLine(i).translateToString(true));
      }
      return { type: b.type, cols: term.cols, rows: term.rows, x: b.cursorX, y: b.cursorY, lines };
    };
    const a = dump(ref);
    const b = dump(window.posternTerm);
    ref.dispose();
    const same = JSON.stringify(a) === JSON.stringify(b);
    return same ? { same, n } : { same, n, replay: a, player: b };
  });
}

async function bodyState(page) {
  return page.evaluate(function () { return document.body.dataset.state; });
}

async function waitForState(page, want, timeoutMs = 15000) {
  return eventually(async function () { return (await bodyState(page)) === want; },
    'body[data-state=' + want + ']', timeoutMs);
}

// ---- tests -------------------------------------------------------------------

const known = []; // recordings seen by earlier tests

test('a recorded session: listed for the auditor, checked, replayed, seeked; refused to others',
  { skip, timeout: 180000 }, async function () {
    const marker = randomBytes(4).toString('hex');
    const last = 'LAST-LINE-' + marker;

    // alice works on the VM; her console has no Recordings link.
    await withPage(browser, 'recordings-user', { logs: [gw, sshd] }, async function (page, context) {
      await openShell(page, context);
      // Over 64 KiB of output first, so that the player takes snapshots.
      await typeLine(page, "seq -f 'bulk-%g' 1 12000");
      await waitForLine(page, /^bulk-12000$/, 'the bulk output', 20000);
      // printf: the typed command line does not contain the marker as
      // printed, so only the output can match.
      await typeLine(page, "for i in $(seq 1 40); do echo line-$i; done; printf 'LAST-LINE-%s\\n' " + marker);
      await waitForLine(page, new RegExp('^' + last + '$'), 'the last line');
      await typeLine(page, 'exit');
      await textMatches(page.locator('#status'), /^Session closed: /, 'the closed status');

      await page.goto(gw.baseUrl + '/');
      await page.getByRole('heading', { name: 'Your machines' }).waitFor();
      assert.equal(await page.locator('#recordings-link').isVisible(), false,
        'no Recordings link for a user who is not an auditor');

      // The gateway keeps recordings from everyone but auditors.
      for (const p of ['/recordings.html', '/player.html?id=' + '0'.repeat(32), '/api/recordings']) {
        const res = await context.request.get(gw.baseUrl + p);
        assert.equal(res.status(), 403, 'GET ' + p + ' as alice');
      }
      const res = await context.request.get(gw.baseUrl + '/api/recordings');
      const body = await res.json();
      assert.equal(typeof body.error, 'string', '403 with an error in words');
    });

    await withPage(browser, 'recordings', {
      logs: [gw, sshd],
    }, async function (page, context) {
      await signIn(context, gw, 'audrey', PASSWORD);
      const rec = await waitForRecording(context, known, 'finished');
      known.push(rec.id);
      assert.match(rec.id, /^[0-9a-f]{32}$/);
      assert.equal(rec.protocol, 'ssh');
      assert.equal(rec.source, '127.0.0.1');
      assert.ok(Number.isInteger(rec.started) && Number.isInteger(rec.ended) &&
        rec.ended >= rec.started, 'started and ended in ms: ' + JSON.stringify(rec));
      assert.ok(rec.size > 0, 'a size');

      // The file: asciicast v2, our header, the output; Range gives the rest.
      const castUrl = gw.baseUrl + '/api/recordings/' + rec.id + '/cast';
      const full = await context.request.get(castUrl);
      assert.equal(full.status(), 200);
      assert.match(full.headers()['content-type'] || '', /^application\/x-asciicast/);
      const bytes = await full.body();
      const header = JSON.parse(bytes.toString('utf8').split('\n')[0]);
      assert.equal(header.version, 2);
      assert.equal(header.postern.user, 'alice');
      assert.equal(header.postern.vm, VM);
      assert.ok(bytes.toString('utf8').includes(last), 'the marker is in the recording');
      const part = await context.request.get(castUrl, { headers: { Range: 'bytes=10-' } });
      assert.equal(part.status(), 206, 'a Range request');
      assert.deepEqual(await part.body(), bytes.subarray(10), 'the bytes from offset 10');

      // The console shows the auditor the way to the recordings.
      await page.goto(gw.baseUrl + '/');
      const link = page.locator('#recordings-link');
      await link.waitFor({ state: 'visible' });
      await link.click();
      await page.waitForURL(/\/recordings\.html$/);
      const row = page.locator('#rec-rows tr[data-id="' + rec.id + '"]');
      await row.waitFor();
      assert.equal(await row.locator('.c-user').textContent(), 'alice');
      assert.equal(await row.locator('.c-vm').textContent(), VM);
      assert.equal(await row.locator('.c-source').textContent(), '127.0.0.1');
      assert.equal(await row.locator('.c-state').textContent(), 'finished');
      const download = row.locator('.download-link');
      assert.equal(await download.getAttribute('download'), rec.id + '.cast');
      assert.equal(await download.getAttribute('href'), '/api/recordings/' + rec.id + '/cast');

      // The signature, checked on demand.
      await row.getByRole('button', { name: /Check the signature/ }).click();
      await textMatches(row.locator('.c-verify'), /^OK$/, 'the signature badge');
      await screenshot(page, 'e2e-recordings');

      // Filters: user, day, text in the output; each in the address bar.
      const listed = function () {
        return page.evaluate(function () { return document.body.dataset.listed; });
      };
      const filterBy = async function (fields) {
        // Clear lists everything again: wait for that listing first (the
        // Search button is disabled while it is on its way).
        const cleared = await listed();
        await page.getByRole('button', { name: 'Clear' }).click();
        await eventually(async function () { return (await listed()) !== cleared; },
          'the listing after Clear');
        for (const [label, value] of Object.entries(fields)) {
          await page.getByLabel(label, { exact: true }).fill(value);
        }
        const before = await listed();
        await page.getByRole('button', { name: 'Search' }).click();
        await eventually(async function () { return (await listed()) !== before; },
          'the listing to arrive');
        assert.equal(await page.locator('#rec-message').textContent(), '', 'no error');
      };
      const day = new Date(rec.started).toISOString().slice(0, 10);
      const nextDay = new Date(rec.started + 86400000).toISOString().slice(0, 10);
      await filterBy({ User: 'nobody' });
      assert.match(page.url(), /\?user=nobody$/);
      assert.equal(await row.count(), 0);
      await textMatches(page.locator('#rec-empty'), /^No recording matches these filters\.$/,
        'the empty result');
      await filterBy({ User: 'alice', Machine: VM, From: day, To: day });
      await row.waitFor();
      await filterBy({ From: nextDay });
      assert.equal(await row.count(), 0, 'nothing from the next day on');
      await filterBy({ 'Text in the output': last });
      await row.waitFor();
      await filterBy({ 'Text in the output': 'NOT-THERE-' + marker });
      assert.equal(await row.count(), 0, 'no recording holds that text');
      await page.goBack(); // the address bar kept each search
      await row.waitFor();

      // The player.
      const auditBeforePlayer = readAudit().length;
      await row.getByRole('link', { name: /^Play the recording of alice on linux01/ }).click();
      await page.waitForURL(/\/player\.html\?id=[0-9a-f]{32}$/);
      await waitForState(page, 'ready');
      const verify = page.locator('#verify');
      assert.equal(await verify.getAttribute('data-result'), 'OK');
      assert.match(await verify.textContent(), /^OK Signature verified/);
      assert.equal(await page.locator('#download').getAttribute('download'), rec.id + '.cast');
      assert.equal(await page.locator('#live').isVisible(), false, 'no Go live for a finished one');
      assert.equal(await page.locator('#live-badge').isVisible(), false);

      // Straight to the end, from the snapshots: the last line is there.
      await seek(page, 'end');
      let lines = await termLines(page);
      assert.ok(lines.includes(last), 'the last line at the end: ' + JSON.stringify(lines));
      assert.ok(lines.includes('line-40'));
      assert.equal(await bodyState(page), 'ended');
      // The font fits the recording's columns into the box, and stays put
      // (a size that keeps changing leaves the canvas blank).
      const fit = function () {
        return page.evaluate(function () {
          const screen = document.querySelector('#terminal .xterm-screen').getBoundingClientRect();
          return { size: window.posternTerm.options.fontSize, width: screen.width,
            box: document.getElementById('screen').clientWidth };
        });
      };
      const fit1 = await fit();
      await sleep(500);
      assert.deepEqual(await fit(), fit1, 'the font size settled');
      assert.ok(fit1.width <= fit1.box, 'the terminal fits: ' + JSON.stringify(fit1));
      await screenshot(page, 'e2e-player');

      // Seeks from snapshots draw what a replay from the start draws: at a
      // quarter, half and three quarters of the events, backwards, forwards.
      assert.ok(await page.evaluate(function () { return window.posternPlayer.snaps.list.length; }) >= 2,
        'snapshots were taken');
      for (const frac of [0.5, 0.25, 0.75, 0.6]) {
        const t = await page.evaluate(function (f) {
          const p = window.posternPlayer;
          return p.timeline.timeOf(Math.floor(p.parser.events.length * f), true);
        }, frac);
        await seek(page, t);
        const cmp = await sameAsReplay(page);
        assert.ok(cmp.same, 'at ' + frac + ' of the events: ' + JSON.stringify(cmp));
      }

      // Back to the start: an empty terminal.
      await seek(page, 0);
      lines = await termLines(page);
      assert.ok(!lines.includes(last), 'not yet at 0:00');
      assert.equal(lines.join('').trim(), '', 'nothing drawn at 0:00');

      // Space plays and pauses (slowly: the whole recording lasts a few
      // seconds); then at 8x to the end.
      await page.locator('#speed').selectOption('0.5');
      await page.locator('#seek').focus();
      await page.keyboard.press('Space');
      assert.equal(await bodyState(page), 'playing');
      assert.equal(await page.locator('#play').textContent(), 'Pause');
      await page.keyboard.press('Space');
      assert.equal(await bodyState(page), 'paused');
      assert.equal(await page.locator('#play').textContent(), 'Play');
      await page.locator('#speed').selectOption('8');
      await page.locator('#play').click();
      await waitForState(page, 'ended', 30000);
      assert.ok((await termLines(page)).includes(last), 'played to the last line');
      await textMatches(page.locator('#status'), /^End of the recording\.$/, 'the status');

      // The real timeline is no shorter than the compressed one.
      const compressed = await page.locator('#seek').getAttribute('max');
      await page.getByLabel('Shorten pauses').uncheck();
      assert.ok(Number(await page.locator('#seek').getAttribute('max')) >= Number(compressed));

      // Opening the player was audited as a view and a download of this
      // recording by the auditor (the listing's polls are recording.list).
      const byPlayer = readAudit().slice(auditBeforePlayer).filter(function (e) {
        return e.user === 'audrey' && e.recording === rec.id;
      }).map(function (e) { return e.event; });
      assert.ok(byPlayer.includes('recording.view') && byPlayer.includes('recording.download'),
        'the player\'s view and download in the audit log: ' + JSON.stringify(byPlayer));
    });
  });

test('a live session is shown as recording and can be watched as it grows',
  { skip, timeout: 180000 }, async function () {
    const marker = randomBytes(4).toString('hex');
    await withPage(browser, 'player-live-user', { logs: [gw, sshd] }, async function (user, userCtx) {
      await openShell(user, userCtx);

      await withPage(browser, 'player-live', { logs: [gw, sshd] }, async function (page, context) {
        await signIn(context, gw, 'audrey', PASSWORD);
        const rec = await waitForRecording(context, known, 'live');
        known.push(rec.id);
        assert.equal(rec.ended, null, 'no end yet');

        await page.goto(gw.baseUrl + '/recordings.html');
        const row = page.locator('#rec-rows tr[data-id="' + rec.id + '"]');
        await row.waitFor();
        assert.equal(await row.locator('.c-state').textContent(), 'recording\u2026');

        await row.getByRole('link', { name: /^Watch the recording of alice/ }).click();
        await waitForState(page, 'ready');
        assert.equal(await page.locator('#live-badge').isVisible(), true, 'recording\u2026 shown');
        assert.equal(await page.locator('#verify').getAttribute('data-result'), 'UNSIGNED');
        await page.getByRole('button', { name: 'Go live' }).click();
        await waitForState(page, 'playing');
        await textMatches(page.locator('#status'), /^Live: /, 'the live status');

        // alice types; the auditor sees it within a few seconds.
        await user.locator('#terminal').click();
        await typeLine(user, "printf 'LIVE-LINE-%s\\n' " + marker);
        await waitForLine(page, new RegExp('^LIVE-LINE-' + marker + '$'), 'the live line', 15000);
        const end1 = Number(await page.locator('#seek').getAttribute('max'));
        assert.ok(end1 > 0, 'the seek bar grew');
        await screenshot(page, 'e2e-player-live');

        // She leaves: the player notices the end and the signature.
        await typeLine(user, 'exit');
        await textMatches(user.locator('#status'), /^Session closed: /, 'the closed status');
        await waitForState(page, 'ended', 40000);
        await eventually(async function () {
          return (await page.locator('#verify').getAttribute('data-result')) === 'OK';
        }, 'the signature checked once the session ended');
        assert.equal(await page.locator('#live-badge').isVisible(), false);
        assert.equal(await page.locator('#live').isVisible(), false);
      });
    });
  });
