#include "store/migrations/migrations.hpp"

#include <array>

namespace conduit::store::migrations {

namespace {

// Conventions: STRICT tables; money INTEGER micro-units; timestamps INTEGER Unix ms; booleans
// INTEGER 0/1; AUTOINCREMENT so that a deleted row's id is never handed out again (request logs
// and ledgers keep referring to old ids).
constexpr std::string_view k0001Init = R"sql(
CREATE TABLE virtual_key_groups (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name              TEXT    NOT NULL,
    external_group_id       TEXT,
    balance                 INTEGER NOT NULL DEFAULT 0,
    lifetime_credits_added  INTEGER NOT NULL DEFAULT 0,
    lifetime_spent          INTEGER NOT NULL DEFAULT 0,
    created_at_ms           INTEGER NOT NULL,
    updated_at_ms           INTEGER NOT NULL
) STRICT;

CREATE TABLE group_transactions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id        INTEGER NOT NULL REFERENCES virtual_key_groups(id) ON DELETE CASCADE,
    type            INTEGER NOT NULL CHECK (type BETWEEN 1 AND 4),
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    balance_after   INTEGER NOT NULL,
    reference_type  INTEGER NOT NULL CHECK (reference_type BETWEEN 1 AND 4),
    reference_id    TEXT    NOT NULL DEFAULT '',
    description     TEXT    NOT NULL DEFAULT '',
    initiated_by    TEXT    NOT NULL DEFAULT '',
    created_at_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX group_transactions_by_group ON group_transactions(group_id, id);

CREATE TABLE virtual_keys (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key_name        TEXT    NOT NULL,
    key_hash        TEXT    NOT NULL UNIQUE,
    key_prefix      TEXT    NOT NULL DEFAULT '',
    group_id        INTEGER NOT NULL REFERENCES virtual_key_groups(id) ON DELETE RESTRICT,
    allowed_models  TEXT    NOT NULL DEFAULT '',
    is_enabled      INTEGER NOT NULL DEFAULT 1 CHECK (is_enabled IN (0, 1)),
    expires_at_ms   INTEGER,
    metadata        TEXT    NOT NULL DEFAULT '',
    description     TEXT    NOT NULL DEFAULT '',
    rate_limit_rpm  INTEGER,
    rate_limit_rpd  INTEGER,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX virtual_keys_by_group ON virtual_keys(group_id);

CREATE TABLE providers (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    type            INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    base_url        TEXT    NOT NULL DEFAULT '',
    is_enabled      INTEGER NOT NULL DEFAULT 1 CHECK (is_enabled IN (0, 1)),
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
) STRICT;

CREATE TABLE provider_keys (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id     INTEGER NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    api_key_sealed  BLOB    NOT NULL,
    key_hint        TEXT    NOT NULL DEFAULT '',
    base_url        TEXT    NOT NULL DEFAULT '',
    organization    TEXT    NOT NULL DEFAULT '',
    key_name        TEXT    NOT NULL DEFAULT '',
    is_primary      INTEGER NOT NULL DEFAULT 0 CHECK (is_primary IN (0, 1)),
    is_enabled      INTEGER NOT NULL DEFAULT 1 CHECK (is_enabled IN (0, 1)),
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX provider_keys_by_provider ON provider_keys(provider_id);
-- At most one primary key per provider (the adapter demotes the others first).
CREATE UNIQUE INDEX provider_keys_one_primary ON provider_keys(provider_id) WHERE is_primary = 1;

CREATE TABLE model_mappings (
    id                           INTEGER PRIMARY KEY AUTOINCREMENT,
    model_alias                  TEXT    NOT NULL,
    provider_model_id            TEXT    NOT NULL,
    provider_id                  INTEGER NOT NULL REFERENCES providers(id) ON DELETE RESTRICT,
    is_enabled                   INTEGER NOT NULL DEFAULT 1 CHECK (is_enabled IN (0, 1)),
    priority                     INTEGER NOT NULL DEFAULT 0,
    max_context_tokens_override  INTEGER,
    supports_chat                INTEGER NOT NULL DEFAULT 1 CHECK (supports_chat IN (0, 1)),
    supports_streaming           INTEGER NOT NULL DEFAULT 1 CHECK (supports_streaming IN (0, 1)),
    supports_embeddings          INTEGER NOT NULL DEFAULT 0 CHECK (supports_embeddings IN (0, 1)),
    supports_image_generation    INTEGER NOT NULL DEFAULT 0
                                 CHECK (supports_image_generation IN (0, 1)),
    supports_video_generation    INTEGER NOT NULL DEFAULT 0
                                 CHECK (supports_video_generation IN (0, 1)),
    supports_vision              INTEGER NOT NULL DEFAULT 0 CHECK (supports_vision IN (0, 1)),
    supports_function_calling    INTEGER NOT NULL DEFAULT 0
                                 CHECK (supports_function_calling IN (0, 1)),
    created_at_ms                INTEGER NOT NULL,
    updated_at_ms                INTEGER NOT NULL
) STRICT;
CREATE INDEX model_mappings_by_alias ON model_mappings(model_alias);
CREATE INDEX model_mappings_by_provider ON model_mappings(provider_id);

CREATE TABLE model_costs (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    cost_name              TEXT    NOT NULL,
    input_per_million      INTEGER NOT NULL DEFAULT 0,
    output_per_million     INTEGER NOT NULL DEFAULT 0,
    embedding_per_million  INTEGER NOT NULL DEFAULT 0,
    image_per_image        INTEGER NOT NULL DEFAULT 0,
    video_per_second       INTEGER NOT NULL DEFAULT 0,
    priority               INTEGER NOT NULL DEFAULT 0,
    description            TEXT    NOT NULL DEFAULT '',
    created_at_ms          INTEGER NOT NULL,
    updated_at_ms          INTEGER NOT NULL
) STRICT;

CREATE TABLE model_cost_mappings (
    cost_id     INTEGER NOT NULL REFERENCES model_costs(id) ON DELETE CASCADE,
    mapping_id  INTEGER NOT NULL REFERENCES model_mappings(id) ON DELETE CASCADE,
    PRIMARY KEY (cost_id, mapping_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX model_cost_mappings_by_mapping ON model_cost_mappings(mapping_id);

-- No foreign keys: the log outlives deleted keys and groups.
CREATE TABLE request_logs (
    id                INTEGER PRIMARY KEY,  -- rowid: no AUTOINCREMENT bookkeeping per insert
    request_id        TEXT    NOT NULL DEFAULT '',
    virtual_key_id    INTEGER NOT NULL,
    group_id          INTEGER NOT NULL,
    model_alias       TEXT    NOT NULL DEFAULT '',
    provider_model    TEXT    NOT NULL DEFAULT '',
    request_type      TEXT    NOT NULL DEFAULT '',
    input_tokens      INTEGER NOT NULL DEFAULT 0,
    output_tokens     INTEGER NOT NULL DEFAULT 0,
    cost              INTEGER NOT NULL DEFAULT 0,
    response_time_ms  INTEGER NOT NULL DEFAULT 0,
    status_code       INTEGER NOT NULL DEFAULT 0,
    streamed          INTEGER NOT NULL DEFAULT 0 CHECK (streamed IN (0, 1)),
    usage_estimated   INTEGER NOT NULL DEFAULT 0 CHECK (usage_estimated IN (0, 1)),
    client_ip         TEXT    NOT NULL DEFAULT '',
    timestamp_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX request_logs_by_key ON request_logs(virtual_key_id, timestamp_ms);
CREATE INDEX request_logs_by_group ON request_logs(group_id, timestamp_ms);
CREATE INDEX request_logs_by_time ON request_logs(timestamp_ms);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
)sql";

// Async tasks and webhooks. Tasks and deliveries carry no foreign keys (like request_logs, they
// are history that outlives a deleted key); a webhook secret belongs to its key and goes with it.
constexpr std::string_view k0002TasksWebhooks = R"sql(
CREATE TABLE async_tasks (
    id                    TEXT    PRIMARY KEY CHECK (id <> ''),
    type                  TEXT    NOT NULL,
    state                 TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'completed',
                                                            'failed', 'cancelled', 'timedout')),
    progress              INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    message               TEXT    NOT NULL DEFAULT '',
    virtual_key_id        INTEGER NOT NULL,
    group_id              INTEGER NOT NULL,
    model_alias           TEXT    NOT NULL DEFAULT '',
    request_json          TEXT    NOT NULL DEFAULT '',
    result_json           TEXT    NOT NULL DEFAULT '',
    error_message         TEXT    NOT NULL DEFAULT '',
    error_code            TEXT    NOT NULL DEFAULT '',
    retryable             INTEGER NOT NULL DEFAULT 1 CHECK (retryable IN (0, 1)),
    webhook_url           TEXT    NOT NULL DEFAULT '',
    webhook_headers_json  TEXT    NOT NULL DEFAULT '',
    timeout_seconds       INTEGER NOT NULL DEFAULT 0,
    idempotency_key       TEXT    NOT NULL DEFAULT '',
    request_hash          TEXT    NOT NULL DEFAULT '',
    attempt               INTEGER NOT NULL DEFAULT 0,
    retry_count           INTEGER NOT NULL DEFAULT 0,
    max_retries           INTEGER NOT NULL DEFAULT 0,
    upstream_job_id       TEXT    NOT NULL DEFAULT '',
    mapping_id            INTEGER NOT NULL DEFAULT 0,
    created_at_ms         INTEGER NOT NULL,
    updated_at_ms         INTEGER NOT NULL,
    started_at_ms         INTEGER NOT NULL DEFAULT 0,
    completed_at_ms       INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms    INTEGER NOT NULL DEFAULT 0,
    version               INTEGER NOT NULL DEFAULT 0
) STRICT;
-- One task per (key, Idempotency-Key); tasks without a key are never deduplicated.
CREATE UNIQUE INDEX async_tasks_idempotency ON async_tasks(virtual_key_id, idempotency_key)
    WHERE idempotency_key <> '';
CREATE INDEX async_tasks_by_key ON async_tasks(virtual_key_id, created_at_ms, id);
CREATE INDEX async_tasks_by_state ON async_tasks(state, created_at_ms, id);
CREATE INDEX async_tasks_by_time ON async_tasks(created_at_ms, id);
-- The timeout sweeper's scan (non-terminal tasks, oldest first, stopping at its limit). The
-- adapter names it with INDEXED BY: without statistics the planner prefers async_tasks_by_state
-- and sorts every open task.
CREATE INDEX async_tasks_open ON async_tasks(created_at_ms, id)
    WHERE state IN ('pending', 'running');

CREATE TABLE webhook_secrets (
    virtual_key_id           INTEGER PRIMARY KEY REFERENCES virtual_keys(id) ON DELETE CASCADE,
    secret_sealed            BLOB    NOT NULL,
    previous_sealed          BLOB    NOT NULL DEFAULT x'',
    previous_valid_until_ms  INTEGER NOT NULL DEFAULT 0,
    created_at_ms            INTEGER NOT NULL
) STRICT;

CREATE TABLE webhook_deliveries (
    id                TEXT    PRIMARY KEY CHECK (id <> ''),
    task_id           TEXT    NOT NULL DEFAULT '',
    virtual_key_id    INTEGER NOT NULL,
    event_type        TEXT    NOT NULL,
    url               TEXT    NOT NULL,
    headers_json      TEXT    NOT NULL DEFAULT '',
    payload           TEXT    NOT NULL DEFAULT '',
    status            TEXT    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_status_code  INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT    NOT NULL DEFAULT '',
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    delivered_at_ms   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries(status, created_at_ms, id);
CREATE INDEX webhook_deliveries_by_key ON webhook_deliveries(virtual_key_id, created_at_ms, id);
CREATE INDEX webhook_deliveries_by_task ON webhook_deliveries(task_id, created_at_ms, id);
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries(created_at_ms, id);
)sql";

// Per-key budgets (a spending cap per calendar period) and tokens-per-minute limits.
constexpr std::string_view k0003KeyBudgets = R"sql(
ALTER TABLE virtual_keys ADD COLUMN max_budget INTEGER CHECK (max_budget IS NULL OR max_budget >= 0);
ALTER TABLE virtual_keys ADD COLUMN budget_duration TEXT NOT NULL DEFAULT ''
    CHECK (budget_duration IN ('', 'daily', 'weekly', 'monthly', 'total'));
ALTER TABLE virtual_keys ADD COLUMN rate_limit_tpm INTEGER;
)sql";

constexpr std::array kSqliteMigrations = {
    Migration{1, "0001_init", k0001Init},
    Migration{2, "0002_tasks_webhooks", k0002TasksWebhooks},
    Migration{3, "0003_key_budgets", k0003KeyBudgets},
};

}  // namespace

std::span<const Migration> SqliteMigrations() { return kSqliteMigrations; }

}  // namespace conduit::store::migrations
