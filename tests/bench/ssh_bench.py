#!/usr/bin/python3
"""Benchmark of the browser SSH console (/ws/ssh), on 127.0.0.1 only.

Starts a real sshd (the integration tests' Sshd fixture, with its limits
raised) and a Release posternd, then measures, in one run:

  1. keystroke round trip: N concurrent interactive sessions (N = 1, 100,
     500) each type one byte at a time at --rate keys/s (with jitter) into
     `stty raw -echo; exec cat`; the time from sending a byte to receiving
     its echo, through the gateway and directly to sshd (same client code,
     same sshd, same N), and the difference;
  2. bulk throughput of one session (`head -c SIZE /dev/zero | base64`),
     MB/s at the client, through the gateway and direct;
  3. gateway RSS per idle session (VmRSS with N idle sessions minus VmRSS
     with none, divided by N);
  4. gateway CPU (utime+stime of posternd) during the keystroke and the bulk
     phases, as % of one core.

The sessions are driven by ssh_loadgen (C, built by this script with cc
against libssh and OpenSSL); README.md says why and what each number means.
Prints one table and writes the raw numbers to results/*.json.

For the gateway's latency at N=500 on this two-core machine, the stand-ins
must not be what is measured (README.md, "Placing the stand-ins"):

    /usr/bin/python3 tests/bench/ssh_bench.py --vm echo --vm-cpus 1 \
        --client-cpus 1 --together 100 --relay --sizes 1,100,500

    sudo /usr/bin/python3 tests/bench/ssh_bench.py [--quick] [--posternd PATH]
"""

import argparse
import datetime
import json
import math
import os
import platform
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import postern_fixtures as fx  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
VM = "bench01"
BENCH_USER = "bench"


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# sshd with room for hundreds of concurrent logins


class BenchSshd(fx.Sshd):
    """The fixture's sshd with its limits raised.

    sshd keeps the *first* value it reads for a keyword, so the fixture's
    extra_config (appended at the end) cannot override its own defaults
    (MaxStartups 50:30:100 would win); this replaces those lines instead."""

    OVERRIDES = {
        # Unauthenticated connections at once: the bench opens up to
        # --parallel at a time, but must never be dropped by sshd's
        # random early refusal.
        "MaxStartups": "1000:30:1000",
        # One line per login is enough; VERBOSE logs more per session.
        "LogLevel": "INFO",
    }
    EXTRA = {
        "MaxSessions": "10",           # per connection; the bench uses one
        "ClientAliveInterval": "0",    # no server keepalives in the numbers
        "TCPKeepAlive": "no",
    }

    def _config(self, auth_keys):
        out = []
        for line in super()._config(auth_keys).splitlines():
            key = line.split(" ", 1)[0]
            if key in self.OVERRIDES:
                line = "%s %s" % (key, self.OVERRIDES[key])
            out.append(line)
        out += ["%s %s" % kv for kv in self.EXTRA.items()]
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# /proc readings


def proc_cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def gateway_memory(pid):
    return {"vmrss_kib": proc_status_kib(pid, "VmRSS"),
            "rss_anon_kib": proc_status_kib(pid, "RssAnon")}


def machine_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def descendants_cpu(root_pid):
    """{pid: CPU seconds} of root_pid and its live descendants (sshd, its
    per-connection processes, the shells and `cat`s)."""
    children = {}
    cpu = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                tail = f.read().rsplit(")", 1)[1]
        except OSError:
            continue
        fields = tail.split()
        pid, ppid = int(d), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    out, stack = {}, [root_pid]
    while stack:
        p = stack.pop()
        if p in cpu:
            out[p] = cpu[p]
        stack.extend(children.get(p, ()))
    return out


def schedstat_seconds(pid):
    """(CPU time, run-queue wait) of a process's live threads, in seconds,
    from /proc/PID/task/*/schedstat (nanoseconds, unlike the 10 ms ticks of
    /proc/PID/stat); None where the kernel has no schedstats."""
    run = wait = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                v = f.read().split()
            run += int(v[0])
            wait += int(v[1])
    except (OSError, IndexError, ValueError):
        return None
    return run / 1e9, wait / 1e9


