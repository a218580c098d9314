// Postern console: the recording player (/player.html?id=ID), for auditors.
//
//   GET /api/recordings/ID        who, where, when, state, signature check
//   GET /api/recordings/ID/cast   the asciicast v2 file; Range: bytes=N- for
//                                 the part of a live recording not seen yet
//
// The file is parsed by cast.js. Two xterm.js terminals take its output:
// the one on the page, and a hidden one (never opened, so never drawn)
// that runs ahead through the whole recording once and leaves a snapshot
// of itself (xterm's serialize add-on) every 64 KiB of output or 30 s of
// recording time. A seek restores the last snapshot at or before the
// target and writes only the events between it and the target, so seeking
// never replays from the start. Idle-time compression is a second
// timeline (cast.js: Timeline); the terminal only knows how many events it
// has been given.
//
// Every change to the page's terminal, resets and resizes included, goes
// through term.write() (a reset is the RIS escape, a resize runs in a
// write callback), so it happens in order with the output already queued.
//
// For the browser tests: body[data-state] is loading | ready | playing |
// paused | ended | error, body[data-seeked] the time of the last seek once
// the terminal shows it, window.posternTerm the page's Terminal and
// window.posternPlayer the parsed recording, its timeline and snapshots.
import { api, plural, sentence } from '/api.js';
import {
  CastError, CastParser, IDLE_LIMIT, QUERY_KEY, SnapshotIndex, Timeline, formatClock, formatSize,
  formatStarted, parseSize, recordedSeconds, seekPlan, verifyKind,
} from '/cast.js';
import { FONT_FAMILY, FONT_SIZE, LINE_HEIGHT, THEME } from '/term-theme.js';

const FOLLOW_MS = 2000;          // a live recording is fetched again this often
const FETCH_TIMEOUT_MS = 60000;
const SCROLLBACK = 1000;         // lines, on both terminals and in snapshots
const TICK_MAX_MS = 250;         // the clock on the page moves at least this often
const STEP_SECONDS = 5;          // arrow keys on the seek bar
const PAGE_SECONDS = 30;         // Page Up / Page Down on the seek bar
const FONT_MAX = 15;
const FONT_MIN = 8;

const $ = function (id) { return document.getElementById(id); };

const ui = {
  title: $('title'),
  liveBadge: $('live-badge'),
  back: $('back'),
  verify: $('verify'),
  facts: $('facts'),
  user: $('fact-user'),
  vm: $('fact-vm'),
  source: $('fact-source'),
  instance: $('fact-instance'),
  started: $('fact-started'),
  length: $('fact-length'),
  size: $('fact-size'),
  controls: $('controls'),
  play: $('play'),
  seek: $('seek'),
  time: $('time'),
  speed: $('speed'),
  idle: $('idle'),
  live: $('live'),
  download: $('download'),
  status: $('status'),
  screen: $('screen'),
  terminal: $('terminal'),
  blocked: $('blocked'),
  blockedText: $('blocked-text'),
  blockedLink: $('blocked-link'),
};

const recId = new URLSearchParams(location.search).get('id') || '';

const state = {
  rec: null,            // the recording's metadata from the gateway
  live: false,          // still being recorded: followed with Range requests
  following: false,     // at the live edge: new output is shown as it arrives
  playing: false,
  speed: 1,
  compressed: true,     // the seek bar and clock use the compressed timeline
  applied: 0,           // events given to the page's terminal
  clock: 0,             // seconds on the current timeline
  lastTick: 0,
  tickTimer: null,
  seekGen: 0,           // the latest seek; older ones settle silently
  seekBusy: false,      // a seek's writes are still being parsed
  seekWanted: null,     // the target to seek to once they are
  dragging: false,      // the seek bar is held: do not move it under the pointer
  followTimer: null,
  fontQueued: false,
};

const parser = new CastParser();
const timeline = new Timeline(IDLE_LIMIT);
const snaps = new SnapshotIndex();

