#!/usr/bin/python3
"""Benchmark of the native tunnel (`postern tunnel`), on 127.0.0.1 only,
against what a user would pick instead: OpenSSH's ProxyJump through a plain
jump-host sshd.

Starts two sshd (the integration tests' Sshd fixture: the target VM and the
jump host), a TCP sink server, and a Release posternd with one VM (the
target's ssh port, the sink's port in tunnel_ports); logs in with
`postern login`; then measures, in one run:

  1. scp throughput (--size-mb MB of random bytes to the target's
     /dev/null): ssh with `postern tunnel --stdio` as ProxyCommand, against
     `scp -J jump`, and straight to the target (reference); best of
     --repeat; the CPU the hop (posternd, or the jump sshd) spent per GB;
  2. raw TCP throughput to the sink: through `postern tunnel --listen`,
     through `ssh -N -L` via the jump host, and direct; best of --repeat;
  3. connection set-up: `ssh HOST true` through each, median of
     --setup-runs (one warm-up run each first, not counted);
  4. CPU per GB of the raw transfers: posternd and the CLI (utime+stime from
     /proc/PID/stat), against the jump sshd and the ssh client;
  5. posternd's VmRSS per idle tunnel: K (--idle-tunnels) local
     connections to the listener, each an idle tunnel (counted on /metrics),
     (VmRSS with K - VmRSS with none) / K.

Prints one table with the targets next to the figures (throughput >=
ProxyJump, set-up <= ProxyJump, < 64 KiB per idle tunnel). MB = 10^6 bytes,
GB = 10^9 bytes. Needs root (the sshd fixture's account), ssh and scp.

    sudo /usr/bin/python3 tests/bench/tunnel_bench.py [--quick] [--posternd PATH]
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import postern_fixtures as fx  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
VM = "bench01"
USER = "alice"
TUNNEL_ACTIVE = ("postern_sessions_active", '{protocol="tunnel"}')
IDLE_TARGET_KIB = 64
MB = 1000 * 1000
GB = 1000 * MB


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# /proc readings


def _stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()


def proc_cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    v = _stat_fields(pid)
    return (int(v[11]) + int(v[12])) / CLK_TCK


def tree_pids(root_pid):
    """root_pid and its live descendants (from /proc/PID/task/TID/children)."""
    out, stack = [], [root_pid]
    while stack:
        p = stack.pop()
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        out.append(p)
        for t in tids:
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    stack.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    return out


class TreeCpu:
    """CPU seconds (utime + stime) a process tree spends between start()
    and stop(), processes that come and go in between included.

    A process that exits takes its times with it, and sshd's per-connection
    processes are not added to the listener's cutime/cstime (measured: a
    200 MB scp -J showed 0.40 s in the live tree, 0.06 s in the listener's
    cumulative times after), so a thread samples every live member every
    `interval` s and keeps each one's last reading: a process that exits
    loses at most its last interval."""

    def __init__(self, root_pid, interval=0.05):
        self.root = root_pid
        self.interval = interval

    def _read(self):
        out = {}
        for p in tree_pids(self.root):
            try:
                out[p] = proc_cpu_seconds(p)
            except (OSError, IndexError, ValueError):
                pass
        return out

    def _run(self):
        while not self.done.wait(self.interval):
            self.last.update(self._read())

    def start(self):
        self.base = self._read()
        self.last = dict(self.base)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.done.set()
        self.thread.join()
        self.last.update(self._read())
        return sum(v - self.base.get(p, 0.0) for p, v in self.last.items())


def listening(port, host=fx.LOOPBACK):
    """True if something listens on host:port (from /proc/net/tcp; no probe
    connection)."""
    want = "%s:%04X" % ("".join("%02X" % b for b in reversed(socket.inet_aton(host))), port)
    with open("/proc/net/tcp") as f:
        next(f)
        return any(p[1] == want and p[3] == "0A" for p in (line.split() for line in f))


# ---------------------------------------------------------------------------
# The stand-in for a VM's raw TCP port


class Sink:
    """A TCP server on 127.0.0.1 that reads each connection to its EOF, then
    answers with the byte count ("N\\n") and closes. A thread per connection:
    idle connections just wait in recv()."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((fx.LOOPBACK, 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.closing:
                    c.close()
                    return
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = bytearray(1 << 20)
        n = 0
        try:
            while True:
                k = c.recv_into(buf)
                if not k:
                    break
                n += k
            c.sendall(b"%d\n" % n)
        except OSError:
            pass
        finally:
            with self.lock:
                if c in self.conns:
                    self.conns.remove(c)
            c.close()

    def close(self):
        with self.lock:
            self.closing = True
            conns, self.conns = self.conns, []
        self.sock.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def send_through(port, nbytes, block):
    """Connects to 127.0.0.1:port, writes nbytes (block repeated), half-closes
    and reads the sink's count. Returns seconds from connect to the answer;
    raises if the sink saw another count."""
    t0 = time.monotonic()
    with socket.create_connection((fx.LOOPBACK, port), timeout=120) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        view, left = memoryview(block), nbytes
        while left:
            k = min(left, len(view))
            s.sendall(view[:k])
            left -= k
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            b = s.recv(64)
            if not b:
                break
            answer += b
    seconds = time.monotonic() - t0
    if answer.strip() != b"%d" % nbytes:
        raise RuntimeError("the sink counted %r bytes, %d were sent" % (answer, nbytes))
    return seconds


