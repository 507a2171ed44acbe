// The PostgreSQL Store adapter (libpq).
//
// Departure from issue 6 ("libpq non-blocking on the event loop"): the Store port is blocking by
// design (DESIGN §2) and every call already runs on a store::Executor thread, never on an event
// loop, so this adapter uses libpq in blocking mode there. Concurrency comes from a bounded
// connection pool (several executor threads may call at once); round trips are saved with
// single-statement writes (CTEs, ON CONFLICT) and pipeline mode for ApplySpend's and
// UpsertWebhookDeliveries' batches.
//
// Semantics match the SQLite adapter (the shared contract suite checks them): exact BIGINT
// micro-units; transactions for multi-statement writes; optimistic task versions; Idempotency-Key
// atomicity through the partial unique index and INSERT … ON CONFLICT DO NOTHING; SQLSTATE
// 23505/23503 → kConflict (or kInvalidRequest where the port names a missing parent); a lost
// server → kUnavailable, after one reconnect attempt when that is safe (nothing could have been
// committed).

#include "store/postgres/postgres_store.hpp"

#include "core/clock.hpp"
#include "store/migrations/migrations.hpp"
#include "store/postgres/pg_conn.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <utility>

namespace conduit::store {

namespace {

using core::ErrorCode;
using core::Fail;
using pg::Conn;
using pg::Params;
using pg::Rows;

using domain::AsyncTask;
using domain::GroupTransaction;
using domain::ModelCost;
using domain::ModelMapping;
using domain::Provider;
using domain::ProviderKey;
using domain::RequestLogRow;
using domain::VirtualKey;
using domain::VirtualKeyGroup;

constexpr std::string_view kSystemActor = "system";
constexpr std::string_view kInitialBalanceText = "Initial balance";
// pg_advisory_lock(class, key): the class spells "Cond"; the key is the schema's name hash, so
// instances sharing a schema migrate one at a time and other schemas are not held up.
constexpr int kMigrationLockClass = 0x436f6e64;

template <class R>
tl::unexpected<core::Error> Err(R& result) {
    return tl::unexpected(std::move(result.error()));
}

// --- Column lists and row readers (column order must match) ---

const std::string kGroupCols =
    "id, group_name, external_group_id, balance, lifetime_credits_added, lifetime_spent, "
    "created_at_ms, updated_at_ms";

VirtualKeyGroup ReadGroup(const Rows& r, int i) {
    VirtualKeyGroup g;
    g.id = r.Int(i, 0);
    g.group_name = r.Text(i, 1);
    g.external_group_id = r.OptText(i, 2);
    g.balance = r.Int(i, 3);
    g.lifetime_credits_added = r.Int(i, 4);
    g.lifetime_spent = r.Int(i, 5);
    g.created_at_ms = r.Int(i, 6);
    g.updated_at_ms = r.Int(i, 7);
    return g;
}

const std::string kTxnCols =
    "id, group_id, type, amount, balance_after, reference_type, reference_id, description, "
    "initiated_by, created_at_ms";

GroupTransaction ReadTxn(const Rows& r, int i) {
    GroupTransaction t;
    t.id = r.Int(i, 0);
    t.group_id = r.Int(i, 1);
    t.type = static_cast<domain::TransactionType>(r.Int(i, 2));
    t.amount = r.Int(i, 3);
    t.balance_after = r.Int(i, 4);
    t.reference_type = static_cast<domain::ReferenceType>(r.Int(i, 5));
    t.reference_id = r.Text(i, 6);
    t.description = r.Text(i, 7);
    t.initiated_by = r.Text(i, 8);
    t.created_at_ms = r.Int(i, 9);
    return t;
}

const std::string kKeyCols =
    "id, key_name, key_hash, key_prefix, group_id, allowed_models, is_enabled, expires_at_ms, "
    "metadata, description, rate_limit_rpm, rate_limit_rpd, created_at_ms, updated_at_ms, "
    "rate_limit_tpm, max_budget, budget_duration";

VirtualKey ReadKey(const Rows& r, int i) {
    VirtualKey k;
    k.id = r.Int(i, 0);
    k.key_name = r.Text(i, 1);
    k.key_hash = r.Text(i, 2);
    k.key_prefix = r.Text(i, 3);
    k.group_id = r.Int(i, 4);
    k.allowed_models = r.Text(i, 5);
    k.is_enabled = r.Bool(i, 6);
    k.expires_at_ms = r.OptInt(i, 7);
    k.metadata = r.Text(i, 8);
    k.description = r.Text(i, 9);
    k.rate_limit_rpm = r.OptInt(i, 10);
    k.rate_limit_rpd = r.OptInt(i, 11);
    k.created_at_ms = r.Int(i, 12);
    k.updated_at_ms = r.Int(i, 13);
    k.rate_limit_tpm = r.OptInt(i, 14);
    k.max_budget = r.OptInt(i, 15);
    k.budget_duration = r.Text(i, 16);
    return k;
}

const std::string kProviderCols =
    "id, type, name, base_url, is_enabled, created_at_ms, updated_at_ms";

Provider ReadProvider(const Rows& r, int i) {
    Provider p;
    p.id = r.Int(i, 0);
    p.type = static_cast<domain::ProviderType>(r.Int(i, 1));
    p.name = r.Text(i, 2);
    p.base_url = r.Text(i, 3);
    p.is_enabled = r.Bool(i, 4);
    p.created_at_ms = r.Int(i, 5);
    p.updated_at_ms = r.Int(i, 6);
    return p;
}

const std::string kProviderKeyCols =
    "id, provider_id, api_key_sealed, key_hint, base_url, organization, key_name, is_primary, "
    "is_enabled, created_at_ms, updated_at_ms";

ProviderKey ReadProviderKey(const Rows& r, int i) {
    ProviderKey k;
    k.id = r.Int(i, 0);
    k.provider_id = r.Int(i, 1);
    k.api_key_sealed = r.Bytes(i, 2);
    k.key_hint = r.Text(i, 3);
    k.base_url = r.Text(i, 4);
    k.organization = r.Text(i, 5);
    k.key_name = r.Text(i, 6);
    k.is_primary = r.Bool(i, 7);
    k.is_enabled = r.Bool(i, 8);
    k.created_at_ms = r.Int(i, 9);
    k.updated_at_ms = r.Int(i, 10);
    return k;
}

const std::string kMappingCols =
    "id, model_alias, provider_model_id, provider_id, is_enabled, priority, "
    "max_context_tokens_override, supports_chat, supports_streaming, supports_embeddings, "
    "supports_image_generation, supports_video_generation, supports_vision, "
    "supports_function_calling, created_at_ms, updated_at_ms";

ModelMapping ReadMapping(const Rows& r, int i) {
    ModelMapping m;
    m.id = r.Int(i, 0);
    m.model_alias = r.Text(i, 1);
    m.provider_model_id = r.Text(i, 2);
    m.provider_id = r.Int(i, 3);
    m.is_enabled = r.Bool(i, 4);
    m.priority = static_cast<int>(r.Int(i, 5));
    m.max_context_tokens_override = r.OptInt(i, 6);
    m.supports_chat = r.Bool(i, 7);
    m.supports_streaming = r.Bool(i, 8);
    m.supports_embeddings = r.Bool(i, 9);
    m.supports_image_generation = r.Bool(i, 10);
    m.supports_video_generation = r.Bool(i, 11);
    m.supports_vision = r.Bool(i, 12);
    m.supports_function_calling = r.Bool(i, 13);
    m.created_at_ms = r.Int(i, 14);
    m.updated_at_ms = r.Int(i, 15);
    return m;
}

const std::string kCostCols =
    "id, cost_name, input_per_million, output_per_million, embedding_per_million, "
    "image_per_image, video_per_second, priority, description, created_at_ms, updated_at_ms";

ModelCost ReadCost(const Rows& r, int i) {
    ModelCost c;
    c.id = r.Int(i, 0);
    c.cost_name = r.Text(i, 1);
    c.input_per_million = r.Int(i, 2);
    c.output_per_million = r.Int(i, 3);
    c.embedding_per_million = r.Int(i, 4);
    c.image_per_image = r.Int(i, 5);
    c.video_per_second = r.Int(i, 6);
    c.priority = static_cast<int>(r.Int(i, 7));
    c.description = r.Text(i, 8);
    c.created_at_ms = r.Int(i, 9);
    c.updated_at_ms = r.Int(i, 10);
    return c;
}

const std::string kLogCols =
    "id, request_id, virtual_key_id, group_id, model_alias, provider_model, request_type, "
    "input_tokens, output_tokens, cost, response_time_ms, status_code, streamed, "
    "usage_estimated, client_ip, timestamp_ms";

RequestLogRow ReadLog(const Rows& r, int i) {
    RequestLogRow l;
    l.id = r.Int(i, 0);
    l.request_id = r.Text(i, 1);
    l.virtual_key_id = r.Int(i, 2);
    l.group_id = r.Int(i, 3);
    l.model_alias = r.Text(i, 4);
    l.provider_model = r.Text(i, 5);
    l.request_type = r.Text(i, 6);
    l.input_tokens = r.Int(i, 7);
    l.output_tokens = r.Int(i, 8);
    l.cost = r.Int(i, 9);
    l.response_time_ms = r.Int(i, 10);
    l.status_code = static_cast<int>(r.Int(i, 11));
    l.streamed = r.Bool(i, 12);
    l.usage_estimated = r.Bool(i, 13);
    l.client_ip = r.Text(i, 14);
    l.timestamp_ms = r.Int(i, 15);
    return l;
}

const std::string kInsertLog =
    "INSERT INTO request_logs (request_id, virtual_key_id, group_id, model_alias, "
    "provider_model, request_type, input_tokens, output_tokens, cost, response_time_ms, "
    "status_code, streamed, usage_estimated, client_ip, timestamp_ms) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

Params LogParams(const RequestLogRow& row) {
    Params p;
    p.Text(row.request_id)
        .Int(row.virtual_key_id)
        .Int(row.group_id)
        .Text(row.model_alias)
        .Text(row.provider_model)
        .Text(row.request_type)
        .Int(row.input_tokens)
        .Int(row.output_tokens)
        .Int(row.cost)
        .Int(row.response_time_ms)
        .Int(row.status_code)
        .Bool(row.streamed)
        .Bool(row.usage_estimated)
        .Text(row.client_ip)
        .Int(row.timestamp_ms);
    return p;
}

// One debit as one statement: the balance update and its ledger row (nothing when the group
// does not exist, which the caller turns into an error).
const std::string kDebit =
    "WITH g AS (UPDATE virtual_key_groups SET balance = balance - $2, "
    "lifetime_spent = lifetime_spent + $2, updated_at_ms = $3 WHERE id = $1 "
    "RETURNING id, balance) "
    "INSERT INTO group_transactions (group_id, type, amount, balance_after, reference_type, "
    "reference_id, description, initiated_by, created_at_ms) "
    "SELECT id, $4::integer, $2::bigint, balance, $5::integer, '', $6::text, $7::text, "
    "$3::bigint FROM g RETURNING id";

Params DebitParams(Id group_id, Micros amount, int64_t now_ms, const std::string& description) {
    Params p;
    p.Int(group_id)
        .Int(amount)
        .Int(now_ms)
        .Int(static_cast<int64_t>(domain::TransactionType::kDebit))
        .Int(static_cast<int64_t>(domain::ReferenceType::kVirtualKey))
        .Text(description)
        .Text(kSystemActor);
    return p;
}

std::vector<Id> NormaliseIds(std::vector<Id> ids) {
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

/// A PostgreSQL array literal of ids: "{1,2,3}".
std::string IdArray(const std::vector<Id>& ids) {
    std::string out = "{";
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) {
            out += ',';
        }
        out += std::to_string(ids[i]);
    }
    out += '}';
    return out;
}

// Column order of async_tasks, and of parameters $1..$29 in TaskParams.
const std::string kTaskCols =
    "id, type, state, progress, message, virtual_key_id, group_id, model_alias, request_json, "
    "result_json, error_message, error_code, retryable, webhook_url, webhook_headers_json, "
    "timeout_seconds, idempotency_key, request_hash, attempt, retry_count, max_retries, "
    "upstream_job_id, mapping_id, created_at_ms, updated_at_ms, started_at_ms, completed_at_ms, "
    "next_attempt_at_ms, version";

AsyncTask ReadTask(const Rows& r, int i) {
    AsyncTask t;
    t.id = r.Text(i, 0);
    t.type = r.Text(i, 1);
    // The CHECK constraint admits only the six state strings.
    t.state = domain::ParseTaskState(r.Text(i, 2)).value_or(domain::TaskState::kPending);
    t.progress = static_cast<int>(r.Int(i, 3));
    t.message = r.Text(i, 4);
    t.virtual_key_id = r.Int(i, 5);
    t.group_id = r.Int(i, 6);
    t.model_alias = r.Text(i, 7);
    t.request_json = r.Text(i, 8);
    t.result_json = r.Text(i, 9);
    t.error_message = r.Text(i, 10);
    t.error_code = r.Text(i, 11);
    t.retryable = r.Bool(i, 12);
    t.webhook_url = r.Text(i, 13);
    t.webhook_headers_json = r.Text(i, 14);
    t.timeout_seconds = r.Int(i, 15);
    t.idempotency_key = r.Text(i, 16);
    t.request_hash = r.Text(i, 17);
    t.attempt = static_cast<int>(r.Int(i, 18));
    t.retry_count = static_cast<int>(r.Int(i, 19));
    t.max_retries = static_cast<int>(r.Int(i, 20));
    t.upstream_job_id = r.Text(i, 21);
    t.mapping_id = r.Int(i, 22);
    t.created_at_ms = r.Int(i, 23);
    t.updated_at_ms = r.Int(i, 24);
    t.started_at_ms = r.Int(i, 25);
    t.completed_at_ms = r.Int(i, 26);
    t.next_attempt_at_ms = r.Int(i, 27);
    t.version = r.Int(i, 28);
    return t;
}

Params TaskParams(const AsyncTask& t) {
    Params p;
    p.Text(t.id)
        .Text(t.type)
        .Text(domain::ToString(t.state))
        .Int(t.progress)
        .Text(t.message)
        .Int(t.virtual_key_id)
        .Int(t.group_id)
        .Text(t.model_alias)
        .Text(t.request_json)
        .Text(t.result_json)
        .Text(t.error_message)
        .Text(t.error_code)
        .Bool(t.retryable)
        .Text(t.webhook_url)
        .Text(t.webhook_headers_json)
        .Int(t.timeout_seconds)
        .Text(t.idempotency_key)
        .Text(t.request_hash)
        .Int(t.attempt)
        .Int(t.retry_count)
        .Int(t.max_retries)
        .Text(t.upstream_job_id)
        .Int(t.mapping_id)
        .Int(t.created_at_ms)
        .Int(t.updated_at_ms)
        .Int(t.started_at_ms)
        .Int(t.completed_at_ms)
        .Int(t.next_attempt_at_ms)
        .Int(t.version);
    return p;
}

const std::string kSecretCols =
    "virtual_key_id, secret_sealed, previous_sealed, previous_valid_until_ms, created_at_ms";

WebhookSecret ReadSecret(const Rows& r, int i) {
    WebhookSecret w;
    w.virtual_key_id = r.Int(i, 0);
    w.secret_sealed = r.Bytes(i, 1);
    w.previous_sealed = r.Bytes(i, 2);
    w.previous_valid_until_ms = r.Int(i, 3);
    w.created_at_ms = r.Int(i, 4);
    return w;
}

const std::string kDeliveryCols =
    "id, task_id, virtual_key_id, event_type, url, headers_json, payload, status, attempts, "
    "last_status_code, last_error, created_at_ms, updated_at_ms, delivered_at_ms";

WebhookDelivery ReadDelivery(const Rows& r, int i) {
    WebhookDelivery d;
    d.id = r.Text(i, 0);
    d.task_id = r.Text(i, 1);
    d.virtual_key_id = r.Int(i, 2);
    d.event_type = r.Text(i, 3);
    d.url = r.Text(i, 4);
    d.headers_json = r.Text(i, 5);
    d.payload = r.Text(i, 6);
    d.status = r.Text(i, 7);
    d.attempts = static_cast<int>(r.Int(i, 8));
    d.last_status_code = static_cast<int>(r.Int(i, 9));
    d.last_error = r.Text(i, 10);
    d.created_at_ms = r.Int(i, 11);
    d.updated_at_ms = r.Int(i, 12);
    d.delivered_at_ms = r.Int(i, 13);
    return d;
}

// An update leaves the identity columns alone (id, task_id, virtual_key_id, created_at_ms). A
// pending row older than the stored one is dropped: the instance that published a delivery may
// write its pending row after another instance's worker recorded the outcome.
const std::string kUpsertDelivery =
    "INSERT INTO webhook_deliveries (" + kDeliveryCols +
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
    "ON CONFLICT (id) DO UPDATE SET event_type = excluded.event_type, url = excluded.url, "
    "headers_json = excluded.headers_json, payload = excluded.payload, "
    "status = excluded.status, attempts = excluded.attempts, "
    "last_status_code = excluded.last_status_code, last_error = excluded.last_error, "
    "updated_at_ms = excluded.updated_at_ms, delivered_at_ms = excluded.delivered_at_ms "
    "WHERE excluded.status <> 'pending' OR "
    "excluded.updated_at_ms >= webhook_deliveries.updated_at_ms";

/// A list query: `SELECT ... FROM ...`, then optional filters numbered as their parameters are
/// added, then order and paging. Each distinct set of present filters is one SQL text (prepared
/// once per connection).
class FilteredQuery {
public:
    explicit FilteredQuery(std::string select_from) : sql_(std::move(select_from)) {
        sql_ += " WHERE TRUE";
    }
    /// `AND <column> <op> $n` with `v` as the parameter, when `v` is set.
    FilteredQuery& Int(std::string_view column, std::string_view op, std::optional<int64_t> v) {
        if (v) {
            Condition(column, op);
            params_.Int(*v);
        }
        return *this;
    }
    FilteredQuery& Text(std::string_view column, std::optional<std::string_view> v) {
        if (v) {
            Condition(column, "=");
            params_.Text(*v);
        }
        return *this;
    }
    /// A literal condition without a parameter.
    FilteredQuery& Literal(bool when, std::string_view condition) {
        if (when) {
            sql_ += " AND ";
            sql_ += condition;
        }
        return *this;
    }
    /// Appends `ORDER BY <order> LIMIT $n OFFSET $n+1` (paging checked by the caller).
    FilteredQuery& Page(std::string_view order, int limit, int offset) {
        sql_ += fmt::format(" ORDER BY {} LIMIT ${} OFFSET ${}", order, n_ + 1, n_ + 2);
        params_.Int(limit).Int(offset);
        return *this;
    }
    const std::string& sql() const { return sql_; }
    const Params& params() const { return params_; }

private:
    void Condition(std::string_view column, std::string_view op) {
        sql_ += fmt::format(" AND {} {} ${}", column, op, ++n_);
    }
    std::string sql_;
    Params params_;
    int n_ = 0;
};

Result<void> CheckPaging(int limit, int offset) {
    if (limit < 0 || offset < 0) {
        return Fail(ErrorCode::kInvalidRequest, "limit and offset must not be negative");
    }
    return {};
}

// --- Query helpers ---

template <class T, class Reader>
Result<std::optional<T>> QueryOne(Conn& c, const std::string& sql, const Params& p, Reader read) {
    auto rows = c.Exec(sql, p);
    if (!rows) {
        return Err(rows);
    }
    if (rows->empty()) {
        return std::optional<T>();
    }
    return std::optional<T>(read(*rows, 0));
}

template <class T, class Reader>
Result<std::vector<T>> QueryMany(Conn& c, const std::string& sql, const Params& p, Reader read) {
    auto rows = c.Exec(sql, p);
    if (!rows) {
        return Err(rows);
    }
    std::vector<T> out;
    out.reserve(rows->size());
    for (int i = 0; i < rows->size(); ++i) {
        out.push_back(read(*rows, i));
    }
    return out;
}

Result<int64_t> Changes(Conn& c, const std::string& sql, const Params& p) {
    auto rows = c.Exec(sql, p);
    if (!rows) {
        return Err(rows);
    }
    return rows->Affected();
}

int64_t ReadInt0(const Rows& r, int i) { return r.Int(i, 0); }

/// Replaces a foreign-key violation (a missing parent row) by `code` with `message`.
template <class R>
R OnForeignKey(R result, const Conn& c, ErrorCode code, std::string message) {
    if (!result && c.last_sqlstate() == "23503") {
        return Fail(code, std::move(message));
    }
    return result;
}

/// A transaction on one connection; rolled back unless committed.
class Txn {
public:
    static Result<Txn> Begin(Conn& c, const std::string& sql = "BEGIN") {
        if (auto r = c.Simple(sql); !r) {
            return Err(r);
        }
        return Txn(&c);
    }
    Txn(Txn&& other) noexcept : c_(std::exchange(other.c_, nullptr)) {}
    Txn& operator=(Txn&&) = delete;
    ~Txn() {
        if (c_ != nullptr && c_->InTransaction()) {
            (void)c_->Simple("ROLLBACK");
        }
    }
    Result<void> Commit() {
        Conn* c = std::exchange(c_, nullptr);
        return c->Simple("COMMIT");
    }

private:
    explicit Txn(Conn* c) : c_(c) {}
    Conn* c_;
};

class PostgresStore final : public Store {
public:
    PostgresStore(std::string url, int pool_max) : pool_(std::move(url), pool_max) {}

