/* Route table matching, access checks and body checks; see router.h. */
#include "daemon/router.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/log.h"

#define MAX_SEGMENTS 16

#define MAX_PATTERN 256

typedef struct compiled_route {
    route r;                           /* the table's route, with .pattern pointing at path below */
    char path[MAX_PATTERN];            /* the pattern without its {?query} part */
    char query[MAX_PATTERN];           /* "follow,limit"; "" when the route takes none */
    size_t n_seg;
    const char *seg[MAX_SEGMENTS];     /* literal text, or the parameter name for {name} */
    size_t seg_len[MAX_SEGMENTS];
    bool is_param[MAX_SEGMENTS];
    size_t n_literal;
} compiled_route;

struct router {
    compiled_route routes[ROUTER_MAX_ROUTES];
    size_t n;
    char write_group[64];
    bool write_gid_known;
    gid_t write_gid;
    router_audit_fn audit;
    void *audit_data;
    size_t json_limit;
};

static void default_audit(const http_req *req, const char *reason, void *data)
{
    log_warning("denied: %s %s from pid %ld uid %ld: %s", req->method_name, req->path, (long)req->peer->pid,
                (long)req->peer->uid, reason);
}

router *router_create(void)
{
    router *rt = calloc(1, sizeof *rt);
    if (!rt) abort();
    rt->audit = default_audit;
    rt->json_limit = ROUTER_DEFAULT_JSON_LIMIT;
    return rt;
}

void router_destroy(router *rt)
{
    free(rt);
}

static bool valid_method(const char *m)
{
    static const char *const known[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(m, known[i])) return true;
    return false;
}

static int compile(compiled_route *cr, const route *r, clad_err *err)
{
    memset(cr, 0, sizeof *cr);
    cr->r = *r;
    const char *p = r->pattern;
    if (!r->method || !valid_method(r->method))
        return clad_err_set(err, CLAD_EINVAL, "route %s: unknown method '%s'", p ? p : "?",
                            r->method ? r->method : "(null)");
    if (!p || p[0] != '/' || !r->handler)
        return clad_err_set(err, CLAD_EINVAL, "route %s %s: pattern must start with '/' and have a handler",
                            r->method, p ? p : "(null)");
    /* "/v1/jobs{?state,lane}": the query part (RFC 6570's form-style expansion) lists the parameters. */
    const char *q = strstr(p, "{?");
    size_t path_len = q ? (size_t)(q - p) : strlen(p);
    size_t qlen = q ? strlen(q + 2) : 0; /* with the closing '}' */
    bool bad_query = q && (qlen < 2 || q[1 + qlen] != '}' || strcspn(q + 2, "{}?/ ") != qlen - 1);
    if (path_len >= MAX_PATTERN || qlen >= MAX_PATTERN || bad_query)
        return clad_err_set(err, CLAD_EINVAL, "route %s %s: too long or a bad {?query} part", r->method, p);
    memcpy(cr->path, p, path_len);
    cr->path[path_len] = '\0';
    if (q) {
        memcpy(cr->query, q + 2, qlen - 1);
        cr->query[qlen - 1] = '\0';
    }
    cr->r.pattern = cr->path; /* cr stays where it is: segments point into cr->path */
    p = cr->path + 1;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || cr->n_seg == MAX_SEGMENTS)
            return clad_err_set(err, CLAD_EINVAL, "route %s %s: empty segment or more than %d segments",
                                r->method, r->pattern, MAX_SEGMENTS);
        bool param = p[0] == '{';
        if (param && (len < 3 || p[len - 1] != '}'))
            return clad_err_set(err, CLAD_EINVAL, "route %s %s: bad parameter segment", r->method, r->pattern);
        if (!param && (memchr(p, '{', len) || memchr(p, '}', len)))
            return clad_err_set(err, CLAD_EINVAL, "route %s %s: braces inside a literal segment", r->method,
                                r->pattern);
        cr->seg[cr->n_seg] = param ? p + 1 : p;
        cr->seg_len[cr->n_seg] = param ? len - 2 : len;
        cr->is_param[cr->n_seg] = param;
        if (!param) cr->n_literal++;
        cr->n_seg++;
        p += len;
        if (*p == '/') {
            p++;
            if (!*p)
                return clad_err_set(err, CLAD_EINVAL, "route %s %s: trailing '/'", r->method, r->pattern);
        }
    }
    size_t n_params = 0;
    for (size_t i = 0; i < cr->n_seg; i++) n_params += cr->is_param[i];
    if (n_params > HTTP_MAX_PARAMS)
        return clad_err_set(err, CLAD_EINVAL, "route %s %s: more than %d parameters", r->method, r->pattern,
                            HTTP_MAX_PARAMS);
    return 0;
}

