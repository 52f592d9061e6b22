#!/bin/sh
# make bench: clad's engine speed (clad-bench speed) next to PyTorch's on the same models, measured in the
# same run so the ratios hold on a noisy shared machine. The PyTorch side needs Debian's python3-torch;
# without it the clad numbers are printed alone and the reference says "skipped".
#
# BENCH_BASELINE=REV (a commit, e.g. 7e34136, the tree before issue 9's engine work) also builds that tree's
# clad-bench under $BUILD/bench/baseline (once) and prints its peak RSS for the same `speed --quick` run
# next to this tree's, for the issue's memory target.
set -eu
BUILD=${BUILD:-build}
THREADS=${BENCH_THREADS:-$(nproc)}
SECONDS_EACH=${BENCH_SECONDS:-3}
OUT=$BUILD/bench
mkdir -p "$OUT"
# BENCH_REPEAT=N runs clad and the reference alternately N times and keeps each side's best rate per
# workload: on a shared machine the best of a few alternating runs estimates each side's unloaded speed far
# better than one run of each, minutes apart.
REPEAT=${BENCH_REPEAT:-1}
HAVE_TORCH=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && HAVE_TORCH=1
i=1
# Like the reference, clad runs with 1 and N threads and each side keeps its best (on a quiet machine N wins;
# on an oversubscribed one a single thread can, for either side).
SETTINGS=1
[ "$THREADS" -gt 1 ] && SETTINGS="1 $THREADS"
k=0
while [ "$i" -le "$REPEAT" ]; do
    for t in $SETTINGS; do
        k=$((k + 1))
        echo "[$i/$REPEAT] clad-bench speed --threads $t" >&2
        "$BUILD/clad-bench" speed --json --threads "$t" > "$OUT/clad.$k.json"
    done
    if [ "$HAVE_TORCH" = 1 ]; then
        echo "[$i/$REPEAT] bench/torch_reference.py --threads $THREADS (each thread setting in turn)" >&2
        /usr/bin/python3 bench/torch_reference.py --threads "$THREADS" --seconds "$SECONDS_EACH" > "$OUT/torch.$i.json"
    else
        echo '{"skipped": "python3-torch is not installed"}' > "$OUT/torch.$i.json"
    fi
    i=$((i + 1))
done
# The best of the repetitions, per workload and side (a run's fraction of peak stays with its own peak).
/usr/bin/python3 - "$OUT" "$REPEAT" "$k" <<'PY'
import json, sys
out, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clads = [json.load(open(f"{out}/clad.{i}.json")) for i in range(1, k + 1)]
torches = [json.load(open(f"{out}/torch.{i}.json")) for i in range(1, n + 1)]
def best(dicts):
    res = dict(dicts[0])
    for k, v in res.items():
        if isinstance(v, dict):
            res[k] = best([d[k] for d in dicts])
        elif isinstance(v, (int, float)):
            res[k] = max(d[k] for d in dicts)
    return res
clad = best(clads)
clad["runs"] = clads
json.dump(clad, open(f"{out}/clad.json", "w"))
torch = torches[0] if "skipped" in torches[0] else {"best": best([t["best"] for t in torches]), "runs": torches}
json.dump(torch, open(f"{out}/torch.json", "w"))
PY
# Peak resident memory of the same quick run (LoRA training, inference and full training of both configs),
# this tree and optionally the baseline's; GNU time's %M is in KB.
peak_rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }
RSS_NOW=$(peak_rss "$BUILD/clad-bench" speed --quick --json --threads "$THREADS")
RSS_BASE=null
if [ -n "${BENCH_BASELINE:-}" ]; then
    BASE_DIR=$OUT/baseline
    if [ ! -x "$BASE_DIR/build/clad-bench" ]; then
        echo "building clad-bench at $BENCH_BASELINE in $BASE_DIR" >&2
        rm -rf "$BASE_DIR" && mkdir -p "$BASE_DIR"
        git archive "$BENCH_BASELINE" | tar -x -C "$BASE_DIR"
        make -C "$BASE_DIR" -j"$THREADS" build/clad-bench >/dev/null
    fi
    # The baseline has no engine pool: its own speed run with OpenBLAS on the same thread count.
    RSS_BASE=$(OPENBLAS_NUM_THREADS=$THREADS peak_rss "$BASE_DIR/build/clad-bench" speed --quick --json)
fi
echo "{\"peak_rss_kb\": $RSS_NOW, \"baseline\": \"${BENCH_BASELINE:-}\", \"baseline_peak_rss_kb\": $RSS_BASE}" > "$OUT/rss.json"
exec /usr/bin/python3 - "$OUT/clad.json" "$OUT/torch.json" "$OUT/rss.json" <<'PY'
import json, sys
clad, torch, rss = (json.load(open(p)) for p in sys.argv[1:4])
for run in clad["runs"]:
    print(json.dumps({k: v for k, v in run.items()}))
print(f"\nthreads 1 and {clad['threads']}, best of {len(clad['runs'])} clad run(s) alternating with the reference; "
      f"sgemm peak {clad['sgemm_peak_gflops']:.1f} GFLOP/s")
line = f"peak RSS of `clad-bench speed --quick`: {rss['peak_rss_kb'] / 1024:.1f} MB"
if rss["baseline_peak_rss_kb"]:
    base = rss["baseline_peak_rss_kb"]
    line += f", at {rss['baseline']}: {base / 1024:.1f} MB ({rss['peak_rss_kb'] / base - 1:+.1%}; target <= +10%)"
print(line)
if "skipped" in torch:
    print("PyTorch reference: skipped (" + torch["skipped"] + ")")
    sys.exit(0)
print(f"{'workload':34} {'clad':>10} {'PyTorch':>10} {'ratio':>7}")
rows = [("LoRA train", "train_samples_per_s", "train_samples_per_s"),
        ("full train", "full_train_samples_per_s", "full_train_samples_per_s"),
        ("infer b1 (vs unmerged)", "infer_samples_per_s_b1", "infer_b1_unmerged"),
        ("infer b1 (vs merged)", "infer_samples_per_s_b1", "infer_b1_merged"),
        ("infer b128 (vs unmerged)", "infer_samples_per_s_b128", "infer_b128_unmerged"),
        ("infer b128 (vs merged)", "infer_samples_per_s_b128", "infer_b128_merged"),
        ("folded b1 (vs merged)", "infer_folded_samples_per_s_b1", "infer_b1_merged"),
        ("folded b128 (vs merged)", "infer_folded_samples_per_s_b128", "infer_b128_merged")]
for kind in ("vit-tiny", "mlp"):
    for name, ck, tk in rows:
        c, t = clad[kind][ck], torch["best"][kind][tk]
        print(f"{kind + ' ' + name:34} {c:10.0f} {t:10.0f} {c / t:6.2f}x")
    print(f"{kind + ' LoRA train, fraction of sgemm peak':34} {clad[kind]['train_fraction_of_peak']:10.3f}")
PY