    Result<void> Connect() {
        auto lease = pool_.Acquire();
        if (!lease) {
            return Err(lease);
        }
        return {};
    }

    std::string_view Engine() const override { return "postgresql"; }

    Result<void> Migrate() override {
        return Run([&](Conn& c) -> Result<void> {
            const std::string lock_args =
                fmt::format("({}, hashtext(current_schema()))", kMigrationLockClass);
            if (auto r = c.Simple("SELECT pg_advisory_lock" + lock_args); !r) {
                return r;
            }
            struct Unlock {
                Conn& c;
                const std::string& args;
                ~Unlock() {
                    if (!c.InTransaction()) {
                        (void)c.Simple("SELECT pg_advisory_unlock" + args);
                    }
                }
            } unlock{c, lock_args};
            if (auto r = c.Simple("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                  " version INTEGER PRIMARY KEY,"
                                  " name TEXT NOT NULL,"
                                  " applied_at_ms BIGINT NOT NULL)");
                !r) {
                return r;
            }
            auto steps = migrations::PostgresMigrations();
            int latest = steps.empty() ? 0 : steps.back().version;
            for (const auto& step : steps) {
                auto txn = Txn::Begin(c);
                if (!txn) {
                    return Err(txn);
                }
                auto current = QueryOne<int64_t>(
                    c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", {}, ReadInt0);
                if (!current) {
                    return Err(current);
                }
                int version = static_cast<int>(current->value_or(0));
                if (version > latest) {
                    return Fail(ErrorCode::kInternal,
                                fmt::format("database schema version {} is newer than this "
                                            "binary's ({}); refusing to use it",
                                            version, latest));
                }
                if (step.version <= version) {
                    continue;  // already applied; the transaction rolls back (nothing written)
                }
                if (auto r = c.Simple(std::string(step.sql)); !r) {
                    r.error().message =
                        fmt::format("migration {} failed: {}", step.name, r.error().message);
                    return r;
                }
                auto ins = c.Exec(
                    "INSERT INTO schema_migrations (version, name, applied_at_ms) "
                    "VALUES ($1, $2, $3)",
                    Params()
                        .Int(step.version)
                        .Text(step.name)
                        .Int(core::SystemClock::Instance().NowUnixMs()));
                if (!ins) {
                    return Err(ins);
                }
                if (auto r = txn->Commit(); !r) {
                    return r;
                }
                spdlog::info("store: applied postgresql migration {}", step.name);
            }
            return {};
        });
    }

    Result<int> SchemaVersion() override {
        return Run([&](Conn& c) -> Result<int> {
            auto exists = QueryOne<bool>(c, "SELECT to_regclass('schema_migrations') IS NOT NULL",
                                         {}, [](const Rows& r, int i) { return r.Bool(i, 0); });
            if (!exists) {
                return Err(exists);
            }
            if (!exists->value_or(false)) {
                return 0;
            }
            auto n = QueryOne<int64_t>(c, "SELECT COUNT(*) FROM schema_migrations", {}, ReadInt0);
            if (!n) {
                return Err(n);
            }
            return static_cast<int>(n->value_or(0));
        });
    }

    Result<void> Ping() override {
        return Run([&](Conn& c) -> Result<void> {
            auto one = QueryOne<int64_t>(c, "SELECT 1", {}, ReadInt0);
            if (!one) {
                return Err(one);
            }
            if (one->value_or(0) != 1) {
                return Fail(ErrorCode::kInternal, "postgresql ping returned no row");
            }
            return {};
        });
    }

    // --- Groups ---

    Result<std::vector<VirtualKeyGroup>> ListGroups() override {
        return Run([&](Conn& c) { return ListGroupsOn(c); });
    }

    Result<std::optional<VirtualKeyGroup>> GetGroup(Id id) override {
        return Run([&](Conn& c) {
            return QueryOne<VirtualKeyGroup>(
                c, "SELECT " + kGroupCols + " FROM virtual_key_groups WHERE id = $1",
                Params().Int(id), ReadGroup);
        });
    }

    Result<VirtualKeyGroup> CreateGroup(const VirtualKeyGroup& g,
                                        std::string_view initiated_by) override {
        if (g.balance < 0) {
            return Fail(ErrorCode::kInvalidRequest, "initial balance must not be negative");
        }
        return Run([&](Conn& c) -> Result<VirtualKeyGroup> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            auto id = QueryOne<int64_t>(
                c,
                "INSERT INTO virtual_key_groups (group_name, external_group_id, balance, "
                "lifetime_credits_added, lifetime_spent, created_at_ms, updated_at_ms) "
                "VALUES ($1, $2, $3, $3, 0, $4, $5) RETURNING id",
                Params()
                    .Text(g.group_name)
                    .OptText(g.external_group_id)
                    .Int(g.balance)
                    .Int(g.created_at_ms)
                    .Int(g.updated_at_ms),
                ReadInt0);
            if (!id) {
                return Err(id);
            }
            VirtualKeyGroup out = g;
            out.id = id->value_or(0);
            out.lifetime_credits_added = g.balance;
            out.lifetime_spent = 0;
            if (g.balance != 0) {
                GroupTransaction t;
                t.group_id = out.id;
                t.type = domain::TransactionType::kCredit;
                t.amount = g.balance;
                t.balance_after = g.balance;
                t.reference_type = domain::ReferenceType::kInitial;
                t.description = std::string(kInitialBalanceText);
                t.initiated_by = std::string(initiated_by);
                t.created_at_ms = g.created_at_ms;
                auto ins = c.Exec(
                    "INSERT INTO group_transactions (group_id, type, amount, balance_after, "
                    "reference_type, reference_id, description, initiated_by, created_at_ms) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    Params()
                        .Int(t.group_id)
                        .Int(static_cast<int64_t>(t.type))
                        .Int(t.amount)
                        .Int(t.balance_after)
                        .Int(static_cast<int64_t>(t.reference_type))
                        .Text(t.reference_id)
                        .Text(t.description)
                        .Text(t.initiated_by)
                        .Int(t.created_at_ms));
                if (!ins) {
                    return Err(ins);
                }
            }
            if (auto r = txn->Commit(); !r) {
                return Err(r);
            }
            return out;
        });
    }

