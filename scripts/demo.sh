#!/bin/sh
# make demo: clad end to end on the embedded defaults.
#
# Starts cladd on a private socket and state directory, trains a vit-tiny base on Fashion-MNIST, sends
# four tasks of the fmnist-domains stream through `clad`, shows each task's distances and ranks and the
# accuracy table, trains one task again, rolls it back, routes inputs to their task without a task id,
# prints the accuracy matrix, writes an HTML report and a PEFT export, and stops the daemon. The state
# directory stays in build/demo/state so cladd can be started on it again.
#
# Sizes are chosen to finish in a few minutes on 2 cores; DEMO_SAMPLES and DEMO_EPOCHS change them.
set -eu
BUILD=${BUILD:-build}
DEMO=$BUILD/demo
STREAM=bench/streams/fmnist-domains.json
SAMPLES=${DEMO_SAMPLES:-3000}
EPOCHS=${DEMO_EPOCHS:-3}
TASKS="rot15 perm100 invert rot20n"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$DEMO"
mkdir -p "$DEMO/data"
SOCK="$DEMO/clad.sock"
CLAD="$BUILD/clad --socket $SOCK"

say "exporting task data from $STREAM ($SAMPLES training samples per task)"
for t in $TASKS; do
    "$BUILD/clad-bench" export --stream "$STREAM" --task "$t" --split train --samples "$SAMPLES" \
        --out "$DEMO/data/$t-train.safetensors"
    "$BUILD/clad-bench" export --stream "$STREAM" --task "$t" --split test --samples 1000 \
        --out "$DEMO/data/$t-test.safetensors"
done

say "starting cladd (socket $SOCK, state $DEMO/state)"
"$BUILD/cladd" --socket "$SOCK" --state-dir "$DEMO/state" \
    > "$DEMO/cladd.log" 2>&1 &
CLADD=$!
trap 'kill $CLADD 2>/dev/null || true' EXIT INT TERM
i=0
until $CLAD status > /dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "cladd did not start; see $DEMO/cladd.log"; exit 1; }
    sleep 0.1
done
$CLAD status

say "training the base: vit-tiny on Fashion-MNIST"
$CLAD base train vit --model vit-tiny --data fmnist --samples 8000 --epochs 2
$CLAD bases

for t in $TASKS; do
    say "task $t: probe, ranks, training"
    $CLAD train "$t" "$DEMO/data/$t-train.safetensors" --epochs "$EPOCHS"
done

say "tasks"
$CLAD tasks

say "accuracy of every task's active adapter on its own test data"
printf '%-10s %s\n' TASK ACCURACY
for t in $TASKS; do
    printf '%-10s ' "$t"
    $CLAD eval "$t" "$DEMO/data/$t-test.safetensors" | sed 's/.*accuracy \([0-9.]*\).*/\1/'
done

say "rot15 again with a fixed rank of 1: a second version becomes active"
$CLAD train rot15 "$DEMO/data/rot15-train.safetensors" --epochs 1 --rank fixed:1 > /dev/null
$CLAD versions rot15
$CLAD eval rot15 "$DEMO/data/rot15-test.safetensors"

say "rolling rot15 back to its first version"
$CLAD rollback rot15 --reason "demo: version 2 is worse"
$CLAD versions rot15
$CLAD eval rot15 "$DEMO/data/rot15-test.safetensors"

say "a second node on the same store: both list each other, and a change through one is what the other serves"
SOCK2="$DEMO/clad2.sock"
"$BUILD/cladd" --socket "$SOCK2" --state-dir "$DEMO/state2" --store "$(cd "$DEMO" && pwd)/state/clad.db" \
    > "$DEMO/cladd2.log" 2>&1 &
CLADD2=$!
trap 'kill $CLADD $CLADD2 2>/dev/null || true' EXIT INT TERM
i=0
until $BUILD/clad --socket "$SOCK2" health > /dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "the second cladd did not start; see $DEMO/cladd2.log"; exit 1; }
    sleep 0.1
done
$BUILD/clad --socket "$SOCK2" nodes
$CLAD undo rot15 > /dev/null
echo "after 'clad undo rot15' through the first node, the second serves:"
$BUILD/clad --socket "$SOCK2" versions rot15
kill -TERM $CLADD2
wait $CLADD2 || true
trap 'kill $CLADD 2>/dev/null || true' EXIT INT TERM

say "predicting without a task id: each input of invert's test data is routed to the task it belongs to"
$CLAD predict --any "$DEMO/data/invert-test.safetensors" | awk '{print $1}' | sort | uniq -c | sort -rn
"$BUILD/clad-bench" export --stream "$STREAM" --task "$(echo $TASKS | tr ' ' ,)" --split test --samples 250 \
    --out "$DEMO/data/mixed-test.safetensors"
$CLAD eval --any "$DEMO/data/mixed-test.safetensors"

say "what clad knows: the accuracy matrix, an HTML report, a PEFT export"
$CLAD matrix
$CLAD report --out "$DEMO/report.html"
$CLAD export adapter rot15 --out "$DEMO/rot15-peft"

say "stopping cladd"
kill -TERM $CLADD
wait $CLADD || true
trap - EXIT INT TERM
echo "The demo's state is in $DEMO/state. Explore it with:"
echo "  $BUILD/cladd --socket $SOCK --state-dir $DEMO/state &"
echo "  $BUILD/clad --socket $SOCK tasks"
