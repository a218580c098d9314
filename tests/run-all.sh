#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds the release and the sanitizer (ASan+UBSan) builds, and runs
# every test (unit, fuzz replays, integration against real servers) in both.
# .ci/run calls this; so does a developer.
#
#   tests/run-all.sh            everything
#   tests/run-all.sh -R http    only tests whose name matches (ctest -R)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${POSTERN_TEST_JOBS:-2}

./deploy/install-deps.sh

build() { # dir, cmake args...
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

build build/release -DCMAKE_BUILD_TYPE=Release
build build/asan -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON

status=0
echo "=== release build ==="
(cd build/release && ctest -j "$jobs" --output-on-failure "$@") || status=1

echo "=== sanitizer build (ASan + UBSan) ==="
# Leaks, overflows and undefined behaviour all end the process with an
# error, so a daemon that exits uncleanly fails its lifecycle tests.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87
(cd build/asan && ctest -j "$jobs" --output-on-failure "$@") || status=1

exit $status