# ---------------------------------------------------------------------------
# Background processes of our own


class Background:
    """A process in its own session (so that stopping its group stops only
    it), its stderr read by a thread; `wait_line(regex)` waits for a line."""

    def __init__(self, argv, env, name):
        self.name = name
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     env=env, start_new_session=True)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                del self.lines[:-200]
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, regex, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = re.search(regex, line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError("%s: no line matching %r (exit %s):\n%s" % (
                        self.name, regex, self.proc.poll(), self.tail()))
                self.cond.wait(min(left, 0.2))

    def tail(self):
        return "\n".join(self.lines[-20:])

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        fx.stop_process(self.proc, signal.SIGTERM, timeout=10)


# ---------------------------------------------------------------------------
# The bench


def median(values):
    return statistics.median(values) if values else None


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="postern-tunnel-bench-")
        self.things = []       # closed in reverse order by stop()
        self.results = {"scp": {}, "tcp": {}, "setup": {}, "idle": {}}

    # -- start ---------------------------------------------------------------

    def start(self):
        a = self.args
        log("starting the target sshd and the jump-host sshd")
        self.target = fx.Sshd()
        self.things.append(self.target)
        self.target.start()
        self.jump = fx.Sshd()
        self.things.append(self.jump)
        self.jump.start()
        self.sink = Sink()
        self.things.append(self.sink)

        users = fx.UsersFile(os.path.join(self.tmp, "users.json"))
        password = "bench-" + secrets.token_urlsafe(12)
        users.add(USER, password, roles=("bench",))
        vm = self.target.vm_config(VM, tunnel_ports=[self.sink.port])
        cfg = {
            "users_file": users.path,
            "roles": {"bench": {"vms": [VM], "actions": ["tunnel"]}},
            "vms": [vm],
            "limits": {"max_sessions": 100000, "max_sessions_per_user": 100000,
                       "idle_timeout_seconds": 0, "max_session_seconds": 0},
            "log_level": "info",
        }
        log("starting %s" % a.posternd)
        self.gw = fx.Gateway(cfg, binary=a.posternd, tmp=os.path.join(self.tmp, "gw"))
        os.makedirs(self.gw.dir)
        self.things.append(self.gw)
        self.gw.start()
        self.url = "https://%s:%d" % (self.gw.host, self.gw.port)
        self.pin = "SHA256:" + fx.der_fingerprint(fx.peer_certificate(self.gw.host,
                                                                      self.gw.port))

        home = os.path.join(self.tmp, "home")
        os.makedirs(home)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("POSTERN_TOKEN", "POSTERN_GATEWAY", "SSH_AUTH_SOCK")}
        self.env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, "config"))
        r = subprocess.run([a.postern, "login", "--gateway", self.url, "--pin", self.pin,
                            "--user", USER, "--password-stdin"], input=password + "\n",
                           capture_output=True, text=True, env=self.env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("postern login exited %d: %s%s" % (r.returncode, r.stdout,
                                                                   r.stderr))
        self.write_ssh_config()
        self.file = os.path.join(self.tmp, "payload.bin")
        self.block = os.urandom(1 << 20)
        with open(self.file, "wb") as f:
            left = a.size_mb * MB
            while left:
                k = min(left, len(self.block))
                f.write(self.block[:k])
                left -= k
        self.results["rss_cold_kib"] = fx.process_rss_kib(self.gw.pid)

    def write_ssh_config(self):
        """One ssh_config: `jump` (the jump host), `target` (the VM, straight),
        `bench01` (the VM through postern). Host keys checked everywhere."""
        def ed25519(sshd):
            with open(sshd.host_keys["ed25519"].pub_path) as f:
                return " ".join(f.read().split()[:2])
        self.known_hosts = os.path.join(self.tmp, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write("[127.0.0.1]:%d %s\n" % (self.jump.port, ed25519(self.jump)))
            f.write("[127.0.0.1]:%d %s\n" % (self.target.port, ed25519(self.target)))
            f.write("[%s]:%d %s\n" % (VM, self.target.port, ed25519(self.target)))
        self.ssh_config = os.path.join(self.tmp, "ssh_config")
        self.proxy = "%s tunnel --vm %%h --port %%p --stdio" % self.args.postern
        with open(self.ssh_config, "w") as f:
            f.write("Host jump\n  HostName 127.0.0.1\n  Port %d\n  IdentityFile %s\n"
                    % (self.jump.port, self.jump.client_key))
            f.write("Host target\n  HostName 127.0.0.1\n  Port %d\n  IdentityFile %s\n"
                    % (self.target.port, self.target.client_key))
            f.write("Host %s\n  Port %d\n  IdentityFile %s\n  ProxyCommand %s\n"
                    % (VM, self.target.port, self.target.client_key, self.proxy))
            f.write("Host *\n  User %s\n  IdentitiesOnly yes\n  BatchMode yes\n"
                    "  StrictHostKeyChecking yes\n  UserKnownHostsFile %s\n"
                    "  LogLevel ERROR\n  ConnectTimeout 20\n"
                    % (self.target.user, self.known_hosts))

    # The three ways to the target's sshd, as argv prefixes for ssh and scp.
    def route(self, program, how):
        argv = [program, "-F", self.ssh_config]
        if how == "postern":
            return argv, VM
        if how == "proxyjump":
            return argv + ["-J", "jump"], "target"
        return argv, "target"     # direct

    # -- stop ----------------------------------------------------------------

    def stop(self):
        for thing in reversed(self.things):
            try:
                thing.close()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                log("cleanup: %s" % e)
        self.things = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------

    def run(self, argv, timeout=600):
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("%s exited %d\nstdout: %s\nstderr: %s" % (
                " ".join(argv), r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        return r

    def run_metered(self, argv, timeout=600):
        """Runs argv; returns (seconds, CPU seconds of its process tree: for
        scp, scp itself, its ssh, and the ProxyCommand or ProxyJump ssh)."""
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        meter = TreeCpu(p.pid).start()
        try:
            out, err = p.communicate(timeout=timeout)
        finally:
            cpu = meter.stop()
            if p.poll() is None:
                p.kill()
                p.wait()
        t = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError("%s exited %d\nstdout: %s\nstderr: %s" % (
                " ".join(argv), p.returncode, out[-2000:], err[-2000:]))
        return t, cpu

    def tunnels_active(self):
        return int(fx.gateway_metrics(self.gw).get(TUNNEL_ACTIVE, 0))

    def wait_tunnels(self, n, timeout=60):
        fx.wait_until(lambda: self.tunnels_active() == n, timeout, interval=0.1,
                      message="postern_sessions_active{protocol=\"tunnel\"} == %d" % n)

    def wait_jump_idle(self, timeout=20):
        """Until the jump sshd has no connection process left."""
        fx.wait_until(lambda: len(tree_pids(self.jump.proc.pid)) == 1, timeout,
                      interval=0.05, message="the jump sshd to reap its connections")

    def hop_meter(self, how):
        """A started TreeCpu of the hop a route goes through (None: direct)."""
        if how == "postern":
            return TreeCpu(self.gw.pid).start()
        if how in ("proxyjump", "ssh_l"):
            return TreeCpu(self.jump.proc.pid).start()
        return None

    # -- 1. scp --------------------------------------------------------------

    def scp_phase(self):
        a = self.args
        ways = ("postern", "proxyjump", "direct")
        res = {w: {"seconds": [], "hop_cpu_seconds": 0.0, "client_cpu_seconds": 0.0}
               for w in ways}
        for i in range(a.repeat):
            # Alternate the order so that a noisy moment does not always hit
            # the same route.
            for how in (ways if i % 2 == 0 else ways[::-1]):
                argv, host = self.route("scp", how)
                argv = argv + ["-q", self.file, "%s:/dev/null" % host]
                if i == 0:
                    res[how]["argv"] = argv
                self.wait_quiet()
                meter = self.hop_meter(how)
                t, client_cpu = self.run_metered(argv)
                res[how]["client_cpu_seconds"] += client_cpu
                if how == "proxyjump":
                    self.wait_jump_idle()
                elif how == "postern":
                    self.wait_tunnels(0)
                if meter:
                    res[how]["hop_cpu_seconds"] += meter.stop()
                res[how]["seconds"].append(t)
                log("scp %-9s %d MB in %.2f s: %.1f MB/s" % (how, a.size_mb, t, a.size_mb / t))
        for how, r in res.items():
            r["best_mb_per_s"] = a.size_mb / min(r["seconds"])
            gbs = a.repeat * a.size_mb * MB / GB
            r["hop_cpu_s_per_gb"] = r["hop_cpu_seconds"] / gbs if how != "direct" else None
            r["client_cpu_s_per_gb"] = r["client_cpu_seconds"] / gbs
        self.results["scp"] = res

    def wait_quiet(self):
        """Nothing of an earlier run still in flight through the gateway."""
        self.wait_tunnels(0)

    # -- 2 and 4. raw TCP ----------------------------------------------------

    def start_listener(self):
        a = self.args
        argv = [a.postern, "tunnel", "--vm", VM, "--port", str(self.sink.port),
                "--listen", "127.0.0.1:0"]
        self.listener = Background(argv, self.env, "postern tunnel --listen")
        self.things.append(self.listener)
        m = self.listener.wait_line(r"listening on 127\.0\.0\.1:(\d+)")
        self.listener_port = int(m.group(1))
        self.results["tcp_listener_argv"] = argv

    def start_forward(self):
        self.fwd_port = fx.free_port()
        argv = ["ssh", "-F", self.ssh_config, "-N", "-o", "ExitOnForwardFailure=yes",
                "-L", "127.0.0.1:%d:127.0.0.1:%d" % (self.fwd_port, self.sink.port), "jump"]
        self.forward = Background(argv, self.env, "ssh -L")
        self.things.append(self.forward)
        fx.wait_until(lambda: listening(self.fwd_port) or not self.forward.alive(), 30,
                      message="ssh -L listening on %d" % self.fwd_port)
        if not self.forward.alive():
            raise RuntimeError("ssh -L exited %s:\n%s" % (self.forward.proc.poll(),
                                                           self.forward.tail()))
        self.results["tcp_forward_argv"] = argv

    def tcp_phase(self):
        a = self.args
        nbytes = a.size_mb * MB
        self.start_listener()
        self.start_forward()
        ways = ("postern", "ssh_l", "direct")
        port = {"postern": self.listener_port, "ssh_l": self.fwd_port,
                "direct": self.sink.port}
        res = {w: {"seconds": [], "hop_cpu_seconds": 0.0, "client_cpu_seconds": 0.0}
               for w in ways}
        # One small transfer each first: connections, TLS and ssh channels
        # warm, not counted.
        for how in ways:
            send_through(port[how], 1 << 20, self.block)
        for i in range(a.repeat):
            for how in (ways if i % 2 == 0 else ways[::-1]):
                self.wait_quiet()
                client = {"postern": self.listener.pid, "ssh_l": self.forward.pid}.get(how)
                meter = self.hop_meter(how)
                c0 = proc_cpu_seconds(client) if client else 0.0
                t = send_through(port[how], nbytes, self.block)
                if how == "postern":
                    self.wait_tunnels(0)
                if meter:
                    res[how]["hop_cpu_seconds"] += meter.stop()
                    res[how]["client_cpu_seconds"] += proc_cpu_seconds(client) - c0
                res[how]["seconds"].append(t)
                log("tcp %-9s %d MB in %.2f s: %.1f MB/s" % (how, a.size_mb, t, a.size_mb / t))
        gbs = a.repeat * nbytes / GB
        for how, r in res.items():
            r["best_mb_per_s"] = a.size_mb / min(r["seconds"])
            if how != "direct":
                r["hop_cpu_s_per_gb"] = r["hop_cpu_seconds"] / gbs
                r["client_cpu_s_per_gb"] = r["client_cpu_seconds"] / gbs
        self.results["tcp"] = res
        self.forward.close()

    # -- 3. set-up -----------------------------------------------------------

    def setup_phase(self):
        a = self.args
        ways = ("postern", "proxyjump", "direct")
        res = {w: {"seconds": []} for w in ways}
        for how in ways:      # warm-up, not counted
            argv, host = self.route("ssh", how)
            self.run(argv + [host, "true"])
        for i in range(a.setup_runs):
            for how in (ways if i % 2 == 0 else ways[::-1]):
                argv, host = self.route("ssh", how)
                argv = argv + [host, "true"]
                res[how].setdefault("argv", argv)
                if how == "proxyjump":
                    self.wait_jump_idle()
                self.wait_quiet()
                t0 = time.monotonic()
                self.run(argv)
                res[how]["seconds"].append(time.monotonic() - t0)
        for how, r in res.items():
            r["median_ms"] = 1000 * median(r["seconds"])
            r["min_ms"] = 1000 * min(r["seconds"])
            log("set-up %-9s median %.0f ms" % (how, r["median_ms"]))
        self.results["setup"] = res

    # -- 5. idle tunnels -----------------------------------------------------

    def idle_phase(self):
        a = self.args
        k = a.idle_tunnels
        self.wait_tunnels(0)
        time.sleep(a.settle)
        base = fx.process_rss_kib(self.gw.pid)
        cli_base = fx.process_rss_kib(self.listener.pid)
        socks = []
        try:
            for _ in range(k):
                socks.append(socket.create_connection((fx.LOOPBACK, self.listener_port),
                                                      timeout=30))
            self.wait_tunnels(k)
            fx.wait_until(lambda: len(self.sink.conns) >= k, 30,
                          message="%d connections at the sink" % k)
            time.sleep(a.settle)
            if self.tunnels_active() != k:
                raise RuntimeError("tunnels went away while idle: %d of %d"
                                   % (self.tunnels_active(), k))
            with_k = fx.process_rss_kib(self.gw.pid)
            cli_with_k = fx.process_rss_kib(self.listener.pid)
        finally:
            for s in socks:
                s.close()
        self.wait_tunnels(0)
        time.sleep(a.settle)
        after = fx.process_rss_kib(self.gw.pid)
        self.results["idle"] = {
            "tunnels": k, "baseline_kib": base, "with_tunnels_kib": with_k,
            "after_close_kib": after, "per_tunnel_kib": (with_k - base) / k,
            "cli_baseline_kib": cli_base, "cli_with_tunnels_kib": cli_with_k,
            "cli_per_tunnel_kib": (cli_with_k - cli_base) / k}
        log("idle: %d tunnels, posternd %d -> %d KiB" % (k, base, with_k))

    def run_all(self):
        t0 = time.monotonic()
        self.scp_phase()
        self.tcp_phase()
        self.setup_phase()
        self.idle_phase()
        self.results["duration_seconds"] = time.monotonic() - t0
        if not self.gw.alive():
            raise RuntimeError("posternd died during the run")


# ---------------------------------------------------------------------------
# The table


def verdict(ok):
    return "ok" if ok else "MISSED"


def table(res, args):
    out = []
    scp, tcp, setup, idle = res["scp"], res["tcp"], res["setup"], res["idle"]
    out.append("Postern tunnel vs OpenSSH ProxyJump, 127.0.0.1, %d MB per transfer, best of %d"
               % (args.size_mb, args.repeat))
    out.append("")
    out.append("%-44s %10s %14s %12s   %s" % ("", "figure", "hop CPU s/GB", "client s/GB",
                                             "target"))
    names = {"postern": "postern tunnel --stdio (ProxyCommand)",
             "proxyjump": "ssh -J jump (ProxyJump)", "direct": "direct to sshd (reference)"}
    out.append("1. scp throughput (MB/s)")
    for how in ("postern", "proxyjump", "direct"):
        r = scp[how]
        tgt = ""
        if how == "postern":
            tgt = ">= ProxyJump: %s (%.1f%%)" % (
                verdict(r["best_mb_per_s"] >= scp["proxyjump"]["best_mb_per_s"]),
                100.0 * r["best_mb_per_s"] / scp["proxyjump"]["best_mb_per_s"])
        out.append("   %-41s %10.1f %14s %12s   %s" % (
            names[how], r["best_mb_per_s"],
            "-" if r["hop_cpu_s_per_gb"] is None else "%.2f" % r["hop_cpu_s_per_gb"],
            "%.2f" % r["client_cpu_s_per_gb"], tgt))
    out.append("2. raw TCP throughput to a sink (MB/s); 4. CPU per GB")
    tnames = {"postern": "postern tunnel --listen", "ssh_l": "ssh -N -L via jump host",
              "direct": "direct TCP (reference)"}
    for how in ("postern", "ssh_l", "direct"):
        r = tcp[how]
        tgt = ""
        if how == "postern":
            tgt = ">= ssh -L: %s (%.1f%%)" % (
                verdict(r["best_mb_per_s"] >= tcp["ssh_l"]["best_mb_per_s"]),
                100.0 * r["best_mb_per_s"] / tcp["ssh_l"]["best_mb_per_s"])
        out.append("   %-41s %10.1f %14s %12s   %s" % (
            tnames[how], r["best_mb_per_s"],
            "%.2f" % r["hop_cpu_s_per_gb"] if how != "direct" else "-",
            "%.2f" % r["client_cpu_s_per_gb"] if how != "direct" else "-", tgt))
    out.append("3. connection set-up, ssh HOST true (ms, median of %d; min)" % args.setup_runs)
    for how in ("postern", "proxyjump", "direct"):
        r = setup[how]
        tgt = ""
        if how == "postern":
            tgt = "<= ProxyJump: %s (%+.0f ms)" % (
                verdict(r["median_ms"] <= setup["proxyjump"]["median_ms"]),
                r["median_ms"] - setup["proxyjump"]["median_ms"])
        out.append("   %-41s %10.0f %14s %12s   %s" % (names[how], r["median_ms"],
                                                      "min %.0f" % r["min_ms"], "", tgt))
    out.append("5. posternd VmRSS per idle tunnel (KiB), %d tunnels" % idle["tunnels"])
    out.append("   %-41s %10.1f %14s %12s   < %d KiB: %s" % (
        "posternd", idle["per_tunnel_kib"], "", "", IDLE_TARGET_KIB,
        verdict(idle["per_tunnel_kib"] < IDLE_TARGET_KIB)))
    out.append("   %-41s %10.1f" % ("postern tunnel --listen (the CLI)",
                                    idle["cli_per_tunnel_kib"]))
    out.append("   posternd VmRSS: cold %d KiB, before %d, with %d tunnels %d, after close %d"
               % (res["rss_cold_kib"], idle["baseline_kib"], idle["tunnels"],
                  idle["with_tunnels_kib"], idle["after_close_kib"]))
    out.append("")
    out.append("hop CPU = posternd (postern rows) or the jump host's sshd tree (ProxyJump, "
               "ssh -L rows). client = for scp, the")
    out.append("whole client tree (scp, ssh, and postern --stdio or ssh -W); for raw TCP, "
               "postern --listen or ssh -L.")
    out.append("scp times include the connection set-up. CPU: utime+stime, 10 ms ticks, "
               "summed over the repeats.")
    out.append("Run took %.0f s. Commands:" % res["duration_seconds"])
    for how in ("postern", "proxyjump", "direct"):
        out.append("   " + " ".join(scp[how]["argv"]))
    for how in ("postern", "proxyjump", "direct"):
        out.append("   " + " ".join(setup[how]["argv"]))
    out.append("   " + " ".join(res["tcp_listener_argv"]))
    out.append("   " + " ".join(res["tcp_forward_argv"]))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posternd", default=os.path.join(ROOT, "build", "release", "posternd"),
                    help="the gateway to measure (default: build/release/posternd)")
    ap.add_argument("--postern", default=None,
                    help="the CLI (default: $POSTERN, else postern next to --posternd)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: 20 MB, 1 repeat, 3 set-ups, 10 idle tunnels")
    ap.add_argument("--size-mb", type=int, help="MB per transfer (default 200)")
    ap.add_argument("--repeat", type=int, help="transfers per route, best kept (default 3)")
    ap.add_argument("--setup-runs", type=int, help="set-ups per route, median (default 11)")
    ap.add_argument("--idle-tunnels", type=int, help="idle tunnels for the RSS (default 50)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds before each RSS reading (default 1)")
    ap.add_argument("--json", default="", help="also write the raw numbers to this file")
    args = ap.parse_args()
    quick = args.quick
    args.size_mb = args.size_mb or (20 if quick else 200)
    args.repeat = args.repeat or (1 if quick else 3)
    args.setup_runs = args.setup_runs or (3 if quick else 11)
    args.idle_tunnels = args.idle_tunnels or (10 if quick else 50)
    args.posternd = os.path.abspath(args.posternd)
    args.postern = os.path.abspath(args.postern or os.environ.get("POSTERN") or
                                   os.path.join(os.path.dirname(args.posternd), "postern"))
    for exe in (args.posternd, args.postern):
        if not os.access(exe, os.X_OK):
            sys.exit("no %s: build it first (cmake -S . -B build/release -G Ninja "
                     "-DCMAKE_BUILD_TYPE=Release && cmake --build build/release)" % exe)
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            sys.exit("needs %s (openssh-client)" % tool)
    if os.geteuid() != 0:
        sys.exit("run as root: the sshd fixture creates the postern-test account")
    os.environ["POSTERN"] = args.postern     # the fixtures' UsersFile runs it

    # SIGTERM (a timeout killing us) stops everything as an error would.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    bench = Bench(args)
    try:
        bench.start()
        bench.run_all()
    finally:
        bench.stop()
    res = bench.results
    res["args"] = {k: getattr(args, k) for k in ("size_mb", "repeat", "setup_runs",
                                                 "idle_tunnels", "settle", "posternd",
                                                 "postern", "quick")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    print(table(res, args))


if __name__ == "__main__":
    main()
