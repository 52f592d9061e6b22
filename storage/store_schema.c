/* The store schema as an ordered list of migrations.
 *
 * One list per backend with the same version numbers: store_migrations_sqlite[i] and
 * store_migrations_pg[i] take a store from schema version i to i + 1 (PRAGMA user_version in SQLite, the
 * clad_meta table in PostgreSQL) and run inside the same transaction that records the new version, so a
 * migration is applied completely or not at all. Once a clad
 * release has shipped a migration it is NEVER edited: stores in the field were built by the old text.
 * Change the schema by appending a migration (and raising STORE_SCHEMA_VERSION in store.h).
 *
 * Conventions in the schema:
 *   - Times are Unix milliseconds (INTEGER).
 *   - sha256 values are 64 lowercase hex digits.
 *   - Live pointers (aliases.version_id, version_deps.needs_id) are foreign keys: a version an alias
 *     points at, or that another version needs at run time, cannot be deleted. Records of the past
 *     (alias_history, version_parents, accuracy_matrix, evaluations) name versions by (task_id, number)
 *     so that they outlive a deleted version.
 *   - Adapter blobs live in their own table so that reading version metadata never walks a blob's
 *     overflow pages.
 */
#include "storage/store_internal.h"

const char *const store_migrations_sqlite[] = {
    /* 1: the first schema. */
    "CREATE TABLE bases ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  config_json TEXT NOT NULL CHECK (json_valid(config_json)),"
    "  weights_path TEXT,"
    "  weights_size INTEGER NOT NULL CHECK (weights_size >= 0),"
    "  weights_sha256 TEXT NOT NULL CHECK (length(weights_sha256) = 64),"
    "  created_ms INTEGER NOT NULL,"
    "  weights BLOB,"
    "  CHECK (weights IS NOT NULL OR weights_path IS NOT NULL)"
    ");"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  kind TEXT NOT NULL CHECK (kind IN ('task', 'merge')),"
    "  base_id INTEGER NOT NULL REFERENCES bases(id),"
    "  n_classes INTEGER NOT NULL CHECK (n_classes >= 0),"
    "  label_names_json TEXT CHECK (label_names_json IS NULL OR json_valid(label_names_json)),"
    "  next_version INTEGER NOT NULL DEFAULT 1," /* numbers are never reused, even after a delete */
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  task TEXT NOT NULL DEFAULT ''," /* a name: a training job may create its task */
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),"
    "  error_code INTEGER NOT NULL DEFAULT 0,"
    "  error_msg TEXT NOT NULL DEFAULT '',"
    "  request_json TEXT NOT NULL CHECK (json_valid(request_json)),"
    "  progress_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(progress_json)),"
    "  result_version INTEGER,"
    "  peer_uid INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  started_ms INTEGER,"
    "  finished_ms INTEGER"
    ");"
    "CREATE INDEX jobs_by_state ON jobs(state);"
    "CREATE TABLE versions ("
    "  id INTEGER PRIMARY KEY,"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  version INTEGER NOT NULL CHECK (version >= 1),"
    "  kind TEXT NOT NULL CHECK (kind IN ('lora', 'tied', 'fusion', 'merged', 'full')),"
    "  adapter_size INTEGER NOT NULL CHECK (adapter_size > 0),"
    "  adapter_sha256 TEXT NOT NULL CHECK (length(adapter_sha256) = 64),"
    "  base_sha256 TEXT NOT NULL CHECK (length(base_sha256) = 64),"
    "  data_sha256 TEXT CHECK (data_sha256 IS NULL OR length(data_sha256) = 64),"
    "  lineage_json TEXT NOT NULL CHECK (json_valid(lineage_json)),"
    "  hparams_json TEXT NOT NULL CHECK (json_valid(hparams_json)),"
    "  metrics_json TEXT NOT NULL CHECK (json_valid(metrics_json)),"
    "  seed INTEGER NOT NULL," /* a uint64 stored as its int64 bit pattern */
    "  clad_version TEXT NOT NULL,"
    "  wall_time_s REAL NOT NULL,"
    "  job_id INTEGER REFERENCES jobs(id),"
    "  creator_uid INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  UNIQUE (task_id, version)"
    ");"
    "CREATE TABLE version_blobs ("
    "  version_id INTEGER PRIMARY KEY REFERENCES versions(id) ON DELETE CASCADE,"
    "  data BLOB NOT NULL"
    ");"
    "CREATE TABLE version_parents ("
    "  child_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,"
    "  position INTEGER NOT NULL,"
    "  parent_task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  parent_version INTEGER NOT NULL,"
    "  PRIMARY KEY (child_id, position)"
    ");"
    /* One row per alias move. back_id is the state a rollback returns to, undo_id the state an undo
     * returns to (see store_alias.c); both point at earlier rows of the same alias. */
    "CREATE TABLE alias_history ("
    "  id INTEGER PRIMARY KEY,"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  alias TEXT NOT NULL,"
    "  action TEXT NOT NULL CHECK (action IN ('put', 'set', 'rollback', 'undo', 'delete')),"
    "  old_version INTEGER,"
    "  new_version INTEGER,"
    "  back_id INTEGER REFERENCES alias_history(id),"
    "  undo_id INTEGER REFERENCES alias_history(id),"
    "  peer_uid INTEGER NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  time_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX alias_history_by_alias ON alias_history(task_id, alias, id);"
    "CREATE TABLE aliases ("
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  name TEXT NOT NULL,"
    "  version_id INTEGER NOT NULL REFERENCES versions(id),"
    "  state_id INTEGER NOT NULL REFERENCES alias_history(id)," /* the move that set the target */
    "  PRIMARY KEY (task_id, name)"
    ");"
    "CREATE INDEX aliases_by_version ON aliases(version_id);"
    "CREATE TABLE accuracy_matrix ("
    "  id INTEGER PRIMARY KEY,"
    "  after_task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  after_version INTEGER NOT NULL,"
    "  eval_task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  eval_version INTEGER NOT NULL," /* 0: no task-specific version */
    "  accuracy REAL NOT NULL,"
    "  loss REAL NOT NULL,"
    "  n_samples INTEGER NOT NULL,"
    "  peer_uid INTEGER NOT NULL,"
    "  time_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX accuracy_matrix_by_after ON accuracy_matrix(after_task_id, after_version);"
    "CREATE TABLE evaluations ("
    "  id INTEGER PRIMARY KEY,"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  version INTEGER NOT NULL,"
    "  data_sha256 TEXT,"
    "  accuracy REAL NOT NULL,"
    "  loss REAL NOT NULL,"
    "  n_samples INTEGER NOT NULL,"
    "  detail_json TEXT NOT NULL CHECK (json_valid(detail_json)),"
    "  peer_uid INTEGER NOT NULL,"
    "  time_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX evaluations_by_version ON evaluations(task_id, version);"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"
    "  time_ms INTEGER NOT NULL,"
    "  peer_uid INTEGER NOT NULL,"
    "  action TEXT NOT NULL,"
    "  object TEXT NOT NULL,"
    "  detail_json TEXT NOT NULL CHECK (json_valid(detail_json))"
    ");",
    /* 2: runtime dependencies. A version that loads other versions whenever it is served (a fusion
     * version and its sources) names them here; like an alias, needs_id is a live pointer, so a needed
     * version cannot be deleted. Existing fusion versions get theirs from their lineage
     * ({"fusion": {"sources": [{"task", "version"}, ...]}}); a source that is already gone cannot be
     * recorded, and store_check then reports the fusion version. */
    "CREATE TABLE version_deps ("
    "  version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,"
    "  position INTEGER NOT NULL,"
    "  needs_id INTEGER NOT NULL REFERENCES versions(id),"
    "  PRIMARY KEY (version_id, position),"
    "  CHECK (needs_id != version_id)"
    ");"
    "CREATE INDEX version_deps_by_needs ON version_deps(needs_id);"
    "INSERT INTO version_deps (version_id, position, needs_id) "
    "SELECT v.id, s.key, n.id FROM versions v, json_each(v.lineage_json, '$.fusion.sources') s "
    "JOIN tasks t ON t.name = json_extract(s.value, '$.task') "
    "JOIN versions n ON n.task_id = t.id AND n.version = json_extract(s.value, '$.version') "
    "WHERE v.kind = 'fusion';",
    /* 3: a finished job's result (what GET /v1/jobs shows), so job history survives a restart. Only adds
     * a nullable column, so it applies on top of either form of migration 2. */
    "ALTER TABLE jobs ADD COLUMN result_json TEXT CHECK (result_json IS NULL OR json_valid(result_json));",
    /* 4: a job's lane apart from its task. Until now the daemon wrote the lane (the base's name) into
     * `task`, so a task's jobs were not found by its name. Old rows keep their lane; a training's task
     * comes from its request, the others' is unknown (''). */
    "ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT '';"
    "UPDATE jobs SET lane = task, "
    "task = CASE kind WHEN 'train' THEN coalesce(json_extract(request_json, '$.task'), '') ELSE '' END;",
    /* 5: several nodes on one store. `nodes` holds each node's identity and heartbeat; `changes` is the
     * feed other nodes follow to drop what they cache, one row per write they must act on, appended in
     * that write's transaction (AUTOINCREMENT: ids are never reused, even after pruning every row). */
    "CREATE TABLE nodes ("
    "  id TEXT PRIMARY KEY,"
    "  host TEXT NOT NULL,"
    "  state_dir TEXT NOT NULL,"
    "  socket TEXT NOT NULL,"
    "  version TEXT NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  last_seen_ms INTEGER NOT NULL,"
    "  stopped_ms INTEGER,"
    "  running_jobs INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE changes ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind TEXT NOT NULL,"
    "  base TEXT NOT NULL DEFAULT '',"
    "  task TEXT NOT NULL DEFAULT '',"
    "  version INTEGER NOT NULL DEFAULT 0,"
    "  at_ms INTEGER NOT NULL"
    ");",
    /* 6: the shared job queue (storage/store_queue.c). A running job names the node that claimed it and
     * holds a lease it renews; attempt counts its starts; cancel_requested reaches the owner at its next
     * renewal. job_data holds the submitted data until the job's final transaction deletes it. */
    "ALTER TABLE jobs ADD COLUMN node TEXT;"
    "ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN lease_until INTEGER;"
    "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE job_data ("
    "  job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,"
    "  data BLOB NOT NULL"
    ");",
};

_Static_assert(sizeof store_migrations_sqlite / sizeof store_migrations_sqlite[0] == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION must equal the number of migrations");

