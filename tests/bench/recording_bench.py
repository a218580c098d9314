#!/usr/bin/python3
"""Benchmark of session recording, on 127.0.0.1 only.

Starts a real sshd (the integration tests' Sshd fixture, via ssh_bench.py)
and Release posternd gateways, then measures:

  1. bulk: one SSH console session running `head -c SIZE /dev/zero | base64`
     through the gateway to a VM with recording off and to one with
     recording on, alternately, --rounds times each: MB/s at the client
     (ssh_loadgen --bulk, as ssh_bench.py) and the gateway's CPU (all its
     threads, the recording writer included); what recording costs;
  2. interactive size: a scripted session typing at --keys-per-second
     (ls, cat, a vim-like editor, a top-like screen, ps, ...) for about a
     minute, recorded with input off and (on a second gateway, at the same
     time) with input on; the .cast's bytes per second, extrapolated to an
     hour.

Prints one table and writes the raw numbers to results/*.json.

    sudo /usr/bin/python3 tests/bench/recording_bench.py [--quick] [--posternd PATH]
"""

import argparse
import datetime
import glob
import gzip
import json
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import ssh_bench as sb  # noqa: E402  (its sshd, meters and load generator)

fx = sb.fx
log = sb.log
BENCH_USER = "bench"
VM_OFF, VM_ON, VM_INPUT = "rec-off", "rec-on", "rec-input"


# ---------------------------------------------------------------------------
# the interactive script: programs on the VM, and what the user types

# A full-screen editor look-alike: draws FILE on the alternate screen, then
# answers each key as vim does (a ruler update and a cursor move, ~25
# bytes); ":q" + Enter leaves.
VI_SH = r"""#!/bin/sh
f=$1
old=$(stty -g)
stty raw -echo
printf '\033[?1049h\033[22;0;0t\033[1;24r\033[?12h\033[?12l\033[27m\033[29m\033[m\033[H\033[2J'
awk 'NR<=23 { printf "\033[%d;1H%s\033[K", NR, substr($0, 1, 80) }
     END { for (i = NR + 1; i <= 23; i++) printf "\033[%d;1H\033[94m~\033[0m", i }' "$f"
printf '\033[24;1H"%s" %dL, %dB\033[24;63H1,1\033[11CTop\033[1;1H' "$f" \
    "$(wc -l < "$f")" "$(wc -c < "$f")"
row=1; col=1; cmd=
cr=$(printf '\r')
while :; do
    c=$(dd bs=1 count=1 2>/dev/null)
    if [ -n "$cmd" ]; then
        if [ "$c" = "$cr" ]; then
            [ "$cmd" = ":q" ] && break
            cmd=; printf '\033[24;1H\033[K'; continue
        fi
        cmd="$cmd$c"; printf '%s' "$c"; continue
    fi
    case "$c" in
        j) [ $row -lt 23 ] && row=$((row + 1)) ;;
        k) [ $row -gt 1 ] && row=$((row - 1)) ;;
        l) [ $col -lt 80 ] && col=$((col + 1)) ;;
        h) [ $col -gt 1 ] && col=$((col - 1)) ;;
        :) cmd=:; printf '\033[24;1H\033[K:'; continue ;;
    esac
    printf '\033[?25l\033[24;63H%-14s\033[%d;%dH\033[?25h' "$row,$col" "$row" "$col"
done
printf '\033[?1049l\033[23;0;0t'
stty "$old"
"""