class Meter:
    """CPU of the gateway, the sshd tree, the load generator and the whole
    machine between start() and stop(); and how long the gateway and the
    client waited for a CPU while runnable (a busy machine shows here)."""

    def __init__(self, gw_pid, sshd_pid, client_pid):
        self.pids = {"gateway": gw_pid, "client": client_pid}
        self.sshd_pid = sshd_pid

    def _read(self):
        r = {"t": time.monotonic(), "machine": machine_cpu(),
             "sshd": descendants_cpu(self.sshd_pid)}
        for k, pid in self.pids.items():
            ss = schedstat_seconds(pid)
            r[k] = ss[0] if ss else proc_cpu_seconds(pid)
            r[k + "_wait"] = ss[1] if ss else None
        return r

    def start(self):
        self.a = self._read()
        self.load_before = loadavg()

    def stop(self):
        b = self._read()
        a = self.a
        wall = b["t"] - a["t"]
        busy = b["machine"][0] - a["machine"][0]
        total = b["machine"][1] - a["machine"][1]
        out = {"wall_seconds": round(wall, 3),
               "load_before": self.load_before, "load_after": loadavg(),
               "machine_busy_pct_of_all_cores": round(100.0 * busy / total, 1)
               if total else None, "cores": os.cpu_count()}
        # Processes of the sshd tree that ended in between are not counted
        # (their CPU left with them); new ones count from zero.
        secs = {"gateway": b["gateway"] - a["gateway"], "client": b["client"] - a["client"],
                "sshd": sum(v - a["sshd"].get(pid, 0.0) for pid, v in b["sshd"].items())}
        for k, v in secs.items():
            out[k + "_cpu_seconds"] = round(v, 3)
            out[k + "_cpu_pct_of_one_core"] = round(100.0 * v / wall, 1)
        for k in ("gateway", "client"):
            if a[k + "_wait"] is not None and b[k + "_wait"] is not None:
                out[k + "_runqueue_wait_pct_of_wall"] = round(
                    100.0 * (b[k + "_wait"] - a[k + "_wait"]) / wall, 1)
        # What the rest of the machine (other people's jobs) used meanwhile.
        out["others_cpu_pct_of_one_core"] = round(
            max(0.0, 100.0 * (busy / CLK_TCK - sum(secs.values())) / wall), 1)
        return out


# ---------------------------------------------------------------------------
# the load generator


def build_c(outdir, name):
    """Builds tests/bench/NAME.c (ssh_loadgen, ssh_echo_vm) into outdir."""
    src = os.path.join(HERE, name + ".c")
    exe = os.path.join(outdir, name)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libssh", "openssl"],
                           check=True, capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-o", exe, src,
                    *flags, "-lpthread", "-lm"], check=True)
    return exe


def build_loadgen(outdir):
    return build_c(outdir, "ssh_loadgen")


