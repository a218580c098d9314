"""The benchmarks (tests/bench/ssh_bench.py, tunnel_bench.py) still run.

Benchmarks are run by hand, so nothing else would notice when a change to
the gateway, the protocol or the fixtures breaks them. This runs the
smallest useful configuration with every moving part: the load generator
through the gateway and direct, typing together, the echo VM stand-in, the
bare-relay control, warm-up keys and the per-key trace; then checks the
counts in its JSON. The tunnel bench runs --quick (scp, raw TCP, set-up,
CPU per GB, idle tunnels, through postern, ProxyJump and direct) and must
print every figure. No figure is asserted: timing belongs to the bench.
"""

import csv
import glob
import json
import os
import re
import subprocess
import sys
import unittest

import postern_fixtures as pf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "tests", "bench", "ssh_bench.py")
TUNNEL_BENCH = os.path.join(ROOT, "tests", "bench", "tunnel_bench.py")

SESSIONS, KEYS, WARMUP, TOGETHER = 3, 6, 2, 2


class SshBenchSmokeTest(unittest.TestCase):
    def test_every_phase_types_every_key(self):
        pf.require_tool("cc")
        pf.require_tool("ssh-keygen")
        tmp = pf.make_temp_dir(self)
        out, trace = os.path.join(tmp, "results"), os.path.join(tmp, "trace")
        os.mkdir(trace)
        env = dict(os.environ, POSTERN=pf.postern_path())
        argv = [sys.executable, BENCH, "--posternd", pf.posternd_path(), "--vm", "echo",
                "--sizes", str(SESSIONS), "--keys", str(KEYS), "--warmup", str(WARMUP),
                "--rate", "20", "--together", str(TOGETHER), "--relay", "--settle", "0.2",
                "--echo-timeout", "5", "--out", out, "--trace", trace]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env,
                           cwd=ROOT)
        self.assertEqual(r.returncode, 0, "ssh_bench failed:\n%s\n%s" % (r.stdout, r.stderr))
        self.assertIn("added (gw - direct)", r.stdout)
        self.assertIn("added (relay - direct)", r.stdout)

        files = glob.glob(os.path.join(out, "ssh_bench-*.json"))
        self.assertEqual(len(files), 1, files)
        with open(files[0]) as f:
            res = json.load(f)
        phases = {(p["mode"], p.get("with")): p for p in res["phases"]}
        self.assertEqual(set(phases), {("gateway", None), ("direct", "gateway"),
                                       ("relay", None), ("direct", "relay")})
        for (mode, with_), ph in phases.items():
            n = TOGETHER if mode == "direct" else SESSIONS
            with self.subTest(mode=mode, together_with=with_):
                self.assertEqual(ph["client"]["lost"], 0)
                self.assertEqual(ph["client"]["dead_sessions"], 0)
                self.assertEqual(ph["latency"]["count"], n * KEYS)
                self.assertEqual(ph["warmup_latency"]["count"], n * WARMUP)
                self.assertEqual(len(ph["samples_us"]), n * KEYS)
        gw = phases[("gateway", None)]
        self.assertGreater(gw["cpu"]["gateway_cpu_seconds"], 0)
        self.assertIsNone(phases[("direct", "gateway")]["cpu"])

        # The trace holds every key of the gateway phase, warm-up marked.
        with open(os.path.join(trace, "gateway-%d.csv" % SESSIONS)) as f:
            lines = f.read().splitlines()
        self.assertTrue(lines[0].startswith("# start_monotonic_ns="), lines[0])
        rows = list(csv.DictReader(lines[1:]))
        self.assertEqual(len(rows), SESSIONS * (KEYS + WARMUP))
        self.assertEqual(sum(r["warmup"] == "1" for r in rows), SESSIONS * WARMUP)
        self.assertEqual({int(r["session"]) for r in rows}, set(range(SESSIONS)))


class TunnelBenchSmokeTest(unittest.TestCase):
    def test_quick_run_prints_every_figure(self):
        pf.require_root()
        for tool in ("ssh", "scp", "ssh-keygen"):
            pf.require_tool(tool)
        tmp = pf.make_temp_dir(self)
        out = os.path.join(tmp, "tunnel_bench.json")
        env = dict(os.environ, POSTERN=pf.postern_path())
        argv = [sys.executable, TUNNEL_BENCH, "--quick", "--posternd", pf.posternd_path(),
                "--settle", "0.3", "--json", out]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=150, env=env,
                           cwd=ROOT)
        self.assertEqual(r.returncode, 0, "tunnel_bench failed:\n%s\n%s" % (r.stdout, r.stderr))
        num = r"\s+\d+(?:\.\d+)?(?:\s|$)"
        for label, count in (("postern tunnel --stdio (ProxyCommand)", 2),
                             ("ssh -J jump (ProxyJump)", 2),
                             ("direct to sshd (reference)", 2),
                             ("postern tunnel --listen", 1),
                             ("ssh -N -L via jump host", 1),
                             ("direct TCP (reference)", 1),
                             ("posternd", 1),
                             ("postern tunnel --listen (the CLI)", 1)):
            with self.subTest(row=label):
                rows = re.findall(r"^   " + re.escape(label) + num, r.stdout, re.M)
                self.assertEqual(len(rows), count, r.stdout)
        for heading in ("1. scp throughput", "2. raw TCP throughput", "4. CPU per GB",
                        "3. connection set-up", "5. posternd VmRSS per idle tunnel"):
            self.assertIn(heading, r.stdout)
        for target in (">= ProxyJump: ", ">= ssh -L: ", "<= ProxyJump: ", "< 64 KiB: "):
            self.assertIn(target, r.stdout)

        with open(out) as f:
            res = json.load(f)
        for how in ("postern", "proxyjump", "direct"):
            with self.subTest(route=how):
                self.assertEqual(len(res["scp"][how]["seconds"]), 1)
                self.assertGreater(res["scp"][how]["best_mb_per_s"], 0)
                self.assertEqual(len(res["setup"][how]["seconds"]), 3)
                self.assertGreater(res["setup"][how]["median_ms"], 0)
        for how in ("postern", "ssh_l", "direct"):
            self.assertGreater(res["tcp"][how]["best_mb_per_s"], 0)
        for how in ("postern", "ssh_l"):
            self.assertGreaterEqual(res["tcp"][how]["hop_cpu_s_per_gb"], 0)
            self.assertGreaterEqual(res["tcp"][how]["client_cpu_s_per_gb"], 0)
        self.assertEqual(res["idle"]["tunnels"], 10)
        self.assertIsInstance(res["idle"]["per_tunnel_kib"], float)


if __name__ == "__main__":
    unittest.main()
