// The recording player's pure logic (web/cast.js), without a browser:
// asciicast parsing (pieces cut anywhere, a partial last line, damaged
// lines), the idle-compressed timeline, snapshot selection and thinning,
// and the seek plan.
//
//   node --test tests/e2e/test_player_logic.mjs
//
// Needs nothing but Node (no gateway, no Chromium, no npm package).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  CastError, CastParser, IDLE_LIMIT, SnapshotIndex, Timeline, formatClock, formatSize,
  parseEvent, parseHeader, parseSize, seekPlan, upperBound,
} from '../../web/cast.js';

const enc = new TextEncoder();

const HEADER = JSON.stringify({
  version: 2, width: 80, height: 24, timestamp: 1763900000,
  postern: { session_id: 'ab12', user: 'alice', vm: 'web01', source: '127.0.0.1', instance: 'gw1', protocol: 'ssh' },
});

function cast(events) {
  return HEADER + '\n' + events.map(function (e) { return JSON.stringify(e) + '\n'; }).join('');
}

// Feeds bytes to a parser in pieces of the given sizes (the rest at once).
function feed(parser, bytes, sizes) {
  const got = [];
  let off = 0;
  for (const n of sizes) {
    got.push(...parser.push(bytes.subarray(off, off + n)));
    off += n;
  }
  got.push(...parser.push(bytes.subarray(off)));
  return got;
}

// ---- parsing ------------------------------------------------------------------

test('a whole file: header and events', function () {
  const p = new CastParser();
  const events = p.push(enc.encode(cast([[0.5, 'o', 'hello\r\n'], [1.25, 'r', '100x30'], [2, 'i', 'x']])));
  assert.equal(p.header.width, 80);
  assert.equal(p.header.height, 24);
  assert.equal(p.header.postern.user, 'alice');
  assert.deepEqual(events, [
    { t: 0.5, code: 'o', data: 'hello\r\n' },
    { t: 1.25, code: 'r', data: '100x30' },
    { t: 2, code: 'i', data: 'x' },
  ]);
  assert.deepEqual(p.finish(), []);
  assert.equal(p.bad, 0);
});

test('a partial last line waits for the rest, even cut inside a UTF-8 sequence', function () {
  const text = cast([[0.1, 'o', 'caf\u00e9 \u2603 \ud83d\ude00\r\n'], [0.2, 'o', 'second']]);
  const bytes = enc.encode(text);
  // Every cut point: the events must come out whole and the same.
  for (let cut = 1; cut < bytes.length; cut++) {
    const p = new CastParser();
    const first = p.push(bytes.subarray(0, cut));
    const rest = p.push(bytes.subarray(cut));
    const all = first.concat(rest);
    assert.equal(all.length, 2, 'cut at ' + cut);
    assert.equal(all[0].data, 'caf\u00e9 \u2603 \ud83d\ude00\r\n', 'cut at ' + cut);
    assert.equal(all[1].data, 'second');
    assert.equal(p.bytes, bytes.length);
  }
});

test('a growing file read by Range requests: no event twice, none lost', function () {
  const events = [];
  for (let i = 0; i < 50; i++) {
    events.push([i * 0.3, 'o', 'line ' + i + ' \u00e9\r\n']);
  }
  const bytes = enc.encode(cast(events));
  const p = new CastParser();
  const got = feed(p, bytes, [7, 1, 100, 3, 250, 1, 1, 1, 64]);
  assert.equal(got.length, 50);
  assert.deepEqual(got.map(function (e) { return e.data; }), events.map(function (e) { return e[2]; }));
  // The next Range request starts where the bytes taken in end.
  assert.equal(p.bytes, bytes.length);
});

test('an incomplete last line is not an event until its newline comes', function () {
  const whole = enc.encode(cast([[0.1, 'o', 'a']]));
  const p = new CastParser();
  assert.equal(p.push(whole).length, 1);
  assert.deepEqual(p.push(enc.encode('[0.2, "o", "b')), []);
  assert.equal(p.events.length, 1);
  assert.deepEqual(p.push(enc.encode('c"]\n')), [{ t: 0.2, code: 'o', data: 'bc' }]);
});

