#!/bin/sh
# make bench: clad's engine speed (clad-bench speed) next to PyTorch's on the same models, measured in the
# same run so the ratios hold on a noisy shared machine. The PyTorch side needs Debian's python3-torch;
# without it the clad numbers are printed alone and the reference says "skipped".
set -eu
BUILD=${BUILD:-build}
THREADS=${BENCH_THREADS:-$(nproc)}
SECONDS_EACH=${BENCH_SECONDS:-3}
OUT=$BUILD/bench
mkdir -p "$OUT"
echo "clad-bench speed --threads $THREADS" >&2
"$BUILD/clad-bench" speed --json --threads "$THREADS" > "$OUT/clad.json"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "bench/torch_reference.py --threads $THREADS (each thread setting in turn)" >&2
    /usr/bin/python3 bench/torch_reference.py --threads "$THREADS" --seconds "$SECONDS_EACH" > "$OUT/torch.json"
else
    echo '{"skipped": "python3-torch is not installed"}' > "$OUT/torch.json"
fi
cat "$OUT/clad.json"
exec /usr/bin/python3 - "$OUT/clad.json" "$OUT/torch.json" <<'PY'
import json, sys
clad, torch = (json.load(open(p)) for p in sys.argv[1:3])
print(f"\nthreads {clad['threads']}, sgemm peak {clad['sgemm_peak_gflops']:.1f} GFLOP/s")
if "skipped" in torch:
    print("PyTorch reference: skipped (" + torch["skipped"] + ")")
    sys.exit(0)
print(f"{'workload':34} {'clad':>10} {'PyTorch':>10} {'ratio':>7}")
rows = [("train", "train_samples_per_s", "train_samples_per_s"),
        ("infer b1 (vs unmerged)", "infer_samples_per_s_b1", "infer_b1_unmerged"),
        ("infer b1 (vs merged)", "infer_samples_per_s_b1", "infer_b1_merged"),
        ("infer b128 (vs unmerged)", "infer_samples_per_s_b128", "infer_b128_unmerged"),
        ("infer b128 (vs merged)", "infer_samples_per_s_b128", "infer_b128_merged")]
for kind in ("vit-tiny", "mlp"):
    for name, ck, tk in rows:
        c, t = clad[kind][ck], torch["best"][kind][tk]
        print(f"{kind + ' ' + name:34} {c:10.0f} {t:10.0f} {c / t:6.2f}x")
    print(f"{kind + ' train, fraction of sgemm peak':34} {clad[kind]['train_fraction_of_peak']:10.3f}")
PY
