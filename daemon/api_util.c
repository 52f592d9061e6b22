/* Helpers shared by the API modules; see api_util.h. */
#include "daemon/api_util.h"

#include <stdint.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/sha256.h"
#include "io/dataset_io.h"

int query_int(const http_req *req, const char *name, long long lo, long long hi, long long *out, clad_err *err)
{
    const char *v = http_req_query(req, name);
    if (!v) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return clad_err_set(err, CLAD_EINVAL, "query parameter '%s' must be a whole number from %lld to %lld", name,
                            lo, hi);
    *out = x;
    return 0;
}

int query_float(const http_req *req, const char *name, double lo, double hi, double *out, clad_err *err)
{
    const char *v = http_req_query(req, name);
    if (!v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi)
        return clad_err_set(err, CLAD_EINVAL, "query parameter '%s' must be a number from %g to %g", name, lo, hi);
    *out = x;
    return 0;
}

bool require_name(http_req *req, const char *what, const char *name)
{
    if (name_is_valid(name)) return true;
    http_reply_error(req, CLAD_EINVAL, "%s name '%s' must be " NAME_RULE_TEXT, what, name ? name : "");
    return false;
}

bool train_reporter_step(void *ctx, const train_progress *p)
{
    train_reporter *r = ctx;
    if (job_should_stop(r->j)) return false;
    if (p->step % r->every == 0 || p->step == p->steps || p->step == 1) {
        char status[160];
        snprintf(status, sizeof status, "%s: epoch %d/%d step %ld/%ld loss %.3f", r->what, p->epoch, p->epochs,
                 p->step, p->steps, (double)p->loss);
        json_t *ev = json_pack("{s:s,s:i,s:i,s:I,s:I,s:f,s:f,s:f,s:s}", "event", "step", "epoch", p->epoch,
                               "epochs", p->epochs, "step", (json_int_t)p->step, "steps", (json_int_t)p->steps,
                               "loss", (double)p->loss, "lr", (double)p->lr, "seconds", seconds_us(p->seconds), "status", status);
        /* done/total are what every client's progress bar reads (docs/API.md, Streams). */
        json_object_set_new(ev, "done", json_integer(p->step));
        json_object_set_new(ev, "total", json_integer(p->steps));
        job_post(r->j, ev);
    }
    return true;
}

bool job_stop_hook(void *ctx)
{
    return job_should_stop(ctx);
}

int job_check_stop(job *j, const char *phase, clad_err *err)
{
    return job_should_stop(j) ? clad_err_set(err, CLAD_ECANCELLED, "cancelled during %s", phase) : 0;
}

/* Samples per slice: one evaluation batch, a fraction of a second even for vit-tiny on a busy core. */
#define EVAL_SLICE 256

int job_evaluate(job *j, const model *m, const adapter *a, const dataset *d, eval_result *res, clad_err *err)
{
    double correct = 0.0, loss = 0.0;
    for (int s = 0; s < d->n; s += EVAL_SLICE) {
        int rc = job_check_stop(j, "evaluation", err);
        if (rc) return rc;
        dataset slice = *d; /* a view: shares x and y, never finished */
        slice.n = d->n - s < EVAL_SLICE ? d->n - s : EVAL_SLICE;
        slice.x = d->x + (size_t)s * (size_t)d->dim;
        slice.y = d->y + s;
        eval_result r;
        if ((rc = model_evaluate(m, a, &slice, EVAL_SLICE, &r, err))) return rc;
        correct += (double)r.accuracy * r.n;
        loss += (double)r.loss * r.n;
    }
    res->n = d->n;
    res->accuracy = d->n ? (float)(round(correct) / d->n) : 0.0f;
    res->loss = d->n ? (float)(loss / d->n) : 0.0f;
    return 0;
}

int body_to_dataset(dataset *d, const void *body, size_t len, bool labels_optional, clad_err *err)
{
    if (!len) return clad_err_set(err, CLAD_EINVAL, "the request has no data (send a safetensors, IDX or CSV body)");
    return dataset_parse_any(d, body, len, labels_optional, err);
}

