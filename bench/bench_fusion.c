/* clad-bench fusion: AdapterFusion over earlier task adapters against a fresh adapter, on one target task of
 * a stream. The earlier adapters (LoRA, rank --rank) are trained or loaded; the fusion layer and its own
 * head train on the target task; so does a fresh adapter, by default the one clad's continual-learning
 * path would make (core/cl.h: probe, rank plan against the earlier adapters' signatures, training, with
 * its reuse of an earlier task when the plan chooses one), or a plain LoRA of a fixed rank. Reports both
 * accuracies, their trainable parameters, and the average fusion weight of each earlier adapter (overall
 * and per block). */
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/compose_util.h"
#include "core/cl.h"
#include "core/fusion.h"
#include "io/model_io.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: clad-bench fusion --stream FILE --task NAME --with a,b,c [--rank R] [--fresh-rank auto|R]\n"
               "                         [--fusion-lr LR] [--quick] [--cache DIR] [--json]\n"
               "  --rank        LoRA rank of the earlier adapters (default 8)\n"
               "  --fresh-rank  the fresh adapter: auto = clad's rank plan against the earlier adapters\n"
               "                (default), or a plain LoRA of rank R on every default target\n"
               "  --fusion-lr   learning rate of the fusion layers (default: the stream's)\n");
}

