"""Session recording, end to end: real SSH sessions through a real gateway
with recording on, the .cast files they leave, `postern recording verify`
and `public-key`, the recordings API and pages, retention, and what happens
when the gateway dies or the recording cannot be written.

One sshd and one users file serve the whole module, and so does one gateway
(`_m["gw"]`, recording "on" for every VM but plain01) on which two reference
sessions are recorded before any test runs:

  ref  alice on linux01, 100x30: a marker line, bold text, ~105 KB of `seq`
       (two 64 KiB chunks of the hash chain), a resize to 132x43 with
       `stty size`, a password typed at a prompt that does not echo, `exit`;
  db   bob on db01: one marker line, `exit`.

FileTests and ApiTests read them and never change them (tampering happens on
copies). The gateways that must be stopped, killed, broken or configured
otherwise are started by their own classes: GatewayEndTests (one per test),
UnwritableTests, StoreUnavailableTests, InputAndRetentionTests (which plants
old recordings before its gateway starts and waits for the first sweep,
10 s after the start).

`asciinema cat` (Debian asciinema 2.2) opens /dev/tty: it runs under
script(1), which gives it a pseudo-terminal.
"""

import datetime
import glob
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import time
import unittest

from postern_fixtures import (
    SESSION_COOKIE, ApiClient, ConnectionClosed, Sshd, UsersFile, WsConsole, checked_gateway,
    audit_events, audit_mark, make_temp_dir, postern, require_tool, run, wait_until,
)

ROLES = {
    "ops": {"vms": ["*"], "actions": ["ssh-login"]},
    "aud": {"vms": ["*"], "actions": ["auditor"]},
    # An auditor of the database VMs only.
    "dbaud": {"vms": ["db*"], "actions": ["auditor"]},
}
USERS = {"alice": ("ops",), "bob": ("ops",), "audrey": ("aud",), "dora": ("dbaud",)}
LENIENT = {"free_failures": 1000, "max_delay_seconds": 0,
           "lock_failures": 1000, "lock_seconds": 1}
INSTANCE = "itest-rec-a"
# REC_FLUSH_MS is 1 s; what a reader of a live file may have to wait,
# with room for ASan on two shared cores.
FLUSH_BOUND = 2.5
# The sweep runs 10 s after start (GW_SWEEP_FIRST_MS), then daily.
SWEEP_FIRST = 10.0
SLACK = 10.0
# A password prompt in POSIX sh (the VM's shell is dash): no echo while the
# answer is typed. The quotes keep "Secret: " out of the echoed command.
PASSWORD_PROMPT = "stty -echo; printf 'Sec''ret: '; read pw; stty echo; echo; echo got-${#pw}\r"
CAST_NAME = re.compile(r"^[0-9a-f]{1,64}\.cast$")
# What a terminal would interpret rather than show (CSI, OSC, charset and
# keypad selections), removed from `asciinema cat`'s output.
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
                  rb"|\x1b[()][0-9A-Za-z]|\x1b[=>]")

_m = {}


# ---------------------------------------------------------------------------
# helpers


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def parse_cast(data):
    """(header, events, tail) of an asciicast v2 file's bytes: every line
    that ends in a newline must be JSON (the header first); `tail` is what
    follows the last newline (b"" for a file of whole lines)."""
    lines = data.split(b"\n")
    tail = lines.pop()
    if not lines:
        raise AssertionError("no complete line in %r" % data[:200])
    header = json.loads(lines[0])
    events = []
    for n, line in enumerate(lines[1:], 2):
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise AssertionError("line %d is not JSON (%s): %r" % (n, e, line[:200]))
        if not (isinstance(ev, list) and len(ev) == 3 and isinstance(ev[0], (int, float))
                and ev[1] in ("o", "i", "r") and isinstance(ev[2], str)):
            raise AssertionError("line %d is not an event: %r" % (n, line[:200]))
        events.append(ev)
    return header, events, tail


def read_cast(path):
    return parse_cast(read_bytes(path))


def output_of(events, kind="o"):
    return "".join(e[2] for e in events if e[1] == kind)


def recordings(state_dir):
    """{id: path} of every .cast under state_dir/recordings/Y/M/D."""
    out = {}
    for p in glob.glob(os.path.join(state_dir, "recordings", "*", "*", "*", "*.cast")):
        out[os.path.basename(p)[:-len(".cast")]] = p
    return out


def today_utc():
    return datetime.datetime.now(datetime.timezone.utc).date()


def day_folder(state_dir, day):
    return os.path.join(state_dir, "recordings", "%04d" % day.year, "%02d" % day.month,
                        "%02d" % day.day)


def verify(*args):
    """`postern recording verify ARGS` (CompletedProcess, any exit code)."""
    return postern("recording", "verify", *args, check=False)


def verify_lines(proc):
    """{path: (result, detail)} from verify's stdout."""
    out = {}
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"(.+?): (OK|MODIFIED|TRUNCATED|UNSIGNED|ERROR)(?: \((.*)\))?", line)
        if not m:
            raise AssertionError("unexpected verify line %r in %r" % (line, proc))
        out[m.group(1)] = (m.group(2), m.group(3))
    return out


