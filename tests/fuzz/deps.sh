#!/bin/sh
# Installs clang and its libFuzzer runtime (Debian) when `make fuzz` cannot link a fuzzer.
set -e
cc=${1:-clang}
probe() {
    d=$(mktemp -d)
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){return 0;}\n' >"$d/p.c"
    "$cc" -fsanitize=fuzzer,address,undefined "$d/p.c" -o "$d/p" >/dev/null 2>&1
    rc=$?
    rm -rf "$d"
    return $rc
}
if command -v "$cc" >/dev/null 2>&1 && probe; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
echo "saeforge: installing clang and libFuzzer for make fuzz"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang
# libFuzzer ships in libclang-rt-<major>-dev (Debian 12) or libfuzzer-<major>-dev (older)
major=$("$cc" --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n 1)
if ! probe; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "libclang-rt-$major-dev" ||
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "libfuzzer-$major-dev"
fi
probe || { echo "saeforge: $cc cannot link a libFuzzer program; install libFuzzer for it" >&2; exit 1; }
