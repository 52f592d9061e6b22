/* Helpers shared by the API modules: query options, names, progress events of training jobs. */
#ifndef CLAD_DAEMON_API_UTIL_H
#define CLAD_DAEMON_API_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/train.h"
#include "daemon/api.h"
#include "daemon/names.h"

/* Query option parsers: absent leaves *out unchanged and returns 0; a bad value returns CLAD_EINVAL with
 * a message naming the parameter and its range. */
int query_int(const http_req *req, const char *name, long long lo, long long hi, long long *out, clad_err *err);
int query_float(const http_req *req, const char *name, double lo, double hi, double *out, clad_err *err);
/* A measured duration in seconds rounded to the microsecond, so replies show 0.000922, not the clock
 * arithmetic's 0.000921500000004016. */
double seconds_us(double s);

/* Names of bases, tasks and aliases: name_is_valid in daemon/names.h. */
/* Answers 400 and returns false for an invalid name. */
bool require_name(http_req *req, const char *what, const char *name);

/* Progress of a training job: posts a JSON event every `every` steps (and on the last one) and keeps the
 * systemd STATUS line informative; cancels the training when the job is asked to stop. */
typedef struct train_reporter {
    job *j;
    const char *what;     /* "training rot15" */
    long every;
} train_reporter;
bool train_reporter_step(void *ctx, const train_progress *p);

/* Worker thread: job_should_stop for core's stop hooks (probe_config.stop), ctx being the job. */
bool job_stop_hook(void *ctx);
/* Worker thread: a job's stop check as an error: CLAD_ECANCELLED ("cancelled during <phase>") if the job
 * was asked to stop, else 0. */
int job_check_stop(job *j, const char *phase, clad_err *err);
/* Worker thread: model_evaluate in slices of a few batches, checking for a stop request between them, so
 * evaluating a large dataset never holds a cancel or shutdown for long. CLAD_ECANCELLED when stopped. */
int job_evaluate(job *j, const model *m, const adapter *a, const dataset *d, eval_result *res, clad_err *err);

/* Reads a request body or server-side file as a dataset (safetensors, IDX or CSV, sniffed). */
int body_to_dataset(dataset *d, const void *body, size_t len, bool labels_optional, clad_err *err);
/* Inputs to predict on: labels are optional and ignored. A CSV with a label column that no header names
 * has one column more than the model takes (dim); it is read again as labelled, as train and evaluate
 * read it. */
int body_to_inputs(dataset *d, const void *body, size_t len, int dim, clad_err *err);
/* Do the samples fit the model? CLAD_EINVAL naming both shapes ("[3, 32, 32] (3072 values)" against
 * "[1, 28, 28] (784 values)"), or, for image models, naming the first value outside the base's input
 * range: pixels in [0, 1], or any finite value for a base whose config says "input_range": "finite"
 * (imported timm/HF ViTs, which take normalised pixels). */
int inputs_check(const dataset *d, const model_config *cfg, clad_err *err);

/* The inputs of a prediction (labels false: a JSON body {"inputs": [[...], ...]} or a dataset file, labels
 * optional, see body_to_inputs) or an evaluation (labels true: a dataset file with labels), checked to fit
 * the model (inputs_check) and to have at most REQUEST_MAX_SAMPLES samples. d is initialised here. */
#define REQUEST_MAX_SAMPLES 1000000
int request_inputs(dataset *d, const http_req *req, bool labels, const model_config *cfg, clad_err *err);
/* A JSON body: declared so, or undeclared and starting with '{'. */
bool request_is_json(const http_req *req);
/* {"inputs": ...} bodies are parsed on a pool thread, but a parsed JSON number takes about ten times its
 * text, so the text is bounded before parsing (docs/API.md, Limits): CLAD_ETOOLARGE past REQUEST_JSON_MAX.
 * Loop thread, before queueing the work. */
#define REQUEST_JSON_MAX (64u << 20)
int request_json_size_check(const http_req *req, bool labels, clad_err *err);

/* The base named by ?base=NAME, or the only base when there is exactly one. */
int query_base(cladd *app, const http_req *req, char *out, size_t size, clad_err *err);

/* A version as JSON; full adds lineage, hyperparameters, hashes, seed and job (daemon/api_tasks.c). */
json_t *version_json(const store_version *v, bool full);

/* Resolves ?version=N or ?alias=NAME (default: the `active` alias) of a task to a version number. */
int resolve_version(cladd *app, const http_req *req, const char *task, int64_t *version, clad_err *err);

#endif
