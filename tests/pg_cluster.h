/* A throwaway PostgreSQL cluster for tests, shared by every test of one test-runner process.
 *
 * The first call of pg_cluster_start (from any test) runs initdb and pg_ctl from the newest
 * /usr/lib/postgresql/N/bin in a fresh temporary directory (/tmp/clad-pg-XXXXXX): unix socket in that
 * directory, no TCP (listen_addresses=''), fsync=off, trust authentication. Later calls, in the same test
 * or in later tests (each test runs in a forked child), find it running and return at once. The runner
 * process stops the server (pg_ctl stop -m immediate) and removes the directory when it exits, also
 * after failed tests; a runner killed outright leaves the directory behind (the name says what it is).
 *
 * initdb refuses to run as root: as root, initdb, pg_ctl and the server run as the `postgres` system
 * user (runuser) with the directory handed to it, and clients connect as user `postgres`; as a normal
 * user everything runs as that user, who is also the database superuser.
 *
 * Typical use in a test:
 *
 *     char uri[512];
 *     pg_cluster_require();                        // skips the test where PostgreSQL is not installed
 *     pg_cluster_create_db("mydb", uri, sizeof uri); // a fresh empty database
 *     store *s = store_open(uri, &e);
 */
#ifndef CLAD_TESTS_PG_CLUSTER_H
#define CLAD_TESTS_PG_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

/* Whether initdb and pg_ctl are installed; *why (may be NULL) says what is missing. */
bool pg_cluster_available(char *why, size_t cap);

/* Starts the shared cluster unless it runs already. 0, or -1 with *why filled. */
int pg_cluster_start(char *why, size_t cap);

/* In a test: TEST_SKIP when PostgreSQL is not installed, a test failure when the cluster does not start. */
void pg_cluster_require(void);

/* The socket directory (the cluster's own temporary directory) and the user to connect as; valid after
 * pg_cluster_start. */
const char *pg_cluster_socket_dir(void);
const char *pg_cluster_user(void);

/* Writes the URI of database `name` on the cluster (postgresql://USER@/NAME?host=DIR) to uri. */
void pg_cluster_uri(const char *name, char *uri, size_t cap);

/* Creates database `name` ([A-Za-z0-9_], at most 63 bytes) unless it exists, and writes its URI.
 * 0, or -1 with a message on stderr. */
int pg_cluster_create_db(const char *name, char *uri, size_t cap);

/* Runs sql (may hold several statements) on database `name` as the superuser, behind the store's back.
 * 0, or -1 with the server's message on stderr. */
int pg_cluster_exec(const char *name, const char *sql);

/* Stops the server and removes its directory (the runner calls this at exit; tests need not). */
void pg_cluster_stop(void);

#endif