    Result<std::optional<VirtualKeyGroup>> UpdateGroup(const VirtualKeyGroup& g) override {
        return Run([&](Conn& c) {
            return QueryOne<VirtualKeyGroup>(
                c,
                "UPDATE virtual_key_groups SET group_name = $1, external_group_id = $2, "
                "updated_at_ms = $3 WHERE id = $4 RETURNING " +
                    kGroupCols,
                Params()
                    .Text(g.group_name)
                    .OptText(g.external_group_id)
                    .Int(g.updated_at_ms)
                    .Int(g.id),
                ReadGroup);
        });
    }

    /// Deletes row `id` of `table`; false when there was none. `restricted` (non-empty) is the
    /// kConflict message when a foreign key forbids the delete (SQLSTATE 23503).
    Result<bool> DeleteRow(std::string_view table, Id id, std::string restricted = {}) {
        return Run([&](Conn& c) -> Result<bool> {
            auto n =
                Changes(c, fmt::format("DELETE FROM {} WHERE id = $1", table), Params().Int(id));
            if (!n) {
                if (!restricted.empty() && c.last_sqlstate() == "23503") {
                    return Fail(ErrorCode::kConflict, restricted);
                }
                return Err(n);
            }
            return *n > 0;
        });
    }

    Result<bool> DeleteGroup(Id id) override {
        // virtual_keys.group_id is ON DELETE RESTRICT: a group with keys is a 23503.
        return DeleteRow("virtual_key_groups", id,
                         fmt::format("virtual key group {} still has virtual keys", id));
    }

