/* An in-process HTTP server for the fuzz targets that drive daemon/ code: the real server, connection
 * and parser code (daemon/server.c, conn.c, http.c) and the real router (daemon/router.c) on a private
 * Unix socket, with a route table given by the target. fuzz_server_send writes a byte stream to a fresh
 * connection in pieces, runs the loop in between, reads whatever comes back and returns once the server
 * has closed the connection (or a bound on loop turns is reached). */
#ifndef CLAD_TESTS_FUZZ_HARNESS_SERVER_H
#define CLAD_TESTS_FUZZ_HARNESS_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/router.h"

/* Starts the server once (later calls do nothing). routes ends with ROUTE_END. */
void fuzz_server_start(const route *routes);
/* Sends data[0..len) on a new connection, cut into pieces whose sizes come from seed (0: one piece),
 * then half-closes and reads until the server closes. Returns the number of response bytes read. */
size_t fuzz_server_send(const uint8_t *data, size_t len, uint32_t seed);
/* The server's loop, for handlers that answer later. */
struct uv_loop_s *fuzz_server_loop(void);
/* Runs the loop until every connection is freed (every deferred reply sent); aborts if one is still there
 * after about a second, since the client side is closed by then. */
void fuzz_server_settle(void);

#endif