test('finish(): a whole last event without its newline is kept, half a line dropped', function () {
  const p = new CastParser();
  p.push(enc.encode(HEADER + '\n[0.1, "o", "a"]\n[0.2, "o", "b"]'));
  assert.deepEqual(p.finish(), [{ t: 0.2, code: 'o', data: 'b' }]);

  const q = new CastParser();
  q.push(enc.encode(HEADER + '\n[0.1, "o", "a"]\n[0.2, "o", "b'));
  assert.deepEqual(q.finish(), []);
  assert.equal(q.events.length, 1);
  assert.equal(q.bad, 0, 'a line cut by a crash is not counted as damage');
});

test('damaged lines are skipped and counted; CRLF line ends are accepted', function () {
  const p = new CastParser();
  const events = p.push(enc.encode(HEADER + '\r\n[0.1, "o", "a"]\r\nnot json\n[1]\n' +
    '["x", "o", "b"]\n[-1, "o", "c"]\n\n[0.3, "o", "d"]\n'));
  assert.deepEqual(events.map(function (e) { return e.data; }), ['a', 'd']);
  assert.equal(p.bad, 4);
});

test('a header that is not asciicast v2 is refused in words', function () {
  assert.throws(function () { parseHeader('not json'); }, CastError);
  assert.throws(function () { parseHeader('[1,2]'); }, CastError);
  assert.throws(function () { parseHeader('{"version":1,"width":80,"height":24}'); }, /version 1/);
  assert.throws(function () { parseHeader('{"version":2,"width":0,"height":24}'); }, /size/);
  const p = new CastParser();
  assert.throws(function () { p.push(enc.encode('{"version":3}\n')); }, CastError);
});

test('events and sizes', function () {
  assert.deepEqual(parseEvent('[1.5, "o", "x"]'), { t: 1.5, code: 'o', data: 'x' });
  assert.equal(parseEvent('[1.5, "o"]'), null);
  assert.equal(parseEvent('[1.5, "o", 3]'), null);
  assert.equal(parseEvent('{"t":1}'), null);
  assert.deepEqual(parseSize('120x40'), { cols: 120, rows: 40 });
  assert.equal(parseSize('120X40'), null);
  assert.equal(parseSize('0x40'), null);
  assert.equal(parseSize('120x'), null);
});

// ---- the timeline --------------------------------------------------------------

function ev(t) { return { t, code: 'o', data: 'x' }; }

test('idle compression: pauses longer than the limit play as the limit', function () {
  assert.equal(IDLE_LIMIT, 2);
  const tl = new Timeline(2);
  tl.append([ev(0.5), ev(1.0), ev(11.0), ev(11.5), ev(100)]);
  assert.deepEqual(tl.real, [0.5, 1.0, 11.0, 11.5, 100]);
  assert.deepEqual(tl.compressed, [0.5, 1.0, 3.0, 3.5, 5.5]);
  assert.equal(tl.duration(false), 100);
  assert.equal(tl.duration(true), 5.5);
  // The same event, found on either timeline.
  assert.equal(tl.countAt(3.0, true), 3);
  assert.equal(tl.countAt(11.0, false), 3);
  assert.equal(tl.countAt(2.9, true), 2);
  assert.equal(tl.timeOf(3, true), 3.0);
  assert.equal(tl.timeOf(3, false), 11.0);
  assert.equal(tl.timeOf(0, true), 0);
});

test('idle compression: a long wait before the first event is shortened too', function () {
  const tl = new Timeline(2);
  tl.append([ev(30), ev(30.5)]);
  assert.deepEqual(tl.compressed, [2, 2.5]);
});

test('the timeline grows by appends as it would in one go (a live recording)', function () {
  const times = [0.2, 0.4, 5, 5.1, 9.9, 30, 30.2];
  const once = new Timeline(2);
  once.append(times.map(ev));
  const grown = new Timeline(2);
  for (const t of times) {
    grown.append([ev(t)]);
  }
  assert.deepEqual(grown.compressed, once.compressed);
  assert.deepEqual(grown.real, once.real);
});

test('times never go back, so the seek bar never runs backwards', function () {
  const tl = new Timeline(2);
  tl.append([ev(5), ev(4), ev(6)]);
  assert.deepEqual(tl.real, [5, 5, 6]);
  assert.deepEqual(tl.compressed, [2, 2, 3]);
});

