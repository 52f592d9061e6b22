/* Minibatch training, evaluation and prediction.
 *
 * train_run trains either an adapter on a frozen base (a != NULL: only the adapter's LoRA factors and head
 * change; the base stays bit-identical) or the whole base model (a == NULL: how a base is made from a
 * reference task). Same seed, data and OPENBLAS_NUM_THREADS=1 give bit-identical weights.
 */
#ifndef CLAD_CORE_TRAIN_H
#define CLAD_CORE_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dataset.h"
#include "core/model.h"

typedef struct train_config {
    int epochs;          /* passes over the data (1..1000) */
    int batch;           /* minibatch size (1..4096) */
    float lr;            /* peak learning rate */
    float min_lr_ratio;  /* cosine decays to lr * min_lr_ratio */
    float warmup_ratio;  /* fraction of all steps spent warming up linearly */
    float weight_decay;  /* AdamW decoupled decay on matrices */
    float clip;          /* global gradient-norm clip; 0 = off */
    float beta1, beta2, eps;
    uint64_t seed;       /* shuffling (and nothing else: initialisation is the caller's) */
    /* Optional hooks for methods that edit an adapter while it trains (core/prune.h), NULL = none; only
     * called when training an adapter. epoch_hook runs before each epoch's first step (epoch is 1-based);
     * a non-zero return stops training with that code. step_hook runs after every optimizer step. */
    int (*epoch_hook)(void *ctx, adapter *a, int epoch, int epochs, clad_err *err);
    void (*step_hook)(void *ctx, adapter *a);
    void *hook_ctx;
    /* A window of the run's steps, for training in phases that change the adapter between them
     * (core/cl.c): only steps [step_begin, step_end) run (0-based; step_end 0 = to the last), with the
     * learning rate and the shuffled order they have in the whole run; the optimizer starts fresh. */
    long step_begin, step_end;
} train_config;

/* Defaults: 1 epoch, batch 64, lr 1e-3, min ratio 0.1, warm-up 5%, decay 0.01, clip 1, Adam (0.9, 0.999, 1e-8). */
void train_config_default(train_config *c);
/* Checks ranges and finiteness, naming the bad field. */
int train_config_validate(const train_config *c, clad_err *err);

/* Seconds on the monotonic clock: the one timer of train_run, the probe and the pipeline's phases. */
double train_clock_seconds(void);

typedef struct train_progress {
    int epoch, epochs;   /* 1-based epoch */
    long step, steps;    /* 1-based global step and the total */
    float loss;          /* this step's mean loss */
    float lr;
    double seconds;      /* since the start */
} train_progress;

/* Called after every step; return false to cancel (train_run then returns CLAD_ECANCELLED). */
typedef bool (*train_step_fn)(void *ctx, const train_progress *p);

/* Steps train_run makes over n samples under c (every epoch, whatever the window). */
long train_total_steps(const train_config *c, int n);

typedef struct train_result {
    long steps;          /* steps run (those of the window) */
    float final_loss;    /* mean loss over the last epoch */
    double seconds;
    long samples;        /* samples processed */
} train_result;

/* Checks that the dataset fits the model (input size, image shape, labels < classes of the head). */
int train_check_data(const model *m, const adapter *a, const dataset *d, bool need_labels, clad_err *err);

int train_run(model *m, adapter *a, const dataset *d, const train_config *cfg, train_step_fn on_step,
              void *ctx, train_result *res, clad_err *err);

typedef struct eval_result {
    int n;
    float accuracy;      /* fraction in [0, 1] */
    float loss;          /* mean cross-entropy */
} eval_result;

int model_evaluate(const model *m, const adapter *a, const dataset *d, int batch, eval_result *res,
                   clad_err *err);
/* The same with a caller's workspace (batches of its max_batch; no allocation). */
int model_evaluate_ws(model_ws *ws, const model *m, const adapter *a, const dataset *d, eval_result *res,
                      clad_err *err);
/* probs (n, K) (may be NULL) and labels (n) (may be NULL) for inputs x (n, input_dim). Allocates a
 * workspace per call; servers should keep one per thread and use model_predict_ws. */
int model_predict(const model *m, const adapter *a, const float *x, int n, int batch, float *probs,
                  int *labels, clad_err *err);
/* The same with a caller's workspace (no allocation); batches of at most the workspace's max_batch. */
int model_predict_ws(model_ws *ws, const model *m, const adapter *a, const float *x, int n, float *probs,
                     int *labels, clad_err *err);

/* OpenBLAS's thread count for every matrix product of this process. Results are bit-identical only for
 * a fixed count; servers running several computations at once on their own threads want 1. */
void blas_set_threads(int n);
int blas_threads(void);

#endif
