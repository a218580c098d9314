#!/usr/bin/python3
"""A real OpenSSH server for the browser tests, made by the integration
tests' own fixture (tests/integration/postern_fixtures.py: Sshd), so that
both suites share one way of creating the postern-test account and its
random password, and can run at the same time.

Prints one JSON line on stdout, then serves until stdin reaches its end (the
test closed it, or died) or SIGTERM/SIGINT/SIGHUP arrives, and cleans up:
sshd stopped, its directory removed, the account released.

  {"host", "port", "user", "password", "host_key_sha256",
   "client_key", "client_key_encrypted", "client_key_passphrase"}
  {"skip": "why"}     a prerequisite is missing (run by hand)
  {"error": "why"}    anything else, including a missing prerequisite under
                      POSTERN_REQUIRE_ALL=1; the exit status is 1
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))
import postern_fixtures  # noqa: E402


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stop_on_signal(signum, frame):
    raise SystemExit(0)


def encrypted_copy(sshd):
    """The client key again, under a passphrase (same public half, so the
    same authorized_keys line lets it in)."""
    path = sshd.client_key + "_encrypted"
    shutil.copyfile(sshd.client_key, path)
    os.chmod(path, 0o600)
    passphrase = "pp-" + secrets.token_urlsafe(9)
    subprocess.run(["ssh-keygen", "-q", "-p", "-f", path, "-P", "", "-N", passphrase],
                   check=True, capture_output=True, timeout=30)
    return path, passphrase


def main():
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop_on_signal)
    sshd = postern_fixtures.Sshd()
    try:
        try:
            sshd.start()
        except unittest.SkipTest as e:
            say({"skip": str(e)})
            return 0
        enc, passphrase = encrypted_copy(sshd)
        say({
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "password": sshd.password,
            "host_key_sha256": sshd.host_key_sha256,
            "client_key": sshd.client_key,
            "client_key_encrypted": enc,
            "client_key_passphrase": passphrase,
            "log": sshd.log.path,
        })
        while sys.stdin.buffer.read(4096):
            pass
        return 0
    except SystemExit:
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the test
        say({"error": "%s: %s" % (type(e).__name__, e)})
        return 1
    finally:
        sshd.close()


if __name__ == "__main__":
    sys.exit(main())
