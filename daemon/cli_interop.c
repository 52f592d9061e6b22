/* clad export / clad import: PEFT LoRA directories and timm / Hugging Face ViT checkpoints, through the
 * daemon's routes in daemon/api_interop.c (see docs/API.md).
 *
 *   clad export adapter TASK[@VERSION] [--out DIR]   GET .../versions/V/export, the tar unpacked into DIR
 *   clad export base NAME [--out FILE]               GET /v1/bases/NAME/export, streamed to FILE
 *   clad import adapter TASK DIR [--base B]          DIR's two PEFT files as a tar to POST .../import
 *   clad import base NAME PATH [--layout L] [--heads N] [--ln-eps X] [--gelu erf|tanh]
 *                                                    PATH a checkpoint file or a directory holding
 *                                                    model.safetensors (and, for HF, config.json, which
 *                                                    gives heads, eps and the GELU unless the options do)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/cli.h"
#include "io/peft.h"
#include "io/tar.h"

const char cli_interop_usage[] =
    "  export adapter TASK[@V]     a version as a PEFT LoRA directory [--out DIR]\n"
    "  export base NAME            a base as a timm-layout safetensors checkpoint [--out FILE]\n"
    "  import adapter TASK DIR     a PEFT LoRA directory as a new version [--base B]\n"
    "  import base NAME PATH       a timm or Hugging Face ViT checkpoint (file or directory) as a base\n"
    "                              [--layout auto|timm|hf] [--heads N] [--ln-eps X] [--gelu erf|tanh]\n";

/* Query values go into paths unencoded, so they are held to characters that need no encoding. */
static bool plain_value(const char *what, const char *v)
{
    if (v && strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+") == strlen(v) && *v) return true;
    fail_msg("%s '%s' may hold only letters, digits and . _ - +", what, v ? v : "");
    return false;
}

/* Appends key=value to the query of path (values already checked by plain_value). */
static void add_param(char *path, size_t size, const char *key, const char *value)
{
    size_t n = strlen(path);
    snprintf(path + n, size - n, "%s%s=%s", strchr(path, '?') ? "&" : "?", key, value);
}

static int write_whole(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fail_msg("cannot write %s: %s", path, strerror(errno));
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

/* ---- export ---- */

static int export_adapter(const options *o, const char *spec)
{
    char task[128], path[512];
    const char *at = strchr(spec, '@');
    snprintf(task, sizeof task, "%.*s", at ? (int)(at - spec) : (int)strlen(spec), spec);
    const char *ver = at ? at + 1 : "active";
    if (!plain_value("task", task) || !plain_value("version", ver)) return EXIT_USAGE;
    snprintf(path, sizeof path, "/v1/tasks/%s/versions/%s/export?format=peft", task, ver);
    client_request rq = {.method = "GET", .path = path, .timeout_ms = REQUEST_TIMEOUT_MS};
    client_response resp;
    int rc = request(o, &rq, &resp);
    if (rc) return rc;
    if (resp.status != 200) {
        rc = report_error(o, &resp);
        client_response_finish(&resp);
        return rc;
    }
    /* The archive's first entry is its directory, "TASK-vN-peft/": the default output directory. */
    char dir[256];
    const char *out = cli_opt(o, "out");
    if (!out) {
        snprintf(dir, sizeof dir, "%.100s", resp.body_len >= TAR_BLOCK ? resp.body : "");
        char *slash = strchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, "%s-peft", task);
        out = dir;
    }
    if (mkdir(out, 0755) && errno != EEXIST) {
        fail_msg("cannot create %s: %s", out, strerror(errno));
        client_response_finish(&resp);
        return EXIT_ERROR;
    }
    static const char *const names[2] = {PEFT_MODEL_FILE, PEFT_CONFIG_FILE};
    for (int k = 0; k < 2 && !rc; k++) {
        const uint8_t *data;
        size_t len;
        clad_err err = {0};
        char file[768];
        snprintf(file, sizeof file, "%s/%s", out, names[k]);
        if (tar_find(resp.body, resp.body_len, names[k], &data, &len, &err)) {
            fail_msg("the daemon's archive: %s", err.msg);
            rc = EXIT_PROTOCOL;
        } else {
            rc = write_whole(file, data, len);
        }
    }
    client_response_finish(&resp);
    if (!rc) printf("%s@%s exported to %s/ (%s, %s)\n", task, ver, out, PEFT_MODEL_FILE, PEFT_CONFIG_FILE);
    return rc;
}

/* A base checkpoint may pass CLIENT_MAX_BODY (ViT-B is 344 MB), so it is streamed to the file; the first
 * bytes are kept to report an error reply. */
typedef struct sink {
    FILE *f;
    char head[4096];
    size_t head_len;
    bool failed;
} sink;

static int sink_write(const char *data, size_t len, void *arg)
{
    sink *s = arg;
    size_t keep = len < sizeof s->head - 1 - s->head_len ? len : sizeof s->head - 1 - s->head_len;
    memcpy(s->head + s->head_len, data, keep);
    s->head_len += keep;
    if (fwrite(data, 1, len, s->f) != len) s->failed = true;
    return s->failed;
}

static int export_base(const options *o, const char *name)
{
    if (!plain_value("base", name)) return EXIT_USAGE;
    char path[256], file[512];
    snprintf(path, sizeof path, "/v1/bases/%s/export", name);
    const char *out = cli_opt(o, "out");
    if (!out) snprintf(file, sizeof file, "%s.safetensors", name), out = file;
    sink s = {.f = fopen(out, "wb")};
    if (!s.f) {
        fail_msg("cannot write %s: %s", out, strerror(errno));
        return EXIT_ERROR;
    }
    client_request rq = {.method = "GET", .path = path, .on_body = sink_write, .data = &s, .timeout_ms = REQUEST_TIMEOUT_MS};
    client_response resp;
    int rc = request(o, &rq, &resp);
    if (fclose(s.f) != 0) s.failed = true;
    if (!rc) {
        if (resp.status != 200) {
            client_response shown = resp;
            s.head[s.head_len] = '\0';
            shown.body = s.head;
            shown.body_len = s.head_len;
            rc = report_error(o, &shown);
        } else if (s.failed) {
            fail_msg("cannot write %s: %s", out, strerror(errno));
            rc = EXIT_ERROR;
        }
        client_response_finish(&resp);
    }
    if (!rc) printf("base %s exported to %s (timm layout)\n", name, out);
    else remove(out);
    return rc;
}

/* ---- import ---- */

static char *read_in(const char *dir, const char *file, size_t *len, bool quiet)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat st;
    if (quiet && stat(path, &st) != 0) return NULL;
    char *body = NULL;
    return read_body(path, &body, len) == 0 ? body : NULL;
}