    Result<std::optional<GroupTransaction>> AdjustBalance(Id group_id,
                                                          Micros delta,
                                                          domain::TransactionType type,
                                                          domain::ReferenceType ref,
                                                          std::string_view reference_id,
                                                          std::string_view description,
                                                          std::string_view initiated_by,
                                                          int64_t now_ms) override {
        if (delta == std::numeric_limits<Micros>::min()) {
            return Fail(ErrorCode::kInvalidRequest, "balance adjustment out of range");
        }
        Micros credit = delta > 0 ? delta : 0;
        Micros debit = delta < 0 ? -delta : 0;
        // One statement (atomic on its own): the balance update and its ledger row. An
        // overflowing balance fails the whole statement (SQLSTATE 22003 → kInvalidRequest).
        return Run([&](Conn& c) -> Result<std::optional<GroupTransaction>> {
            auto rows = c.Exec(
                "WITH g AS (UPDATE virtual_key_groups SET balance = balance + $2, "
                "lifetime_credits_added = lifetime_credits_added + $3, "
                "lifetime_spent = lifetime_spent + $4, updated_at_ms = $5 WHERE id = $1 "
                "RETURNING id, balance) "
                "INSERT INTO group_transactions (group_id, type, amount, balance_after, "
                "reference_type, reference_id, description, initiated_by, created_at_ms) "
                "SELECT id, $6::integer, $7::bigint, balance, $8::integer, $9::text, $10::text, "
                "$11::text, $5::bigint FROM g RETURNING id, balance_after",
                Params()
                    .Int(group_id)
                    .Int(delta)
                    .Int(credit)
                    .Int(debit)
                    .Int(now_ms)
                    .Int(static_cast<int64_t>(type))
                    .Int(credit + debit)
                    .Int(static_cast<int64_t>(ref))
                    .Text(reference_id)
                    .Text(description)
                    .Text(initiated_by));
            if (!rows) {
                if (rows.error().code == ErrorCode::kInvalidRequest) {
                    rows.error().message =
                        fmt::format("balance of group {} would overflow", group_id);
                }
                return Err(rows);
            }
            if (rows->empty()) {
                return std::optional<GroupTransaction>();
            }
            GroupTransaction t;
            t.id = rows->Int(0, 0);
            t.group_id = group_id;
            t.type = type;
            t.amount = credit + debit;
            t.balance_after = rows->Int(0, 1);
            t.reference_type = ref;
            t.reference_id = std::string(reference_id);
            t.description = std::string(description);
            t.initiated_by = std::string(initiated_by);
            t.created_at_ms = now_ms;
            return std::optional<GroupTransaction>(std::move(t));
        });
    }

    Result<std::vector<GroupTransaction>> ListTransactions(Id group_id,
                                                           int limit,
                                                           int offset) override {
        if (auto r = CheckPaging(limit, offset); !r) {
            return Err(r);
        }
        return Run([&](Conn& c) {
            return QueryMany<GroupTransaction>(
                c,
                "SELECT " + kTxnCols +
                    " FROM group_transactions WHERE group_id = $1 ORDER BY id DESC "
                    "LIMIT $2 OFFSET $3",
                Params().Int(group_id).Int(limit).Int(offset), ReadTxn);
        });
    }

    // --- Virtual keys ---

    Result<std::vector<VirtualKey>> ListKeys(std::optional<Id> group_id) override {
        return Run([&](Conn& c) -> Result<std::vector<VirtualKey>> {
            if (group_id) {
                return QueryMany<VirtualKey>(
                    c, "SELECT " + kKeyCols + " FROM virtual_keys WHERE group_id = $1 ORDER BY id",
                    Params().Int(*group_id), ReadKey);
            }
            return ListKeysOn(c);
        });
    }

    Result<std::optional<VirtualKey>> GetKey(Id id) override {
        return Run([&](Conn& c) {
            return QueryOne<VirtualKey>(c,
                                        "SELECT " + kKeyCols + " FROM virtual_keys WHERE id = $1",
                                        Params().Int(id), ReadKey);
        });
    }

    Result<VirtualKey> CreateKey(const VirtualKey& k) override {
        return Run([&](Conn& c) -> Result<VirtualKey> {
            auto id = QueryOne<int64_t>(
                c,
                "INSERT INTO virtual_keys (key_name, key_hash, key_prefix, group_id, "
                "allowed_models, is_enabled, expires_at_ms, metadata, description, "
                "rate_limit_rpm, rate_limit_rpd, created_at_ms, updated_at_ms, rate_limit_tpm, "
                "max_budget, budget_duration) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) "
                "RETURNING id",
                Params()
                    .Text(k.key_name)
                    .Text(k.key_hash)
                    .Text(k.key_prefix)
                    .Int(k.group_id)
                    .Text(k.allowed_models)
                    .Bool(k.is_enabled)
                    .OptInt(k.expires_at_ms)
                    .Text(k.metadata)
                    .Text(k.description)
                    .OptInt(k.rate_limit_rpm)
                    .OptInt(k.rate_limit_rpd)
                    .Int(k.created_at_ms)
                    .Int(k.updated_at_ms)
                    .OptInt(k.rate_limit_tpm)
                    .OptInt(k.max_budget)
                    .Text(k.budget_duration),
                ReadInt0);
            if (!id) {
                if (c.last_sqlstate() == "23503") {
                    return Fail(ErrorCode::kInvalidRequest,
                                fmt::format("virtual key group {} does not exist", k.group_id));
                }
                if (c.last_sqlstate() == "23505") {
                    return Fail(ErrorCode::kConflict,
                                "a virtual key with this hash already exists");
                }
                return Err(id);
            }
            VirtualKey out = k;
            out.id = id->value_or(0);
            return out;
        });
    }