int router_add(router *rt, const route *table, clad_err *err)
{
    for (const route *r = table; r->method || r->pattern; r++) {
        if (rt->n == ROUTER_MAX_ROUTES)
            return clad_err_set(err, CLAD_ETOOLARGE, "more than %d routes", ROUTER_MAX_ROUTES);
        compiled_route *cr = &rt->routes[rt->n]; /* compiled in place: its segments point into it */
        int rc = compile(cr, r, err);
        if (rc) return rc;
        for (size_t i = 0; i < rt->n; i++)
            if (!strcmp(rt->routes[i].r.method, r->method) && !strcmp(rt->routes[i].path, cr->path))
                return clad_err_set(err, CLAD_EINVAL, "route %s %s is defined twice", r->method, cr->path);
        rt->n++;
    }
    return 0;
}

size_t router_count(const router *rt)
{
    return rt->n;
}

const route *router_get(const router *rt, size_t index)
{
    return index < rt->n ? &rt->routes[index].r : NULL;
}

const char *router_get_query(const router *rt, size_t index)
{
    return index < rt->n ? rt->routes[index].query : NULL;
}

void router_set_write_group(router *rt, const char *group)
{
    snprintf(rt->write_group, sizeof rt->write_group, "%s", group ? group : "");
    rt->write_gid_known = false;
    if (!rt->write_group[0]) return;
    struct group gr, *res = NULL;
    char buf[4096];
    if (getgrnam_r(rt->write_group, &gr, buf, sizeof buf, &res) == 0 && res) {
        rt->write_gid = res->gr_gid;
        rt->write_gid_known = true;
    } else {
        log_warning("write_group '%s' is not a known group; only root and uid %ld may write", rt->write_group,
                    (long)geteuid());
    }
}

void router_set_audit(router *rt, router_audit_fn fn, void *data)
{
    rt->audit = fn ? fn : default_audit;
    rt->audit_data = fn ? data : NULL;
}

void router_set_json_limit(router *rt, size_t bytes)
{
    rt->json_limit = bytes;
}

/* Group membership from the group database, for kernels without SO_PEERGROUPS. */
static bool nss_member(uid_t uid, gid_t primary, gid_t gid)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) != 0 || !res) return false;
    gid_t groups[256];
    int n = 256;
    if (getgrouplist(res->pw_name, primary, groups, &n) < 0) return false;
    for (int i = 0; i < n; i++)
        if (groups[i] == gid) return true;
    return false;
}

bool router_peer_may_write(const router *rt, const http_peer *peer, char *reason, size_t reason_size)
{
    if (peer->uid == 0 || peer->uid == geteuid()) return true;
    if (rt->write_gid_known) {
        gid_t g = rt->write_gid;
        if (peer->gid == g) return true;
        if (peer->n_groups >= 0) {
            for (int i = 0; i < peer->n_groups; i++)
                if (peer->groups[i] == g) return true;
        } else if (nss_member(peer->uid, peer->gid, g)) {
            return true;
        }
    }
    if (reason) {
        if (rt->write_group[0])
            snprintf(reason, reason_size, "uid %ld is not root, cladd's uid %ld, or a member of group '%s'",
                     (long)peer->uid, (long)geteuid(), rt->write_group);
        else
            snprintf(reason, reason_size, "uid %ld is not root or cladd's uid %ld (no write_group is set)",
                     (long)peer->uid, (long)geteuid());
    }
    return false;
}

