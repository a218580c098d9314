#!/usr/bin/env bash
# Copies xterm.js's distribution files from node_modules (installed by
# `npm ci`, versions pinned exactly in the top-level package.json and
# package-lock.json) into web/vendor/xterm/. The copies are committed, so
# building posternd (which embeds every file under web/) needs no npm.
#
#   tests/e2e/install.sh && web/vendor/update.sh     refresh the copies
#   web/vendor/update.sh --check                     exit 1 when they differ
#
# After changing a version in package.json: npm install, run this script,
# and commit package.json, package-lock.json and web/vendor/xterm/ together.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dest=$root/web/vendor/xterm
mods=$root/node_modules/@xterm

check=0
if [[ ${1:-} == --check ]]; then
  check=1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

# source (under node_modules/@xterm) -> name in web/vendor/xterm
files=(
  "xterm/lib/xterm.js            xterm.js"
  "xterm/css/xterm.css           xterm.css"
  "xterm/LICENSE                 LICENSE"
  "addon-canvas/lib/addon-canvas.js addon-canvas.js"
  "addon-canvas/LICENSE          addon-canvas.LICENSE"
  "addon-fit/lib/addon-fit.js    addon-fit.js"
  "addon-fit/LICENSE             addon-fit.LICENSE"
  "addon-serialize/lib/addon-serialize.js addon-serialize.js"
  # The addon's npm package ships no LICENSE file (its package.json says
  # MIT): it lives in the xterm.js repository, whose LICENSE, the one
  # @xterm/xterm ships, covers it.
  "xterm/LICENSE                 addon-serialize.LICENSE"
)

# The installed versions must be the ones package.json pins.
for pkg in xterm addon-canvas addon-fit addon-serialize; do
  want=$(node -p "require('$root/package.json').devDependencies['@xterm/$pkg']")
  have=$(node -p "require('$mods/$pkg/package.json').version" 2>/dev/null || echo missing)
  if [[ $want != "$have" ]]; then
    echo "update.sh: @xterm/$pkg is $have in node_modules, package.json pins $want;" \
         "run tests/e2e/install.sh first" >&2
    exit 1
  fi
  echo "@xterm/$pkg $have"
done

status=0
[[ $check -eq 1 ]] || mkdir -p "$dest"
for entry in "${files[@]}"; do
  read -r src name <<<"$entry"
  if [[ $check -eq 1 ]]; then
    if ! cmp -s "$mods/$src" "$dest/$name"; then
      echo "update.sh: web/vendor/xterm/$name differs from node_modules/@xterm/$src" >&2
      status=1
    fi
  else
    install -m 0644 "$mods/$src" "$dest/$name"
  fi
done

# Nothing else belongs there: a stale file would be embedded and served.
for f in "$dest"/*; do
  name=$(basename "$f")
  known=0
  for entry in "${files[@]}"; do
    read -r _ n <<<"$entry"
    [[ $n == "$name" ]] && known=1
  done
  if [[ $known -eq 0 ]]; then
    echo "update.sh: web/vendor/xterm/$name is not one of the vendored files" >&2
    status=1
  fi
done
exit $status