    Result<std::optional<VirtualKey>> UpdateKey(const VirtualKey& k) override {
        return Run([&](Conn& c) {
            auto updated = QueryOne<VirtualKey>(
                c,
                "UPDATE virtual_keys SET key_name = $1, group_id = $2, allowed_models = $3, "
                "is_enabled = $4, expires_at_ms = $5, metadata = $6, description = $7, "
                "rate_limit_rpm = $8, rate_limit_rpd = $9, updated_at_ms = $10, rate_limit_tpm = "
                "$12, "
                "max_budget = $13, budget_duration = $14 WHERE id = $11 "
                "RETURNING " +
                    kKeyCols,
                Params()
                    .Text(k.key_name)
                    .Int(k.group_id)
                    .Text(k.allowed_models)
                    .Bool(k.is_enabled)
                    .OptInt(k.expires_at_ms)
                    .Text(k.metadata)
                    .Text(k.description)
                    .OptInt(k.rate_limit_rpm)
                    .OptInt(k.rate_limit_rpd)
                    .Int(k.updated_at_ms)
                    .Int(k.id)
                    .OptInt(k.rate_limit_tpm)
                    .OptInt(k.max_budget)
                    .Text(k.budget_duration),
                ReadKey);
            return OnForeignKey(std::move(updated), c, ErrorCode::kInvalidRequest,
                                fmt::format("virtual key group {} does not exist", k.group_id));
        });
    }

    Result<bool> DeleteKey(Id id) override { return DeleteRow("virtual_keys", id); }

    // --- Providers ---

    Result<std::vector<Provider>> ListProviders() override {
        return Run([&](Conn& c) { return ListProvidersOn(c); });
    }

    Result<std::optional<Provider>> GetProvider(Id id) override {
        return Run([&](Conn& c) {
            return QueryOne<Provider>(c,
                                      "SELECT " + kProviderCols + " FROM providers WHERE id = $1",
                                      Params().Int(id), ReadProvider);
        });
    }

    Result<Provider> CreateProvider(const Provider& p) override {
        return Run([&](Conn& c) -> Result<Provider> {
            auto id = QueryOne<int64_t>(
                c,
                "INSERT INTO providers (type, name, base_url, is_enabled, created_at_ms, "
                "updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                Params()
                    .Int(static_cast<int64_t>(p.type))
                    .Text(p.name)
                    .Text(p.base_url)
                    .Bool(p.is_enabled)
                    .Int(p.created_at_ms)
                    .Int(p.updated_at_ms),
                ReadInt0);
            if (!id) {
                return Err(id);
            }
            Provider out = p;
            out.id = id->value_or(0);
            return out;
        });
    }

    Result<std::optional<Provider>> UpdateProvider(const Provider& p) override {
        return Run([&](Conn& c) {
            return QueryOne<Provider>(
                c,
                "UPDATE providers SET type = $1, name = $2, base_url = $3, is_enabled = $4, "
                "updated_at_ms = $5 WHERE id = $6 RETURNING " +
                    kProviderCols,
                Params()
                    .Int(static_cast<int64_t>(p.type))
                    .Text(p.name)
                    .Text(p.base_url)
                    .Bool(p.is_enabled)
                    .Int(p.updated_at_ms)
                    .Int(p.id),
                ReadProvider);
        });
    }

    Result<bool> DeleteProvider(Id id) override {
        // provider_keys go with it (CASCADE); model_mappings RESTRICT it (a 23503).
        return DeleteRow("providers", id,
                         fmt::format("provider {} is still used by model mappings", id));
    }

    // --- Provider keys ---

    Result<std::vector<ProviderKey>> ListProviderKeys(Id provider_id) override {
        return Run([&](Conn& c) {
            return QueryMany<ProviderKey>(c,
                                          "SELECT " + kProviderKeyCols +
                                              " FROM provider_keys WHERE provider_id = $1 "
                                              "ORDER BY id",
                                          Params().Int(provider_id), ReadProviderKey);
        });
    }

    Result<std::optional<ProviderKey>> GetProviderKey(Id id) override {
        return Run([&](Conn& c) {
            return QueryOne<ProviderKey>(
                c, "SELECT " + kProviderKeyCols + " FROM provider_keys WHERE id = $1",
                Params().Int(id), ReadProviderKey);
        });
    }

    Result<ProviderKey> CreateProviderKey(const ProviderKey& k) override {
        return Run([&](Conn& c) -> Result<ProviderKey> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            if (k.is_primary) {
                if (auto r = DemotePrimaryOn(c, k.provider_id, 0, k.updated_at_ms); !r) {
                    return Err(r);
                }
            }
            auto id = QueryOne<int64_t>(
                c,
                "INSERT INTO provider_keys (provider_id, api_key_sealed, key_hint, base_url, "
                "organization, key_name, is_primary, is_enabled, created_at_ms, updated_at_ms) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                Params()
                    .Int(k.provider_id)
                    .Bytes(k.api_key_sealed)
                    .Text(k.key_hint)
                    .Text(k.base_url)
                    .Text(k.organization)
                    .Text(k.key_name)
                    .Bool(k.is_primary)
                    .Bool(k.is_enabled)
                    .Int(k.created_at_ms)
                    .Int(k.updated_at_ms),
                ReadInt0);
            if (!id) {
                return OnForeignKey(Result<ProviderKey>(Err(id)), c, ErrorCode::kInvalidRequest,
                                    fmt::format("provider {} does not exist", k.provider_id));
            }
            if (auto r = txn->Commit(); !r) {
                return Err(r);
            }
            ProviderKey out = k;
            out.id = id->value_or(0);
            return out;
        });
    }