static int import_adapter(const options *o, const char *task, const char *dir)
{
    if (!plain_value("task", task) || (cli_opt(o, "base") && !plain_value("base", cli_opt(o, "base")))) return EXIT_USAGE;
    size_t mlen = 0, clen = 0;
    char *weights = read_in(dir, PEFT_MODEL_FILE, &mlen, false), *cfg = weights ? read_in(dir, PEFT_CONFIG_FILE, &clen, false) : NULL;
    int rc = EXIT_USAGE;
    uint8_t *tar = NULL;
    size_t len = 0;
    clad_err err = {0};
    tar_file files[2] = {{PEFT_CONFIG_FILE, cfg, clen}, {PEFT_MODEL_FILE, weights, mlen}};
    if (cfg && tar_build("peft", files, 2, 0, &tar, &len, &err) == 0) {
        char path[512];
        snprintf(path, sizeof path, "/v1/tasks/%s/import?format=peft", task);
        if (cli_opt(o, "base")) add_param(path, sizeof path, "base", cli_opt(o, "base"));
        json_t *r = NULL;
        rc = send_json(o, "POST", path, "application/x-tar", tar, len, &r);
        if (!rc && r) {
            char *ranks = json_dumps(json_object_get(r, "ranks"), JSON_COMPACT);
            printf("%s@%lld imported (lora on base %s, %lld classes, ranks %s)\n", task, num(r, "version"), str(r, "base"),
                   num(r, "classes"), ranks ? ranks : "{}");
            free(ranks);
        }
        json_decref(r);
    } else if (cfg) {
        fail_msg("%s", err.msg);
    }
    free(tar);
    free(weights);
    free(cfg);
    return rc;
}