def asciinema_cat(path):
    """(exit code, what `asciinema cat` printed, terminal sequences and \\r
    removed)."""
    script = require_tool("script")
    require_tool("asciinema")
    p = subprocess.run([script, "-qec", "asciinema cat " + shlex.quote(path), "/dev/null"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return p.returncode, ANSI.sub(b"", p.stdout).replace(b"\r", b"")


def start_gateway(vms, cleanup, users=tuple(USERS), **extra):
    """A gateway (stopped by `cleanup`) and session cookies of `users`."""
    cfg = {"users_file": _m["users"].path, "roles": ROLES, "vms": vms,
           "auth": {"throttle": LENIENT}}
    cfg.update(extra)
    gw = checked_gateway(None, cfg, cleanup=cleanup)
    cookies = {}
    for name in users:
        c = ApiClient(gw)
        r = c.login(name, _m["passwords"][name])
        if r.status != 200 or not c.cookie:
            raise AssertionError("login %s: %r" % (name, r))
        cookies[name] = c.cookie
    return gw, cookies


def shell(gw, cookie, vm, cols=80, rows=24):
    """A console logged in to the VM's shell (close it yourself)."""
    c = WsConsole(gw, vm, cookie=cookie).open()
    c.connect(_m["sshd"].user, password=_m["sshd"].password, cols=cols, rows=rows)
    return c


def session_id(gw, since, user, vm):
    """The id of the session the audit log started for user on vm."""
    ev = wait_until(lambda: audit_events(gw, "session.start", since=since, user=user, vm=vm),
                    10, message="session.start of %s on %s" % (user, vm))
    if len(ev) != 1:
        raise AssertionError("expected one session.start, got %r" % ev)
    return ev[0]["session"]


def exit_and_wait_signed(gw, c, sid):
    """Ends the shell and waits for the recording's manifest; returns the
    recording's path."""
    c.type("exit\r")
    c.wait_end(timeout=15)
    c.close()
    path = wait_until(lambda: recordings(gw.state_dir).get(sid), 10,
                      message="the recording of %s" % sid)
    wait_until(lambda: os.path.exists(path + ".sig"), 10,
               message="the manifest of %s" % path)
    return path


# ---------------------------------------------------------------------------
# module set-up: sshd, users, gateway A, the two reference recordings


def setUpModule():
    sshd = Sshd()
    unittest.addModuleCleanup(sshd.close)
    sshd.start()
    d = make_temp_dir(None, prefix="postern-rec-")
    unittest.addModuleCleanup(shutil.rmtree, d, ignore_errors=True)
    users = UsersFile(os.path.join(d, "users.json"))
    passwords = {}
    for name, roles in USERS.items():
        passwords[name] = "pw-" + secrets.token_urlsafe(12)
        users.add(name, passwords[name], roles)
    _m.update(sshd=sshd, dir=d, users=users, passwords=passwords)

    gw, cookies = start_gateway(
        [sshd.vm_config("linux01", tags=["lab"]),
         sshd.vm_config("db01", tags=["prod"]),
         sshd.vm_config("plain01", tags=["lab"], recording="off")],
        unittest.addModuleCleanup,
        recording={"mode": "on"}, instance=INSTANCE)
    _m.update(gw=gw, cookies=cookies)

    # ref: alice on linux01.
    secret = "typed-" + secrets.token_hex(8)
    mark = audit_mark(gw)
    started = time.time()
    c = shell(gw, cookies["alice"], "linux01", cols=100, rows=30)
    sid = session_id(gw, mark, "alice", "linux01")
    c.run("echo out-''marker-$((6*7))")
    c.run(r"printf '\033[1mbold\033[0m''face\n'")
    c.run("seq 100000 115000", timeout=30)
    c.resize(132, 43)
    wait_until(lambda: re.search(rb"(?<![0-9])43 132\r\n", c.run("stty size")), 15,
               interval=0.2, message="stty size to show 43 132")
    at = len(c.output)
    c.type(PASSWORD_PROMPT)
    c.wait_output(b"Secret: ", since=at)
    c.type(secret + "\r")
    c.wait_output(("got-%d" % len(secret)).encode(), since=at)
    _m["ref"] = {"id": sid, "path": exit_and_wait_signed(gw, c, sid), "secret": secret,
                 "started": started, "client_output": bytes(c.output)}

    # db: bob on db01.
    mark = audit_mark(gw)
    c = shell(gw, cookies["bob"], "db01")
    sid = session_id(gw, mark, "bob", "db01")
    c.run("echo db-''side-$((7*6))")
    _m["db"] = {"id": sid, "path": exit_and_wait_signed(gw, c, sid)}


class RecCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gw = _m["gw"]
        cls.cookies = _m["cookies"]
        cls.sshd = _m["sshd"]

    def setUp(self):
        self.assertTrue(self.gw.alive(), "the gateway died in an earlier test")

    def api(self, user=None):
        return ApiClient(self.gw, cookie=self.cookies[user] if user else None)

    def shell(self, vm="linux01", user="alice", **kw):
        c = shell(self.gw, self.cookies[user], vm, **kw)
        self.addCleanup(c.close)
        return c

    def tmp(self):
        return make_temp_dir(self, prefix="postern-rec-t-")


# ---------------------------------------------------------------------------
# the file, and verifying it


class FileTests(RecCase):

    def test_header_names_user_vm_and_session_and_files_are_private(self):
        ref = _m["ref"]
        header, events, tail = read_cast(ref["path"])
        self.assertEqual(tail, b"", "the file ends mid-line")
        self.assertEqual(header["version"], 2)
        self.assertEqual((header["width"], header["height"]), (100, 30),
                         "the size of the connect message")
        p = header["postern"]
        self.assertEqual(p["session_id"], ref["id"])
        self.assertEqual(os.path.basename(ref["path"]), p["session_id"] + ".cast")
        self.assertRegex(os.path.basename(ref["path"]), CAST_NAME)
        self.assertRegex(p["session_id"], r"^[0-9a-f]{32}$")
        self.assertEqual((p["user"], p["vm"], p["protocol"], p["source"], p["instance"]),
                         ("alice", "linux01", "ssh", "127.0.0.1", INSTANCE))
        self.assertIs(p["record_input"], False)
        self.assertLessEqual(abs(p["started_ms"] / 1000 - ref["started"]), 5)
        self.assertEqual(header["timestamp"], p["started_ms"] // 1000)
        # The date folder is the UTC day the session started.
        day = datetime.datetime.fromtimestamp(p["started_ms"] / 1000, datetime.timezone.utc)
        self.assertEqual(os.path.dirname(ref["path"]), day_folder(self.gw.state_dir, day))
        # Events: times non-decreasing, the output as the client saw it.
        times = [e[0] for e in events]
        self.assertEqual(times, sorted(times))
        self.assertGreaterEqual(times[0], 0)
        out = output_of(events)
        self.assertIn("out-marker-42\r\n", out)
        self.assertIn("115000\r\n", out)
        self.assertEqual(out.encode(), ref["client_output"],
                         "the recorded output differs from what the browser got")
        # 0600 files, 0700 folders, owned by the gateway's user.
        for path in (ref["path"], ref["path"] + ".sig"):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, path)
        folder = os.path.dirname(ref["path"])
        for _ in range(3):
            self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o700, folder)
            folder = os.path.dirname(folder)
        self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o700, folder)

    def test_asciinema_cat_prints_the_commands_output(self):
        rc, out = asciinema_cat(_m["ref"]["path"])
        self.assertEqual(rc, 0, out[-500:])
        self.assertIn(b"out-marker-42\n", out)
        self.assertIn(b"boldface\n", out)
        self.assertIn(b"\n114999\n115000\n", out)
        self.assertIn(b"43 132\n", out)
        rc, out = asciinema_cat(_m["db"]["path"])
        self.assertEqual(rc, 0, out[-500:])
        self.assertIn(b"db-side-42\n", out)

    def test_resize_is_an_r_event(self):
        _, events, _ = read_cast(_m["ref"]["path"])
        resizes = [e for e in events if e[1] == "r"]
        self.assertEqual([e[2] for e in resizes], ["132x43"])
        # ...before the output that shows the new size.
        shown = [e for e in events if e[1] == "o" and "43 132" in e[2]]
        self.assertTrue(shown, "no output with the new size")
        self.assertLessEqual(resizes[0][0], shown[0][0])
        self.assertLess(events.index(resizes[0]), events.index(shown[0]))

    def test_input_is_not_recorded_by_default(self):
        ref = _m["ref"]
        header, events, _ = read_cast(ref["path"])
        self.assertEqual([e for e in events if e[1] == "i"], [])
        self.assertNotIn(ref["secret"].encode(), read_bytes(ref["path"]))
        self.assertNotIn(ref["secret"].encode(), read_bytes(ref["path"] + ".sig"))
        # The prompt was recorded, the answer was never shown.
        self.assertIn("Secret: ", output_of(events))

    def test_vm_with_recording_off_is_not_recorded(self):
        mark = audit_mark(self.gw)
        c = self.shell("plain01")
        sid = session_id(self.gw, mark, "alice", "plain01")
        self.assertIn(b"not-recorded", c.run("echo not-''recorded"))
        c.close()
        self.gw.log.wait_for_event("session.end", vm="plain01")
        time.sleep(0.5)
        self.assertNotIn(sid, recordings(self.gw.state_dir))
        for path in recordings(self.gw.state_dir).values():
            self.assertNotIn(b"not-recorded", read_bytes(path), path)

    def test_verify_ok_modified_truncated_unsigned(self):
        ref = _m["ref"]
        r = verify(ref["path"])
        self.assertEqual((r.returncode, r.stdout), (0, ref["path"] + ": OK\n"), r)
        data = read_bytes(ref["path"])
        sig = read_bytes(ref["path"] + ".sig")
        self.assertGreater(len(data), 2 * 65536 - 40000, "meant to span two chunks")
        d = self.tmp()

        def copy(name, cast, manifest=sig):
            path = os.path.join(d, name, ref["id"] + ".cast")
            os.makedirs(os.path.dirname(path))
            write_bytes(path, cast)
            if manifest is not None:
                write_bytes(path + ".sig", manifest)
            return path

        # One byte of the output, in the first chunk: the 2 of "out-marker-42".
        at = data.index(b"out-marker-42") + len(b"out-marker-4")
        self.assertLess(at, 65536)
        flipped = data[:at] + b"3" + data[at + 1:]
        # One byte of the manifest: a digit of its length.
        m = re.search(rb'"length":(\d+)', sig)
        self.assertIsNotNone(m, sig[:300])
        pos = m.start(1)
        bad_sig = sig[:pos] + bytes([(sig[pos] - 0x30 + 1) % 10 + 0x30]) + sig[pos + 1:]
        # One byte of the signature (line 2).
        spos = sig.index(b"\n") + 5
        bad_sig2 = sig[:spos] + (b"A" if sig[spos:spos + 1] != b"A" else b"B") + sig[spos + 1:]
        cases = {
            "ok": (copy("ok", data), "OK", None),
            "flipped": (copy("flipped", flipped), "MODIFIED", "chunk 0"),
            "flipped-late": (copy("flipped-late", data[:70000] + bytes([data[70000] ^ 1])
                                  + data[70001:]), "MODIFIED", "chunk 1"),
            "manifest": (copy("manifest", data, bad_sig), "MODIFIED", None),
            "signature": (copy("signature", data, bad_sig2), "MODIFIED", None),
            "appended": (copy("appended", data + b"[9.9, \"o\", \"x\"]\n"), "MODIFIED", None),
            "truncated": (copy("truncated", data[:len(data) - 100]), "TRUNCATED", None),
            "cut-to-chunk-1": (copy("cut-to-chunk-1", data[:65536 + 10]), "TRUNCATED", None),
            "unsigned": (copy("unsigned", data, None), "UNSIGNED", None),
        }
        for name, (path, want, detail) in cases.items():
            with self.subTest(name):
                r = verify("--state-dir", self.gw.state_dir, path)
                self.assertEqual(r.returncode, 0 if want == "OK" else 1, r)
                got = verify_lines(r)
                self.assertEqual(list(got), [path], r)
                self.assertEqual(got[path][0], want, r)
                if want != "OK":
                    self.assertTrue(got[path][1], "no reason given: %r" % r)
                if detail:
                    self.assertIn(detail, got[path][1])
        # Several files: exit 0 only when every one is OK, one line each.
        paths = [cases[k][0] for k in ("ok", "flipped", "truncated")]
        r = verify("--state-dir", self.gw.state_dir, *paths)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual([v[0] for v in verify_lines(r).values()],
                         ["OK", "MODIFIED", "TRUNCATED"], r)
        r = verify("--state-dir", self.gw.state_dir, cases["ok"][0], ref["path"])
        self.assertEqual(r.returncode, 0, r)

    def test_verify_with_the_exported_public_key_elsewhere(self):
        ref = _m["ref"]
        pub = postern("recording", "public-key", "--state-dir", self.gw.state_dir).stdout
        self.assertRegex(pub, r"^-----BEGIN PUBLIC KEY-----\n")
        with open(os.path.join(self.gw.state_dir, "keys", "recording.pub")) as f:
            self.assertEqual(pub, f.read())
        d = self.tmp()
        key = os.path.join(d, "postern-recording.pub")
        with open(key, "w") as f:
            f.write(pub)
        cast = os.path.join(d, "copy", os.path.basename(ref["path"]))
        os.makedirs(os.path.dirname(cast))
        shutil.copy(ref["path"], cast)
        shutil.copy(ref["path"] + ".sig", cast + ".sig")
        r = verify("--public-key", key, cast)
        self.assertEqual((r.returncode, r.stdout), (0, cast + ": OK\n"), r)

        # Another key: not OK, whatever word it is given.
        wrong = os.path.join(d, "wrong.pub")
        priv = os.path.join(d, "wrong.key")
        run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", priv])
        run(["openssl", "pkey", "-in", priv, "-pubout", "-out", wrong])
        r = verify("--public-key", wrong, cast)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertNotEqual(verify_lines(r)[cast][0], "OK", r)
        # No key at all (the copy is not under a state directory).
        r = verify(cast)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertEqual(verify_lines(r)[cast][0], "ERROR", r)
        # A tampered copy fails with the exported key too.
        with open(cast, "r+b") as f:
            f.seek(os.path.getsize(cast) - 10)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(b"x" if b != b"x" else b"y")
        r = verify("--public-key", key, cast)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(verify_lines(r)[cast][0], "MODIFIED", r)

    def test_live_session_is_flushed_unsigned_then_signed(self):
        mark = audit_mark(self.gw)
        c = self.shell()
        sid = session_id(self.gw, mark, "alice", "linux01")
        marker = "live-marker-%d" % secrets.randbelow(10**6)
        half = len(marker) // 2
        c.run("echo %s''%s" % (marker[:half], marker[half:]))
        seen = time.monotonic()
        path = wait_until(lambda: recordings(self.gw.state_dir).get(sid), FLUSH_BOUND,
                          message="the live recording's file")

        def flushed():
            try:
                return marker in output_of(read_cast(path)[1])
            except (ValueError, AssertionError):
                return False
        wait_until(flushed, FLUSH_BOUND, interval=0.05,
                   message="the output in the live file within %.1fs" % FLUSH_BOUND)
        print("\nlive output on disk %.2fs after the browser saw it"
              % (time.monotonic() - seen))
        self.assertFalse(os.path.exists(path + ".sig"))
        r = verify(path)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(verify_lines(r)[path][0], "UNSIGNED", r)
        a = self.api("audrey")
        res = a.get("/api/recordings/" + sid)
        self.assertEqual(res.status, 200, res)
        rec = res.json()["recording"]
        self.assertEqual(rec["state"], "live", rec)
        self.assertIsNone(rec["ended"])
        self.assertEqual(rec["verification"]["result"], "UNSIGNED", rec)
        listed = {x["id"]: x for x in a.get("/api/recordings").json()["recordings"]}
        self.assertEqual(listed[sid]["state"], "live")
        # A follower of the file learns the state from the file's answers.
        r = a.get("/api/recordings/%s/cast" % sid, headers={"Range": "bytes=1-"})
        self.assertEqual((r.status, r.header("X-Recording-State")), (206, "live"), r)

        exit_and_wait_signed(self.gw, c, sid)
        r = verify(path)
        self.assertEqual(r.returncode, 0, r)
        # "live" until the loop has heard from the writer that it signed.
        def settled():
            x = a.get("/api/recordings/" + sid).json()["recording"]
            return x if x["state"] != "live" else None
        rec = wait_until(settled, 5, message="the recording to leave the live state")
        self.assertEqual((rec["state"], rec["verification"]["result"]), ("finished", "OK"), rec)
        self.assertIsInstance(rec["ended"], int)
        r = a.get("/api/recordings/%s/cast" % sid, headers={"Range": "bytes=1-"})
        self.assertEqual((r.status, r.header("X-Recording-State")), (206, "finished"), r)


