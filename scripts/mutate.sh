#!/bin/sh
# Mutation check: plants known bugs in core/, one at a time, in a private copy of the tree, rebuilds,
# runs the tests that cover core/ and counts the bugs the suite does not notice ("survivors").
#
#   scripts/mutate.sh            all mutants (make mutate)
#   scripts/mutate.sh optim      only mutants whose name contains "optim"
#   MUTATE_TESTS="optim_ rng_"   override the test patterns (default: every test that reaches core/)
#   MUTATE_TIMEOUT=600           seconds allowed per mutant run
#
# Each mutant is one literal substitution (first occurrence) in one file. A mutant whose text no longer
# occurs, or that does not build, is reported as "stale" so the list is kept honest. Exit status: 0 when
# every mutant is killed, 1 when one survives, 2 when the list is stale or the unmutated suite fails.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
filter=${1:-}
tests=${MUTATE_TESTS:-"optim_ rng_ layers_ model_ cl_ compose_ dataset_ daemon_api_ -model_vit_tiny_loss_falls"}
limit=${MUTATE_TIMEOUT:-600}
work=$(mktemp -d /tmp/clad-mutate-XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM

# The mutants: name ::: file ::: text ::: replacement (one line each, literal text).
mutants() {
cat <<'LIST'
optim-no-bias-correction-m ::: core/optim.c ::: float mhat = m[i] / c1 ::: float mhat = m[i]
optim-no-bias-correction-v ::: core/optim.c ::: vhat = v[i] / c2 ::: vhat = v[i]
optim-no-weight-decay ::: core/optim.c ::: float decay = t->decay ? lr * weight_decay : 0.0f; ::: float decay = 0.0f;
optim-decay-on-every-tensor ::: core/optim.c ::: float decay = t->decay ? lr * weight_decay : 0.0f; ::: float decay = lr * weight_decay;
optim-decay-not-scaled-by-lr ::: core/optim.c ::: t->decay ? lr * weight_decay ::: t->decay ? weight_decay
optim-eps-inside-sqrt ::: core/optim.c ::: (sqrtf(vhat) + eps) ::: sqrtf(vhat + eps)
optim-m-uses-beta2 ::: core/optim.c ::: m[i] = beta1 * m[i] + (1.0f - beta1) * gt[i]; ::: m[i] = beta2 * m[i] + (1.0f - beta2) * gt[i];
optim-v-uses-abs-gradient ::: core/optim.c ::: (1.0f - beta2) * gt[i] * gt[i] ::: (1.0f - beta2) * fabsf(gt[i])
optim-step-count-frozen ::: core/optim.c ::: o->t++; ::: o->t = 1;
optim-no-warmup ::: core/optim.c ::: if (warmup > 0 && step < warmup) ::: if (0)
optim-warmup-off-by-one ::: core/optim.c ::: lr * (float)(step + 1) / (float)warmup ::: lr * (float)step / (float)warmup
optim-wrong-cosine-progress ::: core/optim.c ::: (double)(step - warmup) / (double)(total - warmup) ::: (double)step / (double)total
optim-cosine-not-clamped ::: core/optim.c ::: if (progress > 1.0) progress = 1.0; ::: (void)0;
optim-min-ratio-ignored ::: core/optim.c ::: (double)min_ratio + (1.0 - (double)min_ratio) * cosine ::: cosine
optim-no-clipping ::: core/optim.c ::: if (max_norm > 0.0f && norm > (double)max_norm) ::: if (0)
optim-clip-wrong-scale ::: core/optim.c ::: (double)max_norm / (norm + 1e-12) ::: (double)max_norm / (norm * norm + 1e-12)
optim-norm-without-sqrt ::: core/optim.c ::: return sqrt(s); ::: return s;
linear-bias-of-first-output ::: core/linear.c ::: yn[o] += b[o]; ::: yn[o] += b[0];
linear-bias-grad-not-summed ::: core/linear.c ::: db[o] += dyn[o]; ::: db[o] = dyn[o];
layernorm-no-eps ::: core/layernorm.c ::: sqrt(v + LAYERNORM_EPS) ::: sqrt(v)
layernorm-grad-drops-xhat-term ::: core/layernorm.c ::: dxn[i] += (g - mg - xhat * mgx) * rs; ::: dxn[i] += (g - mg) * rs;
gelu-wrong-cubic-coefficient ::: core/activations.c ::: #define GELU_C 0.044715f ::: #define GELU_C 0.04715f
attention-scale-by-size ::: core/attention.c ::: float scale = 1.0f / sqrtf((float)hs); ::: float scale = 1.0f / (float)hs;
lora-forward-ignores-scale ::: core/lora.c ::: N, out, r, scale, xa, r, B, r, 1.0f, y, out); ::: N, out, r, 1.0f, xa, r, B, r, 1.0f, y, out);
lora-forward-overwrites-y ::: core/lora.c ::: B, r, 1.0f, y, out); ::: B, r, 0.0f, y, out);
lora-dB-not-scaled ::: core/lora.c ::: out, r, N, scale, dy, out, xa, r, 1.0f, dB, r); ::: out, r, N, 1.0f, dy, out, xa, r, 1.0f, dB, r);
lora-scale-not-divided-by-rank ::: core/model.h ::: a->alpha / (float)a->rank[li] ::: a->alpha
loss-gradient-sign ::: core/crossentropy.c ::: (p[k] - (k == t ? 1.0f : 0.0f)) * dloss ::: ((k == t ? 1.0f : 0.0f) - p[k]) * dloss
loss-without-max-shift ::: core/crossentropy.c ::: double loss = log(s) - ((double)z[t] - (double)mx); ::: double loss = log(s) - (double)z[t];
loss-summed-not-averaged ::: core/crossentropy.c ::: return N > 0 ? (float)(total / N) : 0.0f; ::: return (float)total;
merge-no-disjoint-mean ::: core/merge.c ::: if (c->disjoint_mean && count > 1) s /= count; ::: (void)count;
merge-lambda-ignored ::: core/merge.c ::: out[j] = (float)s * c->lambda; ::: out[j] = (float)s;
merge-no-sign-election ::: core/merge.c ::: if ((sign > 0 && X[i][j] < 0.0f) || (sign < 0 && X[i][j] > 0.0f)) X[i][j] = 0.0f; ::: (void)sign;
merge-trim-keeps-the-dropped-share ::: core/merge.c ::: llround((1.0 - (double)drop) * (double)total) ::: llround((double)drop * (double)total)
merge-coefficients-ignored ::: core/merge.c ::: (c->coef ? c->coef[i] : 1.0f) ::: (1.0f)
ranks-overlap-not-normalised ::: core/ranks.c ::: d / sqrt(own * theirs) ::: d / (own * theirs)
ranks-novelty-inverted ::: core/ranks.c ::: R->useful > 0.0 ? 1.0 - useful_share( ::: R->useful > 0.0 ? 0.0 + useful_share(
ranks-pull-keeps-insignificant ::: core/ranks.c ::: if (w->gain[i] >= R->floor) order[n++] = i; ::: if (w->gain[i] >= 0.0) order[n++] = i;
ranks-count-ignores-theta ::: core/ranks.c ::: c += gain[i] >= theta; ::: c += gain[i] > 0.0;
rng-wrong-multiplier ::: core/rng.c ::: rotl(s[1] * 5, 7) * 9 ::: rotl(s[1] * 5, 7) * 7
metrics-average-accuracy-off-by-one ::: core/metrics.c ::: s += row / (i + 1); ::: s += row / (i + 2);
LIST
}

run_suite() { # $1: log file; returns the suite's status (124 on timeout)
    # shellcheck disable=SC2086 # the patterns are words
    (cd "$work" && CLAD_BUILD=build OPENBLAS_NUM_THREADS=1 timeout "$limit" build/clad-tests $tests) >"$1" 2>&1
}

echo "mutate: copying the tree to $work"
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work")
if ! (cd "$work" && make -j2 all) >"$work/build.log" 2>&1; then
    echo "mutate: the unmutated tree does not build; see $work/build.log" >&2
    trap - EXIT; exit 2
fi
if ! run_suite "$work/baseline.log"; then
    echo "mutate: the unmutated suite fails; fix that first" >&2
    tail -20 "$work/baseline.log" >&2
    exit 2
fi

total=0 killed=0 survived="" stale="" timeouts=""
sep=' ::: '
tab=$(printf '\t')
mutants | sed "s/$sep/$tab/g" | {
while IFS="$tab" read -r name file from to; do
    case "$name" in *"$filter"*) ;; *) continue ;; esac
    total=$((total + 1))
    if ! FROM=$from TO=$to perl -0pi -e 'our $n += s/\Q$ENV{FROM}\E/$ENV{TO}/; END { exit($n ? 0 : 3) }' \
            "$work/$file"; then
        echo "stale    $name: text not found in $file"
        stale="$stale $name"
        continue
    fi
    if ! (cd "$work" && make -j2 all) >"$work/mutant.log" 2>&1; then
        echo "stale    $name: does not build"
        stale="$stale $name"
    elif run_suite "$work/mutant.log"; then
        echo "SURVIVED $name ($file)"
        survived="$survived $name"
    else
        killed=$((killed + 1))
        # Killed only by timeouts: a hang the mutant causes, or a machine too loaded for the time limits.
        fails=$(grep -c '^not ok' "$work/mutant.log" || true)
        if [ "$fails" -gt 0 ] && [ "$fails" -eq "$(grep -c '(timeout)' "$work/mutant.log" || true)" ]; then
            timeouts="$timeouts $name"
        fi
        echo "killed   $name: $(grep -m1 '^not ok' "$work/mutant.log" || echo 'suite timed out or crashed')"
    fi
    cp "$root/$file" "$work/$file"
done
echo "mutation score: $killed of $total killed"
[ -z "$timeouts" ] || echo "killed by timeouts only (check on an idle machine):$timeouts"
[ -z "$survived" ] || echo "survivors:$survived"
[ -z "$stale" ] || { echo "stale mutants:$stale"; exit 2; }
[ -z "$survived" ]
}
