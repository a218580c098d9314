// Postern console: the pure logic of the recording player (player.js),
// kept free of the DOM and of xterm.js so that Node's test runner can check
// it (tests/e2e/test_player_logic.mjs).
//
// A recording is an asciicast v2 file: a JSON header line
//   {"version":2,"width":W,"height":H,"timestamp":S,"postern":{...}}
// then one JSON array per line, [t, code, data]: t in seconds since the
// start, code "o" (output), "i" (input), "r" (resize, data "COLSxROWS") or
// "m" (marker). A recording that is still being written may end in half a
// line; that part waits until the rest arrives.

export const IDLE_LIMIT = 2;                // seconds: longer pauses play as this
export const SNAPSHOT_BYTES = 64 * 1024;    // output between two terminal snapshots...
export const SNAPSHOT_SECONDS = 30;         // ...or recording time, whichever comes first
export const SNAPSHOT_MAX = 256;            // more than this: every other one is dropped

const NL = 0x0a;

export class CastError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CastError';
  }
}

// The header line as an object; throws CastError when it is not one of ours.
export function parseHeader(line) {
  let h;
  try {
    h = JSON.parse(line);
  } catch (err) {
    throw new CastError('The recording does not start with an asciicast header.');
  }
  if (!h || typeof h !== 'object' || Array.isArray(h)) {
    throw new CastError('The recording does not start with an asciicast header.');
  }
  if (h.version !== 2) {
    throw new CastError('The recording is in asciicast version ' + String(h.version) +
      '; only version 2 can be played.');
  }
  if (!validSize(h.width) || !validSize(h.height)) {
    throw new CastError('The recording\u2019s header has no valid terminal size.');
  }
  return h;
}

function validSize(n) {
  return Number.isInteger(n) && n > 0 && n <= 4096;
}

// One event line as {t, code, data}, or null when the line is not an event
// (it is then skipped and counted, so that one damaged line does not stop
// the replay of the rest).
export function parseEvent(line) {
  let e;
  try {
    e = JSON.parse(line);
  } catch (err) {
    return null;
  }
  if (!Array.isArray(e) || e.length < 3 || typeof e[0] !== 'number' || !Number.isFinite(e[0]) ||
      e[0] < 0 || typeof e[1] !== 'string' || typeof e[2] !== 'string') {
    return null;
  }
  return { t: e[0], code: e[1], data: e[2] };
}

// "COLSxROWS" -> {cols, rows}, or null.
export function parseSize(text) {
  const m = /^(\d{1,4})x(\d{1,4})$/.exec(text);
  if (!m) {
    return null;
  }
  const cols = Number(m[1]);
  const rows = Number(m[2]);
  return validSize(cols) && validSize(rows) ? { cols, rows } : null;
}

// Reads a recording in pieces of bytes, as they arrive (the whole file at
// once, or a growing file by Range requests). Only whole lines are parsed:
// the bytes after the last newline wait for the next piece. Lines are
// split on bytes, so a UTF-8 sequence cut between two pieces is never
// decoded in halves.
export class CastParser {
  constructor() {
    this.header = null;
    this.events = [];     // every event so far, in file order
    this.bytes = 0;       // bytes taken in, whole lines and the pending part
    this.bad = 0;         // lines that were not events, skipped
    this.pending = new Uint8Array(0);
    this.decoder = new TextDecoder('utf-8');
  }

  // Takes the next piece (Uint8Array or ArrayBuffer); returns the events it
  // completed. Throws CastError when the first line is not a header.
  push(piece) {
    const bytes = piece instanceof Uint8Array ? piece : new Uint8Array(piece);
    this.bytes += bytes.length;
    let buf = bytes;
    if (this.pending.length) {
      buf = new Uint8Array(this.pending.length + bytes.length);
      buf.set(this.pending, 0);
      buf.set(bytes, this.pending.length);
    }
    const last = buf.lastIndexOf(NL);
    if (last < 0) {
      this.pending = buf;
      return [];
    }
    this.pending = buf.slice(last + 1);
    return this.lines(this.decoder.decode(buf.subarray(0, last)).split('\n'));
  }

  // The end of a file that will not grow: a last line without its newline
  // is taken when it is a whole event (a gateway that died mid-write leaves
  // half a line, which is dropped). Returns the events it added.
  finish() {
    const rest = this.pending;
    this.pending = new Uint8Array(0);
    if (!rest.length) {
      return [];
    }
    const line = this.decoder.decode(rest);
    if (this.header && parseEvent(line) === null) {
      return []; // half a line: not counted as damage
    }
    return this.lines([line]);
  }

  lines(lines) {
    const out = [];
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (this.header === null) {
        this.header = parseHeader(line);
        continue;
      }
      if (line.trim() === '') {
        continue;
      }
      const e = parseEvent(line);
      if (e === null) {
        this.bad++;
        continue;
      }
      this.events.push(e);
      out.push(e);
    }
    return out;
  }
}

// ---- the timeline -----------------------------------------------------------
//
// Each event has a time on the real timeline (its t) and one on the
// compressed timeline, where a pause longer than `limit` seconds counts as
// `limit`. The seek bar, the clock and playback use one of the two; the
// terminal only ever cares about how many events have been applied.

export class Timeline {
  constructor(limit = IDLE_LIMIT) {
    this.limit = limit;   // seconds; Infinity for no compression
    this.real = [];       // event times as recorded (non-decreasing)
    this.compressed = []; // the same with long pauses shortened
    this.lastReal = 0;
  }