    Result<std::optional<ProviderKey>> UpdateProviderKey(const ProviderKey& k) override {
        return Run([&](Conn& c) -> Result<std::optional<ProviderKey>> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            // A key never moves to another provider: provider_id is taken from the stored row.
            auto provider_id = QueryOne<int64_t>(
                c, "SELECT provider_id FROM provider_keys WHERE id = $1 FOR UPDATE",
                Params().Int(k.id), ReadInt0);
            if (!provider_id) {
                return Err(provider_id);
            }
            if (!*provider_id) {
                return std::optional<ProviderKey>();
            }
            if (k.is_primary) {
                if (auto r = DemotePrimaryOn(c, **provider_id, k.id, k.updated_at_ms); !r) {
                    return Err(r);
                }
            }
            auto updated = QueryOne<ProviderKey>(
                c,
                "UPDATE provider_keys SET api_key_sealed = $1, key_hint = $2, base_url = $3, "
                "organization = $4, key_name = $5, is_primary = $6, is_enabled = $7, "
                "updated_at_ms = $8 WHERE id = $9 RETURNING " +
                    kProviderKeyCols,
                Params()
                    .Bytes(k.api_key_sealed)
                    .Text(k.key_hint)
                    .Text(k.base_url)
                    .Text(k.organization)
                    .Text(k.key_name)
                    .Bool(k.is_primary)
                    .Bool(k.is_enabled)
                    .Int(k.updated_at_ms)
                    .Int(k.id),
                ReadProviderKey);
            if (!updated) {
                return Err(updated);
            }
            if (auto r = txn->Commit(); !r) {
                return Err(r);
            }
            return updated;
        });
    }

    Result<bool> DeleteProviderKey(Id id) override { return DeleteRow("provider_keys", id); }

    // --- Model mappings ---

    Result<std::vector<ModelMapping>> ListMappings() override {
        return Run([&](Conn& c) { return ListMappingsOn(c); });
    }

    Result<std::optional<ModelMapping>> GetMapping(Id id) override {
        return Run([&](Conn& c) {
            return QueryOne<ModelMapping>(
                c, "SELECT " + kMappingCols + " FROM model_mappings WHERE id = $1",
                Params().Int(id), ReadMapping);
        });
    }

    Result<ModelMapping> CreateMapping(const ModelMapping& m) override {
        return Run([&](Conn& c) -> Result<ModelMapping> {
            auto p = MappingParams(m);
            p.Int(m.created_at_ms).Int(m.updated_at_ms);
            auto id = QueryOne<int64_t>(
                c,
                "INSERT INTO model_mappings (model_alias, provider_model_id, provider_id, "
                "is_enabled, priority, max_context_tokens_override, supports_chat, "
                "supports_streaming, supports_embeddings, supports_image_generation, "
                "supports_video_generation, supports_vision, supports_function_calling, "
                "created_at_ms, updated_at_ms) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
                "RETURNING id",
                p, ReadInt0);
            if (!id) {
                return OnForeignKey(Result<ModelMapping>(Err(id)), c, ErrorCode::kInvalidRequest,
                                    fmt::format("provider {} does not exist", m.provider_id));
            }
            ModelMapping out = m;
            out.id = id->value_or(0);
            return out;
        });
    }

    Result<std::optional<ModelMapping>> UpdateMapping(const ModelMapping& m) override {
        return Run([&](Conn& c) {
            auto p = MappingParams(m);
            p.Int(m.updated_at_ms).Int(m.id);
            auto updated = QueryOne<ModelMapping>(
                c,
                "UPDATE model_mappings SET model_alias = $1, provider_model_id = $2, "
                "provider_id = $3, is_enabled = $4, priority = $5, "
                "max_context_tokens_override = $6, supports_chat = $7, supports_streaming = $8, "
                "supports_embeddings = $9, supports_image_generation = $10, "
                "supports_video_generation = $11, supports_vision = $12, "
                "supports_function_calling = $13, updated_at_ms = $14 WHERE id = $15 "
                "RETURNING " +
                    kMappingCols,
                p, ReadMapping);
            return OnForeignKey(std::move(updated), c, ErrorCode::kInvalidRequest,
                                fmt::format("provider {} does not exist", m.provider_id));
        });
    }

    Result<bool> DeleteMapping(Id id) override {
        // Cost links go with it (ON DELETE CASCADE).
        return DeleteRow("model_mappings", id);
    }

    // --- Model costs ---

    Result<std::vector<ModelCost>> ListCosts() override {
        return Run([&](Conn& c) { return ListCostsOn(c); });
    }

    Result<std::optional<ModelCost>> GetCost(Id id) override {
        return Run([&](Conn& c) { return GetCostOn(c, id); });
    }

    Result<ModelCost> CreateCost(const ModelCost& cost) override {
        return Run([&](Conn& c) -> Result<ModelCost> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            std::vector<Id> links = NormaliseIds(cost.mapping_ids);
            if (auto r = RequireMappingsOn(c, links); !r) {
                return Err(r);
            }
            auto p = CostParams(cost);
            p.Int(cost.created_at_ms).Int(cost.updated_at_ms);
            auto id = QueryOne<int64_t>(
                c,
                "INSERT INTO model_costs (cost_name, input_per_million, output_per_million, "
                "embedding_per_million, image_per_image, video_per_second, priority, "
                "description, created_at_ms, updated_at_ms) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                p, ReadInt0);
            if (!id) {
                return Err(id);
            }
            ModelCost out = cost;
            out.id = id->value_or(0);
            out.mapping_ids = links;
            if (auto r = InsertCostLinksOn(c, out.id, links); !r) {
                return Err(r);
            }
            if (auto r = txn->Commit(); !r) {
                return Err(r);
            }
            return out;
        });
    }

    Result<std::optional<ModelCost>> UpdateCost(const ModelCost& cost) override {
        return Run([&](Conn& c) -> Result<std::optional<ModelCost>> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            auto p = CostParams(cost);
            p.Int(cost.updated_at_ms).Int(cost.id);
            auto changed = Changes(
                c,
                "UPDATE model_costs SET cost_name = $1, input_per_million = $2, "
                "output_per_million = $3, embedding_per_million = $4, image_per_image = $5, "
                "video_per_second = $6, priority = $7, description = $8, updated_at_ms = $9 "
                "WHERE id = $10",
                p);
            if (!changed) {
                return Err(changed);
            }
            if (*changed == 0) {
                return std::optional<ModelCost>();
            }
            std::vector<Id> links = NormaliseIds(cost.mapping_ids);
            if (auto r = RequireMappingsOn(c, links); !r) {
                return Err(r);  // rolls back the row update too
            }
            auto cleared =
                c.Exec("DELETE FROM model_cost_mappings WHERE cost_id = $1", Params().Int(cost.id));
            if (!cleared) {
                return Err(cleared);
            }
            if (auto r = InsertCostLinksOn(c, cost.id, links); !r) {
                return Err(r);
            }
            auto out = GetCostOn(c, cost.id);
            if (!out) {
                return Err(out);
            }
            if (auto r = txn->Commit(); !r) {
                return Err(r);
            }
            return out;
        });
    }

    Result<bool> DeleteCost(Id id) override { return DeleteRow("model_costs", id); }

    // --- Snapshot load ---

    Result<domain::ConfigData> LoadConfig() override {
        return Run([&](Conn& c) -> Result<domain::ConfigData> {
            // One snapshot for every statement.
            auto txn = Txn::Begin(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
            if (!txn) {
                return Err(txn);
            }
            domain::ConfigData data;
            auto groups = ListGroupsOn(c);
            if (!groups) {
                return Err(groups);
            }
            data.groups = std::move(*groups);
            auto keys = ListKeysOn(c);
            if (!keys) {
                return Err(keys);
            }
            data.keys = std::move(*keys);
            auto providers = ListProvidersOn(c);
            if (!providers) {
                return Err(providers);
            }
            data.providers = std::move(*providers);
            auto provider_keys = QueryMany<ProviderKey>(
                c, "SELECT " + kProviderKeyCols + " FROM provider_keys ORDER BY id", {},
                ReadProviderKey);
            if (!provider_keys) {
                return Err(provider_keys);
            }
            data.provider_keys = std::move(*provider_keys);
            auto mappings = ListMappingsOn(c);
            if (!mappings) {
                return Err(mappings);
            }
            data.mappings = std::move(*mappings);
            auto costs = ListCostsOn(c);
            if (!costs) {
                return Err(costs);
            }
            data.costs = std::move(*costs);
            if (auto r = txn->Commit(); !r) {
                return Err(r);
            }
            return data;
        });
    }

    // --- Spend ---

    Result<void> ApplySpend(const std::vector<GroupSpend>& debits,
                            const std::vector<RequestLogRow>& logs,
                            int64_t now_ms) override {
        for (const auto& d : debits) {
            if (d.amount < 0) {
                return Fail(ErrorCode::kInvalidRequest,
                            fmt::format("spend for group {} is negative", d.group_id));
            }
        }
        if (debits.empty() && logs.empty()) {
            return {};
        }
        return Run([&](Conn& c) -> Result<void> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            if (auto r = ApplySpendOn(c, debits, logs, now_ms); !r) {
                return r;
            }
            return txn->Commit();
        });
    }

    Result<std::optional<AsyncTask>> UpdateTaskWithSpend(const AsyncTask& t,
                                                         const RequestLogRow& log,
                                                         std::string description,
                                                         int64_t now_ms) override {
        if (log.cost < 0) {
            return Fail(ErrorCode::kInvalidRequest,
                        fmt::format("spend for group {} is negative", log.group_id));
        }
        std::vector<GroupSpend> debits;
        if (log.cost > 0) {
            debits.push_back({log.group_id, log.cost, 1, std::move(description)});
        }
        std::vector<RequestLogRow> logs{log};
        return Run([&](Conn& c) -> Result<std::optional<AsyncTask>> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            auto updated = UpdateTaskOn(c, t);
            if (!updated || !*updated) {
                return updated;  // rolled back (nothing was written)
            }
            if (auto r = ApplySpendOn(c, debits, logs, now_ms); !r) {
                return Err(r);
            }
            if (auto r = txn->Commit(); !r) {
                return Err(r);
            }
            return updated;
        });
    }

    Result<std::vector<RequestLogRow>> ListRequestLogs(const RequestLogQuery& q) override {
        if (auto r = CheckPaging(q.limit, q.offset); !r) {
            return Err(r);
        }
        // At most eight distinct texts, each prepared once per connection.
        FilteredQuery f("SELECT " + kLogCols + " FROM request_logs");
        f.Int("virtual_key_id", "=", q.virtual_key_id)
            .Int("group_id", "=", q.group_id)
            .Int("timestamp_ms", ">=", q.since_ms)
            .Page("timestamp_ms DESC, id DESC", q.limit, q.offset);
        return Run(
            [&](Conn& c) { return QueryMany<RequestLogRow>(c, f.sql(), f.params(), ReadLog); });
    }

    Result<Micros> KeySpendSince(Id key_id, int64_t since_ms) override {
        return Run([&](Conn& c) -> Result<Micros> {
            auto sum = QueryOne<int64_t>(c,
                                         "SELECT COALESCE(SUM(cost), 0)::BIGINT FROM request_logs "
                                         "WHERE virtual_key_id = $1 AND timestamp_ms >= $2",
                                         Params().Int(key_id).Int(since_ms), ReadInt0);
            if (!sum) {
                return Err(sum);
            }
            return sum->value_or(0);
        });
    }

    // --- Async tasks ---

    Result<std::pair<AsyncTask, bool>> CreateTask(const AsyncTask& t) override {
        Params p = TaskParams(t);
        return Run([&](Conn& c) -> Result<std::pair<AsyncTask, bool>> {
            // The partial unique index decides atomically: a concurrent insert with the same
            // (key, Idempotency-Key) makes this one do nothing (after waiting for it to commit).
            // A taken id still fails (23505 on the primary key).
            for (int attempt = 0; attempt < 3; ++attempt) {
                auto inserted = c.Exec("INSERT INTO async_tasks (" + kTaskCols +
                                           ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                                           "$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, "
                                           "$21, $22, $23, $24, $25, $26, $27, $28, $29) "
                                           "ON CONFLICT (virtual_key_id, idempotency_key) "
                                           "WHERE idempotency_key <> '' DO NOTHING RETURNING id",
                                       p);
                if (!inserted) {
                    if (c.last_sqlstate() == "23505") {
                        return Fail(ErrorCode::kConflict,
                                    fmt::format("a task with id '{}' already exists", t.id));
                    }
                    return Err(inserted);
                }
                if (!inserted->empty()) {
                    return std::pair<AsyncTask, bool>(t, true);
                }
                auto existing = QueryOne<AsyncTask>(
                    c,
                    "SELECT " + kTaskCols +
                        " FROM async_tasks WHERE virtual_key_id = $1 AND idempotency_key = $2 "
                        "AND idempotency_key <> ''",
                    Params().Int(t.virtual_key_id).Text(t.idempotency_key), ReadTask);
                if (!existing) {
                    return Err(existing);
                }
                if (*existing) {
                    return std::pair<AsyncTask, bool>(std::move(**existing), false);
                }
                // The conflicting row is gone again (deleted meanwhile): try once more.
            }
            return Fail(ErrorCode::kInternal,
                        fmt::format("task '{}': idempotency key kept conflicting", t.id));
        });
    }

    Result<std::optional<AsyncTask>> GetTask(std::string_view id) override {
        return Run([&](Conn& c) {
            return QueryOne<AsyncTask>(c, "SELECT " + kTaskCols + " FROM async_tasks WHERE id = $1",
                                       Params().Text(id), ReadTask);
        });
    }

    Result<std::optional<AsyncTask>> UpdateTask(const AsyncTask& t) override {
        return Run([&](Conn& c) { return UpdateTaskOn(c, t); });
    }

    Result<std::vector<AsyncTask>> ListTasks(const TaskQuery& q) override {
        if (auto r = CheckPaging(q.limit, q.offset); !r) {
            return Err(r);
        }
        std::optional<std::string_view> state;
        if (q.state) {
            state = domain::ToString(*q.state);
        }
        FilteredQuery f("SELECT " + kTaskCols + " FROM async_tasks");
        f.Int("virtual_key_id", "=", q.virtual_key_id)
            .Text("state", state)
            // Word for word the WHERE clause of the partial index async_tasks_open.
            .Literal(q.non_terminal_only, "state IN ('pending', 'running')")
            .Int("created_at_ms", "<", q.created_before_ms)
            .Page("created_at_ms, id", q.limit, q.offset);
        return Run([&](Conn& c) { return QueryMany<AsyncTask>(c, f.sql(), f.params(), ReadTask); });
    }

    // --- Webhooks ---

    Result<std::optional<WebhookSecret>> GetWebhookSecret(Id virtual_key_id) override {
        return Run([&](Conn& c) {
            return QueryOne<WebhookSecret>(
                c, "SELECT " + kSecretCols + " FROM webhook_secrets WHERE virtual_key_id = $1",
                Params().Int(virtual_key_id), ReadSecret);
        });
    }

    Result<void> PutWebhookSecret(const WebhookSecret& w) override {
        return Run([&](Conn& c) -> Result<void> {
            auto r = c.Exec(
                "INSERT INTO webhook_secrets (" + kSecretCols +
                    ") VALUES ($1, $2, $3, $4, $5) ON CONFLICT (virtual_key_id) DO UPDATE SET "
                    "secret_sealed = excluded.secret_sealed, "
                    "previous_sealed = excluded.previous_sealed, "
                    "previous_valid_until_ms = excluded.previous_valid_until_ms, "
                    "created_at_ms = excluded.created_at_ms",
                Params()
                    .Int(w.virtual_key_id)
                    .Bytes(w.secret_sealed)
                    .Bytes(w.previous_sealed)
                    .Int(w.previous_valid_until_ms)
                    .Int(w.created_at_ms));
            if (!r) {
                if (c.last_sqlstate() == "23503") {
                    return Fail(ErrorCode::kInvalidRequest,
                                fmt::format("virtual key {} does not exist", w.virtual_key_id));
                }
                return Err(r);
            }
            return {};
        });
    }

    Result<void> UpsertWebhookDeliveries(const std::vector<WebhookDelivery>& rows) override {
        if (rows.empty()) {
            return {};
        }
        std::vector<std::pair<const std::string*, Params>> batch;
        batch.reserve(rows.size());
        for (const auto& d : rows) {
            Params p;
            p.Text(d.id)
                .Text(d.task_id)
                .Int(d.virtual_key_id)
                .Text(d.event_type)
                .Text(d.url)
                .Text(d.headers_json)
                .Text(d.payload)
                .Text(d.status)
                .Int(d.attempts)
                .Int(d.last_status_code)
                .Text(d.last_error)
                .Int(d.created_at_ms)
                .Int(d.updated_at_ms)
                .Int(d.delivered_at_ms);
            batch.emplace_back(&kUpsertDelivery, std::move(p));
        }
        return Run([&](Conn& c) -> Result<void> {
            auto txn = Txn::Begin(c);
            if (!txn) {
                return Err(txn);
            }
            auto results = c.Pipeline(batch);
            if (!results) {
                return Err(results);  // the whole batch rolls back
            }
            return txn->Commit();
        });
    }

    Result<std::optional<WebhookDelivery>> GetWebhookDelivery(std::string_view id) override {
        return Run([&](Conn& c) {
            return QueryOne<WebhookDelivery>(
                c, "SELECT " + kDeliveryCols + " FROM webhook_deliveries WHERE id = $1",
                Params().Text(id), ReadDelivery);
        });
    }

    Result<std::vector<WebhookDelivery>> ListWebhookDeliveries(
        const WebhookDeliveryQuery& q) override {
        if (auto r = CheckPaging(q.limit, q.offset); !r) {
            return Err(r);
        }
        FilteredQuery f("SELECT " + kDeliveryCols + " FROM webhook_deliveries");
        f.Text("status", q.status)
            .Int("virtual_key_id", "=", q.virtual_key_id)
            .Text("task_id", q.task_id)
            .Page("created_at_ms DESC, id DESC", q.limit, q.offset);
        return Run([&](Conn& c) {
            return QueryMany<WebhookDelivery>(c, f.sql(), f.params(), ReadDelivery);
        });
    }

    // --- Settings ---

    Result<std::optional<std::string>> GetSetting(std::string_view key) override {
        return Run([&](Conn& c) {
            return QueryOne<std::string>(c, "SELECT value FROM settings WHERE key = $1",
                                         Params().Text(key),
                                         [](const Rows& r, int i) { return r.Text(i, 0); });
        });
    }

    Result<void> PutSetting(std::string_view key, std::string_view value) override {
        return Run([&](Conn& c) -> Result<void> {
            auto r = c.Exec(
                "INSERT INTO settings (key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                Params().Text(key).Text(value));
            if (!r) {
                return Err(r);
            }
            return {};
        });
    }

private:
    /// Runs `fn` on a pooled connection. When it fails because the connection was lost and
    /// nothing it sent could have been committed, it reconnects once and runs `fn` again.
    template <class F>
    auto Run(F&& fn) -> decltype(fn(std::declval<Conn&>())) {
        using R = decltype(fn(std::declval<Conn&>()));
        auto lease = pool_.Acquire();
        if (!lease) {
            return R(Err(lease));
        }
        Conn& c = **lease;
        c.ClearRetryState();
        R r = fn(c);
        if (!r && r.error().code == ErrorCode::kUnavailable && !c.unsafe_to_retry() &&
            !c.Healthy()) {
            spdlog::warn("store: postgresql connection lost ({}); reconnecting", r.error().message);
            if (c.Reset()) {
                c.ClearRetryState();
                r = fn(c);
            }
        }
        return r;
    }

    // --- Helpers on one connection ---

    Result<std::vector<VirtualKeyGroup>> ListGroupsOn(Conn& c) {
        return QueryMany<VirtualKeyGroup>(
            c, "SELECT " + kGroupCols + " FROM virtual_key_groups ORDER BY id", {}, ReadGroup);
    }

    Result<std::vector<VirtualKey>> ListKeysOn(Conn& c) {
        return QueryMany<VirtualKey>(c, "SELECT " + kKeyCols + " FROM virtual_keys ORDER BY id", {},
                                     ReadKey);
    }

    Result<std::vector<Provider>> ListProvidersOn(Conn& c) {
        return QueryMany<Provider>(c, "SELECT " + kProviderCols + " FROM providers ORDER BY id", {},
                                   ReadProvider);
    }

    Result<std::vector<ModelMapping>> ListMappingsOn(Conn& c) {
        return QueryMany<ModelMapping>(
            c, "SELECT " + kMappingCols + " FROM model_mappings ORDER BY id", {}, ReadMapping);
    }

    Result<std::vector<ModelCost>> ListCostsOn(Conn& c) {
        auto costs = QueryMany<ModelCost>(
            c, "SELECT " + kCostCols + " FROM model_costs ORDER BY id", {}, ReadCost);
        if (!costs) {
            return Err(costs);
        }
        auto links = QueryMany<std::pair<Id, Id>>(
            c, "SELECT cost_id, mapping_id FROM model_cost_mappings ORDER BY cost_id, mapping_id",
            {}, [](const Rows& r, int i) { return std::pair<Id, Id>(r.Int(i, 0), r.Int(i, 1)); });
        if (!links) {
            return Err(links);
        }
        std::map<Id, std::vector<Id>> by_cost;
        for (const auto& [cost_id, mapping_id] : *links) {
            by_cost[cost_id].push_back(mapping_id);
        }
        for (auto& cost : *costs) {
            if (auto it = by_cost.find(cost.id); it != by_cost.end()) {
                cost.mapping_ids = std::move(it->second);
            }
        }
        return costs;
    }

    Result<std::optional<ModelCost>> GetCostOn(Conn& c, Id id) {
        auto cost =
            QueryOne<ModelCost>(c, "SELECT " + kCostCols + " FROM model_costs WHERE id = $1",
                                Params().Int(id), ReadCost);
        if (!cost || !*cost) {
            return cost;
        }
        auto links = QueryMany<Id>(
            c, "SELECT mapping_id FROM model_cost_mappings WHERE cost_id = $1 ORDER BY mapping_id",
            Params().Int(id), ReadInt0);
        if (!links) {
            return Err(links);
        }
        (*cost)->mapping_ids = std::move(*links);
        return cost;
    }

    Result<void> RequireMappingsOn(Conn& c, const std::vector<Id>& ids) {
        if (ids.empty()) {
            return {};
        }
        // The mappings stay locked until the transaction ends, so none disappears meanwhile.
        auto found = QueryMany<Id>(
            c, "SELECT id FROM model_mappings WHERE id = ANY($1::bigint[]) FOR KEY SHARE",
            Params().Text(IdArray(ids)), ReadInt0);
        if (!found) {
            return Err(found);
        }
        for (Id id : ids) {
            if (std::find(found->begin(), found->end(), id) == found->end()) {
                return Fail(ErrorCode::kInvalidRequest,
                            fmt::format("model mapping {} does not exist", id));
            }
        }
        return {};
    }

    Result<void> InsertCostLinksOn(Conn& c, Id cost_id, const std::vector<Id>& ids) {
        if (ids.empty()) {
            return {};
        }
        auto r = c.Exec(
            "INSERT INTO model_cost_mappings (cost_id, mapping_id) "
            "SELECT $1::bigint, unnest($2::bigint[])",
            Params().Int(cost_id).Text(IdArray(ids)));
        if (!r) {
            return Err(r);
        }
        return {};
    }

    Result<void> DemotePrimaryOn(Conn& c, Id provider_id, Id keep_id, int64_t now_ms) {
        auto r = c.Exec(
            "UPDATE provider_keys SET is_primary = FALSE, updated_at_ms = $3 "
            "WHERE provider_id = $1 AND id <> $2 AND is_primary",
            Params().Int(provider_id).Int(keep_id).Int(now_ms));
        if (!r) {
            return Err(r);
        }
        return {};
    }

    static Params MappingParams(const ModelMapping& m) {
        Params p;
        p.Text(m.model_alias)
            .Text(m.provider_model_id)
            .Int(m.provider_id)
            .Bool(m.is_enabled)
            .Int(m.priority)
            .OptInt(m.max_context_tokens_override)
            .Bool(m.supports_chat)
            .Bool(m.supports_streaming)
            .Bool(m.supports_embeddings)
            .Bool(m.supports_image_generation)
            .Bool(m.supports_video_generation)
            .Bool(m.supports_vision)
            .Bool(m.supports_function_calling);
        return p;
    }

    static Params CostParams(const ModelCost& c) {
        Params p;
        p.Text(c.cost_name)
            .Int(c.input_per_million)
            .Int(c.output_per_million)
            .Int(c.embedding_per_million)
            .Int(c.image_per_image)
            .Int(c.video_per_second)
            .Int(c.priority)
            .Text(c.description);
        return p;
    }

    /// The body of ApplySpend inside the caller's transaction: every debit (balance + ledger
    /// row, one statement each) and every request-log row, pipelined in one round trip per
    /// chunk of statements.
    Result<void> ApplySpendOn(Conn& c,
                              const std::vector<GroupSpend>& debits,
                              const std::vector<RequestLogRow>& logs,
                              int64_t now_ms) {
        std::vector<std::pair<const std::string*, Params>> batch;
        batch.reserve(debits.size() + logs.size());
        for (const auto& d : debits) {
            batch.emplace_back(&kDebit, DebitParams(d.group_id, d.amount, now_ms, d.description));
        }
        for (const auto& row : logs) {
            batch.emplace_back(&kInsertLog, LogParams(row));
        }
        auto results = c.Pipeline(batch);
        if (!results) {
            if (results.error().code == ErrorCode::kInvalidRequest &&
                c.last_sqlstate() == "22003") {
                results.error().message = "a group balance would overflow";
            }
            return Err(results);
        }
        for (size_t i = 0; i < debits.size(); ++i) {
            if ((*results)[i].empty()) {
                // Nothing of the batch is kept: the caller's transaction rolls back.
                return Fail(ErrorCode::kInvalidRequest,
                            fmt::format("virtual key group {} does not exist", debits[i].group_id));
            }
        }
        return {};
    }

    Result<std::optional<AsyncTask>> UpdateTaskOn(Conn& c, const AsyncTask& t) {
        auto updated = QueryOne<AsyncTask>(
            c,
            "UPDATE async_tasks SET state = $2, progress = $3, message = $4, model_alias = $5, "
            "request_json = $6, result_json = $7, error_message = $8, error_code = $9, "
            "retryable = $10, webhook_url = $11, webhook_headers_json = $12, "
            "timeout_seconds = $13, attempt = $14, retry_count = $15, max_retries = $16, "
            "upstream_job_id = $17, mapping_id = $18, updated_at_ms = $19, "
            "started_at_ms = $20, completed_at_ms = $21, next_attempt_at_ms = $22, "
            "version = version + 1 WHERE id = $1 AND version = $23 RETURNING " +
                kTaskCols,
            Params()
                .Text(t.id)
                .Text(domain::ToString(t.state))
                .Int(t.progress)
                .Text(t.message)
                .Text(t.model_alias)
                .Text(t.request_json)
                .Text(t.result_json)
                .Text(t.error_message)
                .Text(t.error_code)
                .Bool(t.retryable)
                .Text(t.webhook_url)
                .Text(t.webhook_headers_json)
                .Int(t.timeout_seconds)
                .Int(t.attempt)
                .Int(t.retry_count)
                .Int(t.max_retries)
                .Text(t.upstream_job_id)
                .Int(t.mapping_id)
                .Int(t.updated_at_ms)
                .Int(t.started_at_ms)
                .Int(t.completed_at_ms)
                .Int(t.next_attempt_at_ms)
                .Int(t.version),
            ReadTask);
        if (!updated || *updated) {
            return updated;
        }
        // Nothing matched: either there is no such task or its version moved.
        auto stored = QueryOne<int64_t>(c, "SELECT version FROM async_tasks WHERE id = $1",
                                        Params().Text(t.id), ReadInt0);
        if (!stored) {
            return Err(stored);
        }
        if (!*stored) {
            return std::optional<AsyncTask>();
        }
        return Fail(ErrorCode::kConflict,
                    fmt::format("task {} was changed concurrently (version {} expected, {} stored)",
                                t.id, t.version, **stored));
    }

    pg::Pool pool_;
};

