/* clad-bench: benchmarks and experiment runners, one subcommand each. */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"

typedef struct {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *help;
} bench_command;

static const bench_command commands[] = {
    {"speed", bench_speed_main, "kernel and training throughput against the machine's sgemm peak"},
    {"serve", bench_serve_main, "the daemon over its socket: prediction latency, throughput, memory"},
    {"store", bench_store_main, "registry commit, rollback latency and size per version"},
    {"cl", bench_cl_main, "continual-learning stream: accuracy matrix, metrics, rank decisions"},
    {"export", bench_export_main, "write one task of a stream as a safetensors dataset"},
    {"merge", bench_merge_main, "merge a stream's task adapters (drm-h, drm-v, ties, ta) into one backbone"},
    {"fusion", bench_fusion_main, "AdapterFusion over earlier adapters against a fresh adapter"},
    {"tied", bench_tied_main, "Tied-LoRA (tl5, tl6) against LoRA at equal rank; rank pruning per tau"},
    {"soak", bench_soak_main, "the daemon under mixed load and faults: failed requests, memory, descriptors"},
    {"nodes", bench_nodes_main, "predictions per second with three nodes on one store against one node"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: clad-bench COMMAND [options] [--json]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "clad-bench: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