let term = null;        // on the page
let shadow = null;      // hidden, for snapshots
let serializer = null;
let shadowDone = 0;     // events given to the hidden terminal
let indexing = Promise.resolve();
let indexBroken = false;

// ---- small helpers -----------------------------------------------------------

function setState(s) {
  document.body.dataset.state = s;
}

function say(text) {
  if (ui.status.textContent !== text) {
    ui.status.textContent = text;
  }
}

function block(text, linkText, href) {
  stopFollowing();
  pause(true);
  ui.blockedText.textContent = text;
  ui.blockedLink.textContent = linkText;
  ui.blockedLink.href = href;
  ui.blocked.hidden = false;
  ui.verify.hidden = !state.rec; // nothing checked when nothing was loaded
  ui.screen.hidden = true;
  ui.controls.hidden = true;
  ui.status.hidden = true;
  setState('error');
  ui.blockedLink.focus();
}

function backHref() {
  // The list's filters, as it last showed them (recordings.js keeps them).
  let q = '';
  try {
    q = sessionStorage.getItem(QUERY_KEY) || '';
  } catch (err) {
    // storage disabled: the plain list
  }
  return '/recordings.html' + (/^\?[\w%.+&=-]*$/.test(q) ? q : '');
}

// Tells on the status line how many damaged lines were skipped, if any.
function damageNote() {
  if (parser.bad) {
    say(statusWords() + ' ' + plural(parser.bad, 'damaged line was', 'damaged lines were') +
      ' skipped.');
  }
}

function writeAsync(t, data) {
  return new Promise(function (resolve) { t.write(data, resolve); });
}

function duration() {
  return timeline.duration(state.compressed);
}

// ---- metadata and the signature ------------------------------------------------

function showFacts(rec) {
  const who = String(rec.user || '?');
  const vm = String(rec.vm || '?');
  ui.title.textContent = who + ' on ' + vm;
  document.title = who + ' on ' + vm + ' \u2013 Recording \u2013 Postern';
  ui.user.textContent = who;
  ui.vm.textContent = vm;
  ui.source.textContent = String(rec.source || '\u2014');
  ui.instance.textContent = String(rec.instance || '\u2014');
  const started = Number(rec.started);
  ui.started.textContent = Number.isFinite(started) ? formatStarted(started) : '\u2014';
  showLength();
  ui.size.textContent = formatSize(Number(rec.size)) || '\u2014';
  ui.facts.hidden = false;
  ui.liveBadge.hidden = !state.live;
}

// Wall-clock length from the metadata when it has ended, else the
// recording's own last event.
function showLength() {
  const seconds = recordedSeconds(state.rec);
  if (seconds !== null) {
    ui.length.textContent = formatClock(seconds);
  } else {
    ui.length.textContent = formatClock(timeline.duration(false)) + (state.live ? ' so far' : '');
  }
}

const VERIFY_WORDS = {
  OK: 'Signature verified: the recording is complete and unchanged since the gateway signed it.',
  MODIFIED: 'Signature check failed: the recording was changed after the gateway signed it.',
  TRUNCATED: 'Signature check failed: the recording was cut short after the gateway signed it.',
  UNSIGNED: 'Not signed: the gateway stopped before it could sign this recording, so it ' +
    'cannot be shown to be intact.',
  ERROR: 'The signature could not be checked.',
};

function showVerify(rec) {
  const v = rec && rec.verification && typeof rec.verification === 'object' ? rec.verification : null;
  const result = v && typeof v.result === 'string' ? v.result : '';
  const detail = v && typeof v.detail === 'string' ? v.detail.trim() : '';
  const kind = verifyKind(result, state.live);
  let text;
  if (kind === 'ok') {
    text = VERIFY_WORDS.OK;
  } else if (kind === 'pending') {
    // Expected: the signature is written when the session ends.
    text = 'Not signed yet: the session is still being recorded; the gateway signs the ' +
      'recording when it ends.';
  } else if (Object.prototype.hasOwnProperty.call(VERIFY_WORDS, result)) {
    text = VERIFY_WORDS[result];
  } else {
    text = 'The gateway did not say whether this recording is intact.';
  }
  ui.verify.className = 'verify verify-' + kind;
  ui.verify.replaceChildren();
  const strong = document.createElement('strong');
  strong.textContent = result || 'UNKNOWN';
  ui.verify.append(strong, ' ', text);
  if (detail && kind !== 'ok') {
    ui.verify.append(' (' + sentence(detail).replace(/\.$/, '') + ')');
  }
  ui.verify.dataset.result = result || 'UNKNOWN';
}

