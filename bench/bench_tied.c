/* clad-bench tied: per task of a stream, LoRA against Tied-LoRA (tl5, tl6) at equal rank (accuracy and
 * trainable parameters), optionally LoRA trained with cubic-schedule magnitude pruning of B, and rank
 * pruning of the trained LoRA adapters at one or more energy fractions tau (parameters saved against
 * accuracy lost, with the ranks before and after). */
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/compose_util.h"
#include "core/prune.h"

#define MAX_TAUS 8

static void usage(FILE *f)
{
    fprintf(f, "usage: clad-bench tied --stream FILE [--rank R] [--kinds lora,tied-tl5,tied-tl6] [--prune TAU[,TAU...]]\n"
               "                       [--magnitude P] [--tasks a,b,c] [--quick] [--cache DIR] [--json]\n"
               "  --rank       rank of every adapter on every default target (default 8)\n"
               "  --kinds      the adapter kinds to train (default all three; --prune needs lora)\n"
               "  --prune      rank-prune each trained LoRA to keep these energy fractions\n"
               "  --magnitude  also train LoRA with B magnitude-pruned to P on the cubic schedule (t1 = 1,\n"
               "               t2 = epochs - 1)\n");
}

typedef struct kind_result {
    double acc;
    size_t params;
} kind_result;

static void print_ranks(const char *key, const adapter *a, const model *m, bool before)
{
    printf("\"%s\": {", key);
    bool first = true;
    for (int li = 0; li < a->n_linear; li++) {
        int r = before ? a->rank_before[li] : a->rank[li];
        if (!r && !(before ? 0 : a->rank_before[li])) continue;
        printf("%s\"%s\": %d", first ? "" : ", ", m->linear[li].name, r);
        first = false;
    }
    printf("}");
}

static size_t count_nonzero_b(const adapter *a)
{
    size_t nz = 0;
    for (int li = 0; li < a->n_linear; li++) {
        if (!a->rank[li]) continue;
        const float *B = param_set_ptr(&a->params, a->B[li]);
        for (size_t i = 0; i < a->params.t[a->B[li]].numel; i++) nz += B[i] != 0.0f;
    }
    return nz;
}