# A top look-alike: a full 80x24 screen every 3 s (top's default delay),
# N times, each line ending in erase-to-end-of-line as top's do.
TOP_SH = r"""#!/bin/sh
n=${1:-5}
printf '\033[?1049h\033[H\033[2J'
i=0
while [ $i -lt $n ]; do
    printf '\033[H'
    printf 'top - %s up 12 days,  3:%02d,  2 users,  load average: 0.%02d, 0.%02d, 0.%02d\033[K\n' \
        "$(date +%T)" $i $((i * 7 % 100)) $((i * 5 % 100)) $((i * 3 % 100))
    printf 'Tasks: %3d total,   1 running, %3d sleeping,   0 stopped,   0 zombie\033[K\n' \
        $((120 + i)) $((119 + i))
    printf '%%Cpu(s):  %d.%d us,  0.%d sy,  0.0 ni, 9%d.%d id,  0.0 wa,  0.0 hi,  0.0 si\033[K\n' \
        $((i % 4)) $((i * 3 % 10)) $((i % 10)) $((7 - i % 4)) $((i * 7 % 10))
    printf 'MiB Mem :  24105.1 total,  %5d.3 free,    369.%d used,    701.2 buff/cache\033[K\n' \
        $((23298 - i)) $((i % 10))
    printf 'MiB Swap:      0.0 total,      0.0 free,      0.0 used.  23735.9 avail Mem\033[K\n'
    printf '\033[K\n'
    printf '\033[7m    PID USER      PR  NI    VIRT    RES    SHR S  %%CPU  %%MEM     TIME+ COMMAND\033[m\033[K\n'
    ps -eo pid,user:8,pri,ni,vsz,rss,stat,pcpu,pmem,time,comm --sort=-pcpu --no-headers \
        | head -17 | awk '{ printf "%7s %-8s %3s %3s %7s %6s %6s %s %5s %5s %9s %s\033[K\n",
                                  $1, $2, $3, $4, $5, $6, int($6 / 2), substr($7, 1, 1), $8,
                                  $9, $10, $11 }'
    sleep 3
    i=$((i + 1))
done
printf '\033[?1049l'
"""

# (keys to type, seconds to look at the result before typing on)
SCRIPT = [
    ("ls -la /etc | head -30\r", 2.0),
    ("cat /etc/os-release\r", 2.0),
    ("vi notes.conf\r", 1.5),
    ("jjjjjjjjjjjj", 0.5),
    ("lllll", 0.5),
    ("kkkk", 0.5),
    (":q\r", 1.0),
    ("df -h\r", 2.0),
    ("top\r", None),            # None: until the prompt is back (5 refreshes, 15 s)
    ("ps aux | head -15\r", 2.0),
    ("uptime\r", 1.0),
]


def install_programs():
    """A folder the test account can read, with `vi`, `top` and a file to
    edit; returns its path."""
    d = tempfile.mkdtemp(prefix="postern-recbench-vm-")
    os.chmod(d, 0o755)
    for name, text in (("vi", VI_SH), ("top", TOP_SH)):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o755)
    with open("/etc/ssh/sshd_config") as src:
        conf = src.read()
    p = os.path.join(d, "notes.conf")
    with open(p, "w") as f:
        f.write(conf)
    os.chmod(p, 0o644)
    return d


def read_until(c, until):
    """Reads whatever the gateway sends until the monotonic time `until`
    (WsConsole.wait would sleep on to its own deadline when nothing
    comes)."""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        if c.close_code is not None or c.eof:
            raise AssertionError("the session ended: " + c.describe())
        try:
            c.recv_event(left)
        except socket.timeout:
            pass


def type_script(c, keys_per_second, rng, vm_dir):
    """Types SCRIPT into console c at about keys_per_second (±30 %),
    reading everything the gateway sends meanwhile. Returns (keys typed,
    seconds)."""
    # Set-up, not part of the typing: our vi/top first on PATH.
    c.run("PATH=%s:$PATH; cd %s; clear" % (vm_dir, vm_dir), timeout=20)
    t0 = time.monotonic()
    typed = 0
    prompt = re.compile(rb"\$ \Z")
    for keys, look in SCRIPT:
        for ch in keys:
            read_until(c, time.monotonic() + rng.uniform(0.7, 1.3) / keys_per_second)
            c.type(ch)
            typed += 1
        if look is None:
            at = len(c.output)
            c.wait_output(prompt, since=at, timeout=60)
        else:
            read_until(c, time.monotonic() + look)
    return typed, time.monotonic() - t0