// ---- fetching the file ------------------------------------------------------------

class FetchError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The bytes of the recording from `offset` on (empty when there are none
// yet). The request starts one byte early, at a byte already seen, so that
// it can always be satisfied (no 416 for "nothing new", which the browser
// would log as an error) and so that a file replaced under us is noticed.
// A server that ignores Range answers with the whole file: the part
// already seen is cut off here.
let lastByte = -1;
// What the gateway said of the recording with the last part of it:
// "live" while its session runs.
let castState = null;

// The recording's metadata and signature check (audited as a view).
async function fetchRec() {
  return (await api('GET', '/api/recordings/' + encodeURIComponent(recId))).recording;
}

async function fetchCast(offset) {
  const from = offset > 0 ? offset - 1 : 0;
  const headers = {};
  if (from > 0) {
    headers.Range = 'bytes=' + from + '-';
  }
  const ctl = new AbortController();
  const timer = setTimeout(function () { ctl.abort(); }, FETCH_TIMEOUT_MS);
  let res;
  let bytes;
  try {
    res = await fetch('/api/recordings/' + encodeURIComponent(recId) + '/cast', {
      headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error', signal: ctl.signal,
    });
    castState = res.headers.get('X-Recording-State') || castState;
    if (res.status === 416) {
      return new Uint8Array(0); // nothing at or past `from`: nothing new
    }
    if (!res.ok) {
      let message = '';
      try {
        const body = await res.json();
        message = body && typeof body.error === 'string' ? sentence(body.error) : '';
      } catch (err) {
        // not JSON
      }
      throw new FetchError(res.status, message ||
        'The gateway refused the recording (HTTP ' + res.status + ').');
    }
    bytes = new Uint8Array(await res.arrayBuffer());
  } catch (err) {
    if (err instanceof FetchError) {
      throw err;
    }
    throw new FetchError(0, err && err.name === 'AbortError'
      ? 'The gateway did not send the recording in time.'
      : 'Cannot reach the gateway. Check your connection and try again.');
  } finally {
    clearTimeout(timer);
  }
  let start = 0;
  if (res.status === 206) {
    const m = /^bytes (\d+)-/.exec(res.headers.get('Content-Range') || '');
    start = m ? Number(m[1]) : from;
  }
  if (start > from) {
    throw new FetchError(0, 'The gateway sent the wrong part of the recording.');
  }
  bytes = bytes.subarray(from - start);
  if (offset > 0) {
    if (!bytes.length) {
      return bytes;
    }
    if (bytes[0] !== lastByte) {
      const e = new FetchError(0, 'The recording changed on the gateway while it was being followed.');
      e.fatal = true; // trying again would not help
      throw e;
    }
    bytes = bytes.subarray(1);
  }
  if (bytes.length) {
    lastByte = bytes[bytes.length - 1];
  }
  return bytes;
}

// ---- the terminals -----------------------------------------------------------------

function createTerminals(cols, rows) {
  term = new window.Terminal({
    cols,
    rows,
    scrollback: SCROLLBACK,
    disableStdin: true,    // a replay: keys go to the player, not to a shell
    cursorBlink: false,
    fontFamily: FONT_FAMILY,
    fontSize: FONT_SIZE,
    lineHeight: LINE_HEIGHT,
    theme: THEME,
  });
  // Before open(): the canvas renderer from the start, so the DOM renderer
  // (and its <style> elements) never exists.
  term.loadAddon(new window.CanvasAddon.CanvasAddon());
  term.open(ui.terminal);
  window.posternTerm = term; // for the browser tests, and the curious
  window.posternPlayer = { parser, timeline, snaps };

  shadow = new window.Terminal({ cols, rows, scrollback: SCROLLBACK });
  serializer = new window.SerializeAddon.SerializeAddon();
  shadow.loadAddon(serializer);

  new ResizeObserver(queueFitFont).observe(ui.screen);
  queueFitFont();
}

// The recording keeps its own columns and rows; the font shrinks (down to
// FONT_MIN, then the box scrolls) so that a wide terminal fits the window.
// The size is worked out from the box's width and the font's measured
// advance alone, never from the terminal as drawn: that would feed back
// (a new size rounds the cells differently, which asks for another size,
// and the renderer never settles).
const measure = document.createElement('canvas').getContext('2d');

function cellWidth(size) {
  measure.font = size + 'px ' + FONT_FAMILY;
  // As xterm.js's renderer does: the advance rounded down to device pixels.
  const dpr = window.devicePixelRatio || 1;
  return Math.max(1, Math.floor(measure.measureText('W').width * dpr)) / dpr;
}

function fitFont() {
  state.fontQueued = false;
  const style = getComputedStyle(ui.screen);
  const avail = ui.screen.clientWidth - parseFloat(style.paddingLeft) -
    parseFloat(style.paddingRight);
  if (!term || avail <= 0) {
    return;
  }
  let size = FONT_MAX;
  while (size > FONT_MIN && cellWidth(size) * term.cols > avail) {
    size--;
  }
  if (size !== term.options.fontSize) {
    const buf = term.buffer.active;
    const atBottom = buf.viewportY === buf.baseY;
    term.options.fontSize = size;
    if (atBottom) {
      term.scrollToBottom(); // a new size must not leave the view scrolled up
    }
  }
}

function queueFitFont() {
  if (!state.fontQueued) {
    state.fontQueued = true;
    requestAnimationFrame(fitFont);
  }
}

// Resizes t once the output queued before has been parsed.
function queueResize(t, size) {
  t.write('', function () {
    if (t.cols !== size.cols || t.rows !== size.rows) {
      t.resize(size.cols, size.rows);
      if (t === term) {
        queueFitFont();
      }
    }
  });
}

// Writes events [from, to) to the page's terminal: output, and resizes in
// order with it. Input and markers are not drawn (the output shows what
// the shell echoed).
function apply(from, to) {
  const events = parser.events;
  let out = '';
  for (let i = from; i < to; i++) {
    const e = events[i];
    if (e.code === 'o') {
      out += e.data;
    } else if (e.code === 'r') {
      const size = parseSize(e.data);
      if (size) {
        if (out) {
          term.write(out);
          out = '';
        }
        queueResize(term, size);
      }
    }
  }
  if (out) {
    term.write(out);
  }
}

// What serialize() leaves out but a replay needs: the scroll region (full-
// screen programs set one) and a hidden cursor. Read from xterm.js's
// internals, as the serialize add-on itself does for the pen; the version
// is pinned (web/vendor/update.sh). Without them a restored screen still
// shows the right characters.
function extraState(t) {
  let extra = '';
  try {
    const core = t._core;
    const buf = core.buffer;
    if (Number.isInteger(buf.scrollTop) && Number.isInteger(buf.scrollBottom) &&
        (buf.scrollTop !== 0 || buf.scrollBottom !== t.rows - 1)) {
      // DECSTBM homes the cursor: save and restore it around.
      extra += '\x1b7\x1b[' + (buf.scrollTop + 1) + ';' + (buf.scrollBottom + 1) + 'r\x1b8';
    }
    if (core.coreService && core.coreService.isCursorHidden) {
      extra += '\x1b[?25l';
    }
  } catch (err) {
    // internals changed: the characters are still right
  }
  return extra;
}

// Runs the hidden terminal through the events it has not seen, taking the
// snapshots that SnapshotIndex asks for. Waits for each snapshot's output
// to be parsed (also keeps xterm's write queue short: it drops data past
// 50 MB). One run at a time: later calls queue behind.
function indexMore(progress) {
  if (indexBroken) {
    return Promise.resolve(); // said once already
  }
  indexing = indexing.then(async function () {
    const events = parser.events;
    let batch = '';
    while (shadowDone < events.length) {
      const i = shadowDone;
      const e = events[i];
      if (e.code === 'o') {
        batch += e.data;
      } else if (e.code === 'r') {
        const size = parseSize(e.data);
        if (size) {
          await writeAsync(shadow, batch);
          batch = '';
          shadow.resize(size.cols, size.rows);
        }
      }
      shadowDone = i + 1;
      if (snaps.note(e)) {
        await writeAsync(shadow, batch);
        batch = '';
        snaps.add({
          index: shadowDone,
          cols: shadow.cols,
          rows: shadow.rows,
          data: serializer.serialize({ scrollback: SCROLLBACK }) + extraState(shadow),
        }, e.t);
        if (progress) {
          progress(shadowDone, events.length);
        }
      } else if (batch.length >= 1 << 20) {
        await writeAsync(shadow, batch);
        batch = '';
      }
    }
    if (batch) {
      await writeAsync(shadow, batch);
    }
  }).catch(function (err) {
    // The hidden terminal may be anywhere now: no more snapshots from it.
    // Seeks stay right, from the snapshots taken so far.
    indexBroken = true;
    throw err;
  });
  return indexing;
}

// ---- playback -----------------------------------------------------------------------

function updateClock() {
  const dur = duration();
  if (Number(ui.seek.max) !== dur) {
    ui.seek.max = String(dur);
  }
  if (!state.dragging) {
    ui.seek.value = String(Math.min(state.clock, dur));
  }
  const text = formatClock(state.clock) + ' / ' + formatClock(dur);
  if (ui.time.textContent !== text) {
    ui.time.textContent = text;
    ui.seek.setAttribute('aria-valuetext', formatClock(state.clock) + ' of ' + formatClock(dur));
  }
}

function updateButtons() {
  ui.play.textContent = state.playing ? 'Pause' : 'Play';
  ui.live.hidden = !state.live;
  ui.live.disabled = state.following;
  ui.live.textContent = state.following ? 'Live' : 'Go live';
  ui.liveBadge.hidden = !state.live;
}

function statusWords() {
  const s = document.body.dataset.state;
  if (state.following) {
    return 'Live: showing the session as it is recorded.';
  }
  if (s === 'playing') {
    return 'Playing at ' + state.speed + '\u00d7' +
      (state.compressed ? ', pauses shortened to ' + IDLE_LIMIT + ' s.' : '.');
  }
  if (s === 'ended') {
    return 'End of the recording.';
  }
  if (s === 'paused') {
    return 'Paused at ' + formatClock(state.clock) + '.';
  }
  if (state.live) {
    return 'This session is still being recorded. Play it from the start, or Go live ' +
      'to watch it as it happens.';
  }
  return 'Ready. Press Play (or Space) to start.';
}

function refresh() {
  updateClock();
  updateButtons();
  say(statusWords());
}

function tick() {
  state.tickTimer = null;
  if (!state.playing || state.following) {
    return;
  }
  const now = performance.now();
  state.clock += (now - state.lastTick) / 1000 * state.speed;
  state.lastTick = now;
  const dur = duration();
  if (state.clock >= dur) {
    state.clock = dur;
  }
  const n = timeline.countAt(state.clock, state.compressed);
  if (n > state.applied) {
    apply(state.applied, n);
    state.applied = n;
  }
  if (state.clock >= dur) {
    if (state.live) {
      // Caught up with a session still running: from now on its output
      // is shown as it arrives.
      state.following = true;
      refresh();
      return;
    }
    state.playing = false;
    setState('ended');
    refresh();
    return;
  }
  updateClock();
  const next = timeline.times(state.compressed)[state.applied];
  const wait = next === undefined ? TICK_MAX_MS : (next - state.clock) / state.speed * 1000;
  state.tickTimer = setTimeout(tick, Math.min(TICK_MAX_MS, Math.max(4, wait)));
}

function play() {
  if (state.playing || document.body.dataset.state === 'error') {
    return;
  }
  if (!state.live && state.clock >= duration()) {
    seekTo(0); // played to the end: again from the start
  }
  state.playing = true;
  state.lastTick = performance.now();
  setState('playing');
  refresh();
  tick();
}

function pause(quiet) {
  clearTimeout(state.tickTimer);
  state.tickTimer = null;
  const was = state.playing;
  state.playing = false;
  state.following = false;
  if (!quiet && was) {
    setState('paused');
    refresh();
  }
}

function toggle() {
  if (ui.play.disabled) {
    return;
  }
  if (state.playing) {
    pause();
  } else {
    play();
  }
}

// Shows the terminal as it was at `target` seconds (on the current
// timeline): from the nearest snapshot, or onwards from where it is.
function seekTo(target) {
  if (state.seekBusy) {
    state.seekWanted = target; // done when the one in progress settles
    return;
  }
  const dur = duration();
  const t = Math.min(Math.max(0, Number(target) || 0), dur);
  const n = timeline.countAt(t, state.compressed);
  const plan = seekPlan(state.applied, n, snaps.before(n));
  if (plan.restore) {
    const snap = plan.restore;
    term.write('\x1bc'); // RIS: a full reset, in order with what is queued
    queueResize(term, snap);
    if (snap.data) {
      term.write(snap.data);
    }
  }
  apply(plan.from, n);
  state.applied = n;
  state.clock = t;
  state.lastTick = performance.now();
  state.following = false;
  state.seekBusy = true;
  const gen = ++state.seekGen;
  term.write('', function () {
    state.seekBusy = false;
    if (state.seekWanted !== null) {
      const next = state.seekWanted;
      state.seekWanted = null;
      seekTo(next);
      return;
    }
    if (gen === state.seekGen) {
      document.body.dataset.seeked = String(Math.round(t * 1000) / 1000);
    }
  });

  const s = document.body.dataset.state;
  if (!state.playing && !state.live && t >= dur) {
    setState('ended');
  } else if (s === 'ended' || (s === 'ready' && t > 0)) {
    setState('paused');
  }
  if (state.playing) {
    clearTimeout(state.tickTimer);
    tick();
  }
  refresh();
}

function goLive() {
  seekTo(duration());
  if (!state.playing) {
    play(); // at the end of a live recording: follows from here
  } else {
    tick();
  }
}

function setCompressed(on) {
  // The terminal stays where it is; only the clock is read on the other
  // timeline (at the last event shown).
  state.compressed = on;
  state.clock = timeline.timeOf(state.applied, on);
  state.lastTick = performance.now();
  if (state.playing) {
    clearTimeout(state.tickTimer);
    tick();
  }
  refresh();
}

// ---- new output (the first load and a live recording's growth) -------------------

function takeEvents(events) {
  if (!events.length) {
    return;
  }
  timeline.append(events);
  indexMore(null).catch(indexFailed);
  if (state.following) {
    apply(state.applied, parser.events.length);
    state.applied = parser.events.length;
    state.clock = duration();
  } else if (state.playing && !state.tickTimer) {
    tick();
  }
  damageNote();
  showLength();
  if (state.live) {
    ui.size.textContent = formatSize(parser.bytes) + ' so far';
  }
  updateClock();
}

function indexFailed(err) {
  say('Seeking may be slow: the seek index could not be built (' +
    (err && err.message ? err.message : String(err)) + ').');
}

function stopFollowing() {
  clearTimeout(state.followTimer);
  state.followTimer = null;
}

function scheduleFollow() {
  stopFollowing();
  state.followTimer = setTimeout(follow, FOLLOW_MS);
}

async function follow() {
  state.followTimer = null;
  let bytes;
  try {
    bytes = await fetchCast(parser.bytes);
  } catch (err) {
    if (err.status === 401 || err.status === 403 || err.status === 404 || err.fatal) {
      recordingGone(err);
      return;
    }
    say('Lost contact with the gateway; trying again. ' + err.message);
    scheduleFollow();
    return;
  }
  if (bytes.length) {
    try {
      takeEvents(parser.push(bytes));
    } catch (err) {
      fail(err);
      return;
    }
  }
  // Every part of the file comes with the recording's state: once the
  // session has ended, the metadata is fetched, once.
  if (castState && castState !== 'live') {
    let rec = null;
    try {
      rec = await fetchRec();
    } catch (err) {
      if (err.status === 401 || err.status === 403 || err.status === 404) {
        recordingGone(err);
        return;
      }
    }
    if (rec && rec.state !== 'live') {
      await finished(rec);
      return;
    }
  }
  scheduleFollow();
}

// The live session has ended: take its last bytes, then stop following.
async function finished(rec) {
  try {
    const bytes = await fetchCast(parser.bytes);
    const events = parser.push(bytes).concat(parser.finish());
    const wasFollowing = state.following;
    state.live = false;
    state.rec = rec;
    takeEvents(events);
    showFacts(rec);
    showVerify(rec);
    recheckSignature(3);
    if (wasFollowing) {
      state.following = false;
      state.playing = false;
      setState('ended');
    } else if (state.playing && !state.tickTimer) {
      tick();
    }
    refresh();
  } catch (err) {
    say('The session has ended, but its last part could not be fetched: ' + err.message);
  }
}

// Just after a session ends the gateway may still be signing its
// recording: an UNSIGNED answer then is asked again a few times.
function recheckSignature(tries) {
  const v = state.rec && state.rec.verification;
  if (tries <= 0 || (v && v.result !== 'UNSIGNED')) {
    return;
  }
  setTimeout(async function () {
    try {
      const rec = await fetchRec();
      if (rec && typeof rec === 'object') {
        state.rec = rec;
        showFacts(rec);
        showVerify(rec);
      }
    } catch (err) {
      return; // the page still says UNSIGNED, which is true as far as it knows
    }
    recheckSignature(tries - 1);
  }, FOLLOW_MS);
}

function recordingGone(err) {
  stopFollowing();
  let text;
  if (err.status === 401) {
    text = 'Your sign-in has ended: the recording is no longer followed. Sign in again and reload.';
  } else if (err.fatal) {
    text = err.message + ' Reload to start again.';
  } else {
    text = 'The recording is no longer available: ' + err.message;
  }
  // Not a play state: the recording stays where it is, but grows no more.
  state.live = false;
  pause();
  refresh();
  say(text);
}

function fail(err) {
  const text = err instanceof CastError ? err.message + ' It cannot be played here; ' +
    'download it to look at it.' : String(err && err.message ? err.message : err);
  block(text, 'All recordings', backHref());
}

// ---- controls ----------------------------------------------------------------------

function seekFromBar() {
  seekTo(Number(ui.seek.value));
}

// Arrow keys move 5 s, Page Up/Down 30 s (the range has no step of its
// own: a pointer can reach any time).
function onSeekKey(ev) {
  let delta = 0;
  switch (ev.key) {
  case 'ArrowLeft':
  case 'ArrowDown':
    delta = -STEP_SECONDS;
    break;
  case 'ArrowRight':
  case 'ArrowUp':
    delta = STEP_SECONDS;
    break;
  case 'PageDown':
    delta = -PAGE_SECONDS;
    break;
  case 'PageUp':
    delta = PAGE_SECONDS;
    break;
  case 'Home':
    ev.preventDefault();
    seekTo(0);
    return;
  case 'End':
    ev.preventDefault();
    seekTo(duration());
    return;
  default:
    return;
  }
  ev.preventDefault();
  seekTo(state.clock + delta);
}

// Space plays and pauses, except where it has a job of its own (buttons,
// links, lists, check boxes, text fields).
function onKey(ev) {
  if (ev.key !== ' ' || ev.ctrlKey || ev.altKey || ev.metaKey) {
    return;
  }
  const t = ev.target;
  const tag = t && t.tagName ? t.tagName.toLowerCase() : '';
  const ownSpace = tag === 'button' || tag === 'a' || tag === 'select' || tag === 'textarea' ||
    (tag === 'input' && t.type !== 'range');
  if (ownSpace && !(t.classList && t.classList.contains('xterm-helper-textarea'))) {
    return;
  }
  ev.preventDefault();
  if (!ev.repeat) {
    toggle();
  }
}

function enableControls() {
  for (const el of [ui.play, ui.seek, ui.speed, ui.idle]) {
    el.disabled = false;
  }
  ui.play.addEventListener('click', toggle);
  ui.seek.addEventListener('input', seekFromBar);
  ui.seek.addEventListener('change', seekFromBar);
  ui.seek.addEventListener('keydown', onSeekKey);
  ui.seek.addEventListener('pointerdown', function () { state.dragging = true; });
  for (const ev of ['pointerup', 'pointercancel', 'blur']) {
    ui.seek.addEventListener(ev, function () { state.dragging = false; });
  }
  ui.speed.addEventListener('change', function () {
    state.speed = Number(ui.speed.value) || 1;
    state.lastTick = performance.now();
    if (state.playing) {
      clearTimeout(state.tickTimer);
      tick();
    }
    refresh();
  });
  ui.idle.addEventListener('change', function () { setCompressed(ui.idle.checked); });
  ui.live.addEventListener('click', goLive);
  document.addEventListener('keydown', onKey);
}

// ---- start -------------------------------------------------------------------------

async function boot() {
  setState('loading');
  ui.back.href = backHref();
  if (!/^[0-9a-f]{1,64}$/.test(recId)) {
    block('No recording was named. Choose one from the list.', 'All recordings', backHref());
    return;
  }
  if (typeof window.Terminal !== 'function' || !window.CanvasAddon || !window.SerializeAddon) {
    block('The player could not be loaded. Reload the page to try again.', 'Reload', location.href);
    return;
  }

  let rec;
  try {
    rec = await fetchRec();
    if (!rec || typeof rec !== 'object') {
      throw new Error('The gateway sent no recording.');
    }
  } catch (err) {
    if (err.status === 401) {
      block('Sign in first: you are not signed in, or your session has ended.', 'Sign in', '/');
    } else if (err.status === 403) {
      block('Only auditors may replay recordings. ' + (err.message || ''), 'Back to your machines', '/');
    } else if (err.status === 404) {
      block('There is no such recording (it may have been removed after its retention period).',
        'All recordings', backHref());
    } else {
      block(err.message, 'Try again', location.href);
    }
    return;
  }
  state.rec = rec;
  state.live = rec.state === 'live';
  showFacts(rec);
  showVerify(rec);
  ui.download.href = '/api/recordings/' + encodeURIComponent(recId) + '/cast';
  ui.download.setAttribute('download', recId + '.cast');
  ui.download.hidden = false;

  say('Fetching the recording\u2026');
  let events;
  try {
    events = parser.push(await fetchCast(0));
    if (!state.live) {
      events = events.concat(parser.finish());
    }
    if (!parser.header) {
      throw new CastError(state.live ? 'The recording has no header yet.'
        : 'The recording is empty.');
    }
  } catch (err) {
    fail(err);
    return;
  }

  createTerminals(parser.header.width, parser.header.height);
  snaps.add({ index: 0, cols: parser.header.width, rows: parser.header.height, data: '' }, 0);
  timeline.append(events);
  say('Preparing the recording for seeking\u2026');
  let lastSaid = 0;
  try {
    await indexMore(function (done, total) {
      const now = performance.now();
      if (now - lastSaid > 200) {
        lastSaid = now;
        say('Preparing the recording for seeking\u2026 ' + Math.floor(done * 100 / total) + '%');
      }
    });
  } catch (err) {
    indexFailed(err);
  }
  showLength();
  enableControls();
  setState('ready');
  refresh();
  damageNote();
  if (state.live) {
    scheduleFollow();
  }
}

boot();
