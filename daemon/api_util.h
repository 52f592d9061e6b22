/* Helpers shared by the API modules: query options, names, progress events of training jobs. */
#ifndef CLAD_DAEMON_API_UTIL_H
#define CLAD_DAEMON_API_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/train.h"
#include "daemon/api.h"

/* Query option parsers: absent leaves *out unchanged and returns 0; a bad value returns CLAD_EINVAL with
 * a message naming the parameter and its range. */
int query_int(const http_req *req, const char *name, long long lo, long long hi, long long *out, clad_err *err);
int query_float(const http_req *req, const char *name, double lo, double hi, double *out, clad_err *err);

/* Names of bases, tasks and aliases: 1..64 of [A-Za-z0-9._-], starting with a letter or digit. */
bool name_is_valid(const char *name);
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

/* Reads a request body or server-side file as a dataset (safetensors, IDX or CSV, sniffed). */
int body_to_dataset(dataset *d, const void *body, size_t len, bool labels_optional, clad_err *err);

/* The inputs of a prediction (labels false: a JSON body {"inputs": [[...], ...]} or a dataset file, labels
 * optional) or an evaluation (labels true: a dataset file with labels), checked to have dim features and at
 * most REQUEST_MAX_SAMPLES samples. d is initialised here. */
#define REQUEST_MAX_SAMPLES 1000000
int request_inputs(dataset *d, const http_req *req, bool labels, int dim, clad_err *err);

/* The base named by ?base=NAME, or the only base when there is exactly one. */
int query_base(cladd *app, const http_req *req, char *out, size_t size, clad_err *err);

/* A version as JSON; full adds lineage, hyperparameters, hashes, seed and job (daemon/api_tasks.c). */
json_t *version_json(const store_version *v, bool full);

/* Resolves ?version=N or ?alias=NAME (default: the `active` alias) of a task to a version number. */
int resolve_version(cladd *app, const http_req *req, const char *task, int64_t *version, clad_err *err);

#endif