int body_to_inputs(dataset *d, const void *body, size_t len, int dim, clad_err *err)
{
    int rc = body_to_dataset(d, body, len, true, err);
    if (rc || d->dim != dim + 1) return rc;
    dataset labelled = {0};
    clad_err ignored = {0};
    if (body_to_dataset(&labelled, body, len, false, &ignored) == 0 && labelled.dim == dim) {
        dataset_finish(d);
        *d = labelled;
        return 0;
    }
    dataset_finish(&labelled);
    if (d->rank != 1) return 0;
    /* A first column that is no valid label (-1 for "unknown", say) is still the label column: predict
     * ignores labels whatever they are. */
    dataset inputs = {0};
    if ((rc = dataset_init(&inputs, d->n, 1, (int[]){dim}, err))) return rc;
    for (int i = 0; i < d->n; i++)
        memcpy(inputs.x + (size_t)i * dim, d->x + (size_t)i * (dim + 1) + 1, (size_t)dim * sizeof *inputs.x);
    dataset_finish(d);
    *d = inputs;
    return 0;
}

static void shape_text(char *buf, size_t size, int rank, const int *shape, int values)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && n < size; i++) n += (size_t)snprintf(buf + n, size - n, "%s%d", i ? ", " : "", shape[i]);
    if (n < size) snprintf(buf + n, size - n, "] (%d values)", values);
}

int inputs_check(const dataset *d, const model_config *cfg, clad_err *err)
{
    int dim = model_config_input_dim(cfg);
    bool image = cfg->kind == MODEL_VIT, finite = image && cfg->inputs_finite;
    if (d->dim != dim) {
        char have[96], want[96];
        shape_text(have, sizeof have, d->rank > 0 ? d->rank : 1, d->rank > 0 ? d->shape : &d->dim, d->dim);
        if (image) shape_text(want, sizeof want, 3, (int[]){cfg->channels, cfg->height, cfg->width}, dim);
        else shape_text(want, sizeof want, 1, &dim, dim);
        return clad_err_set(err, CLAD_EINVAL, "samples have shape %s but the model takes %s%s", have, want,
                            finite ? ", channels first, normalised as the base expects"
                            : image ? ", channels first, pixels in [0, 1]" : "");
    }
    if (!image) return 0;
    for (size_t i = 0; i < (size_t)d->n * (size_t)d->dim; i++) {
        float v = d->x[i];
        if (finite && !isfinite(v))
            return clad_err_set(err, CLAD_EINVAL, "sample %zu value %zu is %g: inputs must be finite numbers",
                                i / (size_t)d->dim, i % (size_t)d->dim, (double)v);
        if (!finite && !(v >= 0.0f && v <= 1.0f))
            return clad_err_set(err, CLAD_EINVAL, "sample %zu value %zu is %g: image inputs are pixels in [0, 1]%s",
                                i / (size_t)d->dim, i % (size_t)d->dim, (double)v,
                                v > 1.0f && v <= 255.0f ? " (divide 0..255 pixels by 255)" : "");
    }
    return 0;
}

/* Reads {"inputs": [[...], ...]} into a dataset without labels. */
static int json_inputs(dataset *d, const char *body, size_t len, int dim, clad_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return clad_err_set(err, CLAD_EINVAL, "malformed JSON: %s (line %d column %d)", je.text, je.line, je.column);
    json_t *in = json_object_get(root, "inputs");
    int rc = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
        if (strcmp(key, "inputs")) {
            rc = clad_err_set(err, CLAD_EINVAL, "unknown key '%s' (known: inputs)", key);
            goto done;
        }
    if (!json_is_array(in) || !json_array_size(in) || json_array_size(in) > REQUEST_MAX_SAMPLES) {
        rc = clad_err_set(err, CLAD_EINVAL, "'inputs' must be an array of 1 to %d rows", REQUEST_MAX_SAMPLES);
        goto done;
    }
    int n = (int)json_array_size(in);
    if ((rc = dataset_init(d, n, 1, (int[]){dim}, err))) goto done;
    for (int i = 0; i < n; i++) {
        json_t *row = json_array_get(in, (size_t)i);
        if (!json_is_array(row) || (int)json_array_size(row) != dim) {
            rc = clad_err_set(err, CLAD_EINVAL, "input %d must be an array of %d numbers", i, dim);
            goto done;
        }
        for (int k = 0; k < dim; k++) {
            json_t *v = json_array_get(row, (size_t)k);
            if (!json_is_number(v)) {
                rc = clad_err_set(err, CLAD_EINVAL, "input %d value %d is not a number", i, k);
                goto done;
            }
            d->x[(size_t)i * dim + k] = (float)json_number_value(v);
        }
    }
done:
    json_decref(root);
    return rc;
}

