/* Routes as a table, checked once in the dispatcher.
 *
 * Every API module exports a table of routes ending with ROUTE_END:
 *
 *     const route api_jobs_routes[] = {
 *         {"GET", "/v1/jobs{?state,lane,limit}", ROUTE_READ, jobs_list, NULL, "list jobs"},
 *         {"GET", "/v1/jobs/{id}{?follow}", ROUTE_READ, jobs_get, NULL, "one job; ?follow=1 streams it"},
 *         {"DELETE", "/v1/jobs/{id}", ROUTE_WRITE, jobs_cancel, NULL, "cancel a job"},
 *         ROUTE_END,
 *     };
 *
 * and cladd adds each table with router_add. The dispatcher then does, for every request and in this
 * order, what no handler repeats:
 *   - unknown path: 404 not_found; known path, other method: 405 method_not_allowed with an Allow header;
 *   - ROUTE_WRITE: only root, cladd's own uid or members of the write group (primary or supplementary),
 *     else 403 denied, reported to the audit hook;
 *   - a query parameter the pattern does not list: 400 invalid_input naming it and the known ones;
 *   - a body on a route that takes none, or of a media type the route does not accept: 415;
 *   - ROUTE_JSON: the body (if any) must be a JSON object of at most the JSON limit; it is parsed into
 *     req->json ({} when the body is empty); malformed JSON is 400 invalid_input naming line and column.
 * For requests with a body, all checks except the JSON parse happen when the headers arrive, before the
 * body is read. Handlers find path parameters with http_req_param(req, "id").
 *
 * A pattern is literal segments and {name} segments, each {name} matching one non-empty segment
 * (percent-decoded; a decoded '/' is rejected). When several patterns match, the one with more literal
 * segments wins ("/v1/tasks/stats" over "/v1/tasks/{name}"). A pattern may end with the query parameters
 * the route accepts, as in RFC 6570: "/v1/jobs{?state,lane,limit}"; without that part it takes none.
 * The router keeps its own copy of each route whose .pattern is the path alone ("/v1/jobs"): that is what
 * router_get and req->route show (logs, metrics).
 */
#ifndef CLAD_DAEMON_ROUTER_H
#define CLAD_DAEMON_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/error.h"
#include "daemon/http.h"

enum {
    ROUTE_READ = 0,       /* any peer that can open the socket */
    ROUTE_WRITE = 1 << 0, /* changes state: root, cladd's uid, or write_group */
    ROUTE_JSON = 1 << 1,  /* the body, if any, is a JSON object: parsed into req->json */
};

/* Runs on the loop thread and owns req until it finishes it (see http.h). */
typedef void (*route_handler)(http_req *req);

typedef struct route {
    const char *method;   /* "GET", "POST", "PUT", "DELETE" */
    const char *pattern;  /* "/v1/jobs/{id}", optionally with the accepted query: "/v1/jobs/{id}{?follow}" */
    unsigned flags;       /* ROUTE_READ or ROUTE_WRITE, plus ROUTE_JSON */
    route_handler handler;
    /* Accepted body media types, comma-separated ("text/csv,application/octet-stream"). NULL means
     * "application/json" for ROUTE_JSON routes and no body at all otherwise. A body without a
     * Content-Type header is accepted (the handler may sniff it). */
    const char *accept;
    const char *summary;  /* one line, for logs and listings */
} route;

#define ROUTE_END {NULL, NULL, 0, NULL, NULL, NULL}

#define ROUTER_MAX_ROUTES 256
#define ROUTER_DEFAULT_JSON_LIMIT (1u << 20) /* parsed on the loop: small enough to take milliseconds */

typedef struct router router;

/* Called for each denied request, with a reason for the audit log ("uid 1000 is not root, cladd's uid,
 * or in group clad"). The store records it; by default the router logs a warning. */
typedef void (*router_audit_fn)(const http_req *req, const char *reason, void *data);

router *router_create(void);
void router_destroy(router *rt);

/* Adds every route of a table ending with ROUTE_END. CLAD_EINVAL for a malformed pattern or method, or a
 * (method, pattern) already present; CLAD_ETOOLARGE past ROUTER_MAX_ROUTES. The table must outlive the
 * router (tables are static const). */
int router_add(router *rt, const route *table, clad_err *err);

size_t router_count(const router *rt);
/* Route by index (req->route_index), NULL when out of range; its pattern is the path alone. */
const route *router_get(const router *rt, size_t index);
/* The query parameters a route accepts, comma-separated ("" for none; NULL when out of range). */
const char *router_get_query(const router *rt, size_t index);

/* The write group by name ("" or NULL: none). Resolved now; an unknown group is logged and grants
 * nothing. Call again on reload. */
void router_set_write_group(router *rt, const char *group);
void router_set_audit(router *rt, router_audit_fn fn, void *data);
/* Largest JSON body parsed on the loop thread (default ROUTER_DEFAULT_JSON_LIMIT); larger: 413. */
void router_set_json_limit(router *rt, size_t bytes);

/* May this peer use ROUTE_WRITE routes? On false, reason (if non-NULL) says why. */
bool router_peer_may_write(const router *rt, const http_peer *peer, char *reason, size_t reason_size);

/* Result of matching a method and path, for tests and for the dispatcher. */
typedef enum { ROUTER_FOUND, ROUTER_NO_PATH, ROUTER_NO_METHOD } router_result;

/* Finds the route for method and path. On ROUTER_FOUND *index is set and, if req is non-NULL, its
 * path parameters are filled. On ROUTER_NO_METHOD allow receives the allowed methods ("GET, DELETE").
 * CLAD_EINVAL is returned instead (via a negative value) for a parameter that does not decode. */
int router_match(const router *rt, const char *method, const char *path, http_req *req, size_t *index,
                 char *allow, size_t allow_size);

/* The two server callbacks (see server.h): checks at header time and dispatch when complete. */
bool router_on_head(router *rt, http_req *req);
void router_dispatch(router *rt, http_req *req);

#endif