def cast_stats(path, seconds):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")[:-1]
    header = json.loads(lines[0])
    events = [json.loads(x) for x in lines[1:]]
    kinds = {}
    payload = 0
    for e in events:
        kinds[e[1]] = kinds.get(e[1], 0) + 1
        payload += len(e[2].encode())
    size = len(data)
    gz = len(gzip.compress(data, 6))
    return {"bytes": size, "gzip_bytes": gz, "events": kinds, "payload_bytes": payload,
            "recorded_seconds": events[-1][0] if events else 0.0,
            "typing_seconds": round(seconds, 1),
            "bytes_per_hour": size / seconds * 3600, "gzip_bytes_per_hour": gz / seconds * 3600,
            "record_input": header["postern"]["record_input"]}


# ---------------------------------------------------------------------------
# the run


def newest_recording(state_dir, after):
    paths = [p for p in glob.glob(os.path.join(state_dir, "recordings", "*", "*", "*", "*.cast"))
             if p not in after]
    return paths[0] if len(paths) == 1 else None


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="postern-recbench-")
        self.vm_dir = None
        self.results = {"bulk": [], "interactive": []}

    def start(self):
        a = self.args
        exe_dir = os.path.join(self.tmp, "bin")
        os.makedirs(exe_dir)
        self.loadgen = sb.build_loadgen(exe_dir)
        os.environ.setdefault("POSTERN", os.path.join(os.path.dirname(a.posternd), "postern"))
        self.sshd = sb.start_vm_sshd(a)
        self.vm_dir = install_programs()
        users = fx.UsersFile(os.path.join(self.tmp, "users.json"))
        self.password = "bench-" + secrets.token_urlsafe(12)
        users.add(BENCH_USER, self.password, roles=("bench",))
        limits = {"max_sessions": 1000, "max_sessions_per_user": 1000,
                  "idle_timeout_seconds": 0, "max_session_seconds": 0,
                  "shutdown_grace_seconds": 0}

        def gateway(name, vms, recording):
            cfg = {"users_file": users.path,
                   "roles": {"bench": {"vms": ["*"], "actions": ["ssh-login"]}},
                   "vms": vms, "limits": limits, "log_level": "info",
                   "recording": recording, "instance": name}
            gw = fx.Gateway(cfg, binary=a.posternd, tmp=os.path.join(self.tmp, name))
            os.makedirs(gw.dir)
            gw.start()
            r = fx.ApiClient(gw).login(BENCH_USER, self.password)
            if r.status != 200:
                raise RuntimeError("login failed: %r" % r)
            return gw, fx.session_cookie(r)

        log("starting %s (twice)" % a.posternd)
        self.gw, self.cookie = gateway(
            "gw-a", [self.sshd.vm_config(VM_OFF, recording="off"),
                     self.sshd.vm_config(VM_ON, recording="on")], {"mode": "off"})
        self.gw_in, self.cookie_in = gateway(
            "gw-input", [self.sshd.vm_config(VM_INPUT)], {"mode": "on", "input": True})

    def stop(self):
        for thing in (getattr(self, "gw", None), getattr(self, "gw_in", None),
                      getattr(self, "sshd", None)):
            if thing is not None:
                try:
                    thing.close()
                except Exception as e:  # noqa: BLE001 - keep cleaning up
                    log("cleanup: %s" % e)
        for d in (self.tmp, self.vm_dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)

    def wait_idle(self):
        fx.wait_until(lambda: fx.gateway_metrics(self.gw).get(
            ("postern_sessions_active", '{protocol="ssh"}')) == 0, 60, interval=0.2,
            message="the gateway to release the session")

    def bulk_once(self, vm, verify):
        a = self.args
        nbytes = a.bulk_mb * 1024 * 1024
        before = set(glob.glob(os.path.join(self.gw.state_dir, "recordings", "*", "*", "*",
                                            "*.cast")))
        argv = ["--mode", "ws", "--host", fx.LOOPBACK, "--login", self.sshd.user,
                "--key", self.sshd.client_key, "--parallel", "1", "--port", str(self.gw.port),
                "--vm", vm, "--origin", self.gw.origin, "--cookie", self.cookie,
                "--sessions", "1", "--bulk", str(nbytes)]
        lg = sb.Loadgen(self.loadgen, argv, os.path.join(self.tmp, "loadgen.stderr"))
        res = {"vm": vm, "recording": vm == VM_ON}
        try:
            ev = lg.event("open", timeout=60)
            if ev["failed"]:
                raise RuntimeError("the session did not open: %s" % ev["errors"])
            meter = sb.Meter(self.gw.pid, self.sshd.proc.pid, lg.pid)
            meter.start()
            lg.send("go")
            ev = lg.event("bulk", timeout=900)
            res["cpu"] = meter.stop()
            res["client"] = ev
            if not ev.get("complete"):
                raise RuntimeError("the bulk transfer did not complete: %s" % ev)
            res["mb_per_s"] = round(ev["received_bytes"] / ev["seconds"] / 1e6, 1)
            res["gw_cpu_s_per_100mb"] = round(
                res["cpu"]["gateway_cpu_seconds"] / (ev["received_bytes"] / 1e8), 3)
        finally:
            t_close = time.monotonic()
            lg.close()
        self.wait_idle()
        if res["recording"]:
            path = fx.wait_until(lambda: newest_recording(self.gw.state_dir, before), 30,
                                 message="the bulk recording")
            fx.wait_until(lambda: os.path.exists(path + ".sig"), 120,
                          message="the bulk recording's manifest")
            res["sign_seconds_after_close"] = round(time.monotonic() - t_close, 2)
            res["cast_bytes"] = os.path.getsize(path)
            if verify:
                t = time.monotonic()
                r = subprocess.run([os.environ["POSTERN"], "recording", "verify", path],
                                   capture_output=True, text=True)
                res["verify_seconds"] = round(time.monotonic() - t, 2)
                res["verify"] = r.stdout.strip().rsplit(": ", 1)[-1]
            os.unlink(path)
            os.unlink(path + ".sig")
        log("bulk %-7s %6.1f MB/s, gateway CPU %5.1f%% of a core (%.2f s per 100 MB)%s"
            % (vm, res["mb_per_s"], res["cpu"]["gateway_cpu_pct_of_one_core"],
               res["gw_cpu_s_per_100mb"],
               ", %.0f MB recorded, signed %.2f s after the close" % (
                   res["cast_bytes"] / 1e6, res["sign_seconds_after_close"])
               if res["recording"] else ""))
        return res

    def bulk_phase(self):
        a = self.args
        log("bulk: head -c %dM /dev/zero | base64, %d rounds of off/on"
            % (a.bulk_mb, a.rounds))
        # Warm-up (first TLS, first libssh session, page cache), not counted.
        self.bulk_once(VM_OFF, False)
        verified = False
        for i in range(a.rounds):
            order = (VM_OFF, VM_ON) if i % 2 == 0 else (VM_ON, VM_OFF)
            for vm in order:
                r = self.bulk_once(vm, verify=(vm == VM_ON and not verified))
                verified = verified or vm == VM_ON
                r["round"] = i
                self.results["bulk"].append(r)

    def interactive_one(self, gw, cookie, vm, seed, out):
        mark = len(fx.read_audit_log(gw.audit_log_path))
        with open(self.sshd.client_key) as f:
            key = f.read()
        c = fx.WsConsole(gw, vm, cookie=cookie, timeout=30).open()
        try:
            c.connect(self.sshd.user, private_key=key)
            typed, seconds = type_script(c, self.args.keys_per_second, random.Random(seed),
                                         self.vm_dir)
            c.type("exit\r")
            c.wait_end(timeout=20)
        finally:
            c.close()
        sid = [e["session"] for e in fx.read_audit_log(gw.audit_log_path)[mark:]
               if e.get("event") == "session.start" and e.get("vm") == vm][0]
        path = fx.wait_until(lambda: glob.glob(os.path.join(
            gw.state_dir, "recordings", "*", "*", "*", sid + ".cast")), 20,
            message="the interactive recording")[0]
        fx.wait_until(lambda: os.path.exists(path + ".sig"), 20, message="its manifest")
        st = cast_stats(path, seconds)
        st.update(vm=vm, keys=typed, keys_per_second=round(typed / seconds, 2),
                  client_output_bytes=len(c.output))
        out.append(st)

    def interactive_phase(self):
        log("interactive: typing the script at ~%.1f keys/s, input off and on at once"
            % self.args.keys_per_second)
        out, errors = [], []

        def run(*a):
            try:
                self.interactive_one(*a)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=run, args=(self.gw, self.cookie, VM_ON, 1, out)),
                   threading.Thread(target=run, args=(self.gw_in, self.cookie_in, VM_INPUT, 1,
                                                      out))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        out.sort(key=lambda s: s["record_input"])
        for s in out:
            log("interactive input=%s: %d bytes in %.1f s (%d keys) -> %.2f MB/hour"
                % (s["record_input"], s["bytes"], s["typing_seconds"], s["keys"],
                   s["bytes_per_hour"] / 1e6))
        self.results["interactive"] = out

    def run(self):
        t0 = time.monotonic()
        self.results["started"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.results["load_at_start"] = sb.loadavg()
        if not self.args.skip_bulk:
            self.bulk_phase()
        if not self.args.skip_interactive:
            self.interactive_phase()
        self.results["load_at_end"] = sb.loadavg()
        self.results["duration_seconds"] = round(time.monotonic() - t0, 1)


# ---------------------------------------------------------------------------
# report


def summary(res):
    """Medians of the bulk rounds, off and on."""
    out = {}
    for on in (False, True):
        rows = [b for b in res["bulk"] if b["recording"] == on]
        if rows:
            out[on] = {
                "mb_per_s": statistics.median(b["mb_per_s"] for b in rows),
                "gw_pct": statistics.median(b["cpu"]["gateway_cpu_pct_of_one_core"]
                                            for b in rows),
                "gw_s_per_100mb": statistics.median(b["gw_cpu_s_per_100mb"] for b in rows),
                "others_pct": statistics.median(b["cpu"]["others_cpu_pct_of_one_core"]
                                                for b in rows),
            }
    return out


def table(res):
    env = res["environment"]
    a = res["args"]
    out = ["Postern session recording benchmark  (%s, %s)" % (res["started"], env["mode"]),
           "posternd: %s (%s)   machine: %d cores, %s; load average at start %s, at end %s"
           % (env["posternd"], env["commit"], env["cores"], env["kernel"],
              " ".join("%.2f" % x for x in res["load_at_start"]),
              " ".join("%.2f" % x for x in res["load_at_end"]))]
    if a.get("vm_cpus") or a.get("vm_nice"):
        out.append("sshd and its sessions (the VMs): CPUs %s, nice %d"
                   % (a.get("vm_cpus") or "shared", a.get("vm_nice") or 0))
    out.append("")
    if res["bulk"]:
        out.append("Bulk, one session: head -c %dM /dev/zero | base64 through the gateway "
                   "(MB = 10^6 bytes at the client)" % a["bulk_mb"])
        out.append("%-10s %6s %8s %8s %11s %13s %9s %10s %9s" % (
            "recording", "round", "MB/s", "seconds", "gateway %", "gw s/100 MB", "others %",
            "cast MB", "signed +s"))
        for b in res["bulk"]:
            c = b["cpu"]
            out.append("%-10s %6d %8.1f %8.2f %11.1f %13.3f %9.0f %10s %9s" % (
                "on" if b["recording"] else "off", b["round"], b["mb_per_s"],
                b["client"]["seconds"], c["gateway_cpu_pct_of_one_core"],
                b["gw_cpu_s_per_100mb"], c["others_cpu_pct_of_one_core"],
                "%.0f" % (b["cast_bytes"] / 1e6) if b["recording"] else "-",
                "%.2f" % b["sign_seconds_after_close"] if b["recording"] else "-"))
        s = summary(res)
        if True in s and False in s:
            off, on = s[False], s[True]
            out.append("%-10s %6s %8.1f %8s %11.1f %13.3f" % ("off med.", "", off["mb_per_s"], "",
                                                           off["gw_pct"], off["gw_s_per_100mb"]))
            out.append("%-10s %6s %8.1f %8s %11.1f %13.3f" % ("on med.", "", on["mb_per_s"], "",
                                                           on["gw_pct"], on["gw_s_per_100mb"]))
            lost = 100.0 * (1 - on["mb_per_s"] / off["mb_per_s"])
            out.append("throughput lost to recording: %.1f %% (target < 10 %%: %s); gateway CPU "
                       "per MB carried: %+.0f %%"
                       % (lost, "ok" if lost < 10 else "OVER",
                          100.0 * (on["gw_s_per_100mb"] / off["gw_s_per_100mb"] - 1)))
        v = [b for b in res["bulk"] if "verify_seconds" in b]
        if v:
            out.append("postern recording verify of one %.0f MB recording: %s in %.2f s"
                       % (v[0]["cast_bytes"] / 1e6, v[0]["verify"], v[0]["verify_seconds"]))
        out.append("")
    if res["interactive"]:
        out.append("Interactive session: ls, cat, a vim-like editor (cursor keys), df, a top-like "
                   "screen (5 refreshes, 3 s apart), ps, uptime;")
        out.append("typed one key at a time at ~%.1f keys/s (+-30 %%) with pauses to read. "
                   "Hour = this activity for 60 minutes without idle time."
                   % a["keys_per_second"])
        out.append("%-7s %6s %8s %7s %9s %9s %8s %12s %12s %12s" % (
            "input", "keys", "seconds", "events", "o / i / r", "payload", ".cast", "gzip",
            "MB/hour", "gzip MB/hour"))
        for s in res["interactive"]:
            ev = s["events"]
            out.append("%-7s %6d %8.1f %7d %9s %9d %8d %12d %12.2f %12.2f" % (
                "on" if s["record_input"] else "off", s["keys"], s["typing_seconds"],
                sum(ev.values()), "%d/%d/%d" % (ev.get("o", 0), ev.get("i", 0), ev.get("r", 0)),
                s["payload_bytes"], s["bytes"], s["gzip_bytes"], s["bytes_per_hour"] / 1e6,
                s["gzip_bytes_per_hour"] / 1e6))
        out.append("")
    out.append("Run took %.0f s. 'others' = CPU used meanwhile by processes that are neither the "
               "gateway, the sshd tree nor the client." % res["duration_seconds"])
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sb.add_common_args(ap)
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: 20 MiB bulk, 1 round (about 1.5 minutes)")
    ap.add_argument("--bulk-mb", type=int, help="MiB of zeros to base64 (default 200)")
    ap.add_argument("--rounds", type=int, help="off/on bulk pairs (default 3)")
    ap.add_argument("--keys-per-second", type=float, default=3.0,
                    help="typing speed of the interactive script (default 3)")
    ap.add_argument("--skip-bulk", action="store_true")
    ap.add_argument("--skip-interactive", action="store_true")
    args = ap.parse_args()
    args.bulk_mb = args.bulk_mb or (20 if args.quick else 200)
    args.rounds = args.rounds or (1 if args.quick else 3)
    sb.check_can_run(args)
    sb.run_and_report(Bench(args), args, "recording_bench", table, {
        "bulk_mb": args.bulk_mb, "rounds": args.rounds,
        "keys_per_second": args.keys_per_second, "vm_cpus": args.vm_cpus,
        "vm_nice": args.vm_nice})


if __name__ == "__main__":
    main()