int bench_tied_main(int argc, char **argv)
{
    const char *path = NULL, *tasks_s = NULL, *prune_s = NULL, *kinds_s = NULL, *cache = getenv("CLAD_BENCH_CACHE");
    int rank = 8;
    double magnitude = 0;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stream") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prune") && i + 1 < argc) prune_s = argv[++i];
        else if (!strcmp(argv[i], "--kinds") && i + 1 < argc) kinds_s = argv[++i];
        else if (!strcmp(argv[i], "--magnitude") && i + 1 < argc) magnitude = atof(argv[++i]);
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc) tasks_s = argv[++i];
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc) cache = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--json")) continue;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    double taus[MAX_TAUS];
    int n_tau = 0;
    for (const char *p = prune_s; p && *p && n_tau < MAX_TAUS;) {
        char *end;
        taus[n_tau] = strtod(p, &end);
        if (end == p || !(taus[n_tau] > 0 && taus[n_tau] <= 1)) {
            fprintf(stderr, "clad-bench tied: --prune takes fractions in (0, 1]\n");
            return 2;
        }
        n_tau++;
        p = *end == ',' ? end + 1 : end;
    }
    if (!path || rank < 1 || !(magnitude >= 0 && magnitude < 1)) {
        usage(stderr);
        return 2;
    }
    static const compose_kind all_kinds[3] = {COMPOSE_LORA, COMPOSE_TL5, COMPOSE_TL6};
    compose_kind kinds[3];
    int n_kinds = 0;
    for (int k = 0; k < 3; k++) {
        const char *nm = compose_kind_name(all_kinds[k]), *hit = kinds_s ? strstr(kinds_s, nm) : NULL;
        size_t len = strlen(nm);
        bool listed = !kinds_s || (hit && (hit == kinds_s || hit[-1] == ',') && (hit[len] == ',' || !hit[len]));
        if (listed) kinds[n_kinds++] = all_kinds[k];
    }
    if (!n_kinds || (n_tau && kinds[0] != COMPOSE_LORA)) {
        fprintf(stderr, "clad-bench tied: --kinds must list lora, tied-tl5 or tied-tl6 (lora when pruning)\n");
        return 2;
    }
    clad_err err = {0};
    compose_run run;
    int code = 1, N = 0, idx[STREAM_MAX_TASKS];
    kind_result res[STREAM_MAX_TASKS][3], mag[STREAM_MAX_TASKS];
    kind_result pr[STREAM_MAX_TASKS][MAX_TAUS];
    adapter *pruned[STREAM_MAX_TASKS][MAX_TAUS];
    size_t mag_nonzero[STREAM_MAX_TASKS];
    double seconds[3] = {0};
    memset(pruned, 0, sizeof pruned);
    if (compose_run_open(&run, path, quick, cache, &err)) goto fail;
    if (tasks_s) {
        if ((N = compose_task_list(&run, tasks_s, idx, STREAM_MAX_TASKS)) < 1) goto done;
    } else {
        N = run.s.n_tasks;
        for (int t = 0; t < N; t++) idx[t] = t;
    }
    for (int t = 0; t < N; t++) {
        dataset train = {0}, test = {0};
        if (compose_task_data(&run, idx[t], &train, &test, &err)) goto fail;
        for (int k = 0; k < n_kinds; k++) {
            double sec = 0;
            adapter *a = compose_train(&run, idx[t], &train, kinds[k], rank, NULL, &sec, &err);
            if (!a) {
                dataset_finish(&train);
                dataset_finish(&test);
                goto fail;
            }
            seconds[k] += sec;
            res[t][k].acc = compose_accuracy(run.base, a, &test);
            res[t][k].params = adapter_param_count(a);
            fprintf(stderr, "clad-bench tied: %s %s %.4f (%zu parameters)\n", run.s.tasks[idx[t]].name,
                    compose_kind_name(kinds[k]), res[t][k].acc, res[t][k].params);
            for (int p = 0; k == 0 && p < n_tau; p++) {
                pruned[t][p] = prune_rank(a, run.base, taus[p], &err);
                if (!pruned[t][p]) {
                    adapter_destroy(a);
                    dataset_finish(&train);
                    dataset_finish(&test);
                    goto fail;
                }
                pr[t][p].acc = compose_accuracy(run.base, pruned[t][p], &test);
                pr[t][p].params = adapter_param_count(pruned[t][p]);
            }
            adapter_destroy(a);
        }
        if (magnitude > 0) {
            int ranks[MODEL_MAX_LINEARS] = {0};
            for (int li = 0; li < run.base->n_linear; li++)
                if (model_linear_is_default_target(run.base, li)) ranks[li] = rank;
            adapter *a = adapter_create(run.base, ranks, run.s.alpha, train.n_classes, &err);
            prune_sched ps;
            if (!a || prune_sched_init(&ps, a, magnitude, 1, run.s.epochs > 1 ? run.s.epochs - 1 : 1, &err)) {
                adapter_destroy(a);
                dataset_finish(&train);
                dataset_finish(&test);
                goto fail;
            }
            adapter_init(a, run.base, run.s.seed + 1000u * (unsigned)idx[t]);
            train_config tc = run.tc;
            tc.epoch_hook = prune_sched_epoch_hook;
            tc.step_hook = prune_sched_step_hook;
            tc.hook_ctx = &ps;
            int rc = train_run(run.base, a, &train, &tc, NULL, NULL, NULL, &err);
            if (!rc) {
                mag[t].acc = compose_accuracy(run.base, a, &test);
                mag[t].params = adapter_param_count(a);
                mag_nonzero[t] = count_nonzero_b(a);
            }
            prune_sched_finish(&ps);
            adapter_destroy(a);
            if (rc) {
                dataset_finish(&train);
                dataset_finish(&test);
                goto fail;
            }
        }
        dataset_finish(&train);
        dataset_finish(&test);
    }
    printf("{\"stream\": \"%s\", \"quick\": %s, \"rank\": %d, \"kinds\": {", run.s.name, quick ? "true" : "false", rank);
    for (int k = 0; k < n_kinds; k++) {
        double acc = 0, params = 0;
        for (int t = 0; t < N; t++) {
            acc += res[t][k].acc / N;
            params += (double)res[t][k].params / N;
        }
        printf("%s\"%s\": {\"acc\": %.4f, \"params\": %.0f, \"train_seconds\": %.1f}", k ? ", " : "",
               compose_kind_name(kinds[k]), acc, params, seconds[k]);
    }
    if (magnitude > 0) {
        double acc = 0, params = 0, nz = 0;
        for (int t = 0; t < N; t++) {
            acc += mag[t].acc / N;
            params += (double)mag[t].params / N;
            nz += (double)mag_nonzero[t] / N;
        }
        printf(", \"lora-magnitude\": {\"P\": %.3g, \"acc\": %.4f, \"params\": %.0f, \"nonzero_B\": %.0f}", magnitude,
               acc, params, nz);
    }
    printf("}, \"prune\": [");
    for (int p = 0; p < n_tau; p++) {
        double acc = 0, params = 0, acc0 = 0, params0 = 0;
        for (int t = 0; t < N; t++) {
            acc += pr[t][p].acc / N;
            params += (double)pr[t][p].params / N;
            acc0 += res[t][0].acc / N;
            params0 += (double)res[t][0].params / N;
        }
        printf("%s{\"tau\": %.4g, \"acc\": %.4f, \"params\": %.0f, \"acc_lost\": %.4f, \"params_saved\": %.4f}",
               p ? ", " : "", taus[p], acc, params, acc0 - acc, 1.0 - params / params0);
    }
    printf("], \"tasks\": [");
    for (int t = 0; t < N; t++) {
        printf("%s{\"name\": \"%s\"", t ? ", " : "", run.s.tasks[idx[t]].name);
        for (int k = 0; k < n_kinds; k++)
            printf(", \"%s\": {\"acc\": %.4f, \"params\": %zu}", compose_kind_name(kinds[k]), res[t][k].acc,
                   res[t][k].params);
        if (magnitude > 0)
            printf(", \"lora-magnitude\": {\"acc\": %.4f, \"nonzero_B\": %zu}", mag[t].acc, mag_nonzero[t]);
        printf(", \"prune\": [");
        for (int p = 0; p < n_tau; p++) {
            printf("%s{\"tau\": %.4g, \"acc\": %.4f, \"params\": %zu, ", p ? ", " : "", taus[p], pr[t][p].acc,
                   pr[t][p].params);
            print_ranks("ranks_before", pruned[t][p], run.base, true);
            printf(", ");
            print_ranks("ranks_after", pruned[t][p], run.base, false);
            printf("}");
        }
        printf("]}");
    }
    printf("]}\n");
    code = 0;
    goto done;
fail:
    fprintf(stderr, "clad-bench tied: %s\n", err.msg);
done:
    for (int t = 0; t < STREAM_MAX_TASKS; t++)
        for (int p = 0; p < MAX_TAUS; p++) adapter_destroy(pruned[t][p]);
    compose_run_close(&run);
    return code;
}