  // Adds the times of the next events (in order).
  append(events) {
    for (const e of events) {
      // Times never go back: a clock step on the gateway must not make
      // the seek bar run backwards.
      const t = Math.max(e.t, this.lastReal);
      const prevC = this.compressed.length ? this.compressed[this.compressed.length - 1] : 0;
      this.compressed.push(prevC + Math.min(t - this.lastReal, this.limit));
      this.real.push(t);
      this.lastReal = t;
    }
  }

  get length() { return this.real.length; }

  // The times on the chosen timeline.
  times(compressed) {
    return compressed ? this.compressed : this.real;
  }

  duration(compressed) {
    const ts = this.times(compressed);
    return ts.length ? ts[ts.length - 1] : 0;
  }

  // How many events lie at or before time t (the events to apply to show
  // the terminal as it was at t).
  countAt(t, compressed) {
    return upperBound(this.times(compressed), t);
  }

  // The time on the chosen timeline at which the first n events have been
  // applied (0 for none).
  timeOf(n, compressed) {
    if (n <= 0) {
      return 0;
    }
    const ts = this.times(compressed);
    return ts[Math.min(n, ts.length) - 1];
  }
}

// The number of values in the sorted array a that are <= x.
export function upperBound(a, x) {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] <= x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// ---- snapshots ---------------------------------------------------------------
//
// A snapshot is the terminal as it was after the first `index` events:
// {index, cols, rows, data}, where data is a string that, written into a
// reset terminal of that size, draws the same screen, scrollback and
// cursor (made by xterm.js's serialize add-on in player.js). A seek
// restores the last snapshot at or before the target and writes only the
// events after it, so no seek replays from the start.

export class SnapshotIndex {
  constructor({ bytes = SNAPSHOT_BYTES, seconds = SNAPSHOT_SECONDS, max = SNAPSHOT_MAX } = {}) {
    this.bytes = bytes;
    this.seconds = seconds;
    this.max = max;
    this.list = [];       // by index, ascending; list[0] is the empty terminal
    this.sinceBytes = 0;  // output since the last snapshot
    this.sinceTime = 0;   // recording time of the last snapshot
  }

  // Counts one event applied to the indexing terminal; true when a
  // snapshot should be taken after it.
  note(event) {
    if (event.code === 'o') {
      this.sinceBytes += event.data.length;
    }
    if (this.sinceBytes === 0) {
      return false; // nothing drawn since the last one
    }
    return this.sinceBytes >= this.bytes || event.t - this.sinceTime >= this.seconds;
  }

  // Adds a snapshot (indexes must grow). Past `max`, every other snapshot
  // but the first is dropped and the spacing doubles: memory stays bounded
  // for long recordings, seeks write at most twice as much.
  add(snap, t = 0) {
    const prev = this.list[this.list.length - 1];
    if (prev && snap.index <= prev.index) {
      throw new Error('snapshots must be added in order');
    }
    this.list.push(snap);
    this.sinceBytes = 0;
    this.sinceTime = t;
    if (this.list.length > this.max) {
      this.list = this.list.filter(function (s, i) { return i % 2 === 0; });
      this.bytes *= 2;
      this.seconds *= 2;
    }
  }

  // The last snapshot taken at or before n events, or null when none is.
  before(n) {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.list[mid].index <= n) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo ? this.list[lo - 1] : null;
  }
}

// How to get the terminal from `current` applied events to `target`: write
// the events after `current` when going forward and no snapshot lies in
// between (cheaper than restoring), else restore `snap` and write the
// events after it. Returns {restore: snap | null, from}.
export function seekPlan(current, target, snap) {
  if (target >= current && (!snap || snap.index <= current)) {
    return { restore: null, from: current };
  }
  return { restore: snap, from: snap ? snap.index : 0 };
}

// ---- words ----------------------------------------------------------------------

// Where the recordings list (recordings.js) keeps its filters ("?user=..."),
// in sessionStorage, for the player's link back to it.
export const QUERY_KEY = 'postern.recordings.query';

// A recording's start (ms since the epoch) as the pages show it.
export function formatStarted(ms) {
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

// A recording's wall-clock length in seconds from its metadata, or null
// when it has not ended (or the times make no sense).
export function recordedSeconds(rec) {
  if (rec && Number.isFinite(rec.started) && Number.isFinite(rec.ended) && rec.ended >= rec.started) {
    return (rec.ended - rec.started) / 1000;
  }
  return null;
}

// The gateway's signature check as ok | pending | bad: UNSIGNED is only
// pending while the session is still recorded (it is signed when it ends).
export function verifyKind(result, live) {
  if (result === 'OK') {
    return 'ok';
  }
  return result === 'UNSIGNED' && live ? 'pending' : 'bad';
}

// 75.3 -> "1:15", 3725 -> "1:02:05".
export function formatClock(seconds) {
  const s = Math.max(0, Math.floor(seconds + 1e-6));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? h + ':' + String(m).padStart(2, '0') + ':' + ss : m + ':' + ss;
}

// 1536 -> "1.5 KiB".
export function formatSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) {
    return '';
  }
  if (bytes < 1024) {
    return bytes + ' B';
  }
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return (v < 10 ? v.toFixed(1) : Math.round(v)) + ' ' + units[u];
}