int router_match(const router *rt, const char *method, const char *path, http_req *req, size_t *index,
                 char *allow, size_t allow_size)
{
    /* Split the path once. */
    const char *seg[MAX_SEGMENTS];
    size_t seg_len[MAX_SEGMENTS];
    size_t n_seg = 0;
    if (path[0] != '/') return ROUTER_NO_PATH;
    const char *p = path + 1;
    if (*p) {
        for (;;) {
            const char *slash = strchr(p, '/');
            size_t len = slash ? (size_t)(slash - p) : strlen(p);
            if (len == 0 || n_seg == MAX_SEGMENTS) return ROUTER_NO_PATH; /* "//", trailing '/', too deep */
            seg[n_seg] = p;
            seg_len[n_seg] = len;
            n_seg++;
            if (!slash) break;
            p = slash + 1;
        }
    }

    const compiled_route *best = NULL;
    size_t best_i = 0;
    bool path_known = false;
    if (allow && allow_size) allow[0] = '\0';
    for (size_t i = 0; i < rt->n; i++) {
        const compiled_route *cr = &rt->routes[i];
        if (cr->n_seg != n_seg) continue;
        bool ok = true;
        for (size_t s = 0; s < n_seg && ok; s++)
            if (!cr->is_param[s]) ok = cr->seg_len[s] == seg_len[s] && !memcmp(cr->seg[s], seg[s], seg_len[s]);
        if (!ok) continue;
        path_known = true;
        if (!strcmp(cr->r.method, method)) {
            if (!best || cr->n_literal > best->n_literal) {
                best = cr;
                best_i = i;
            }
        } else if (allow && allow_size && !strstr(allow, cr->r.method)) {
            size_t used = strlen(allow);
            snprintf(allow + used, allow_size - used, "%s%s", used ? ", " : "", cr->r.method);
        }
    }
    if (!best) return path_known ? ROUTER_NO_METHOD : ROUTER_NO_PATH;
    *index = best_i;
    if (req) {
        req->n_params = 0;
        for (size_t s = 0; s < n_seg; s++) {
            if (!best->is_param[s]) continue;
            char *name = http_req_alloc(req, best->seg_len[s] + 1);
            char *value = http_req_alloc(req, seg_len[s] + 1);
            if (!name || !value) return CLAD_ENOMEM;
            memcpy(name, best->seg[s], best->seg_len[s]);
            name[best->seg_len[s]] = '\0';
            if (http_percent_decode(value, seg[s], seg_len[s], false) < 0 || strchr(value, '/') ||
                !http_utf8_valid(value))
                return CLAD_EINVAL;
            req->params[req->n_params++] = (http_param){name, value};
        }
    }
    return ROUTER_FOUND;
}

/* Is media (lower-case, no parameters) in the comma-separated list? */
static bool media_listed(const char *list, const char *media)
{
    size_t ml = strlen(media);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t n = strcspn(p, ", ");
        if (n == ml && !strncasecmp(p, media, n)) return true;
        p += n;
    }
    return false;
}

/* Is name in the comma-separated list (NULL: empty)? */
static bool name_listed(const char *list, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t n = strcspn(p, ", ");
        if (n == nl && !strncmp(p, name, n)) return true;
        p += n;
    }
    return false;
}

/* Routing and every check that does not need the body. Returns true if the request may proceed; false
 * after answering it. */