/// Removes `pool_max_conns=N` from the URL's query (libpq would refuse it) into `pool_max`.
Result<std::string> TakePoolSize(const std::string& url, int& pool_max) {
    auto q = url.find('?');
    if (q == std::string::npos) {
        return url;
    }
    std::string base = url.substr(0, q);
    std::string query = url.substr(q + 1);
    std::string kept;
    size_t pos = 0;
    while (pos <= query.size()) {
        size_t amp = query.find('&', pos);
        if (amp == std::string::npos) {
            amp = query.size();
        }
        std::string_view param(query.data() + pos, amp - pos);
        constexpr std::string_view kKey = "pool_max_conns=";
        if (param.substr(0, kKey.size()) == kKey) {
            std::string_view value = param.substr(kKey.size());
            int n = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (ec != std::errc() || end != value.data() + value.size() || n < 1 || n > 1000) {
                return Fail(ErrorCode::kInvalidRequest,
                            "database URL: pool_max_conns must be an integer from 1 to 1000");
            }
            pool_max = n;
        } else if (!param.empty()) {
            if (!kept.empty()) {
                kept += '&';
            }
            kept += param;
        }
        pos = amp + 1;
    }
    return kept.empty() ? base : base + "?" + kept;
}

}  // namespace

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url,
                                                 const PostgresOptions& options) {
    if (url.rfind("postgres://", 0) != 0 && url.rfind("postgresql://", 0) != 0) {
        return Fail(ErrorCode::kInvalidRequest,
                    "database URL must start with postgres:// or postgresql://");
    }
    int pool_max = options.pool_max;
    auto conninfo = TakePoolSize(url, pool_max);
    if (!conninfo) {
        return Err(conninfo);
    }
    if (pool_max < 1) {
        return Fail(ErrorCode::kInvalidRequest, "postgresql pool size must be at least 1");
    }
    auto store = std::make_unique<PostgresStore>(std::move(*conninfo), pool_max);
    if (auto r = store->Connect(); !r) {
        return Err(r);
    }
    return std::unique_ptr<Store>(std::move(store));
}

}  // namespace conduit::store
