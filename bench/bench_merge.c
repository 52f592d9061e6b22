/* clad-bench merge: trains (or loads) one LoRA adapter per task of a stream, merges them into one backbone
 * with task arithmetic, TIES, DRM-H or DRM-V, and reports each task's test accuracy with its own adapter
 * (acc_individual) and with the merged backbone plus its own head (acc_merged). For reference it also
 * reports the unchanged base with each task's own head (acc_base_heads): the floor a merge should beat. */
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/compose_util.h"
#include "core/merge.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: clad-bench merge --stream FILE --method drm-h|drm-v|ties|ta [--drop D] [--lambda L]\n"
               "                        [--rank R] [--tasks a,b,c] [--export-rank K] [--quick] [--cache DIR] [--json]\n"
               "  --drop         fraction of entries trimmed (ties per task, drm jointly; default 0.8, ta: unused)\n"
               "  --lambda       scale of the merged delta (default 1)\n"
               "  --rank         LoRA rank of the task adapters on every default target (default 8)\n"
               "  --export-rank  also re-express the merged backbone as a LoRA of this rank and evaluate it\n"
               "  --cache        keep the pretrained base and the trained adapters in DIR (or $CLAD_BENCH_CACHE)\n");
}

int bench_merge_main(int argc, char **argv)
{
    const char *path = NULL, *method_s = NULL, *tasks_s = NULL, *cache = getenv("CLAD_BENCH_CACHE");
    double drop = -1.0, lambda = 1.0;
    int rank = 8, export_rank = 0;
    bool quick = false, json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stream") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--method") && i + 1 < argc) method_s = argv[++i];
        else if (!strcmp(argv[i], "--drop") && i + 1 < argc) drop = atof(argv[++i]);
        else if (!strcmp(argv[i], "--lambda") && i + 1 < argc) lambda = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc) tasks_s = argv[++i];
        else if (!strcmp(argv[i], "--export-rank") && i + 1 < argc) export_rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc) cache = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    clad_err err = {0};
    merge_config mc;
    merge_method method = MERGE_DRM_H;
    if (!path || !method_s || merge_method_parse(&method, method_s, &err) || rank < 1 || export_rank < 0) {
        if (err.code) fprintf(stderr, "clad-bench merge: %s\n", err.msg);
        usage(stderr);
        return 2;
    }
    merge_config_default(&mc, method);
    if (drop >= 0.0) mc.drop = (float)drop;
    mc.lambda = (float)lambda;

    compose_run run;
    int code = 1, N = 0, idx[STREAM_MAX_TASKS];
    dataset test[STREAM_MAX_TASKS];
    adapter *ad[STREAM_MAX_TASKS] = {0};
    double acc_ind[STREAM_MAX_TASKS], acc_mrg[STREAM_MAX_TASKS], acc_exp[STREAM_MAX_TASKS], acc_bh[STREAM_MAX_TASKS];
    double train_s = 0;
    model *merged = NULL;
    memset(test, 0, sizeof test);
    if (compose_run_open(&run, path, quick, cache, &err)) goto fail;
    if (tasks_s) {
        if ((N = compose_task_list(&run, tasks_s, idx, STREAM_MAX_TASKS)) < 1) goto done;
    } else {
        N = run.s.n_tasks;
        for (int t = 0; t < N; t++) idx[t] = t;
    }
    if (N > MERGE_MAX_TASKS) {
        clad_err_set(&err, CLAD_EINVAL, "%d tasks (merge takes at most %d)", N, MERGE_MAX_TASKS);
        goto fail;
    }
    for (int t = 0; t < N; t++) {
        dataset train = {0};
        double sec = 0;
        if (compose_task_data(&run, idx[t], &train, &test[t], &err)) goto fail;
        ad[t] = compose_train(&run, idx[t], &train, COMPOSE_LORA, rank, NULL, &sec, &err);
        dataset_finish(&train);
        if (!ad[t]) goto fail;
        train_s += sec;
        acc_ind[t] = compose_accuracy(run.base, ad[t], &test[t]);
        fprintf(stderr, "clad-bench merge: %s individual %.4f\n", run.s.tasks[idx[t]].name, acc_ind[t]);
    }
    double t0 = compose_now();
    merged = merge_backbone(run.base, (const adapter *const *)ad, N, &mc, &err);
    double merge_s = compose_now() - t0;
    if (!merged) goto fail;
    for (int t = 0; t < N; t++) {
        adapter *head = merge_head_adapter(merged, ad[t], &err);
        if (!head) goto fail;
        acc_mrg[t] = compose_accuracy(merged, head, &test[t]);
        acc_bh[t] = compose_accuracy(run.base, head, &test[t]);
        adapter_destroy(head);
        acc_exp[t] = -1;
        if (export_rank) {
            adapter *ex = merge_to_lora(run.base, merged, export_rank, ad[t], &err);
            if (!ex) goto fail;
            acc_exp[t] = compose_accuracy(run.base, ex, &test[t]);
            adapter_destroy(ex);
        }
    }
    double mi = 0, mm = 0, me = 0, mb = 0;
    for (int t = 0; t < N; t++) {
        mi += acc_ind[t] / N;
        mb += acc_bh[t] / N;
        mm += acc_mrg[t] / N;
        me += acc_exp[t] / N;
    }
    printf("{\"stream\": \"%s\", \"quick\": %s, \"method\": \"%s\", \"drop\": %.3g, \"lambda\": %.3g, \"rank\": %d, "
           "\"acc_merged\": %.4f, \"acc_individual\": %.4f, \"acc_base_heads\": %.4f, ",
           run.s.name, quick ? "true" : "false", merge_method_name(method), (double)mc.drop, (double)mc.lambda, rank,
           mm, mi, mb);
    if (export_rank) printf("\"export_rank\": %d, \"acc_export\": %.4f, ", export_rank, me);
    printf("\"tasks\": [");
    for (int t = 0; t < N; t++) {
        printf("%s{\"name\": \"%s\", \"acc_individual\": %.4f, \"acc_merged\": %.4f, \"acc_base_head\": %.4f",
               t ? ", " : "", run.s.tasks[idx[t]].name, acc_ind[t], acc_mrg[t], acc_bh[t]);
        if (export_rank) printf(", \"acc_export\": %.4f", acc_exp[t]);
        printf("}");
    }
    printf("], \"merge_seconds\": %.3f, \"train_seconds\": %.1f, \"base_seconds\": %.1f}\n", merge_s, train_s,
           run.base_seconds);
    (void)json;  /* the output is always one JSON object */
    code = 0;
    goto done;
fail:
    fprintf(stderr, "clad-bench merge: %s\n", err.msg);
done:
    for (int t = 0; t < STREAM_MAX_TASKS; t++) {
        adapter_destroy(ad[t]);
        dataset_finish(&test[t]);
    }
    model_destroy(merged);
    compose_run_close(&run);
    return code;
}