static bool route_request(router *rt, http_req *req, bool has_body)
{
    char allow[64];
    size_t index = 0;
    int m = router_match(rt, req->method_name, req->path, req, &index, allow, sizeof allow);
    if (m == ROUTER_NO_PATH) {
        http_reply_error(req, CLAD_ENOTFOUND, "no such API path: %s", req->path);
        return false;
    }
    if (m == ROUTER_NO_METHOD) {
        char hdr[96];
        snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
        http_reply_status_error(req, 405, "method_not_allowed", hdr, "%s does not allow %s; allowed: %s",
                                req->path, req->method_name, allow);
        return false;
    }
    if (m == CLAD_ENOMEM) {
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return false;
    }
    if (m < 0) {
        http_reply_error(req, CLAD_EINVAL, "a path parameter in %s is not valid percent-encoded UTF-8 (or holds '/')",
                         req->path);
        return false;
    }
    for (size_t i = 0; i < req->n_query; i++)
        if (!http_utf8_valid(req->query_params[i].name) || !http_utf8_valid(req->query_params[i].value)) {
            http_reply_error(req, CLAD_EINVAL, "query parameter %zu is not valid percent-encoded UTF-8", i + 1);
            return false;
        }
    const route *r = &rt->routes[index].r;
    const char *known = rt->routes[index].query;
    req->route = r;
    req->route_index = (int)index;

    if (r->flags & ROUTE_WRITE) {
        char reason[200];
        if (!router_peer_may_write(rt, req->peer, reason, sizeof reason)) {
            rt->audit(req, reason, rt->audit_data);
            http_reply_error(req, CLAD_EDENIED, "%s %s changes state and %s", req->method_name, r->pattern,
                             reason);
            return false;
        }
    }
    for (size_t i = 0; i < req->n_query; i++) {
        const char *name = req->query_params[i].name;
        if (name_listed(known, name)) continue;
        if (known[0])
            http_reply_error(req, CLAD_EINVAL, "unknown query parameter '%.64s' (known: %s)", name, known);
        else
            http_reply_error(req, CLAD_EINVAL, "unknown query parameter '%.64s' (%s %s takes none)", name,
                             req->method_name, r->pattern);
        return false;
    }
    /* ?follow is checked here, before a route submits its job: a bad value must not leave a job behind. */
    bool follow;
    clad_err ferr = {0};
    if (name_listed(known, "follow") && http_req_query_bool(req, "follow", &follow, &ferr)) {
        http_reply_err(req, &ferr);
        return false;
    }
    if (has_body) {
        const char *accept = r->accept ? r->accept : (r->flags & ROUTE_JSON) ? HTTP_JSON : NULL;
        char media[128];
        http_req_media_type(req, media, sizeof media);
        if (!accept) {
            http_reply_error(req, CLAD_EMEDIA, "%s %s takes no request body", req->method_name, r->pattern);
            return false;
        }
        if (media[0] && !media_listed(accept, media)) {
            http_reply_error(req, CLAD_EMEDIA, "%s %s accepts %s, not %s", req->method_name, r->pattern, accept,
                             media);
            return false;
        }
    }
    return true;
}

bool router_on_head(router *rt, http_req *req)
{
    return route_request(rt, req, true);
}

void router_dispatch(router *rt, http_req *req)
{
    if (!req->route && !route_request(rt, req, req->body_len > 0)) return;
    const route *r = req->route;
    if (r->flags & ROUTE_JSON) {
        if (req->body_len == 0) {
            req->json = json_object();
        } else {
            if (req->body_len > rt->json_limit) {
                http_reply_error(req, CLAD_ETOOLARGE, "JSON body of %zu bytes is larger than the limit of %zu",
                                 req->body_len, rt->json_limit);
                return;
            }
            json_error_t je;
            json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
            if (!j) {
                http_reply_error(req, CLAD_EINVAL, "request body is not valid JSON: %s (line %d, column %d)",
                                 je.text, je.line, je.column);
                return;
            }
            if (!json_is_object(j)) {
                json_decref(j);
                http_reply_error(req, CLAD_EINVAL, "request body must be a JSON object");
                return;
            }
            req->json = j;
        }
        if (!req->json) {
            http_reply_error(req, CLAD_ENOMEM, "out of memory");
            return;
        }
    }
    r->handler(req);
}
