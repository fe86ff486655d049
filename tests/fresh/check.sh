#!/bin/sh
# Proves the README's two commands work on a fresh machine in ONE invocation each: a clean clone
# of HEAD, with pkg-config reporting the build packages missing until apt-get "installs" them
# (stand-ins in tests/fresh/, since the real packages are installed here), runs `make run`, and a
# second clean clone runs `make test` (one suite, to keep it short). Prints "N passed, N failed".
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/sf_fresh.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
passed=0; failed=0
check() { # name, command...
    name=$1; shift
    dir=$work/$name
    git clone -q "$repo" "$dir" || { echo "fresh: cannot clone $repo"; failed=$((failed + 1)); return; }
    mark=$dir/.deps-installed
    if (cd "$dir" && PATH="$repo/tests/fresh:$PATH" FAKE_DEPS_MARK=$mark "$@") >"$work/$name.log" 2>&1 &&
       [ -e "$mark" ]; then
        echo "fresh: $name: ok"
        passed=$((passed + 1))
    else
        echo "fresh: $name: FAILED (last lines of its log):"
        tail -n 15 "$work/$name.log"
        [ -e "$mark" ] || echo "fresh: $name: apt-get was never called"
        failed=$((failed + 1))
    fi
}
check make-run make -j2 run
check make-test make -j2 test SF_TEST_FILTER=test_crc32c
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