int bench_fusion_main(int argc, char **argv)
{
    const char *path = NULL, *task_s = NULL, *with_s = NULL, *cache = getenv("CLAD_BENCH_CACHE");
    int rank = 8, fresh_rank = 0;  /* 0 = auto */
    double fusion_lr = 0;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stream") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--task") && i + 1 < argc) task_s = argv[++i];
        else if (!strcmp(argv[i], "--with") && i + 1 < argc) with_s = argv[++i];
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fresh-rank") && i + 1 < argc) {
            i++;
            fresh_rank = strcmp(argv[i], "auto") ? atoi(argv[i]) : 0;
            if (strcmp(argv[i], "auto") && fresh_rank < 1) fresh_rank = -1;
        }
        else if (!strcmp(argv[i], "--fusion-lr") && i + 1 < argc) fusion_lr = atof(argv[++i]);
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
    if (!path || !task_s || !with_s || rank < 1 || fresh_rank < 0 || fusion_lr < 0) {
        usage(stderr);
        return 2;
    }
    clad_err err = {0};
    compose_run run;
    int code = 1, S = 0, idx[FUSION_MAX_SOURCES];
    adapter *src[FUSION_MAX_SOURCES] = {0}, *fresh = NULL, *fu = NULL;
    dataset train = {0}, test = {0};
    double fresh_s = 0, fusion_s = 0, src_s = 0;
    signature sig[FUSION_MAX_SOURCES];
    cl_plan plan;
    bool planned = false;
    long fresh_trainable = 0;
    memset(sig, 0, sizeof sig);
    memset(&plan, 0, sizeof plan);
    if (compose_run_open(&run, path, quick, cache, &err)) goto fail;
    int target = stream_task_find(&run.s, task_s);
    if (target < 0) {
        clad_err_set(&err, CLAD_ENOTFOUND, "the stream has no task '%s'", task_s);
        goto fail;
    }
    if ((S = compose_task_list(&run, with_s, idx, FUSION_MAX_SOURCES)) < 1) goto done;
    const char *names[FUSION_MAX_SOURCES];
    for (int n = 0; n < S; n++) {
        dataset tr = {0};
        double sec = 0;
        names[n] = run.s.tasks[idx[n]].name;
        if (compose_task_data(&run, idx[n], &tr, NULL, &err)) goto fail;
        src[n] = compose_train(&run, idx[n], &tr, COMPOSE_LORA, rank, NULL, &sec, &err);
        dataset_finish(&tr);
        if (!src[n]) goto fail;
        src_s += sec;
    }
    if (compose_task_data(&run, target, &train, &test, &err)) goto fail;
    if (fresh_rank > 0) {
        fresh = compose_train(&run, target, &train, COMPOSE_LORA, fresh_rank, NULL, &fresh_s, &err);
        if (!fresh) goto fail;
        fresh_trainable = (long)adapter_param_count(fresh);
    } else {
        /* What clad would train for this task after the earlier ones: plan against their signatures. */
        cl_config cc;
        cl_config_default(&cc, run.base);
        cc.alpha = run.s.alpha;
        cc.probe.seed = run.s.seed;
        if (run.s.probe_samples) cc.probe.samples = run.s.probe_samples;
        if (run.s.probe_holdout) cc.probe.holdout = run.s.probe_holdout;
        if (run.s.probe_steps) cc.probe.steps = run.s.probe_steps;
        if (run.s.probe_batch) cc.probe.batch = run.s.probe_batch;
        if (run.s.probe_points) cc.probe.path_points = run.s.probe_points;
        if (run.s.probe_lr > 0) cc.probe.lr = (float)run.s.probe_lr;
        const signature *earlier[FUSION_MAX_SOURCES];
        for (int n = 0; n < S; n++) {
            /* The earlier adapters here were trained at a fixed rank, without a plan: their signatures hold
             * their changes only, not the probe's pull directions. */
            if (signature_compute(&sig[n], run.base, src[n], cc.signature_keep, &err)) goto fail;
            earlier[n] = &sig[n];
        }
        double t1 = compose_now();
        if (cl_plan_task(&plan, run.base, earlier, S, &train, train.n_classes, &cc, &err)) goto fail;
        planned = true;
        fresh = cl_train_task(run.base, &plan, plan.rank.reuse >= 0 ? &sig[plan.rank.reuse] : NULL, &train,
                              train.n_classes, &cc, &run.tc, run.s.seed + 991, NULL, NULL, NULL, &err);
        if (!fresh) goto fail;
        fresh_s = compose_now() - t1;
        fresh_trainable = plan.rank.new_params + (long)(fresh->params.t[fresh->head_w].numel +
                                                        fresh->params.t[fresh->head_b].numel);
    }
    double acc_fresh = compose_accuracy(run.base, fresh, &test);
    fu = adapter_fusion_create(run.base, (const adapter *const *)src, names, S, train.n_classes, &err);
    if (!fu) goto fail;
    adapter_init(fu, run.base, run.s.seed + 77);
    train_config tc = run.tc;
    if (fusion_lr > 0) tc.lr = (float)fusion_lr;
    double t0 = compose_now();
    if (train_run(run.base, fu, &train, &tc, NULL, NULL, NULL, &err)) goto fail;
    fusion_s = compose_now() - t0;
    double acc_fusion = compose_accuracy(run.base, fu, &test);
    double w[FUSION_MAX_SOURCES], ws[FUSION_MAX_SITES * FUSION_MAX_SOURCES];
    if (fusion_mean_weights(run.base, fu, &test, 64, w, ws, &err)) goto fail;
    size_t src_params = 0;
    for (int n = 0; n < S; n++) src_params += adapter_param_count(src[n]);
    printf("{\"stream\": \"%s\", \"quick\": %s, \"task\": \"%s\", \"rank\": %d, "
           "\"acc_fusion\": %.4f, \"acc_fresh\": %.4f, \"params_fusion\": %zu, \"params_fresh\": %ld, "
           "\"params_sources\": %zu, ",
           run.s.name, quick ? "true" : "false", task_s, rank, acc_fusion, acc_fresh, adapter_param_count(fu),
           fresh_trainable, src_params);
    if (planned) {
        json_t *rj = adapter_ranks_to_json(fresh, run.base);
        char *rt = json_dumps(rj, JSON_COMPACT | JSON_SORT_KEYS);
        printf("\"fresh\": \"auto\", \"fresh_ranks\": %s, \"fresh_reuses\": %s%s%s, \"params_fresh_stored\": %zu, ",
               rt ? rt : "{}", plan.rank.reuse >= 0 ? "\"" : "", plan.rank.reuse >= 0 ? names[plan.rank.reuse] : "null",
               plan.rank.reuse >= 0 ? "\"" : "", adapter_param_count(fresh));
        free(rt);
        json_decref(rj);
    } else {
        printf("\"fresh\": \"lora\", \"fresh_rank\": %d, ", fresh_rank);
    }
    printf("\"fusion_weights\": {");
    for (int n = 0; n < S; n++) printf("%s\"%s\": %.4f", n ? ", " : "", names[n], w[n]);
    printf("}, \"fusion_weights_per_block\": [");
    for (int site = 0; site < fu->fusion.n_sites; site++) {
        printf("%s{", site ? ", " : "");
        for (int n = 0; n < S; n++) printf("%s\"%s\": %.4f", n ? ", " : "", names[n], ws[(size_t)site * S + n]);
        printf("}");
    }
    printf("], \"fusion_lr\": %.3g, \"train_seconds\": {\"sources\": %.1f, \"fresh\": %.1f, \"fusion\": %.1f}}\n",
           (double)tc.lr, src_s, fresh_s, fusion_s);
    code = 0;
    goto done;
fail:
    fprintf(stderr, "clad-bench fusion: %s\n", err.msg);
done:
    adapter_destroy(fu);
    adapter_destroy(fresh);
    if (planned) cl_plan_finish(&plan);
    for (int n = 0; n < FUSION_MAX_SOURCES; n++) signature_finish(&sig[n]);
    for (int n = 0; n < FUSION_MAX_SOURCES; n++) adapter_destroy(src[n]);
    dataset_finish(&train);
    dataset_finish(&test);
    compose_run_close(&run);
    return code;
}