/* Options a Hugging Face config.json gives (the command line wins). */
static int hf_config_query(const char *cfgtext, size_t len, const options *o, char *q, size_t size)
{
    json_error_t je;
    json_t *j = json_loadb(cfgtext, len, 0, &je);
    if (!json_is_object(j)) {
        fail_msg("config.json: %s", j ? "not an object" : je.text);
        json_decref(j);
        return EXIT_USAGE;
    }
    char v[64];
    json_t *heads = json_object_get(j, "num_attention_heads"), *eps = json_object_get(j, "layer_norm_eps");
    const char *act = json_string_value(json_object_get(j, "hidden_act"));
    if (!cli_opt(o, "heads") && json_is_integer(heads)) {
        snprintf(v, sizeof v, "%lld", (long long)json_integer_value(heads));
        add_param(q, size, "heads", v);
    }
    if (!cli_opt(o, "ln-eps") && json_is_number(eps)) {
        snprintf(v, sizeof v, "%.9g", json_number_value(eps));
        add_param(q, size, "ln_eps", v);
    }
    int rc = EXIT_OK;
    if (!cli_opt(o, "gelu") && act) {
        bool exact = !strcmp(act, "gelu"), tanh_form = !strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh");
        if (exact || tanh_form) add_param(q, size, "gelu", exact ? "erf" : "tanh");
        else fail_msg("config.json: hidden_act '%s' is not a GELU clad runs (gelu, gelu_new)", act), rc = EXIT_USAGE;
    }
    json_decref(j);
    return rc;
}

static int import_base(const options *o, const char *name, const char *src)
{
    if (!plain_value("base", name)) return EXIT_USAGE;
    static const char *const opts[][2] = {{"layout", "layout"}, {"heads", "heads"}, {"ln-eps", "ln_eps"}, {"gelu", "gelu"}};
    char q[512];
    snprintf(q, sizeof q, "/v1/bases/%s/import", name);
    for (size_t k = 0; k < 4; k++) {
        const char *v = cli_opt(o, opts[k][0]);
        if (!v) continue;
        if (!plain_value(opts[k][0], v)) return EXIT_USAGE;
        add_param(q, sizeof q, opts[k][1], v);
    }
    struct stat st;
    char *body = NULL, *cfg = NULL;
    size_t len = 0, clen = 0;
    int rc;
    if (stat(src, &st) == 0 && S_ISDIR(st.st_mode)) {
        body = read_in(src, "model.safetensors", &len, false);
        cfg = body ? read_in(src, "config.json", &clen, true) : NULL;
        rc = !body ? EXIT_USAGE : cfg ? hf_config_query(cfg, clen, o, q, sizeof q) : EXIT_OK;
    } else {
        rc = read_body(src, &body, &len);
    }
    json_t *r = NULL;
    if (!rc) rc = send_json(o, "POST", q, "application/octet-stream", body, len, &r);
    if (!rc && r) {
        json_t *c = json_object_get(r, "config");
        printf("base %s imported: vit %lldx%lld patch %lld, dim %lld, depth %lld, heads %lld, %lld classes (sha256 %s)\n", name,
               num(c, "height"), num(c, "width"), num(c, "patch"), num(c, "dim"), num(c, "depth"), num(c, "heads"), num(c, "classes"),
               str(r, "sha256"));
    }
    json_decref(r);
    free(body);
    free(cfg);
    return rc;
}

int cli_interop_dispatch(const char *command, const options *o)
{
    bool exp = !strcmp(command, "export"), imp = !strcmp(command, "import");
    if (!exp && !imp) return -1;
    const char *what = o->n_args ? o->args[0] : "";
    if (exp && !strcmp(what, "adapter") && o->n_args == 2) return export_adapter(o, o->args[1]);
    if (exp && !strcmp(what, "base") && o->n_args == 2) return export_base(o, o->args[1]);
    if (imp && !strcmp(what, "adapter") && o->n_args == 3) return import_adapter(o, o->args[1], o->args[2]);
    if (imp && !strcmp(what, "base") && o->n_args == 3) return import_base(o, o->args[1], o->args[2]);
    fail_msg("usage:\n%s", cli_interop_usage);
    return EXIT_USAGE;
}
