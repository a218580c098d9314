#!/usr/bin/env bash
# Installs every Debian 12 package Postern needs to build, run and test.
# The one place packages are named: README's commands, .ci/run and the demo
# all call this script. Safe to run again: apt-get skips what is there.
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake pkg-config ninja-build
  libssl-dev libuv1-dev libwebsockets-dev libwebsockets-evlib-uv
  libssh-dev libjansson-dev libargon2-dev libsqlite3-dev
  libcmocka-dev
)
# Real servers and clients the integration tests drive, and the demo's sshd.
# RDP: freerdp-shadow-cli on an Xvfb display (with an xterm on it) is the
# test target, xfreerdp the client, winpr-hash writes its SAM lines.
TEST_PKGS=(
  openssh-server openssh-client openssl curl procps python3 ca-certificates
  chromium asciinema python3-websocket
  xvfb freerdp2-x11 freerdp2-shadow-x11 winpr-utils x11-xserver-utils xdotool xterm
)

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
missing=()
for p in "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm drive the browser tests and fetch xterm.js. A machine may
# already carry a Node.js of its own (with npm bundled), which conflicts with
# Debian's npm package: only install them when no npm is on the PATH.
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