class EchoVm:
    """ssh_echo_vm (see its header) standing for the VMs: the attributes
    the bench uses of the sshd fixture (host, port, user, client_key,
    proc, vm_config, close), and no root needed."""

    def __init__(self, exe):
        self.exe = exe
        self.host = fx.LOOPBACK
        self.user = "bench"
        self.proc = None

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="postern-echo-vm-")
        host_key = os.path.join(self.dir, "host_ed25519")
        self.client_key = os.path.join(self.dir, "client_ed25519")
        for path in (host_key, self.client_key):
            fx.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path])
        self.host_key = fx.HostKey("ed25519", host_key)
        self.port = fx.free_port(self.host)
        self.log_path = os.path.join(self.dir, "echo_vm.log")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(self.port), "--host-key", host_key,
                 "--authorized-key", self.client_key + ".pub"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        if not r or self.proc.stdout.readline().strip() != "listening":
            with open(self.log_path, errors="replace") as f:
                said = f.read()[-2000:]
            self.close()
            raise RuntimeError("ssh_echo_vm did not start: %s" % said)
        return self

    def vm_config(self, name):
        return {"name": name, "address": self.host,
                "ssh": {"port": self.port, "host_key_sha256": self.host_key.fingerprint}}

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()       # our own child, by its pid
            self.proc.wait(timeout=30)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Loadgen:
    """One ssh_loadgen process: open sessions, measure once, close."""

    def __init__(self, exe, argv, errlog, cpus=None, batch=False):
        self.argv = [exe, *argv]
        self.errf = open(errlog, "ab")

        def place():
            # Before it starts, so that its opener threads inherit it.
            if cpus:
                os.sched_setaffinity(0, cpus)
            if batch:
                os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.errf,
                                  text=True, bufsize=1,
                                  preexec_fn=place if cpus or batch else None)

    @property
    def pid(self):
        return self.p.pid

    def event(self, name, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("ssh_loadgen: no %r event within %.0fs" % (name, timeout))
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if not r:
                continue
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("ssh_loadgen exited (%s) before %r"
                                   % (self.p.poll(), name))
            ev = json.loads(line)
            if ev.get("event") == name:
                return ev

    def send(self, word):
        self.p.stdin.write(word + "\n")
        self.p.stdin.flush()

    def close(self, timeout=60):
        try:
            if self.p.poll() is None:
                self.send("quit")
                self.event("closed", timeout)
                self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()       # our own child, by its pid
                self.p.wait()
            self.errf.close()


# ---------------------------------------------------------------------------
# statistics


def pct(sorted_vals, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return None
    k = max(1, math.ceil(q * len(sorted_vals)))
    return sorted_vals[k - 1]


def summarize_us(samples):
    s = sorted(samples)
    if not s:
        return {"count": 0}
    return {"count": len(s), "p50_ms": pct(s, 0.50) / 1000, "p90_ms": pct(s, 0.90) / 1000,
            "p99_ms": pct(s, 0.99) / 1000, "max_ms": s[-1] / 1000,
            "mean_ms": round(sum(s) / len(s) / 1000, 3), "min_ms": s[0] / 1000}


# ---------------------------------------------------------------------------
# the run


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="postern-bench-")
        self.results = {"phases": [], "bulk": [], "rss": {}}

    def gw_sessions_active(self):
        m = fx.gateway_metrics(self.gw)
        return int(m.get(("postern_sessions_active", '{protocol="ssh"}'), -1))

    def wait_gateway_idle(self, timeout=60):
        fx.wait_until(lambda: self.gw_sessions_active() == 0, timeout,
                      interval=0.2, message="the gateway to release every session")

    def common_argv(self, mode):
        a = self.args
        argv = ["--mode", "ssh" if mode == "relay" else mode, "--host", fx.LOOPBACK,
                "--login", self.sshd.user, "--key", self.sshd.client_key,
                "--parallel", str(a.parallel)]
        if mode == "ws":
            argv += ["--port", str(self.gw.port), "--vm", VM, "--origin", self.gw.origin,
                     "--cookie", self.cookie]
        elif mode == "relay":
            argv += ["--port", str(self.relay_port)]
        else:
            argv += ["--port", str(self.sshd.port)]
        return argv

    def start_relay(self, exe_dir):
        """tcp_relay (the control: see its header) in front of the VMs, on
        the gateway's CPUs."""
        exe = build_c(exe_dir, "tcp_relay")
        self.relay_port = fx.free_port(fx.LOOPBACK)
        self.relay = subprocess.Popen(
            [exe, "--listen-port", str(self.relay_port), "--to-port", str(self.sshd.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        r, _, _ = select.select([self.relay.stdout], [], [], 10)
        if not r or self.relay.stdout.readline().strip() != "listening":
            raise RuntimeError("tcp_relay did not start")

    def start(self):
        a = self.args
        exe_dir = os.path.join(self.tmp, "bin")
        os.makedirs(exe_dir)
        self.loadgen = build_loadgen(exe_dir)
        echo_exe = build_c(exe_dir, "ssh_echo_vm") if a.vm == "echo" else None
        self.relay = None
        os.environ.setdefault("POSTERN", os.path.join(os.path.dirname(a.posternd), "postern"))

        self.sshd = start_vm_sshd(a, echo_exe)
        if a.relay:
            self.start_relay(exe_dir)
        # The shared test account's key is authorised; the bench reads it.
        users = fx.UsersFile(os.path.join(self.tmp, "users.json"))
        self.password = "bench-" + secrets.token_urlsafe(12)
        users.add(BENCH_USER, self.password, roles=("bench",))
        cfg = {
            "users_file": users.path,
            "roles": {"bench": {"vms": [VM], "actions": ["ssh-login"]}},
            "vms": [self.sshd.vm_config(VM)],
            "limits": {"max_sessions": 100000, "max_sessions_per_user": 100000,
                       "idle_timeout_seconds": 0, "max_session_seconds": 0},
            "log_level": "info",
        }
        log("starting %s" % a.posternd)
        self.gw = fx.Gateway(cfg, binary=a.posternd, tmp=os.path.join(self.tmp, "gw"))
        os.makedirs(self.gw.dir)
        self.gw.start()
        r = fx.ApiClient(self.gw).login(BENCH_USER, self.password)
        if r.status != 200:
            raise RuntimeError("login failed: %r" % r)
        self.cookie = fx.session_cookie(r)
        self.results["rss"]["cold_kib"] = gateway_memory(self.gw.pid)

    def stop(self):
        relay = getattr(self, "relay", None)
        if relay and relay.poll() is None:
            relay.kill()        # our own child, by its pid
            relay.wait()
            relay.stdout.close()
        for thing in (getattr(self, "gw", None), getattr(self, "sshd", None)):
            if thing is not None:
                try:
                    thing.close()
                except Exception as e:  # noqa: BLE001 - keep cleaning up
                    log("cleanup: %s" % e)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def open_sessions(self, mode, n, extra=()):
        lg = Loadgen(self.loadgen, self.common_argv(mode) + ["--sessions", str(n), *extra],
                     os.path.join(self.tmp, "loadgen.stderr"),
                     # recording_bench.py shares this and has no such options.
                     cpus=getattr(self.args, "client_cpu_set", None),
                     batch=getattr(self.args, "client_batch", False))
        ev = lg.event("open", timeout=60 + 2.0 * n)
        if ev["failed"]:
            lg.close()
            raise RuntimeError("%s: %d of %d sessions failed to open: %s"
                               % (mode, ev["failed"], n, ev["errors"]))
        return lg, ev

    def latency_argv(self, label, n):
        a = self.args
        return ["--keys", str(a.keys), "--rate", str(a.rate), "--warmup", str(a.warmup),
                "--echo-timeout", str(a.echo_timeout),
                *(["--trace", os.path.join(a.trace, "%s-%d.csv" % (label, n))]
                  if a.trace else [])]

    def latency_phase(self, mode, n, together=0):
        """Opens n sessions (mode "ws": through the gateway; "ssh": direct),
        types, records one phase. With together=D (mode "ws" only), D
        direct sessions type at the same time, in a second load generator,
        and are recorded as the direct phase of this N: both then see the
        same moments of the machine."""
        a = self.args
        label = {"ws": "gateway", "ssh": "direct", "relay": "relay"}[mode]
        log("%s: opening %d sessions" % (label, n))
        lg, opened = self.open_sessions(mode, n, self.latency_argv(label, n))
        phase = {"mode": label, "sessions": n, "open": opened}
        side = None
        try:
            log("%s: %d sessions open in %.1fs (%s)" % (label, n, opened["seconds"],
                                                       opened["cipher"]))
            if together:
                log("direct: opening %d sessions to type at the same time" % together)
                side, side_opened = self.open_sessions("ssh", together,
                                                       self.latency_argv("direct-with-" + label, n))
            if mode == "ws":
                active = self.gw_sessions_active()
                if active != n:
                    raise RuntimeError("the gateway counts %d live sessions, expected %d"
                                       % (active, n))
                time.sleep(a.settle)
                phase["gateway_memory_idle"] = gateway_memory(self.gw.pid)
            # For the control, the "gateway" columns are the relay's.
            meter = Meter(self.relay.pid if mode == "relay" else self.gw.pid,
                          self.sshd.proc.pid, lg.pid)
            meter.start()
            if side:
                side.send("go")
            lg.send("go")
            timeout = (a.warmup + a.keys) / a.rate * 3 + a.echo_timeout + 120
            ev = lg.event("latency", timeout=timeout)
            side_ev = side.event("latency", timeout=timeout) if side else None
            phase["cpu"] = meter.stop()
            if mode == "ws":
                phase["gateway_memory_after_typing"] = gateway_memory(self.gw.pid)
            self.record_latency(phase, ev, label, n)
            if side:
                direct = {"mode": "direct", "sessions": n, "together": together,
                          "with": label, "open": side_opened, "cpu": None}
                self.record_latency(direct, side_ev, "direct (together)", together)
        finally:
            lg.close(timeout=60 + 0.2 * n)
            if side:
                side.close(timeout=60 + 0.2 * together)
        if mode == "ws":
            self.wait_gateway_idle()
            time.sleep(1.0)
            phase["gateway_memory_after_close"] = gateway_memory(self.gw.pid)
        self.results["phases"].append(phase)
        if side:
            self.results["phases"].append(direct)
        return phase

    def record_latency(self, phase, ev, label, n):
        samples = ev.pop("samples_us")
        warm = ev.pop("warmup_samples_us", [])
        ev["warmup_echoed"] = len(warm)
        phase["client"] = ev
        phase["warmup_latency"] = summarize_us(warm)
        phase["warmup_samples_us"] = warm
        phase["latency"] = summarize_us(samples)
        phase["samples_us"] = samples
        if ev["lost"] or ev["dead_sessions"]:
            log("%s N=%d: %d echoes lost, %d sessions died: %s"
                % (label, n, ev["lost"], ev["dead_sessions"], ev["errors"]))
        lat = phase["latency"]
        log("%s N=%d: p50 %.3f ms, p99 %.3f ms, max %.3f ms (%d samples)"
            % (label, n, lat.get("p50_ms", -1), lat.get("p99_ms", -1), lat.get("max_ms", -1),
               lat["count"]))

    def bulk_phase(self, mode):
        a = self.args
        label = "gateway" if mode == "ws" else "direct"
        nbytes = a.bulk_mb * 1024 * 1024
        log("%s: bulk, head -c %dM /dev/zero | base64" % (label, a.bulk_mb))
        lg, opened = self.open_sessions(mode, 1, ["--bulk", str(nbytes)])
        res = {"mode": label, "open": opened}
        try:
            meter = Meter(self.gw.pid, self.sshd.proc.pid, lg.pid)
            meter.start()
            lg.send("go")
            ev = lg.event("bulk", timeout=900)
            res["cpu"] = meter.stop()
            res["client"] = ev
            if ev.get("complete"):
                res["mb_per_s"] = round(ev["received_bytes"] / ev["seconds"] / 1e6, 1)
                log("%s bulk: %.1f MB/s (%d bytes in %.2fs), gateway CPU %.1f%% of a core"
                    % (label, res["mb_per_s"], ev["received_bytes"], ev["seconds"],
                       res["cpu"]["gateway_cpu_pct_of_one_core"]))
            else:
                log("%s bulk did not complete: %s" % (label, ev))
        finally:
            lg.close()
        if mode == "ws":
            self.wait_gateway_idle()
        self.results["bulk"].append(res)

    def run(self):
        a = self.args
        sizes = a.sizes
        self.results["started"] = datetime.datetime.now().isoformat(timespec="seconds")
        t0 = time.monotonic()
        self.results["load_at_start"] = loadavg()
        if sizes[0] != 1:
            # Warm the gateway (first TLS, first libssh session, audit file)
            # before the baseline, as the N=1 phase otherwise does.
            lg, _ = self.open_sessions("ws", 1, ["--keys", "5"])
            lg.close()
            self.wait_gateway_idle()
        for n in sizes:
            self.latency_phase("ws", n, together=min(n, a.together) if a.together else 0)
            if "baseline_kib" not in self.results["rss"]:
                # Zero sessions, after one has come and gone: what the
                # per-session figures are measured against.
                self.results["rss"]["baseline_kib"] = gateway_memory(self.gw.pid)
            if not a.skip_direct and not a.together:
                self.latency_phase("ssh", n)
            if a.relay:
                self.latency_phase("relay", n, together=min(n, a.together) if a.together else 0)
        if not a.skip_bulk:
            self.bulk_phase("ws")
            if not a.skip_direct:
                self.bulk_phase("ssh")
        self.results["load_at_end"] = loadavg()
        self.results["duration_seconds"] = round(time.monotonic() - t0, 1)
        base = self.results["rss"]["baseline_kib"]["vmrss_kib"]
        per = {}
        for ph in self.results["phases"]:
            n = ph["sessions"]
            if ph["mode"] == "gateway" and n >= 10:
                idle = ph["gateway_memory_idle"]["vmrss_kib"]
                per[str(n)] = {"idle_vmrss_kib": idle,
                               "per_session_kib": round((idle - base) / n, 1),
                               "after_typing_vmrss_kib":
                                   ph["gateway_memory_after_typing"]["vmrss_kib"],
                               "after_close_vmrss_kib":
                                   ph["gateway_memory_after_close"]["vmrss_kib"]}
        self.results["rss"]["per_session"] = per


# ---------------------------------------------------------------------------
# report


def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def table(res):
    out = []
    env = res["environment"]
    out.append("Postern browser SSH console benchmark  (%s, %s)" % (res["started"], env["mode"]))
    out.append("posternd: %s   client: ssh_loadgen (C; libssh %s, %s)"
               % (env["posternd"], env["libssh"], env["openssl"]))
    out.append("machine: %d cores, %s; load average at start %s, at end %s"
               % (env["cores"], env["kernel"], " ".join("%.2f" % x for x in res["load_at_start"]),
                  " ".join("%.2f" % x for x in res["load_at_end"])))
    echo_vm = res["args"].get("vm") == "echo"
    out.append("VMs: %s" % ("ssh_echo_vm (a process per connection; each byte typed is sent "
                            "back from the channel read)" if echo_vm else
                            "OpenSSH sshd; shell: stty raw -echo; exec cat"))
    out.append("direct = the same C client speaking SSH (libssh, the gateway's library and "
               "key login) straight to the same VMs;")
    out.append("gateway = TLS + WebSocket to posternd /ws/ssh, which speaks SSH to them.")
    out.append("")
    out.append("Keystroke round trip (send 1 byte -> its echo), ms; %d keys/session at %g keys/s"
               % (res["args"]["keys"], res["args"]["rate"]))
    if res["args"].get("vm_cpus"):
        out.append("(the VMs pinned to CPU %s, the gateway to the others, the client to %s: "
                   "the VMs stand in for other machines)"
                   % (res["args"]["vm_cpus"], res["args"].get("client_cpus") or
                      "the gateway's"))
    if res["args"].get("client_batch"):
        out.append("(the load generator SCHED_BATCH: its wake-ups do not preempt the gateway)")
    if res["args"].get("warmup"):
        out.append("(each session first types %d keys, not counted here: see 'first keys')"
                   % res["args"]["warmup"])
    if res["args"].get("vm_nice"):
        out.append("(sshd and its sessions at nice %d: the VMs stand in for other machines)"
                   % res["args"]["vm_nice"])
    out.append("%-22s %5s %8s %8s %8s %8s %6s %9s" % ("", "N", "samples", "p50", "p99", "max",
                                                   "lost", "deferred"))
    by = {}
    for ph in res["phases"]:
        by[(ph["mode"], ph.get("with"), ph["sessions"])] = ph
    pairs = []
    for n in res["args"]["sizes"]:
        if res["args"].get("together"):
            pairs.append((n, by.get(("gateway", None, n)), by.get(("direct", "gateway", n))))
            if res["args"].get("relay"):
                pairs.append((n, by.get(("relay", None, n)), by.get(("direct", "relay", n))))
        else:
            pairs.append((n, by.get(("gateway", None, n)), by.get(("direct", None, n))))
            if res["args"].get("relay"):
                pairs.append((n, by.get(("relay", None, n)), by.get(("direct", None, n))))
    for n, g, d in pairs:
        for name, ph in ((g["mode"] if g else "gateway", g), ("direct", d)):
            if not ph:
                continue
            if ph.get("together"):
                name = "direct, %d together" % ph["together"]
            lat = ph["latency"]
            out.append("%-22s %5d %8d %8s %8s %8s %6d %9d" % (
                name, n, lat["count"], fmt(lat.get("p50_ms"), "%.3f"),
                fmt(lat.get("p99_ms"), "%.3f"), fmt(lat.get("max_ms"), "%.3f"),
                ph["client"]["lost"], ph["client"]["deferred"]))
        if g and d and g["latency"]["count"] and d["latency"]["count"]:
            out.append("%-22s %5d %8s %8s %8s" % (
                "added (%s - direct)" % ("relay" if g["mode"] == "relay" else "gw"), n, "",
                "%.3f" % (g["latency"]["p50_ms"] - d["latency"]["p50_ms"]),
                "%.3f" % (g["latency"]["p99_ms"] - d["latency"]["p99_ms"])))
        for name, ph in ((g["mode"] if g else "gateway", g), ("direct", d)):
            w = ph and ph.get("warmup_latency")
            if w and w["count"]:
                out.append("%-22s %5d %8d %8s %8s %8s" % (
                    "  first keys, " + name, n, w["count"], fmt(w.get("p50_ms"), "%.3f"),
                    fmt(w.get("p99_ms"), "%.3f"), fmt(w.get("max_ms"), "%.3f")))
    out.append("")
    out.append("CPU while typing (CPU seconds / wall), % of one core; 'gw us/key' = posternd "
               "CPU per echoed key;")
    out.append("'gw waited' = % of the time posternd was runnable but had no CPU")
    out.append("%-22s %5s %9s %12s %10s %10s %12s %9s %9s" % (
        "", "N", "gateway", "per session", "gw us/key", "gw waited", "VMs", "client",
        "others"))
    for ph in res["phases"]:
        c = ph["cpu"]
        if c is None:
            continue    # typed together with the gateway phase: its CPU is in that row
        n = ph["sessions"]
        gw = ph["mode"] == "gateway"
        # The meter ran over the warm-up keys too.
        keys = ph["client"]["echoed"] + ph["client"].get("warmup_echoed", 0)
        out.append("%-22s %5d %9.1f %12s %10s %10s %12.1f %9.1f %9.0f" % (
            ph["mode"], n, c["gateway_cpu_pct_of_one_core"],
            "%.3f" % (c["gateway_cpu_pct_of_one_core"] / n) if gw else "-",
            "%.0f" % (1e6 * c["gateway_cpu_seconds"] / keys) if gw and keys else "-",
            fmt(c.get("gateway_runqueue_wait_pct_of_wall"), "%.1f") if gw else "-",
            c["sshd_cpu_pct_of_one_core"], c["client_cpu_pct_of_one_core"],
            c["others_cpu_pct_of_one_core"]))
    out.append("")
    out.append("Bulk, one session: head -c %dM /dev/zero | base64 (MB = 10^6 bytes at the client)"
               % res["args"]["bulk_mb"])
    out.append("%-22s %10s %8s %10s %10s %12s %12s %8s" % (
        "", "MB/s", "seconds", "gateway %", "gw waited", "sshd+shell %", "client %", "others %"))
    for b in res["bulk"]:
        c = b.get("cpu", {})
        gw = b["mode"] == "gateway"
        out.append("%-22s %10s %8s %10s %10s %12s %12s %8s" % (
            b["mode"], fmt(b.get("mb_per_s"), "%.1f"), fmt(b["client"].get("seconds"), "%.2f"),
            fmt(c.get("gateway_cpu_pct_of_one_core"), "%.1f") if gw else "-",
            fmt(c.get("gateway_runqueue_wait_pct_of_wall"), "%.1f") if gw else "-",
            fmt(c.get("sshd_cpu_pct_of_one_core"), "%.1f"),
            fmt(c.get("client_cpu_pct_of_one_core"), "%.1f"),
            fmt(c.get("others_cpu_pct_of_one_core"), "%.0f")))
    if len(res["bulk"]) == 2 and all(b.get("mb_per_s") for b in res["bulk"]):
        out.append("%-22s %10.0f%%" % ("gateway / direct",
                                      100.0 * res["bulk"][0]["mb_per_s"] / res["bulk"][1]["mb_per_s"]))
    out.append("")
    rss = res["rss"]
    out.append("Gateway memory (VmRSS): cold %d KiB, baseline with 0 sessions (warm) %d KiB"
               % (rss["cold_kib"]["vmrss_kib"], rss["baseline_kib"]["vmrss_kib"]))
    out.append("%-22s %5s %12s %14s %16s %16s" % ("", "N", "idle KiB", "per session",
                                                 "after typing", "after close"))
    for n, v in rss.get("per_session", {}).items():
        ok = "ok" if v["per_session_kib"] < 256 else "OVER 256 KiB"
        out.append("%-22s %5s %12d %10.1f KiB %16d %16d   %s" % (
            "idle sessions", n, v["idle_vmrss_kib"], v["per_session_kib"],
            v["after_typing_vmrss_kib"], v["after_close_vmrss_kib"], ok))
    out.append("")
    out.append("Run took %.0f s. 'others' = CPU used meanwhile by processes that are neither the "
               "gateway, the VMs nor the client." % res["duration_seconds"])
    return "\n".join(out)


def environment(args):
    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    commit = ver(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = ver(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {"posternd": args.posternd, "commit": commit + ("+dirty" if dirty else ""),
            "libssh": ver(["pkg-config", "--modversion", "libssh"]),
            "openssl": ver(["openssl", "version"]),
            "sshd": subprocess.run(["/usr/sbin/sshd", "-V"], capture_output=True,
                                   text=True).stderr.strip(),
            "kernel": platform.release(), "cores": os.cpu_count(),
            "mode": "quick" if args.quick else "full"}


def start_vm_sshd(args, echo_exe=None):
    """Starts the sshd that stands for the VMs (or, given echo_exe, the
    lighter ssh_echo_vm), placed as --vm-cpus and --vm-nice say; returns it.

    The VMs are other machines in production; here their sshd, shells and
    cats share the gateway's two cores. --vm-cpus gives them CPUs of their
    own and the gateway and the client the rest (children inherit affinity
    at fork: the bench takes the gateway's CPUs first, then sshd, and so
    every session, is moved). --vm-nice lowers their priority instead. Either
    keeps the machine's own overload out of the "added" figures; neither
    measures the crowded box."""
    vm_cpus = cpu_set(args.vm_cpus)
    if vm_cpus:
        mine = os.sched_getaffinity(0) - vm_cpus
        if not mine:
            raise SystemExit("--vm-cpus leaves no CPU for the gateway")
        os.sched_setaffinity(0, mine)
        log("gateway and client on CPUs %s, sshd on %s" % (sorted(mine), sorted(vm_cpus)))
    log("starting %s" % ("ssh_echo_vm" if echo_exe else "sshd"))
    sshd = EchoVm(echo_exe) if echo_exe else BenchSshd()
    sshd.start()
    if vm_cpus:
        os.sched_setaffinity(sshd.proc.pid, vm_cpus)
    if args.vm_nice:
        os.setpriority(os.PRIO_PROCESS, sshd.proc.pid, args.vm_nice)
        log("sshd and its sessions run at nice %d" % args.vm_nice)
    return sshd


def cpu_set(text):
    """"0,1" -> {0, 1}; "" -> no CPUs named."""
    return {int(c) for c in text.split(",")} if text else set()


def add_common_args(ap):
    """The options both benches take: the gateway to measure, where the
    stand-in VMs run, and where the results go."""
    ap.add_argument("--posternd", default=os.path.join(ROOT, "build", "release", "posternd"),
                    help="the gateway to measure (default: build/release/posternd)")
    ap.add_argument("--vm-cpus", default="",
                    help="comma-separated CPUs for the VMs (sshd and its sessions); the "
                         "gateway side gets the others (default: all share)")
    ap.add_argument("--vm-nice", type=int, default=0,
                    help="nice value for sshd and its sessions, standing for VMs on "
                         "other machines (default 0: they compete with the gateway)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="directory for the JSON file (default tests/bench/results)")


def check_can_run(args):
    """Exits with a message unless the gateway is built and we are root."""
    args.posternd = os.path.abspath(args.posternd)
    if not os.access(args.posternd, os.X_OK):
        sys.exit("no gateway at %s: build it first (cmake -S . -B build/release -G Ninja "
                 "-DCMAKE_BUILD_TYPE=Release && cmake --build build/release)" % args.posternd)
    if os.geteuid() != 0 and getattr(args, "vm", "sshd") == "sshd":
        sys.exit("run as root: the sshd fixture creates the postern-test account")


def run_and_report(bench, args, name, table_fn, recorded_args):
    """Runs a bench (start, run, stop), saves its results with the
    arguments and the environment as tests/bench/results/NAME-TIME.json,
    and prints table_fn(results)."""
    try:
        bench.start()
        bench.run()
    finally:
        bench.stop()
    res = bench.results
    res["args"] = recorded_args
    res["environment"] = environment(args)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "%s-%s%s.json" % (
        name, time.strftime("%Y%m%d-%H%M%S"), "-quick" if args.quick else ""))
    with open(path, "w") as f:
        json.dump(res, f)
        f.write("\n")
    print(table_fn(res))
    print("\nraw numbers: %s" % os.path.relpath(path, os.getcwd()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: N = 1, 20; fewer keys; 20 MiB bulk (under a minute)")
    ap.add_argument("--sizes", help="comma-separated session counts (default 1,100,500)")
    ap.add_argument("--keys", type=int, help="keystrokes per session (default 200)")
    ap.add_argument("--rate", type=float, default=10.0, help="keys/s per session (default 10)")
    ap.add_argument("--bulk-mb", type=int, help="MiB of zeros to base64 (default 200)")
    ap.add_argument("--echo-timeout", type=float,
                    help="seconds after which a missing echo counts as lost (default 10)")
    ap.add_argument("--parallel", type=int, default=8,
                    help="logins in flight while opening sessions (default 8)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between opening and reading idle RSS (default 2)")
    ap.add_argument("--skip-direct", action="store_true",
                    help="measure through the gateway only (no direct baseline)")
    ap.add_argument("--skip-bulk", action="store_true", help="no bulk transfer")
    ap.add_argument("--vm", choices=("sshd", "echo"), default="sshd",
                    help="what stands for the VMs: OpenSSH's sshd with `cat` (default), or "
                         "ssh_echo_vm, which does only the SSH part of the work (no bulk)")
    ap.add_argument("--client-cpus", default="",
                    help="comma-separated CPUs for the load generator (default: the "
                         "gateway's)")
    ap.add_argument("--together", type=int, default=0,
                    help="measure direct with up to this many sessions typing at the same "
                         "time as the gateway's, instead of after them (default: after)")
    ap.add_argument("--relay", action="store_true",
                    help="also measure tcp_relay, a bare one-loop TCP relay, in the gateway's "
                         "place: the floor any one-loop gateway pays on this machine")
    ap.add_argument("--trace", default="",
                    help="directory for one CSV per phase: session, send time, latency of "
                         "every key (to see when slow keys happen)")
    ap.add_argument("--client-batch", action="store_true",
                    help="run the load generator SCHED_BATCH: sharing the gateway's CPU, its "
                         "wake-ups then do not preempt the gateway, as browsers on other "
                         "machines would not")
    ap.add_argument("--warmup", type=int, default=5,
                    help="keys each session types before the measured ones, reported "
                         "apart (default 5)")
    args = ap.parse_args()
    if args.quick:
        args.sizes = args.sizes or "1,20"
        args.keys = args.keys or 50
        args.bulk_mb = args.bulk_mb or 20
        args.echo_timeout = args.echo_timeout or 3.0
    args.sizes = [int(x) for x in (args.sizes or "1,100,500").split(",")]
    args.keys = args.keys or 200
    args.bulk_mb = args.bulk_mb or 200
    args.echo_timeout = args.echo_timeout or 10.0
    args.client_cpu_set = cpu_set(args.client_cpus)
    if args.vm == "echo" and not args.skip_bulk:
        log("--vm echo: no bulk phase (the echo VM runs no commands)")
        args.skip_bulk = True
    check_can_run(args)
    run_and_report(Bench(args), args, "ssh_bench", table, {
        "sizes": args.sizes, "keys": args.keys, "rate": args.rate,
        "echo_timeout": args.echo_timeout, "bulk_mb": args.bulk_mb,
        "parallel": args.parallel, "settle": args.settle, "vm_nice": args.vm_nice,
        "vm_cpus": args.vm_cpus, "vm": args.vm, "client_cpus": args.client_cpus,
        "client_batch": args.client_batch,

        "warmup": args.warmup, "together": args.together,
        "relay": args.relay})


if __name__ == "__main__":
    main()