test('no compression: the limit is Infinity', function () {
  const tl = new Timeline(Infinity);
  tl.append([ev(1), ev(50)]);
  assert.deepEqual(tl.compressed, [1, 50]);
});

test('upperBound counts the values at or below x', function () {
  const a = [1, 2, 2, 2, 5];
  assert.equal(upperBound(a, 0), 0);
  assert.equal(upperBound(a, 1), 1);
  assert.equal(upperBound(a, 2), 4);
  assert.equal(upperBound(a, 4.9), 4);
  assert.equal(upperBound(a, 5), 5);
  assert.equal(upperBound([], 5), 0);
});

// ---- snapshots ----------------------------------------------------------------

function snap(index) { return { index, cols: 80, rows: 24, data: 's' + index }; }

test('a snapshot is due after 64 KiB of output or 30 s of recording time with output', function () {
  const s = new SnapshotIndex({ bytes: 100, seconds: 30 });
  s.add(snap(0), 0);
  assert.equal(s.note({ t: 1, code: 'o', data: 'x'.repeat(60) }), false);
  assert.equal(s.note({ t: 2, code: 'o', data: 'x'.repeat(40) }), true, 'bytes');
  s.add(snap(2), 2);
  assert.equal(s.note({ t: 40, code: 'i', data: 'x'.repeat(500) }), false, 'input draws nothing');
  assert.equal(s.note({ t: 41, code: 'r', data: '10x10' }), false, 'no output since the last one');
  assert.equal(s.note({ t: 42, code: 'o', data: 'y' }), true, 'time');
});

test('the snapshot for a seek is the last one at or before the target', function () {
  const s = new SnapshotIndex();
  for (const i of [0, 10, 20, 35]) {
    s.add(snap(i), i);
  }
  assert.equal(s.before(0).index, 0);
  assert.equal(s.before(9).index, 0);
  assert.equal(s.before(10).index, 10);
  assert.equal(s.before(34).index, 20);
  assert.equal(s.before(35).index, 35);
  assert.equal(s.before(1000).index, 35);
  assert.equal(new SnapshotIndex().before(5), null);
  assert.throws(function () { s.add(snap(35)); }, /order/);
});

test('past the maximum, every other snapshot is dropped and the spacing doubles', function () {
  const s = new SnapshotIndex({ bytes: 100, seconds: 30, max: 4 });
  for (let i = 0; i <= 4; i++) {
    s.add(snap(i * 10), i);
  }
  assert.deepEqual(s.list.map(function (x) { return x.index; }), [0, 20, 40]);
  assert.equal(s.bytes, 200);
  assert.equal(s.seconds, 60);
  assert.equal(s.before(39).index, 20);
});

test('the seek plan: forward without a snapshot in between writes on, else restores', function () {
  const s = new SnapshotIndex();
  for (const i of [0, 100, 200]) {
    s.add(snap(i), i);
  }
  // Forward within the same stretch: no reset, write 120..150.
  assert.deepEqual(seekPlan(120, 150, s.before(150)), { restore: null, from: 120 });
  // Forward past a snapshot: restore it, write 200..250 only.
  assert.deepEqual(seekPlan(120, 250, s.before(250)), { restore: s.list[2], from: 200 });
  // Backward: restore, never from the start unless the target is before the first snapshot.
  assert.deepEqual(seekPlan(250, 130, s.before(130)), { restore: s.list[1], from: 100 });
  assert.deepEqual(seekPlan(250, 50, s.before(50)), { restore: s.list[0], from: 0 });
  // Where it is already: nothing.
  assert.deepEqual(seekPlan(150, 150, s.before(150)), { restore: null, from: 150 });
});

// ---- words ------------------------------------------------------------------------

test('clock and size words', function () {
  assert.equal(formatClock(0), '0:00');
  assert.equal(formatClock(75.3), '1:15');
  assert.equal(formatClock(3725), '1:02:05');
  assert.equal(formatClock(-3), '0:00');
  assert.equal(formatSize(512), '512 B');
  assert.equal(formatSize(1536), '1.5 KiB');
  assert.equal(formatSize(50 * 1024 * 1024), '50 MiB');
  assert.equal(formatSize(NaN), '');
});