bool request_is_json(const http_req *req)
{
    char mt[64];
    http_req_media_type(req, mt, sizeof mt);
    return !strcmp(mt, "application/json") || (!mt[0] && req->body_len && req->body[0] == '{');
}

int request_json_size_check(const http_req *req, bool labels, clad_err *err)
{
    if (labels || req->body_len <= REQUEST_JSON_MAX || !request_is_json(req)) return 0;
    return clad_err_set(err, CLAD_ETOOLARGE, "a JSON body of %zu bytes is larger than the limit of %u for inputs; "
                        "send a dataset file (safetensors, IDX, CSV) instead", req->body_len, REQUEST_JSON_MAX);
}

int request_inputs(dataset *d, const http_req *req, bool labels, const model_config *cfg, clad_err *err)
{
    int rc, dim = model_config_input_dim(cfg);
    if (labels && request_is_json(req))
        return clad_err_set(err, CLAD_EINVAL, "evaluation needs labels, which JSON inputs do not carry: send a "
                            "dataset file (safetensors x and y, IDX or CSV with the label first)");
    if (labels) rc = body_to_dataset(d, req->body, req->body_len, false, err);
    else if (request_is_json(req)) rc = json_inputs(d, req->body, req->body_len, dim, err);
    else rc = body_to_inputs(d, req->body, req->body_len, dim, err);
    if (!rc && d->n > REQUEST_MAX_SAMPLES)
        rc = clad_err_set(err, CLAD_ETOOLARGE, "%d samples in one request (limit %d)", d->n, REQUEST_MAX_SAMPLES);
    if (!rc) rc = inputs_check(d, cfg, err);
    if (rc) dataset_finish(d);
    return rc;
}

int query_base(cladd *app, const http_req *req, char *out, size_t size, clad_err *err)
{
    const char *b = http_req_query(req, "base");
    if (b) {
        snprintf(out, size, "%s", b);
        return 0;
    }
    store_base *bases = NULL;
    size_t n = 0;
    int rc = store_bases_list(app->st, &bases, &n, err);
    if (!rc && n != 1)
        rc = clad_err_set(err, n ? CLAD_EINVAL : CLAD_ENOTFOUND, n ? "there are %zu bases; say which with ?base=NAME"
                          : "there is no base model yet; import or train one first (POST /v1/bases/NAME)", n);
    if (!rc) snprintf(out, size, "%s", bases[0].name);
    store_bases_free(bases, n);
    return rc;
}

int resolve_version(cladd *app, const http_req *req, const char *task, int64_t *version, clad_err *err)
{
    long long v = 0;
    int rc = query_int(req, "version", 1, INT64_MAX, &v, err);
    if (rc) return rc;
    const char *alias = http_req_query(req, "alias");
    if (v && alias) return clad_err_set(err, CLAD_EINVAL, "give either 'version' or 'alias', not both");
    if (v) {
        *version = v;
        return 0;
    }
    if (alias && !name_is_valid(alias)) return clad_err_set(err, CLAD_EINVAL, "alias name '%s' is not valid", alias);
    rc = store_alias_get(app->st, task, alias ? alias : "active", version, err);
    if (rc == CLAD_ENOTFOUND && !alias) {
        clad_err_clear(err);
        store_task *t = NULL;
        rc = store_task_get(app->st, task, &t, err);
        store_task_free(t);
        if (!rc) rc = clad_err_set(err, CLAD_ENOTFOUND, "task '%s' has no version yet", task);
    }
    return rc;
}

double seconds_us(double s)
{
    return round(s * 1e6) / 1e6;
}
