#!/usr/bin/env bash
# Runs a local Postern demo: builds posternd, starts a real OpenSSH server on
# 127.0.0.1 to stand for a Linux VM, and a gateway in front of it. Everything
# listens on 127.0.0.1 only. Ctrl-C stops both servers and removes the
# temporary files; the gateway's state (its generated certificate) stays in
# ${XDG_STATE_HOME:-$HOME/.local/state}/postern-demo so its fingerprint is
# the same next time.
#
# Needs root for the demo account and the SSH server; uses sudo otherwise.
set -euo pipefail

DEMO_USER=postern-demo
VM_NAME=demo-linux
GW_FIRST_PORT=8443
HEALTH_WAIT_SECONDS=30

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# ---- dependencies and build ---------------------------------------------
deploy/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j2
posternd=$root/build/release/posternd
[ -x "$posternd" ] || die "build produced no $posternd"

# ---- clean-up, armed before anything is started ------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/postern-demo.XXXXXX")
gw_pid=
sshd_started=

# PID NAME [SUDO]: SIGTERM, then SIGKILL if it outlives the wait.
stop_pid() {
  local pid=$1 name=$2 run=${3:-}
  $run kill -0 "$pid" 2>/dev/null || return 0
  $run kill -TERM "$pid" 2>/dev/null || true
  # The gateway drains on SIGTERM: it exits at once when no session is live,
  # else after the demo's shutdown_grace_seconds (5).
  for _ in $(seq 100); do
    $run kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "$name did not stop after 10 s; killing it"
  $run kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$gw_pid" ]; then
    stop_pid "$gw_pid" posternd
    wait "$gw_pid" 2>/dev/null || true
  fi
  if [ -n "$sshd_started" ] && [ -s "$tmp/sshd.pid" ]; then
    stop_pid "$(cat "$tmp/sshd.pid")" sshd "$SUDO"
  fi
  # The demo account's password would also open the machine's own sshd, if
  # it has one: lock it until the next run sets a new one.
  if id "$DEMO_USER" >/dev/null 2>&1; then
    $SUDO usermod -L "$DEMO_USER" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  say "stopped"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- ports ----------------------------------------------------------------
# PORT is free on 127.0.0.1 when a listener could bind it now.
port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}
# A port the kernel picks: free now, and far from the well-known ones.
any_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

gw_port=
for p in $(seq "$GW_FIRST_PORT" $((GW_FIRST_PORT + 99))); do
  if port_free "$p"; then gw_port=$p; break; fi
done
[ -n "$gw_port" ] || die "no free port in $GW_FIRST_PORT-$((GW_FIRST_PORT + 99)) on 127.0.0.1"
ssh_port=$(any_free_port)

# ---- the "VM": a real OpenSSH server on 127.0.0.1 ---------------------------
if ! id "$DEMO_USER" >/dev/null 2>&1; then
  say "creating the system user $DEMO_USER"
  $SUDO useradd -m -s /bin/bash "$DEMO_USER"
fi
# A fresh password every run; letters and digits only so it is easy to type.
demo_password=$(openssl rand -base64 24 | tr -dc 'A-Za-z0-9' | cut -c1-16)
[ "${#demo_password}" -eq 16 ] || die "could not generate a password"
printf '%s:%s\n' "$DEMO_USER" "$demo_password" | $SUDO chpasswd

# Only an ed25519 host key: the key sshd offers is then the one pinned below.
ssh-keygen -q -t ed25519 -N '' -C postern-demo -f "$tmp/ssh_host_ed25519_key"
host_key_fp=$(ssh-keygen -lf "$tmp/ssh_host_ed25519_key.pub" | awk '{print $2}')
case "$host_key_fp" in SHA256:*) ;; *) die "unexpected fingerprint '$host_key_fp'" ;; esac

cat >"$tmp/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $ssh_port
HostKey $tmp/ssh_host_ed25519_key
PidFile $tmp/sshd.pid
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $DEMO_USER
X11Forwarding no
PrintMotd no
EOF
$SUDO mkdir -p /run/sshd
$SUDO /usr/sbin/sshd -t -f "$tmp/sshd_config"
sshd_started=1
$SUDO /usr/sbin/sshd -f "$tmp/sshd_config" -E "$tmp/sshd.log"
for _ in $(seq 50); do [ -s "$tmp/sshd.pid" ] && break; sleep 0.1; done
[ -s "$tmp/sshd.pid" ] || die "sshd did not start; see $tmp/sshd.log"

# ---- the gateway ----------------------------------------------------------------
state_dir=${XDG_STATE_HOME:-$HOME/.local/state}/postern-demo
mkdir -p "$(dirname "$state_dir")"
# The gateway login: the same name and password as the VM account, so one
# pair of credentials gets the demo user from the login page to a shell.
printf '%s\n' "$demo_password" |
  "$root/build/release/postern" user add "$DEMO_USER" --role demo \
    --users-file "$tmp/users.jsonl" --password-stdin >/dev/null
cat >"$tmp/postern.json" <<EOF
{
  "listen": "127.0.0.1:$gw_port",
  "state_dir": "$state_dir",
  "users_file": "$tmp/users.jsonl",
  "origins": ["https://127.0.0.1:$gw_port", "https://localhost:$gw_port"],
  "log_level": "info",
  "limits": { "shutdown_grace_seconds": 5 },
  "roles": {
    "demo": { "vms": ["$VM_NAME"], "actions": ["ssh-login", "auditor"] }
  },
  "recording": { "mode": "on", "retention_days": 7 },
  "vms": [
    {
      "name": "$VM_NAME",
      "address": "127.0.0.1",
      "tags": ["linux", "demo"],
      "ssh": { "port": $ssh_port, "host_key_sha256": "$host_key_fp" }
    }
  ]
}
EOF
"$posternd" --check-config "$tmp/postern.json"

gw_log=$tmp/posternd.log
"$posternd" --config "$tmp/postern.json" 2>"$gw_log" &
gw_pid=$!

url=https://127.0.0.1:$gw_port/
healthy=
for _ in $(seq $((HEALTH_WAIT_SECONDS * 10))); do
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    cat "$gw_log" >&2
    gw_pid=
    die "posternd exited during start-up (its log is above)"
  fi
  if [ "$(curl -ks --max-time 2 "${url}healthz" 2>/dev/null || true)" = ok ]; then
    healthy=1
    break
  fi
  sleep 0.1
done
[ -n "$healthy" ] || { cat "$gw_log" >&2; die "no answer from ${url}healthz in ${HEALTH_WAIT_SECONDS} s"; }

cert_fp=$(openssl x509 -noout -fingerprint -sha256 -in "$state_dir/tls/cert.pem" | sed 's/^.*=//')

cat <<EOF

  Postern demo is running.

  Console:        $url
  Certificate:    self-signed; before accepting it in the browser, check that
                  its SHA-256 fingerprint is
                  $cert_fp
  VM:             $VM_NAME (OpenSSH on 127.0.0.1:$ssh_port)
  Log in as:      $DEMO_USER  (on the console, and again on the VM)
  Password:       $demo_password
  Gateway log:    $gw_log
  Gateway state:  $state_dir
  Recordings:     ${url}recordings.html  (every console session is recorded)

  Press Ctrl-C to stop.

EOF

# Waits for Ctrl-C (the INT trap exits; EXIT cleans up) or for the gateway
# to stop on its own.
set +e
wait "$gw_pid"
rc=$?
set -e
gw_pid=
say "posternd exited with status $rc; its log:"
cat "$gw_log" >&2
exit "$rc"