# ---------------------------------------------------------------------------
# the API and the pages


class ApiTests(RecCase):

    def test_non_auditors_and_visitors_are_kept_out(self):
        rid = _m["ref"]["id"]
        api = ["/api/recordings", "/api/recordings/" + rid, "/api/recordings/" + rid + "/cast"]
        pages = ["/recordings.html", "/player.html"]
        alice, nobody, audrey = self.api("alice"), self.api(), self.api("audrey")
        for path in api:
            with self.subTest(path):
                r = alice.get(path)
                self.assertEqual(r.status, 403, r)
                self.assertNotIn(rid.encode(), r.body)
                r = nobody.get(path)
                self.assertEqual(r.status, 401, r)
                self.assertEqual(audrey.get(path).status, 200)
        for path in pages:
            with self.subTest(path):
                r = alice.get(path)
                self.assertEqual(r.status, 403, r)
                r = nobody.get(path)
                self.assertEqual(r.status, 303, r)
                self.assertEqual(r.header("Location"), "/")
                r = audrey.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertIn(b"<html", r.body.lower())

    def test_path_tricks_never_reach_the_filesystem(self):
        rid = _m["ref"]["id"]
        # A recording where a naive join of the id would land:
        # recordings/Y/M/D/../../../../planted.cast is <state_dir>/planted.cast.
        planted = os.path.join(self.gw.state_dir, "planted.cast")
        shutil.copy(_m["ref"]["path"], planted)
        self.addCleanup(os.unlink, planted)
        cookie = "Cookie: %s=%s\r\n" % (SESSION_COOKIE, self.cookies["audrey"])
        mark = audit_mark(self.gw)
        targets = [
            "/api/recordings/..%2f..%2fstate.db",
            "/api/recordings/..%2f..%2f..%2f..%2fplanted",
            "/api/recordings/..%2f..%2f..%2f..%2fplanted/cast",
            "/api/recordings/../../../../planted",
            "/api/recordings/" + rid.upper(),
            "/api/recordings/ABC",
            "/api/recordings/%2e%2e",
            "/api/recordings/%2e%2e/cast",
            "/api/recordings/" + "a" * 65,
            "/api/recordings/" + "a" * 65 + "/cast",
            "/api/recordings/%s/../../x" % rid,
            "/api/recordings/%s/castx" % rid,
            "/api/recordings/%s/cast/" % rid,
            "/api/recordings/%s%%00" % rid,
            "/api/recordings/%s%%00/cast" % rid,
            "/api/recordings/%s.cast" % rid,
            "/api/recordings/%s%%20" % rid,
            "/api/recordings//cast",
            "/api/recordings/",
        ]
        for target in targets:
            with self.subTest(target):
                try:
                    r = self.gw.raw_get(target, extra_headers=cookie)
                except ConnectionClosed:
                    # libwebsockets ends a request whose decoded path holds
                    # a NUL before routing (see test_http.py).
                    self.assertIn("%00", target)
                    continue
                self.assertIn(r.status, (400, 404), r)
                self.assertNotIn(b'"version":2', r.body)
                self.assertNotIn(rid.encode(), r.body)
        self.assertEqual(audit_events(self.gw, "recording.view", since=mark), [])
        self.assertEqual(audit_events(self.gw, "recording.download", since=mark), [])
        # The planted file is not a recording of any id either.
        self.assertNotIn("planted", json.dumps(
            self.api("audrey").get("/api/recordings").json()))
        # Control: the same request shape does reach a real recording.
        r = self.gw.raw_get("/api/recordings/" + rid, extra_headers=cookie)
        self.assertEqual(r.status, 200, r)

    def test_auditor_sees_only_the_vms_of_their_roles(self):
        ref, db = _m["ref"]["id"], _m["db"]["id"]
        dora, audrey = self.api("dora"), self.api("audrey")
        ids = [x["id"] for x in dora.get("/api/recordings").json()["recordings"]]
        self.assertIn(db, ids)
        self.assertNotIn(ref, ids)
        self.assertTrue(all(x["vm"].startswith("db")
                            for x in dora.get("/api/recordings").json()["recordings"]))
        self.assertEqual(dora.get("/api/recordings/" + db).status, 200)
        unknown = audrey.get("/api/recordings/" + "0" * 32)
        self.assertEqual(unknown.status, 404, unknown)
        for path in ("/api/recordings/" + ref, "/api/recordings/" + ref + "/cast"):
            with self.subTest(path):
                r = dora.get(path)
                self.assertEqual(r.status, 404, r)
                self.assertEqual(r.body, unknown.body, "not permitted must look like not found")
        for q in ("?vm=linux01", "?user=alice", "?q=out-marker-42"):
            self.assertNotIn(ref, [x["id"] for x in
                                   dora.get("/api/recordings" + q).json()["recordings"]])

    def listed(self, query="", user="audrey"):
        r = self.api(user).get("/api/recordings" + query)
        self.assertEqual(r.status, 200, r)
        return [x["id"] for x in r.json()["recordings"]]

    def test_list_and_filters(self):
        ref, db = _m["ref"]["id"], _m["db"]["id"]
        r = self.api("audrey").get("/api/recordings")
        self.assertEqual(r.status, 200, r)
        entries = {x["id"]: x for x in r.json()["recordings"]}
        e = entries[ref]
        self.assertEqual({k: e[k] for k in ("user", "vm", "source", "instance", "protocol",
                                            "state")},
                         {"user": "alice", "vm": "linux01", "source": "127.0.0.1",
                          "instance": INSTANCE, "protocol": "ssh", "state": "finished"})
        self.assertEqual(e["size"], os.path.getsize(_m["ref"]["path"]))
        self.assertGreaterEqual(e["ended"], e["started"])
        self.assertEqual(entries[db]["user"], "bob")

        day = today_utc()
        today = day.isoformat()
        cases = [
            ("?user=alice", {ref}, {db}),
            ("?user=bob", {db}, {ref}),
            ("?vm=db01", {db}, {ref}),
            ("?vm=linux01&user=alice", {ref}, {db}),
            ("?vm=db01&user=alice", set(), {ref, db}),
            ("?user=nobody", set(), {ref, db}),
            ("?from=%s&to=%s" % (today, today), {ref, db}, set()),
            ("?from=2020-01-01", {ref, db}, set()),
            ("?to=%s" % today, {ref, db}, set()),
            ("?from=%s" % (day + datetime.timedelta(days=1)).isoformat(), set(), {ref, db}),
            ("?to=%s" % (day - datetime.timedelta(days=1)).isoformat(), set(), {ref, db}),
            ("?q=out-marker-42", {ref}, {db}),
            ("?q=OUT-Marker-42", {ref}, {db}),
            ("?q=boldface", {ref}, {db}),          # across the escape sequences
            ("?q=114999%0A115000", {ref}, {db}),    # across lines (\r removed)
            ("?q=db-side-42", {db}, {ref}),
            ("?q=db-side-42&user=alice", set(), {ref, db}),
        ]
        for query, present, absent in cases:
            with self.subTest(query):
                ids = set(self.listed(query))
                self.assertLessEqual(present, ids)
                self.assertFalse(absent & ids, ids)
        self.assertEqual(self.listed("?q=no-such-text-" + secrets.token_hex(6)), [])
        # The password typed at the prompt was never output: not found.
        self.assertNotIn(ref, self.listed("?q=" + _m["ref"]["secret"]))
        for bad in ("from=2024-13-01", "to=yesterday", "from=2024-1-1", "to=2024-01-01x",
                    "from=2024-00-10", "from=" + "9" * 600):
            with self.subTest(bad):
                r = self.api("audrey").get("/api/recordings?" + bad)
                self.assertEqual(r.status, 400, r)

    def test_show_and_download_with_ranges(self):
        ref = _m["ref"]
        data = read_bytes(ref["path"])
        size = len(data)
        a = self.api("audrey")
        r = a.get("/api/recordings/" + ref["id"])
        self.assertEqual(r.status, 200, r)
        rec = r.json()["recording"]
        self.assertEqual((rec["id"], rec["user"], rec["vm"], rec["state"], rec["size"]),
                         (ref["id"], "alice", "linux01", "finished", size))
        self.assertEqual(rec["verification"]["result"], "OK", rec)

        r = a.get("/api/recordings/%s/cast" % ref["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, data)
        self.assertEqual(r.header("Content-Type"), "application/x-asciicast")
        self.assertEqual(r.header("Accept-Ranges"), "bytes")
        self.assertEqual(r.header("X-Recording-State"), "finished")

        for start in (1, 1000, 70000, size - 1):
            with self.subTest(start=start):
                r = a.get("/api/recordings/%s/cast" % ref["id"],
                          headers={"Range": "bytes=%d-" % start})
                self.assertEqual(r.status, 206, r)
                self.assertEqual(r.header("Content-Range"),
                                 "bytes %d-%d/%d" % (start, size - 1, size))
                self.assertEqual(r.body, data[start:])
        r = a.get("/api/recordings/%s/cast" % ref["id"], headers={"Range": "bytes=10-40"})
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.header("Content-Range"), "bytes 10-40/%d" % size)
        self.assertEqual(r.body, data[10:41])
        for start in (size, size + 1000):
            with self.subTest(past=start):
                r = a.get("/api/recordings/%s/cast" % ref["id"],
                          headers={"Range": "bytes=%d-" % start})
                self.assertEqual(r.status, 416, r)
                self.assertEqual(r.header("Content-Range"), "bytes */%d" % size)
                self.assertEqual(r.header("X-Recording-State"), "finished")
                self.assertNotIn(b'"version"', r.body)

    def test_listing_viewing_and_downloading_are_audited(self):
        rid = _m["ref"]["id"]
        a = self.api("audrey")
        mark = audit_mark(self.gw)
        a.get("/api/recordings?user=alice&q=out-marker-42")
        ev = audit_events(self.gw, "recording.list", since=mark)
        self.assertEqual(len(ev), 1, ev)
        self.assertEqual((ev[0]["user"], ev[0]["filter_user"], ev[0]["text"], ev[0]["source"]),
                         ("audrey", "alice", "out-marker-42", "127.0.0.1"))
        self.assertGreaterEqual(ev[0]["count"], 1)

        mark = audit_mark(self.gw)
        a.get("/api/recordings/" + rid)
        ev = audit_events(self.gw, "recording.view", since=mark)
        self.assertEqual([(e["user"], e["recording"], e["recorded_user"], e["vm"]) for e in ev],
                         [("audrey", rid, "alice", "linux01")])

        mark = audit_mark(self.gw)
        self.assertEqual(a.get("/api/recordings/%s/cast" % rid).status, 200)
        a.get("/api/recordings/%s/cast" % rid, headers={"Range": "bytes=0-99"})
        ev = audit_events(self.gw, "recording.download", since=mark)
        self.assertEqual([(e["user"], e["recording"]) for e in ev],
                         [("audrey", rid), ("audrey", rid)])
        # A follower's later ranges are the same download: not audited again.
        mark = audit_mark(self.gw)
        a.get("/api/recordings/%s/cast" % rid, headers={"Range": "bytes=100-"})
        self.assertEqual(audit_events(self.gw, "recording.download", since=mark), [])
        # Refusals are not views.
        mark = audit_mark(self.gw)
        self.api("dora").get("/api/recordings/" + rid)
        self.api("alice").get("/api/recordings/" + rid)
        self.assertEqual(audit_events(self.gw, "recording.view", since=mark), [])
        r = postern("audit", "verify", self.gw.audit_log_path, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


# ---------------------------------------------------------------------------
# a gateway stopped or killed mid-session


class GatewayEndTests(RecCase):
    """Each test starts (and ends) a gateway of its own."""

    def own_gateway(self, **extra):
        self.gw, self.cookies = start_gateway(
            [_m["sshd"].vm_config("linux01")], self.addCleanup, users=("alice",),
            recording={"mode": "on"}, **extra)

    def setUp(self):
        pass

    def test_sigkill_leaves_a_readable_unsigned_file(self):
        self.own_gateway()
        mark = audit_mark(self.gw)
        c = self.shell()
        sid = session_id(self.gw, mark, "alice", "linux01")
        c.run("echo before-''pause-$((3*3))")
        time.sleep(2.0)
        # Output keeps coming up to the kill: a tick every 0.1 s.
        at = len(c.output)
        c.type("for i in $(seq 1 600); do echo tick-$i; sleep 0.1; done\r")
        c.wait_output(b"tick-1\r\n", since=at)
        t_end = time.monotonic() + 2.0
        c.wait(lambda: time.monotonic() >= t_end, timeout=5, what="2 s of ticks")
        self.assertEqual(self.gw.stop(signal.SIGKILL), -signal.SIGKILL)
        seen = [int(x) for x in re.findall(rb"tick-(\d+)\r\n", bytes(c.output[at:]))]
        c.abort()

        path = recordings(self.gw.state_dir).get(sid)
        self.assertIsNotNone(path, "no recording left behind")
        self.assertFalse(os.path.exists(path + ".sig"))
        header, events, tail = read_cast(path)
        self.assertEqual(header["postern"]["session_id"], sid)
        out = output_of(events)
        self.assertIn("before-pause-9\r\n", out)
        ticks = [int(x) for x in re.findall(r"tick-(\d+)\r\n", out)]
        self.assertTrue(ticks, "none of the last 2 s of output is in the file")
        # At most one flush interval (1 s = 10 ticks) behind the browser,
        # plus scheduling slack.
        print("\nkilled: the browser saw tick %d, the file holds tick %d (%d bytes after "
              "the last newline)" % (max(seen), max(ticks), len(tail)))
        self.assertGreaterEqual(max(ticks), max(seen) - 15, (max(ticks), max(seen)))
        r = verify(path)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(verify_lines(r)[path][0], "UNSIGNED", r)

    def test_sigterm_signs_the_recordings_of_live_sessions(self):
        # No grace: SIGTERM ends the live session at once; the recording
        # must still be flushed and signed before the process exits.
        self.own_gateway(limits={"shutdown_grace_seconds": 0})
        mark = audit_mark(self.gw)
        c = self.shell()
        sid = session_id(self.gw, mark, "alice", "linux01")
        c.run("echo before-''term-$((4*4))")
        t0 = time.monotonic()
        self.assertEqual(self.gw.stop(signal.SIGTERM, timeout=15), 0)
        print("\nSIGTERM with a live recorded session: exit after %.2fs"
              % (time.monotonic() - t0))
        c.abort()
        path = recordings(self.gw.state_dir).get(sid)
        self.assertIsNotNone(path)
        r = verify(path)
        self.assertEqual((r.returncode, verify_lines(r)[path][0]), (0, "OK"), r)
        self.assertIn("before-term-16\r\n", output_of(read_cast(path)[1]))


# ---------------------------------------------------------------------------
# the recording cannot be written


class UnwritableTests(RecCase):
    """recordings/<this year> is a regular file: the store opens (its
    folder exists), every new recording fails to create its day folder.
    Root ignores file modes, so a mode would not do."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        sshd = _m["sshd"]
        cls.gw, cls.cookies = start_gateway(
            [sshd.vm_config("req01", recording="required"),
             sshd.vm_config("rec01", recording="on"),
             sshd.vm_config("plain01", recording="off")],
            cls.addClassCleanup, users=("alice",))
        top = os.path.join(cls.gw.state_dir, "recordings")
        assert os.path.isdir(top), "the store did not create recordings/"
        years = {time.gmtime().tm_year, time.gmtime(time.time() + 600).tm_year}
        for y in years:
            with open(os.path.join(top, "%04d" % y), "w") as f:
                f.write("not a folder\n")

    def test_required_recording_refuses_the_session_and_the_gateway_goes_on(self):
        mark = audit_mark(self.gw)
        c = WsConsole(self.gw, "req01", cookie=self.cookies["alice"]).open()
        self.addCleanup(c.close)
        c.connect(self.sshd.user, password=self.sshd.password, wait=False)
        msg, code, _ = c.wait_end(timeout=20)
        self.assertIsNotNone(msg, c.describe())
        self.assertEqual(msg["type"], "error", msg)
        self.assertIn("recording", msg["message"])
        self.assertNotEqual(code, 1000)
        self.assertEqual(bytes(c.output), b"", "terminal output that was never recorded")
        ev = wait_until(lambda: audit_events(self.gw, "recording.failed", since=mark,
                                             vm="req01"), 5,
                        message="recording.failed in the audit log")
        self.assertEqual(len(ev), 1, ev)
        self.assertIs(ev[0]["required"], True)
        self.assertEqual(ev[0]["user"], "alice")
        self.assertTrue(ev[0]["reason"])
        self.gw.log.wait_for_event("recording.failed", vm="req01")

        # The gateway keeps serving: a VM without recording works, and so
        # does /healthz.
        self.assertEqual(self.gw.https_get("/healthz").status, 200)
        c2 = self.shell("plain01")
        self.assertIn(b"still-serving", c2.run("echo still-''serving"))
        self.assertTrue(self.gw.alive())

    def test_on_recording_that_fails_lets_the_session_go_on(self):
        mark = audit_mark(self.gw)
        c = self.shell("rec01")
        c.wait(lambda: any("no longer recorded" in (s or "") for s in statuses(c)),
               timeout=10, what="a status saying the session is no longer recorded")
        self.assertIn(b"goes-on", c.run("echo goes-''on"))
        ev = wait_until(lambda: audit_events(self.gw, "recording.failed", since=mark,
                                             vm="rec01"), 5,
                        message="recording.failed in the audit log")
        self.assertIs(ev[0]["required"], False)
        self.assertEqual(recordings(self.gw.state_dir), {})


def statuses(c):
    """The status messages a console received so far."""
    return [m.get("message") for m in c.messages
            if isinstance(m, dict) and m.get("type") == "status"]


class StoreUnavailableTests(RecCase):
    """<state_dir>/recordings is a regular file before the start: the store
    cannot open. The gateway starts all the same (docs/config.md)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        sshd = _m["sshd"]
        state = make_temp_dir(None, prefix="postern-rec-state-")
        cls.addClassCleanup(shutil.rmtree, state, ignore_errors=True)
        os.chmod(state, 0o700)
        with open(os.path.join(state, "recordings"), "w") as f:
            f.write("not a folder\n")
        cls.gw, cls.cookies = start_gateway(
            [sshd.vm_config("req01", recording="required"),
             sshd.vm_config("rec01", recording="on")],
            cls.addClassCleanup, users=("alice", "audrey"), state_dir=state)

    def test_required_vms_refused_others_served(self):
        self.gw.log.wait_for_event("recording.unavailable")
        mark = audit_mark(self.gw)
        c = WsConsole(self.gw, "req01", cookie=self.cookies["alice"]).open()
        self.addCleanup(c.close)
        c.connect(self.sshd.user, password=self.sshd.password, wait=False)
        msg, code, _ = c.wait_end(timeout=20)
        self.assertIsNotNone(msg, c.describe())
        self.assertEqual(msg["type"], "error", msg)
        self.assertIn("recording", msg["message"])
        self.assertNotIn("connecting", [m.get("message") for m in c.messages
                                        if isinstance(m, dict)], "the VM was contacted")
        ev = audit_events(self.gw, "recording.failed", since=mark, vm="req01")
        self.assertEqual([e["required"] for e in ev], [True], ev)
        mark = audit_mark(self.gw)
        c2 = self.shell("rec01")
        self.assertIn(b"unrecorded", c2.run("echo un''recorded"))
        # "on": the session goes on, and says it is not recorded.
        self.assertTrue(any("not recorded" in (s or "") for s in statuses(c2)),
                        statuses(c2))
        ev = audit_events(self.gw, "recording.failed", since=mark, vm="rec01")
        self.assertEqual([e["required"] for e in ev], [False], ev)
        r = self.api("audrey").get("/api/recordings")
        self.assertEqual(r.status, 503, r)


# ---------------------------------------------------------------------------
# input events, and the retention sweep


class InputAndRetentionTests(RecCase):
    """recording {"mode": "on", "input": true, "retention_days": 1}, with
    recordings planted before the start: copies of the reference one in
    2020/01/01 (to go) and in today's folder (to stay), and two unsigned
    files in 2020/01/02: one untouched for long (to go), one written a
    moment ago (a session still running: to stay)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ref = _m["ref"]
        state = make_temp_dir(None, prefix="postern-rec-state-")
        cls.addClassCleanup(shutil.rmtree, state, ignore_errors=True)
        os.chmod(state, 0o700)
        top = os.path.join(state, "recordings")
        cls.old = os.path.join(top, "2020", "01", "01", ref["id"] + ".cast")
        cls.today = os.path.join(day_folder(state, today_utc()), ref["id"] + ".cast")
        cls.stale = os.path.join(top, "2020", "01", "02", "5a1e" * 8 + ".cast")
        cls.running = os.path.join(top, "2020", "01", "02", "7e57" * 8 + ".cast")
        for path in (cls.old, cls.today):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            shutil.copy(ref["path"], path)
            shutil.copy(ref["path"] + ".sig", path + ".sig")
        os.makedirs(os.path.dirname(cls.stale), mode=0o700)
        for path in (cls.stale, cls.running):
            shutil.copy(ref["path"], path)
        long_ago = time.time() - 30 * 86400
        os.utime(cls.stale, (long_ago, long_ago))
        cls.started = time.monotonic()
        cls.gw, cls.cookies = start_gateway(
            [_m["sshd"].vm_config("linux01")], cls.addClassCleanup, users=("alice",),
            state_dir=state,
            recording={"mode": "on", "input": True, "retention_days": 1})

    def test_input_events_when_the_config_asks(self):
        mark = audit_mark(self.gw)
        c = self.shell()
        sid = session_id(self.gw, mark, "alice", "linux01")
        secret = "typed-" + secrets.token_hex(8)
        at = len(c.output)
        c.type(PASSWORD_PROMPT)
        c.wait_output(b"Secret: ", since=at)
        for ch in secret:               # one key at a time, as a person types
            c.type(ch)
        c.type("\r")
        c.wait_output(("got-%d" % len(secret)).encode(), since=at)
        c.resize(90, 20)
        c.run("echo after-''resize")
        path = exit_and_wait_signed(self.gw, c, sid)
        header, events, _ = read_cast(path)
        self.assertIs(header["postern"]["record_input"], True)
        typed = output_of(events, "i")
        self.assertIn(PASSWORD_PROMPT, typed)
        self.assertIn(secret + "\r", typed)
        self.assertIn("exit\r", typed)
        self.assertNotIn(secret, output_of(events), "the shell never echoed it")
        self.assertEqual([e[2] for e in events if e[1] == "r"], ["90x20"])
        self.assertEqual(verify(path).returncode, 0)

    def test_retention_sweep_deletes_old_days_only(self):
        ref = _m["ref"]
        ev = wait_until(lambda: audit_events(self.gw, "recording.deleted"),
                        SWEEP_FIRST + SLACK + 15, interval=0.2,
                        message="recording.deleted from the first sweep")
        print("\nfirst sweep %.1fs after the start" % (time.monotonic() - self.started))
        # Both deletions come from one sweep: let it finish.
        self.gw.log.wait_for_event("recording.sweep", timeout=10)
        ev = audit_events(self.gw, "recording.deleted")
        got = sorted((e["recording"], e["reason"]) for e in ev)
        self.assertEqual(got, sorted([(ref["id"], "retention"),
                                      (os.path.basename(self.stale)[:-5], "retention")]), ev)
        mine = [e for e in ev if e["recording"] == ref["id"]][0]
        self.assertEqual((mine["user"], mine["vm"]), ("alice", "linux01"))
        self.assertFalse(os.path.exists(self.old))
        self.assertFalse(os.path.exists(self.old + ".sig"))
        self.assertFalse(os.path.exists(self.stale))
        self.assertFalse(os.path.exists(os.path.dirname(self.old)), "empty day folder kept")
        self.assertTrue(os.path.exists(self.running), "an unsigned file still being written")
        self.assertTrue(os.path.exists(self.today))
        self.assertTrue(os.path.exists(self.today + ".sig"))
        r = verify("--public-key", os.path.join(_m["gw"].state_dir, "keys", "recording.pub"),
                   self.today)
        self.assertEqual(r.returncode, 0, r)
        line = self.gw.log.find_events("recording.sweep")[0]
        self.assertIn("deleted=2", line)
        r = postern("audit", "verify", self.gw.audit_log_path, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
