#!/usr/bin/env bash
# Installs the npm packages the browser tests need (playwright-core, pinned
# exactly in package.json and package-lock.json at the repository's top)
# into its node_modules, unless they are there already and match the
# lockfile. The browser itself is Debian's /usr/bin/chromium: nothing is
# downloaded besides the npm package.
#
#   tests/e2e/install.sh          install when missing or stale
#   tests/e2e/install.sh --force  install anyway
#
# `npm ci` runs under a timeout (POSTERN_NPM_TIMEOUT seconds, default 300),
# retried once: a stuck registry connection then costs minutes, not hours.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

force=0
if [[ ${1:-} == --force ]]; then
  force=1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--force]" >&2
  exit 2
fi

for tool in node npm sha256sum flock timeout; do
  if ! command -v "$tool" >/dev/null; then
    echo "install.sh: $tool not found (Debian packages: nodejs npm coreutils util-linux)" >&2
    exit 1
  fi
done

stamp=node_modules/.postern-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)

current() {
  [[ -f $stamp && $(cat "$stamp") == "$want" && -f node_modules/playwright-core/package.json ]]
}

# Parallel test jobs may call this at once: one installs, the others wait.
lock="${TMPDIR:-/tmp}/postern-npm-$(printf '%s' "$root" | sha256sum | cut -c1-16).lock"
exec 9>"$lock"
if ! flock -w 900 9; then
  echo "install.sh: another install held $lock for 15 minutes" >&2
  exit 1
fi

if [[ $force -eq 0 ]] && current; then
  exit 0
fi

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
limit=${POSTERN_NPM_TIMEOUT:-300}
for attempt in 1 2; do
  # --ignore-scripts: no package needs an install script here, and none
  # should run one on a test machine.
  if timeout -k 10 "$limit" npm ci --ignore-scripts --no-audit --no-fund; then
    printf '%s\n' "$want" >"$stamp"
    echo "install.sh: node_modules matches package-lock.json"
    exit 0
  fi
  echo "install.sh: npm ci failed or took over ${limit}s (attempt $attempt of 2)" >&2
  sleep 2
done
exit 1
