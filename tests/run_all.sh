#!/bin/sh
# Runs every Criterion suite given, sums their results, and prints one closing line.
build=$1; shift
# As host/main.c does for the binary: suites calling the CPU backend directly must not spin.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
passed=0; failed=0; bad_suites=""
# Emulated-CUDA suites (emu_*) run once per schedule order in SF_EMU_SCHEDULES, so a kernel
# whose result depends on thread order fails.
schedules=${SF_EMU_SCHEDULES:-"forward reverse random:7"}
for t in "$@"; do
  base=$(basename "$t")
  case "$base" in emu_*) scheds=$schedules ;; *) scheds=default ;; esac
  for sched in $scheds; do
    name=$base
    if [ -n "$SF_TEST_FILTER" ] && [ "$name" != "$SF_TEST_FILTER" ]; then continue; fi
    [ "$sched" = default ] || name="$base[$sched]"
    log="$build/tests/$(echo "$name" | tr -c 'A-Za-z0-9_.\n-' _).log"
    echo "== $name"
    if [ "$sched" = default ]; then
        SF_BUILD=$build "$t" --jobs 1 >"$log" 2>&1
    else
        SF_EMU_SCHEDULE=$sched SF_BUILD=$build "$t" --jobs 1 >"$log" 2>&1
    fi
    rc=$?
    syn=$(grep 'Synthesis:' "$log" | tail -n 1)
    echo "   $syn"
    p=$(echo "$syn" | sed -n 's/.*Passing: \([0-9]*\).*/\1/p')
    f=$(echo "$syn" | sed -n 's/.*Failing: \([0-9]*\).*Crashing: \([0-9]*\).*/\1 \2/p')
    [ -n "$p" ] || p=0
    nf=0; for x in $f; do nf=$((nf + x)); done
    if [ $rc -ne 0 ] || [ -z "$syn" ]; then
        [ "$nf" -gt 0 ] || nf=1
        bad_suites="$bad_suites $name"
        grep -E 'FAIL|Assert|----\]   [^ ]|CRASH|rror' "$log" | tail -n 40
    fi
    passed=$((passed + p)); failed=$((failed + nf))
  done
done
[ -z "$bad_suites" ] || echo "failing suites:$bad_suites"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
