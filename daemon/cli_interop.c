/* clad export / clad import: PEFT LoRA directories and timm / Hugging Face ViT checkpoints, through the
 * daemon's routes in daemon/api_interop.c (see docs/API.md).
 *
 *   clad export adapter TASK[@V|@A] [--out DIR]      GET .../versions/V/export, the tar unpacked into DIR
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
    task_ref r;
    if (!task_ref_parse(spec, &r)) return EXIT_USAGE;
    const char *ver = r.version[0] ? r.version : r.alias[0] ? r.alias : "active", *task = r.task;
    cli_url u;
    url_init(&u, "/v1/tasks");
    url_seg(&u, task);
    url_seg(&u, "versions");
    url_seg(&u, ver);
    url_lit(&u, "/export");
    url_query(&u, "format", "peft");
    const char *path = url_path(&u);
    if (!path) return EXIT_USAGE;
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
    if (!cli_name_ok("base", name)) return EXIT_USAGE;
    char file[512];
    cli_url u;
    url_init(&u, "/v1/bases");
    url_seg(&u, name);
    url_lit(&u, "/export");
    const char *path = url_path(&u);
    if (!path) return EXIT_USAGE;
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
    if (!cli_name_ok("task", task) || (cli_opt(o, "base") && !cli_name_ok("base", cli_opt(o, "base")))) return EXIT_USAGE;
    size_t mlen = 0, clen = 0;
    char *weights = read_in(dir, PEFT_MODEL_FILE, &mlen, false), *cfg = weights ? read_in(dir, PEFT_CONFIG_FILE, &clen, false) : NULL;
    int rc = EXIT_USAGE;
    uint8_t *tar = NULL;
    size_t len = 0;
    clad_err err = {0};
    tar_file files[2] = {{PEFT_CONFIG_FILE, cfg, clen}, {PEFT_MODEL_FILE, weights, mlen}};
    if (cfg && tar_build("peft", files, 2, 0, &tar, &len, &err) == 0) {
        cli_url u;
        url_init(&u, "/v1/tasks");
        url_seg(&u, task);
        url_lit(&u, "/import");
        url_query(&u, "format", "peft");
        url_query(&u, "base", cli_opt(o, "base"));
        const char *path = url_path(&u);
        json_t *r = NULL;
        rc = path ? send_json(o, "POST", path, "application/x-tar", tar, len, &r) : EXIT_USAGE;
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
static int hf_config_query(const char *cfgtext, size_t len, const options *o, cli_url *u)
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
        url_query(u, "heads", v);
    }
    if (!cli_opt(o, "ln-eps") && json_is_number(eps)) {
        snprintf(v, sizeof v, "%.9g", json_number_value(eps));
        url_query(u, "ln_eps", v);
    }
    int rc = EXIT_OK;
    if (!cli_opt(o, "gelu") && act) {
        bool exact = !strcmp(act, "gelu"), tanh_form = !strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh");
        if (exact || tanh_form) url_query(u, "gelu", exact ? "erf" : "tanh");
        else fail_msg("config.json: hidden_act '%s' is not a GELU clad runs (gelu, gelu_new)", act), rc = EXIT_USAGE;
    }
    json_decref(j);
    return rc;
}

static int import_base(const options *o, const char *name, const char *src)
{
    if (!cli_name_ok("base", name)) return EXIT_USAGE;
    cli_url u;
    url_init(&u, "/v1/bases");
    url_seg(&u, name);
    url_lit(&u, "/import");
    url_query(&u, "layout", cli_opt(o, "layout"));
    url_query(&u, "heads", cli_opt(o, "heads"));
    url_query(&u, "ln_eps", cli_opt(o, "ln-eps"));
    url_query(&u, "gelu", cli_opt(o, "gelu"));
    struct stat st;
    char *body = NULL, *cfg = NULL;
    size_t len = 0, clen = 0;
    int rc;
    if (stat(src, &st) == 0 && S_ISDIR(st.st_mode)) {
        body = read_in(src, "model.safetensors", &len, false);
        cfg = body ? read_in(src, "config.json", &clen, true) : NULL;
        rc = !body ? EXIT_USAGE : cfg ? hf_config_query(cfg, clen, o, &u) : EXIT_OK;
    } else {
        rc = read_body(src, &body, &len);
    }
    const char *path = rc ? NULL : url_path(&u);
    json_t *r = NULL;
    if (!rc) rc = path ? send_json(o, "POST", path, "application/octet-stream", body, len, &r) : EXIT_USAGE;
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

/* `export adapter ...` and `import base ...`: the first argument picks the kind, and each kind takes only
 * its own options (the table's list is the union of both). */
static bool kind_is(const options *o, const char *kind, int n_args, const char *only_opts)
{
    if (o->n_args != n_args || strcmp(o->args[0], kind)) return false;
    for (int i = 0; i < o->n_opts; i++)
        if (!cli_listed(only_opts, o->opt_key[i])) {
            fail_msg("--%s is not an option of '%s'", o->opt_key[i], kind);
            return false;
        }
    return true;
}

static int cmd_export(const options *o)
{
    if (o->n_args && kind_is(o, "adapter", 2, "out")) return export_adapter(o, o->args[1]);
    if (o->n_args && kind_is(o, "base", 2, "out")) return export_base(o, o->args[1]);
    fail_msg("usage: clad export adapter TASK[@VERSION|@ALIAS] | base NAME [--out PATH]");
    return EXIT_USAGE;
}

static int cmd_import(const options *o)
{
    if (o->n_args && !strcmp(o->args[0], "adapter")) {
        if (kind_is(o, "adapter", 3, "base")) return import_adapter(o, o->args[1], o->args[2]);
    } else if (o->n_args && !strcmp(o->args[0], "base")) {
        if (kind_is(o, "base", 3, "layout,heads,ln-eps,gelu")) return import_base(o, o->args[1], o->args[2]);
    }
    fail_msg("usage: clad import adapter TASK DIR [--base B] | base NAME PATH [--layout L] [--heads N] [--ln-eps X] [--gelu G]");
    return EXIT_USAGE;
}

const cli_command cli_interop_commands[] = {
    {"export", "adapter TASK[@VERSION|@ALIAS] | base NAME", "a version as a PEFT LoRA directory, or a base as a timm checkpoint",
     "out",
     "export adapter: the version (default: the `active` alias) as DIR/adapter_model.safetensors and\n"
     "  DIR/adapter_config.json, for Hugging Face PEFT.\n"
     "export base: the base as one safetensors file in timm's VisionTransformer layout.\n"
     "  --out PATH          the directory (default TASK-vN-peft) or file (default NAME.safetensors)\n",
     cmd_export},
    {"import", "adapter TASK DIR | base NAME PATH", "a PEFT LoRA directory as a new version, or a ViT checkpoint as a base",
     "base,layout,heads,ln-eps,gelu",
     "import adapter: DIR holds adapter_config.json and adapter_model.safetensors (PEFT's save_pretrained).\n"
     "  --base B            the base of a new task (default: the config's base_model_name_or_path)\n"
     "import base: PATH is a timm or Hugging Face safetensors file, or a directory with model.safetensors\n"
     "  (and, for Hugging Face, config.json, which gives heads, eps and the GELU unless the options do).\n"
     "  --layout L          auto (default), timm or hf\n"
     "  --heads N           attention heads (default: the file's clad config, else dim / 64)\n"
     "  --ln-eps X          LayerNorm eps (default 1e-6 for timm, 1e-12 for Hugging Face)\n"
     "  --gelu G            erf (default, PyTorch's nn.GELU()) or tanh\n",
     cmd_import},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};
