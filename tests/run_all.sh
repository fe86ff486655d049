#!/bin/sh
# Runs every Criterion suite given, sums their results, and prints one closing line.
build=$1; shift
passed=0; failed=0; bad_suites=""
for t in "$@"; do
    name=$(basename "$t")
    if [ -n "$SF_TEST_FILTER" ] && [ "$name" != "$SF_TEST_FILTER" ]; then continue; fi
    log="$build/tests/$name.log"
    echo "== $name"
    SF_BUILD=$build "$t" --jobs 1 >"$log" 2>&1
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
[ -z "$bad_suites" ] || echo "failing suites:$bad_suites"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
