#!/bin/sh
# Runs libFuzzer targets (built by `make fuzz-build`), each for FUZZ_SECONDS (default 60) on its committed
# seeds (tests/fuzz/corpus/<name>) plus what earlier runs found (build/fuzz/corpus/<name>). A crash, leak,
# undefined behaviour or timeout stops the run: the input is saved as build/fuzz/crashes/<name>-*, and the
# exact command to replay it is printed. Usage: scripts/fuzz.sh build/fuzz/fuzz_NAME...
set -eu
seconds=${FUZZ_SECONDS:-60}
status=0
for bin in "$@"; do
    name=${bin##*/fuzz_}
    dir=$(dirname "$bin")
    mkdir -p "$dir/corpus/$name" "$dir/crashes"
    log="$dir/$name.log"
    if "$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
            -artifact_prefix="$dir/crashes/$name-" "$dir/corpus/$name" "tests/fuzz/corpus/$name" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $name: ok, $execs runs in ${seconds}s, corpus $(ls "$dir/corpus/$name" | wc -l) new inputs"
    else
        echo "fuzz $name: FAILED (log: $log)"
        grep -E 'ERROR: |SUMMARY: |runtime error|fuzz: |Test unit written' "$log" | head -20
        echo "replay: $bin $(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | head -1)"
        status=1
    fi
done
exit $status
