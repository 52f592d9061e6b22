/* clad-bench fusion: AdapterFusion over earlier task adapters against a fresh adapter, on one target task of
 * a stream. The earlier adapters (LoRA, rank --rank) are trained or loaded; the fusion layer and its own
 * head train on the target task; so does a fresh LoRA adapter. Reports both accuracies, their trainable
 * parameters, and the average fusion weight of each earlier adapter (overall and per block). */
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/compose_util.h"
#include "core/fusion.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: clad-bench fusion --stream FILE --task NAME --with a,b,c [--rank R] [--fresh-rank R]\n"
               "                         [--fusion-lr LR] [--quick] [--cache DIR] [--json]\n"
               "  --rank        LoRA rank of the earlier adapters (default 8)\n"
               "  --fresh-rank  rank of the fresh adapter for the target task (default: --rank)\n"
               "  --fusion-lr   learning rate of the fusion layers (default: the stream's)\n");
}

int bench_fusion_main(int argc, char **argv)
{
    const char *path = NULL, *task_s = NULL, *with_s = NULL, *cache = getenv("CLAD_BENCH_CACHE");
    int rank = 8, fresh_rank = 0;
    double fusion_lr = 0;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stream") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--task") && i + 1 < argc) task_s = argv[++i];
        else if (!strcmp(argv[i], "--with") && i + 1 < argc) with_s = argv[++i];
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fresh-rank") && i + 1 < argc) fresh_rank = atoi(argv[++i]);
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
    if (!fresh_rank) fresh_rank = rank;
    clad_err err = {0};
    compose_run run;
    int code = 1, S = 0, idx[FUSION_MAX_SOURCES];
    adapter *src[FUSION_MAX_SOURCES] = {0}, *fresh = NULL, *fu = NULL;
    dataset train = {0}, test = {0};
    double fresh_s = 0, fusion_s = 0, src_s = 0;
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
    fresh = compose_train(&run, target, &train, COMPOSE_LORA, fresh_rank, NULL, &fresh_s, &err);
    if (!fresh) goto fail;
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
    printf("{\"stream\": \"%s\", \"quick\": %s, \"task\": \"%s\", \"rank\": %d, \"fresh_rank\": %d, "
           "\"acc_fusion\": %.4f, \"acc_fresh\": %.4f, \"params_fusion\": %zu, \"params_fresh\": %zu, "
           "\"params_sources\": %zu, \"fusion_weights\": {",
           run.s.name, quick ? "true" : "false", task_s, rank, fresh_rank, acc_fusion, acc_fresh,
           adapter_param_count(fu), adapter_param_count(fresh), src_params);
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
    for (int n = 0; n < FUSION_MAX_SOURCES; n++) adapter_destroy(src[n]);
    dataset_finish(&train);
    dataset_finish(&test);
    compose_run_close(&run);
    return code;
}
