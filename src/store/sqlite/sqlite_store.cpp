#include "store/sqlite/sqlite_store.hpp"

#include "core/clock.hpp"
#include "store/migrations/migrations.hpp"
#include "store/sqlite/sqlite_db.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

namespace conduit::store {

namespace {

using core::ErrorCode;
using core::Fail;
using sqlite::Db;
using sqlite::Statement;
using sqlite::Transaction;

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

/// Moves the error out of a failed Result into an unexpected of any Result type.
template <class R>
tl::unexpected<core::Error> Err(R& result) {
    return tl::unexpected(std::move(result.error()));
}

// --- Column lists and row readers (column order must match) ---

const std::string kGroupCols =
    "id, group_name, external_group_id, balance, lifetime_credits_added, lifetime_spent, "
    "created_at_ms, updated_at_ms";

VirtualKeyGroup ReadGroup(const Statement& s) {
    VirtualKeyGroup g;
    g.id = s.Int(0);
    g.group_name = s.Text(1);
    g.external_group_id = s.OptText(2);
    g.balance = s.Int(3);
    g.lifetime_credits_added = s.Int(4);
    g.lifetime_spent = s.Int(5);
    g.created_at_ms = s.Int(6);
    g.updated_at_ms = s.Int(7);
    return g;
}

const std::string kTxnCols =
    "id, group_id, type, amount, balance_after, reference_type, reference_id, description, "
    "initiated_by, created_at_ms";

GroupTransaction ReadTxn(const Statement& s) {
    GroupTransaction t;
    t.id = s.Int(0);
    t.group_id = s.Int(1);
    t.type = static_cast<domain::TransactionType>(s.Int(2));
    t.amount = s.Int(3);
    t.balance_after = s.Int(4);
    t.reference_type = static_cast<domain::ReferenceType>(s.Int(5));
    t.reference_id = s.Text(6);
    t.description = s.Text(7);
    t.initiated_by = s.Text(8);
    t.created_at_ms = s.Int(9);
    return t;
}

const std::string kKeyCols =
    "id, key_name, key_hash, key_prefix, group_id, allowed_models, is_enabled, expires_at_ms, "
    "metadata, description, rate_limit_rpm, rate_limit_rpd, created_at_ms, updated_at_ms, "
    "rate_limit_tpm, max_budget, budget_duration";

VirtualKey ReadKey(const Statement& s) {
    VirtualKey k;
    k.id = s.Int(0);
    k.key_name = s.Text(1);
    k.key_hash = s.Text(2);
    k.key_prefix = s.Text(3);
    k.group_id = s.Int(4);
    k.allowed_models = s.Text(5);
    k.is_enabled = s.Bool(6);
    k.expires_at_ms = s.OptInt(7);
    k.metadata = s.Text(8);
    k.description = s.Text(9);
    k.rate_limit_rpm = s.OptInt(10);
    k.rate_limit_rpd = s.OptInt(11);
    k.created_at_ms = s.Int(12);
    k.updated_at_ms = s.Int(13);
    k.rate_limit_tpm = s.OptInt(14);
    k.max_budget = s.OptInt(15);
    k.budget_duration = s.Text(16);
    return k;
}

const std::string kProviderCols =
    "id, type, name, base_url, is_enabled, created_at_ms, updated_at_ms";

Provider ReadProvider(const Statement& s) {
    Provider p;
    p.id = s.Int(0);
    p.type = static_cast<domain::ProviderType>(s.Int(1));
    p.name = s.Text(2);
    p.base_url = s.Text(3);
    p.is_enabled = s.Bool(4);
    p.created_at_ms = s.Int(5);
    p.updated_at_ms = s.Int(6);
    return p;
}

const std::string kProviderKeyCols =
    "id, provider_id, api_key_sealed, key_hint, base_url, organization, key_name, is_primary, "
    "is_enabled, created_at_ms, updated_at_ms";

ProviderKey ReadProviderKey(const Statement& s) {
    ProviderKey k;
    k.id = s.Int(0);
    k.provider_id = s.Int(1);
    k.api_key_sealed = s.Blob(2);
    k.key_hint = s.Text(3);
    k.base_url = s.Text(4);
    k.organization = s.Text(5);
    k.key_name = s.Text(6);
    k.is_primary = s.Bool(7);
    k.is_enabled = s.Bool(8);
    k.created_at_ms = s.Int(9);
    k.updated_at_ms = s.Int(10);
    return k;
}

const std::string kMappingCols =
    "id, model_alias, provider_model_id, provider_id, is_enabled, priority, "
    "max_context_tokens_override, supports_chat, supports_streaming, supports_embeddings, "
    "supports_image_generation, supports_video_generation, supports_vision, "
    "supports_function_calling, created_at_ms, updated_at_ms";

ModelMapping ReadMapping(const Statement& s) {
    ModelMapping m;
    m.id = s.Int(0);
    m.model_alias = s.Text(1);
    m.provider_model_id = s.Text(2);
    m.provider_id = s.Int(3);
    m.is_enabled = s.Bool(4);
    m.priority = static_cast<int>(s.Int(5));
    m.max_context_tokens_override = s.OptInt(6);
    m.supports_chat = s.Bool(7);
    m.supports_streaming = s.Bool(8);
    m.supports_embeddings = s.Bool(9);
    m.supports_image_generation = s.Bool(10);
    m.supports_video_generation = s.Bool(11);
    m.supports_vision = s.Bool(12);
    m.supports_function_calling = s.Bool(13);
    m.created_at_ms = s.Int(14);
    m.updated_at_ms = s.Int(15);
    return m;
}

const std::string kCostCols =
    "id, cost_name, input_per_million, output_per_million, embedding_per_million, "
    "image_per_image, video_per_second, priority, description, created_at_ms, updated_at_ms";

ModelCost ReadCost(const Statement& s) {
    ModelCost c;
    c.id = s.Int(0);
    c.cost_name = s.Text(1);
    c.input_per_million = s.Int(2);
    c.output_per_million = s.Int(3);
    c.embedding_per_million = s.Int(4);
    c.image_per_image = s.Int(5);
    c.video_per_second = s.Int(6);
    c.priority = static_cast<int>(s.Int(7));
    c.description = s.Text(8);
    c.created_at_ms = s.Int(9);
    c.updated_at_ms = s.Int(10);
    return c;
}

const std::string kLogCols =
    "id, request_id, virtual_key_id, group_id, model_alias, provider_model, request_type, "
    "input_tokens, output_tokens, cost, response_time_ms, status_code, streamed, "
    "usage_estimated, client_ip, timestamp_ms";

RequestLogRow ReadLog(const Statement& s) {
    RequestLogRow r;
    r.id = s.Int(0);
    r.request_id = s.Text(1);
    r.virtual_key_id = s.Int(2);
    r.group_id = s.Int(3);
    r.model_alias = s.Text(4);
    r.provider_model = s.Text(5);
    r.request_type = s.Text(6);
    r.input_tokens = s.Int(7);
    r.output_tokens = s.Int(8);
    r.cost = s.Int(9);
    r.response_time_ms = s.Int(10);
    r.status_code = static_cast<int>(s.Int(11));
    r.streamed = s.Bool(12);
    r.usage_estimated = s.Bool(13);
    r.client_ip = s.Text(14);
    r.timestamp_ms = s.Int(15);
    return r;
}

/// Sorted, duplicate-free copy of a cost's mapping ids (the link table's natural form).
std::vector<Id> NormaliseIds(std::vector<Id> ids) {
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

// Column order of async_tasks, and of parameters ?1..?29 in BindTaskFields.
const std::string kTaskCols =
    "id, type, state, progress, message, virtual_key_id, group_id, model_alias, request_json, "
    "result_json, error_message, error_code, retryable, webhook_url, webhook_headers_json, "
    "timeout_seconds, idempotency_key, request_hash, attempt, retry_count, max_retries, "
    "upstream_job_id, mapping_id, created_at_ms, updated_at_ms, started_at_ms, completed_at_ms, "
    "next_attempt_at_ms, version";

AsyncTask ReadTask(const Statement& s) {
    AsyncTask t;
    t.id = s.Text(0);
    t.type = s.Text(1);
    // The CHECK constraint admits only the six state strings.
    t.state = domain::ParseTaskState(s.Text(2)).value_or(domain::TaskState::kPending);
    t.progress = static_cast<int>(s.Int(3));
    t.message = s.Text(4);
    t.virtual_key_id = s.Int(5);
    t.group_id = s.Int(6);
    t.model_alias = s.Text(7);
    t.request_json = s.Text(8);
    t.result_json = s.Text(9);
    t.error_message = s.Text(10);
    t.error_code = s.Text(11);
    t.retryable = s.Bool(12);
    t.webhook_url = s.Text(13);
    t.webhook_headers_json = s.Text(14);
    t.timeout_seconds = s.Int(15);
    t.idempotency_key = s.Text(16);
    t.request_hash = s.Text(17);
    t.attempt = static_cast<int>(s.Int(18));
    t.retry_count = static_cast<int>(s.Int(19));
    t.max_retries = static_cast<int>(s.Int(20));
    t.upstream_job_id = s.Text(21);
    t.mapping_id = s.Int(22);
    t.created_at_ms = s.Int(23);
    t.updated_at_ms = s.Int(24);
    t.started_at_ms = s.Int(25);
    t.completed_at_ms = s.Int(26);
    t.next_attempt_at_ms = s.Int(27);
    t.version = s.Int(28);
    return t;
}

/// Binds every field of `t` to ?1..?29 (kTaskCols order). Text is not copied: `t` must outlive
/// the statement's use.
void BindTaskFields(Statement& s, const AsyncTask& t) {
    s.BindTextNoCopy(1, t.id)
        .BindTextNoCopy(2, t.type)
        .BindTextNoCopy(3, domain::ToString(t.state))  // a static string
        .BindInt(4, t.progress)
        .BindTextNoCopy(5, t.message)
        .BindInt(6, t.virtual_key_id)
        .BindInt(7, t.group_id)
        .BindTextNoCopy(8, t.model_alias)
        .BindTextNoCopy(9, t.request_json)
        .BindTextNoCopy(10, t.result_json)
        .BindTextNoCopy(11, t.error_message)
        .BindTextNoCopy(12, t.error_code)
        .BindBool(13, t.retryable)
        .BindTextNoCopy(14, t.webhook_url)
        .BindTextNoCopy(15, t.webhook_headers_json)
        .BindInt(16, t.timeout_seconds)
        .BindTextNoCopy(17, t.idempotency_key)
        .BindTextNoCopy(18, t.request_hash)
        .BindInt(19, t.attempt)
        .BindInt(20, t.retry_count)
        .BindInt(21, t.max_retries)
        .BindTextNoCopy(22, t.upstream_job_id)
        .BindInt(23, t.mapping_id)
        .BindInt(24, t.created_at_ms)
        .BindInt(25, t.updated_at_ms)
        .BindInt(26, t.started_at_ms)
        .BindInt(27, t.completed_at_ms)
        .BindInt(28, t.next_attempt_at_ms)
        .BindInt(29, t.version);
}

const std::string kSecretCols =
    "virtual_key_id, secret_sealed, previous_sealed, previous_valid_until_ms, created_at_ms";

WebhookSecret ReadSecret(const Statement& s) {
    WebhookSecret w;
    w.virtual_key_id = s.Int(0);
    w.secret_sealed = s.Blob(1);
    w.previous_sealed = s.Blob(2);
    w.previous_valid_until_ms = s.Int(3);
    w.created_at_ms = s.Int(4);
    return w;
}

// Column order of webhook_deliveries, and of parameters ?1..?14 in the upsert.
const std::string kDeliveryCols =
    "id, task_id, virtual_key_id, event_type, url, headers_json, payload, status, attempts, "
    "last_status_code, last_error, created_at_ms, updated_at_ms, delivered_at_ms";

WebhookDelivery ReadDelivery(const Statement& s) {
    WebhookDelivery d;
    d.id = s.Text(0);
    d.task_id = s.Text(1);
    d.virtual_key_id = s.Int(2);
    d.event_type = s.Text(3);
    d.url = s.Text(4);
    d.headers_json = s.Text(5);
    d.payload = s.Text(6);
    d.status = s.Text(7);
    d.attempts = static_cast<int>(s.Int(8));
    d.last_status_code = static_cast<int>(s.Int(9));
    d.last_error = s.Text(10);
    d.created_at_ms = s.Int(11);
    d.updated_at_ms = s.Int(12);
    d.delivered_at_ms = s.Int(13);
    return d;
}

Result<void> CheckPaging(int limit, int offset) {
    if (limit < 0 || offset < 0) {
        return Fail(ErrorCode::kInvalidRequest, "limit and offset must not be negative");
    }
    return {};
}

/// The embedded Store adapter. Every public method takes mu_; the *Locked helpers assume it.
class SqliteStore final : public Store {
public:
    explicit SqliteStore(std::unique_ptr<Db> db) : db_(std::move(db)) {}

    std::string_view Engine() const override { return "sqlite"; }

    Result<void> Migrate() override {
        std::lock_guard lock(mu_);
        auto created = db_->Exec(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL,"
            " applied_at_ms INTEGER NOT NULL) STRICT");
        if (!created) {
            return created;
        }
        auto steps = migrations::SqliteMigrations();
        int latest = steps.empty() ? 0 : steps.back().version;
        for (const auto& step : steps) {
            auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
            if (!txn) {
                return Err(txn);
            }
            // Read inside the write transaction: another process may have migrated meanwhile.
            auto current = MaxVersionLocked();
            if (!current) {
                return Err(current);
            }
            if (*current > latest) {
                return Fail(ErrorCode::kInternal,
                            fmt::format("database schema version {} is newer than this "
                                        "binary's ({}); refusing to use it",
                                        *current, latest));
            }
            if (step.version <= *current) {
                continue;  // already applied; the transaction rolls back (nothing written)
            }
            if (auto r = db_->Exec(step.sql); !r) {
                r.error().message =
                    fmt::format("migration {} failed: {}", step.name, r.error().message);
                return r;
            }
            auto ins = db_->Prepare(
                "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)");
            if (!ins) {
                return Err(ins);
            }
            (*ins)
                ->BindInt(1, step.version)
                .BindText(2, step.name)
                .BindInt(3, core::SystemClock::Instance().NowUnixMs());
            if (auto r = (*ins)->Run(); !r) {
                return r;
            }
            if (auto r = txn->Commit(); !r) {
                return r;
            }
            spdlog::info("store: applied sqlite migration {}", step.name);
        }
        return {};
    }

    Result<int> SchemaVersion() override {
        std::lock_guard lock(mu_);
        auto exists = db_->Prepare(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'");
        if (!exists) {
            return Err(exists);
        }
        auto row = (*exists)->Step();
        if (!row) {
            return Err(row);
        }
        if (!*row) {
            return 0;
        }
        auto count = db_->Prepare("SELECT COUNT(*) FROM schema_migrations");
        if (!count) {
            return Err(count);
        }
        auto crow = (*count)->Step();
        if (!crow) {
            return Err(crow);
        }
        return static_cast<int>((*count)->Int(0));
    }

    Result<void> Ping() override {
        std::lock_guard lock(mu_);
        auto st = db_->Prepare("SELECT 1");
        if (!st) {
            return Err(st);
        }
        auto row = (*st)->Step();
        if (!row) {
            return Err(row);
        }
        if (!*row || (*st)->Int(0) != 1) {
            return Fail(ErrorCode::kInternal, "sqlite ping returned no row");
        }
        return {};
    }

    // --- Groups ---

    Result<std::vector<VirtualKeyGroup>> ListGroups() override {
        std::lock_guard lock(mu_);
        return ListGroupsLocked();
    }

    Result<std::optional<VirtualKeyGroup>> GetGroup(Id id) override {
        std::lock_guard lock(mu_);
        return QueryOne<VirtualKeyGroup>(
            "SELECT " + kGroupCols + " FROM virtual_key_groups WHERE id = ?1", ReadGroup,
            [&](Statement& s) { s.BindInt(1, id); });
    }

    Result<VirtualKeyGroup> CreateGroup(const VirtualKeyGroup& g,
                                        std::string_view initiated_by) override {
        if (g.balance < 0) {
            return Fail(ErrorCode::kInvalidRequest, "initial balance must not be negative");
        }
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto ins = db_->Prepare(
            "INSERT INTO virtual_key_groups (group_name, external_group_id, balance, "
            "lifetime_credits_added, lifetime_spent, created_at_ms, updated_at_ms) "
            "VALUES (?1, ?2, ?3, ?3, 0, ?4, ?5)");
        if (!ins) {
            return Err(ins);
        }
        (*ins)
            ->BindText(1, g.group_name)
            .BindOptText(2, g.external_group_id)
            .BindInt(3, g.balance)
            .BindInt(4, g.created_at_ms)
            .BindInt(5, g.updated_at_ms);
        if (auto r = (*ins)->Run(); !r) {
            return Err(r);
        }
        VirtualKeyGroup out = g;
        out.id = db_->LastInsertRowId();
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
            if (auto r = InsertTxnLocked(t); !r) {
                return Err(r);
            }
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return out;
    }

    Result<std::optional<VirtualKeyGroup>> UpdateGroup(const VirtualKeyGroup& g) override {
        std::lock_guard lock(mu_);
        return QueryOne<VirtualKeyGroup>(
            "UPDATE virtual_key_groups SET group_name = ?1, external_group_id = ?2, "
            "updated_at_ms = ?3 WHERE id = ?4 RETURNING " +
                kGroupCols,
            ReadGroup, [&](Statement& s) {
                s.BindText(1, g.group_name)
                    .BindOptText(2, g.external_group_id)
                    .BindInt(3, g.updated_at_ms)
                    .BindInt(4, g.id);
            });
    }

    Result<bool> DeleteGroup(Id id) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto keys = CountLocked("SELECT COUNT(*) FROM virtual_keys WHERE group_id = ?1", id);
        if (!keys) {
            return Err(keys);
        }
        if (*keys > 0) {
            return Fail(ErrorCode::kConflict,
                        fmt::format("virtual key group {} still has {} virtual key(s)", id, *keys));
        }
        auto deleted = ExecChangesLocked("DELETE FROM virtual_key_groups WHERE id = ?1", id);
        if (!deleted) {
            return Err(deleted);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return *deleted > 0;
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
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        Micros credit = delta > 0 ? delta : 0;
        Micros debit = delta < 0 ? -delta : 0;
        auto balance = UpdateBalanceLocked(group_id, delta, credit, debit, now_ms);
        if (!balance) {
            return Err(balance);
        }
        if (!*balance) {
            return std::optional<GroupTransaction>();  // no such group; rolls back (no-op)
        }
        GroupTransaction t;
        t.group_id = group_id;
        t.type = type;
        t.amount = credit + debit;
        t.balance_after = **balance;
        t.reference_type = ref;
        t.reference_id = std::string(reference_id);
        t.description = std::string(description);
        t.initiated_by = std::string(initiated_by);
        t.created_at_ms = now_ms;
        auto id = InsertTxnLocked(t);
        if (!id) {
            return Err(id);
        }
        t.id = *id;
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return std::optional<GroupTransaction>(std::move(t));
    }

    Result<std::vector<GroupTransaction>> ListTransactions(Id group_id,
                                                           int limit,
                                                           int offset) override {
        if (auto r = CheckPaging(limit, offset); !r) {
            return Err(r);
        }
        std::lock_guard lock(mu_);
        return QueryMany<GroupTransaction>(
            "SELECT " + kTxnCols +
                " FROM group_transactions WHERE group_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
            ReadTxn,
            [&](Statement& s) { s.BindInt(1, group_id).BindInt(2, limit).BindInt(3, offset); });
    }

    // --- Virtual keys ---

    Result<std::vector<VirtualKey>> ListKeys(std::optional<Id> group_id) override {
        std::lock_guard lock(mu_);
        if (group_id) {
            return QueryMany<VirtualKey>(
                "SELECT " + kKeyCols + " FROM virtual_keys WHERE group_id = ?1 ORDER BY id",
                ReadKey, [&](Statement& s) { s.BindInt(1, *group_id); });
        }
        return ListKeysLocked();
    }

    Result<std::optional<VirtualKey>> GetKey(Id id) override {
        std::lock_guard lock(mu_);
        return GetKeyLocked(id);
    }

    Result<VirtualKey> CreateKey(const VirtualKey& k) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        if (auto r = RequireGroupLocked(k.group_id); !r) {
            return Err(r);
        }
        auto ins = db_->Prepare(
            "INSERT INTO virtual_keys (key_name, key_hash, key_prefix, group_id, allowed_models, "
            "is_enabled, expires_at_ms, metadata, description, rate_limit_rpm, rate_limit_rpd, "
            "created_at_ms, updated_at_ms, rate_limit_tpm, max_budget, budget_duration) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)");
        if (!ins) {
            return Err(ins);
        }
        (*ins)
            ->BindText(1, k.key_name)
            .BindText(2, k.key_hash)
            .BindText(3, k.key_prefix)
            .BindInt(4, k.group_id)
            .BindText(5, k.allowed_models)
            .BindBool(6, k.is_enabled)
            .BindOptInt(7, k.expires_at_ms)
            .BindText(8, k.metadata)
            .BindText(9, k.description)
            .BindOptInt(10, k.rate_limit_rpm)
            .BindOptInt(11, k.rate_limit_rpd)
            .BindInt(12, k.created_at_ms)
            .BindInt(13, k.updated_at_ms)
            .BindOptInt(14, k.rate_limit_tpm)
            .BindOptInt(15, k.max_budget)
            .BindText(16, k.budget_duration);
        if (auto r = (*ins)->Run(); !r) {
            if (r.error().code == ErrorCode::kConflict) {
                return Fail(ErrorCode::kConflict, "a virtual key with this hash already exists");
            }
            return Err(r);
        }
        VirtualKey out = k;
        out.id = db_->LastInsertRowId();
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return out;
    }

    Result<std::optional<VirtualKey>> UpdateKey(const VirtualKey& k) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto existing = GetKeyLocked(k.id);
        if (!existing) {
            return Err(existing);
        }
        if (!*existing) {
            return std::optional<VirtualKey>();
        }
        if (auto r = RequireGroupLocked(k.group_id); !r) {
            return Err(r);
        }
        auto updated = QueryOne<VirtualKey>(
            "UPDATE virtual_keys SET key_name = ?1, group_id = ?2, allowed_models = ?3, "
            "is_enabled = ?4, expires_at_ms = ?5, metadata = ?6, description = ?7, "
            "rate_limit_rpm = ?8, rate_limit_rpd = ?9, updated_at_ms = ?10, rate_limit_tpm = ?12, "
            "max_budget = ?13, budget_duration = ?14 WHERE id = ?11 "
            "RETURNING " +
                kKeyCols,
            ReadKey, [&](Statement& s) {
                s.BindText(1, k.key_name)
                    .BindInt(2, k.group_id)
                    .BindText(3, k.allowed_models)
                    .BindBool(4, k.is_enabled)
                    .BindOptInt(5, k.expires_at_ms)
                    .BindText(6, k.metadata)
                    .BindText(7, k.description)
                    .BindOptInt(8, k.rate_limit_rpm)
                    .BindOptInt(9, k.rate_limit_rpd)
                    .BindInt(10, k.updated_at_ms)
                    .BindInt(11, k.id)
                    .BindOptInt(12, k.rate_limit_tpm)
                    .BindOptInt(13, k.max_budget)
                    .BindText(14, k.budget_duration);
            });
        if (!updated) {
            return Err(updated);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return updated;
    }

    Result<bool> DeleteKey(Id id) override {
        std::lock_guard lock(mu_);
        auto n = ExecChangesLocked("DELETE FROM virtual_keys WHERE id = ?1", id);
        if (!n) {
            return Err(n);
        }
        return *n > 0;
    }

    // --- Providers ---

    Result<std::vector<Provider>> ListProviders() override {
        std::lock_guard lock(mu_);
        return ListProvidersLocked();
    }

    Result<std::optional<Provider>> GetProvider(Id id) override {
        std::lock_guard lock(mu_);
        return QueryOne<Provider>("SELECT " + kProviderCols + " FROM providers WHERE id = ?1",
                                  ReadProvider, [&](Statement& s) { s.BindInt(1, id); });
    }

    Result<Provider> CreateProvider(const Provider& p) override {
        std::lock_guard lock(mu_);
        auto ins = db_->Prepare(
            "INSERT INTO providers (type, name, base_url, is_enabled, created_at_ms, "
            "updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
        if (!ins) {
            return Err(ins);
        }
        (*ins)
            ->BindInt(1, static_cast<int64_t>(p.type))
            .BindText(2, p.name)
            .BindText(3, p.base_url)
            .BindBool(4, p.is_enabled)
            .BindInt(5, p.created_at_ms)
            .BindInt(6, p.updated_at_ms);
        if (auto r = (*ins)->Run(); !r) {
            return Err(r);
        }
        Provider out = p;
        out.id = db_->LastInsertRowId();
        return out;
    }

    Result<std::optional<Provider>> UpdateProvider(const Provider& p) override {
        std::lock_guard lock(mu_);
        return QueryOne<Provider>(
            "UPDATE providers SET type = ?1, name = ?2, base_url = ?3, is_enabled = ?4, "
            "updated_at_ms = ?5 WHERE id = ?6 RETURNING " +
                kProviderCols,
            ReadProvider, [&](Statement& s) {
                s.BindInt(1, static_cast<int64_t>(p.type))
                    .BindText(2, p.name)
                    .BindText(3, p.base_url)
                    .BindBool(4, p.is_enabled)
                    .BindInt(5, p.updated_at_ms)
                    .BindInt(6, p.id);
            });
    }

    Result<bool> DeleteProvider(Id id) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto mappings =
            CountLocked("SELECT COUNT(*) FROM model_mappings WHERE provider_id = ?1", id);
        if (!mappings) {
            return Err(mappings);
        }
        if (*mappings > 0) {
            return Fail(
                ErrorCode::kConflict,
                fmt::format("provider {} is still used by {} model mapping(s)", id, *mappings));
        }
        // provider_keys go with it (ON DELETE CASCADE).
        auto deleted = ExecChangesLocked("DELETE FROM providers WHERE id = ?1", id);
        if (!deleted) {
            return Err(deleted);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return *deleted > 0;
    }

    // --- Provider keys ---

    Result<std::vector<ProviderKey>> ListProviderKeys(Id provider_id) override {
        std::lock_guard lock(mu_);
        return QueryMany<ProviderKey>(
            "SELECT " + kProviderKeyCols + " FROM provider_keys WHERE provider_id = ?1 ORDER BY id",
            ReadProviderKey, [&](Statement& s) { s.BindInt(1, provider_id); });
    }

    Result<std::optional<ProviderKey>> GetProviderKey(Id id) override {
        std::lock_guard lock(mu_);
        return GetProviderKeyLocked(id);
    }

    Result<ProviderKey> CreateProviderKey(const ProviderKey& k) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        if (auto r = RequireProviderLocked(k.provider_id); !r) {
            return Err(r);
        }
        if (k.is_primary) {
            if (auto r = DemotePrimaryLocked(k.provider_id, 0, k.updated_at_ms); !r) {
                return Err(r);
            }
        }
        auto ins = db_->Prepare(
            "INSERT INTO provider_keys (provider_id, api_key_sealed, key_hint, base_url, "
            "organization, key_name, is_primary, is_enabled, created_at_ms, updated_at_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
        if (!ins) {
            return Err(ins);
        }
        (*ins)
            ->BindInt(1, k.provider_id)
            .BindBlob(2, k.api_key_sealed)
            .BindText(3, k.key_hint)
            .BindText(4, k.base_url)
            .BindText(5, k.organization)
            .BindText(6, k.key_name)
            .BindBool(7, k.is_primary)
            .BindBool(8, k.is_enabled)
            .BindInt(9, k.created_at_ms)
            .BindInt(10, k.updated_at_ms);
        if (auto r = (*ins)->Run(); !r) {
            return Err(r);
        }
        ProviderKey out = k;
        out.id = db_->LastInsertRowId();
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return out;
    }

    Result<std::optional<ProviderKey>> UpdateProviderKey(const ProviderKey& k) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto existing = GetProviderKeyLocked(k.id);
        if (!existing) {
            return Err(existing);
        }
        if (!*existing) {
            return std::optional<ProviderKey>();
        }
        // A key never moves to another provider: provider_id is taken from the stored row.
        Id provider_id = (*existing)->provider_id;
        if (k.is_primary) {
            if (auto r = DemotePrimaryLocked(provider_id, k.id, k.updated_at_ms); !r) {
                return Err(r);
            }
        }
        auto updated = QueryOne<ProviderKey>(
            "UPDATE provider_keys SET api_key_sealed = ?1, key_hint = ?2, base_url = ?3, "
            "organization = ?4, key_name = ?5, is_primary = ?6, is_enabled = ?7, "
            "updated_at_ms = ?8 WHERE id = ?9 RETURNING " +
                kProviderKeyCols,
            ReadProviderKey, [&](Statement& s) {
                s.BindBlob(1, k.api_key_sealed)
                    .BindText(2, k.key_hint)
                    .BindText(3, k.base_url)
                    .BindText(4, k.organization)
                    .BindText(5, k.key_name)
                    .BindBool(6, k.is_primary)
                    .BindBool(7, k.is_enabled)
                    .BindInt(8, k.updated_at_ms)
                    .BindInt(9, k.id);
            });
        if (!updated) {
            return Err(updated);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return updated;
    }

    Result<bool> DeleteProviderKey(Id id) override {
        std::lock_guard lock(mu_);
        auto n = ExecChangesLocked("DELETE FROM provider_keys WHERE id = ?1", id);
        if (!n) {
            return Err(n);
        }
        return *n > 0;
    }

    // --- Model mappings ---

    Result<std::vector<ModelMapping>> ListMappings() override {
        std::lock_guard lock(mu_);
        return ListMappingsLocked();
    }

    Result<std::optional<ModelMapping>> GetMapping(Id id) override {
        std::lock_guard lock(mu_);
        return GetMappingLocked(id);
    }

    Result<ModelMapping> CreateMapping(const ModelMapping& m) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        if (auto r = RequireProviderLocked(m.provider_id); !r) {
            return Err(r);
        }
        auto ins = db_->Prepare(
            "INSERT INTO model_mappings (model_alias, provider_model_id, provider_id, is_enabled, "
            "priority, max_context_tokens_override, supports_chat, supports_streaming, "
            "supports_embeddings, supports_image_generation, supports_video_generation, "
            "supports_vision, supports_function_calling, created_at_ms, updated_at_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
        if (!ins) {
            return Err(ins);
        }
        BindMappingFields(**ins, m);
        (*ins)->BindInt(14, m.created_at_ms).BindInt(15, m.updated_at_ms);
        if (auto r = (*ins)->Run(); !r) {
            return Err(r);
        }
        ModelMapping out = m;
        out.id = db_->LastInsertRowId();
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return out;
    }

    Result<std::optional<ModelMapping>> UpdateMapping(const ModelMapping& m) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto existing = GetMappingLocked(m.id);
        if (!existing) {
            return Err(existing);
        }
        if (!*existing) {
            return std::optional<ModelMapping>();
        }
        if (auto r = RequireProviderLocked(m.provider_id); !r) {
            return Err(r);
        }
        auto updated = QueryOne<ModelMapping>(
            "UPDATE model_mappings SET model_alias = ?1, provider_model_id = ?2, "
            "provider_id = ?3, is_enabled = ?4, priority = ?5, max_context_tokens_override = ?6, "
            "supports_chat = ?7, supports_streaming = ?8, supports_embeddings = ?9, "
            "supports_image_generation = ?10, supports_video_generation = ?11, "
            "supports_vision = ?12, supports_function_calling = ?13, updated_at_ms = ?14 "
            "WHERE id = ?15 RETURNING " +
                kMappingCols,
            ReadMapping, [&](Statement& s) {
                BindMappingFields(s, m);
                s.BindInt(14, m.updated_at_ms).BindInt(15, m.id);
            });
        if (!updated) {
            return Err(updated);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return updated;
    }

    Result<bool> DeleteMapping(Id id) override {
        std::lock_guard lock(mu_);
        // Cost links go with it (ON DELETE CASCADE).
        auto n = ExecChangesLocked("DELETE FROM model_mappings WHERE id = ?1", id);
        if (!n) {
            return Err(n);
        }
        return *n > 0;
    }

    // --- Model costs ---

    Result<std::vector<ModelCost>> ListCosts() override {
        std::lock_guard lock(mu_);
        return ListCostsLocked();
    }

    Result<std::optional<ModelCost>> GetCost(Id id) override {
        std::lock_guard lock(mu_);
        return GetCostLocked(id);
    }

    Result<ModelCost> CreateCost(const ModelCost& c) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        std::vector<Id> links = NormaliseIds(c.mapping_ids);
        if (auto r = RequireMappingsLocked(links); !r) {
            return Err(r);
        }
        auto ins = db_->Prepare(
            "INSERT INTO model_costs (cost_name, input_per_million, output_per_million, "
            "embedding_per_million, image_per_image, video_per_second, priority, description, "
            "created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
        if (!ins) {
            return Err(ins);
        }
        BindCostFields(**ins, c);
        (*ins)->BindInt(9, c.created_at_ms).BindInt(10, c.updated_at_ms);
        if (auto r = (*ins)->Run(); !r) {
            return Err(r);
        }
        ModelCost out = c;
        out.id = db_->LastInsertRowId();
        out.mapping_ids = links;
        if (auto r = InsertCostLinksLocked(out.id, links); !r) {
            return Err(r);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return out;
    }

    Result<std::optional<ModelCost>> UpdateCost(const ModelCost& c) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto changed = ExecChangesLocked(
            "UPDATE model_costs SET cost_name = ?1, input_per_million = ?2, "
            "output_per_million = ?3, embedding_per_million = ?4, image_per_image = ?5, "
            "video_per_second = ?6, priority = ?7, description = ?8, updated_at_ms = ?9 "
            "WHERE id = ?10",
            [&](Statement& s) {
                BindCostFields(s, c);
                s.BindInt(9, c.updated_at_ms).BindInt(10, c.id);
            });
        if (!changed) {
            return Err(changed);
        }
        if (*changed == 0) {
            return std::optional<ModelCost>();
        }
        std::vector<Id> links = NormaliseIds(c.mapping_ids);
        if (auto r = RequireMappingsLocked(links); !r) {
            return Err(r);  // rolls back the row update too
        }
        auto cleared =
            ExecChangesLocked("DELETE FROM model_cost_mappings WHERE cost_id = ?1", c.id);
        if (!cleared) {
            return Err(cleared);
        }
        if (auto r = InsertCostLinksLocked(c.id, links); !r) {
            return Err(r);
        }
        auto out = GetCostLocked(c.id);
        if (!out) {
            return Err(out);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return out;
    }

    Result<bool> DeleteCost(Id id) override {
        std::lock_guard lock(mu_);
        auto n = ExecChangesLocked("DELETE FROM model_costs WHERE id = ?1", id);
        if (!n) {
            return Err(n);
        }
        return *n > 0;
    }

    // --- Snapshot load ---

    Result<domain::ConfigData> LoadConfig() override {
        std::lock_guard lock(mu_);
        // One read transaction: WAL gives every statement in it the same snapshot.
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kDeferred);
        if (!txn) {
            return Err(txn);
        }
        domain::ConfigData data;
        auto groups = ListGroupsLocked();
        if (!groups) {
            return Err(groups);
        }
        data.groups = std::move(*groups);
        auto keys = ListKeysLocked();
        if (!keys) {
            return Err(keys);
        }
        data.keys = std::move(*keys);
        auto providers = ListProvidersLocked();
        if (!providers) {
            return Err(providers);
        }
        data.providers = std::move(*providers);
        auto provider_keys =
            QueryMany<ProviderKey>("SELECT " + kProviderKeyCols + " FROM provider_keys ORDER BY id",
                                   ReadProviderKey, [](Statement&) {});
        if (!provider_keys) {
            return Err(provider_keys);
        }
        data.provider_keys = std::move(*provider_keys);
        auto mappings = ListMappingsLocked();
        if (!mappings) {
            return Err(mappings);
        }
        data.mappings = std::move(*mappings);
        auto costs = ListCostsLocked();
        if (!costs) {
            return Err(costs);
        }
        data.costs = std::move(*costs);
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return data;
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
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        if (auto r = ApplySpendLocked(debits, logs, now_ms); !r) {
            return r;
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return {};
    }

    Result<std::optional<AsyncTask>> UpdateTaskWithSpend(const AsyncTask& t,
                                                         const RequestLogRow& log,
                                                         std::string description,
                                                         int64_t now_ms) override {
        if (log.cost < 0) {
            return Fail(ErrorCode::kInvalidRequest,
                        fmt::format("spend for group {} is negative", log.group_id));
        }
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        auto updated = UpdateTaskLocked(t);
        if (!updated || !*updated) {
            return updated;  // rolled back (nothing was written)
        }
        std::vector<GroupSpend> debits;
        if (log.cost > 0) {
            debits.push_back({log.group_id, log.cost, 1, std::move(description)});
        }
        if (auto r = ApplySpendLocked(debits, {log}, now_ms); !r) {
            return Err(r);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return updated;
    }

    // The body of ApplySpend, inside the caller's transaction (mu_ held).
    Result<void> ApplySpendLocked(const std::vector<GroupSpend>& debits,
                                  const std::vector<RequestLogRow>& logs,
                                  int64_t now_ms) {
        for (const auto& d : debits) {
            auto balance = UpdateBalanceLocked(d.group_id, -d.amount, 0, d.amount, now_ms);
            if (!balance) {
                return Err(balance);
            }
            if (!*balance) {
                // Nothing of the batch is kept: the transaction rolls back.
                return Fail(ErrorCode::kInvalidRequest,
                            fmt::format("virtual key group {} does not exist", d.group_id));
            }
            GroupTransaction t;
            t.group_id = d.group_id;
            t.type = domain::TransactionType::kDebit;
            t.amount = d.amount;
            t.balance_after = **balance;
            t.reference_type = domain::ReferenceType::kVirtualKey;
            t.description = d.description;
            t.initiated_by = std::string(kSystemActor);
            t.created_at_ms = now_ms;
            if (auto r = InsertTxnLocked(t); !r) {
                return Err(r);
            }
        }
        // Multi-row INSERTs of up to kRowsPerInsert rows (the statement for a full chunk is
        // prepared once and cached); text is bound without copies (the rows outlive each step).
        constexpr size_t kRowsPerInsert = 64;
        constexpr int kCols = 15;
        for (size_t start = 0; start < logs.size(); start += kRowsPerInsert) {
            size_t n = std::min(kRowsPerInsert, logs.size() - start);
            std::string sql =
                "INSERT INTO request_logs (request_id, virtual_key_id, group_id, model_alias, "
                "provider_model, request_type, input_tokens, output_tokens, cost, "
                "response_time_ms, status_code, streamed, usage_estimated, client_ip, "
                "timestamp_ms) VALUES ";
            for (size_t r = 0; r < n; ++r) {
                sql += r == 0 ? "(" : ",(";
                for (int c = 0; c < kCols; ++c) {
                    sql += c == 0 ? "?" : ",?";
                }
                sql += ")";
            }
            auto ins = db_->Prepare(sql);
            if (!ins) {
                return Err(ins);
            }
            for (size_t r = 0; r < n; ++r) {
                const auto& row = logs[start + r];
                int base = static_cast<int>(r) * kCols;
                (*ins)
                    ->BindTextNoCopy(base + 1, row.request_id)
                    .BindInt(base + 2, row.virtual_key_id)
                    .BindInt(base + 3, row.group_id)
                    .BindTextNoCopy(base + 4, row.model_alias)
                    .BindTextNoCopy(base + 5, row.provider_model)
                    .BindTextNoCopy(base + 6, row.request_type)
                    .BindInt(base + 7, row.input_tokens)
                    .BindInt(base + 8, row.output_tokens)
                    .BindInt(base + 9, row.cost)
                    .BindInt(base + 10, row.response_time_ms)
                    .BindInt(base + 11, row.status_code)
                    .BindBool(base + 12, row.streamed)
                    .BindBool(base + 13, row.usage_estimated)
                    .BindTextNoCopy(base + 14, row.client_ip)
                    .BindInt(base + 15, row.timestamp_ms);
            }
            if (auto r = (*ins)->Run(); !r) {
                return r;
            }
        }
        return {};
    }

    Result<std::vector<RequestLogRow>> ListRequestLogs(const RequestLogQuery& q) override {
        if (auto r = CheckPaging(q.limit, q.offset); !r) {
            return Err(r);
        }
        // At most eight distinct texts, each cached as its own prepared statement.
        std::string sql = "SELECT " + kLogCols + " FROM request_logs WHERE 1 = 1";
        if (q.virtual_key_id) {
            sql += " AND virtual_key_id = ?1";
        }
        if (q.group_id) {
            sql += " AND group_id = ?2";
        }
        if (q.since_ms) {
            sql += " AND timestamp_ms >= ?3";
        }
        sql += " ORDER BY timestamp_ms DESC, id DESC LIMIT ?4 OFFSET ?5";
        std::lock_guard lock(mu_);
        return QueryMany<RequestLogRow>(sql, ReadLog, [&](Statement& s) {
            if (q.virtual_key_id) {
                s.BindInt(1, *q.virtual_key_id);
            }
            if (q.group_id) {
                s.BindInt(2, *q.group_id);
            }
            if (q.since_ms) {
                s.BindInt(3, *q.since_ms);
            }
            s.BindInt(4, q.limit).BindInt(5, q.offset);
        });
    }

    Result<Micros> KeySpendSince(Id key_id, int64_t since_ms) override {
        std::lock_guard lock(mu_);
        auto sum = QueryOne<Micros>(
            "SELECT COALESCE(SUM(cost), 0) FROM request_logs "
            "WHERE virtual_key_id = ?1 AND timestamp_ms >= ?2",
            [](const Statement& s) { return s.Int(0); },
            [&](Statement& s) { s.BindInt(1, key_id).BindInt(2, since_ms); });
        if (!sum) {
            return Err(sum);
        }
        return sum->value_or(0);
    }

    // --- Async tasks ---

    Result<std::pair<AsyncTask, bool>> CreateTask(const AsyncTask& t) override {
        std::lock_guard lock(mu_);
        // The write lock is taken up front, so the look-up and the insert are one atomic step
        // even against other connections or processes.
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        if (!t.idempotency_key.empty()) {
            // "idempotency_key <> ''" lets the planner use the partial unique index.
            auto existing = QueryOne<AsyncTask>(
                "SELECT " + kTaskCols +
                    " FROM async_tasks WHERE virtual_key_id = ?1 AND idempotency_key = ?2 "
                    "AND idempotency_key <> ''",
                ReadTask, [&](Statement& s) {
                    s.BindInt(1, t.virtual_key_id).BindTextNoCopy(2, t.idempotency_key);
                });
            if (!existing) {
                return Err(existing);
            }
            if (*existing) {
                return std::pair<AsyncTask, bool>(std::move(**existing), false);
            }
        }
        auto ins = db_->Prepare("INSERT INTO async_tasks (" + kTaskCols +
                                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
                                "?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, "
                                "?27, ?28, ?29)");
        if (!ins) {
            return Err(ins);
        }
        BindTaskFields(**ins, t);
        if (auto r = (*ins)->Run(); !r) {
            if (r.error().code == ErrorCode::kConflict) {
                return Fail(ErrorCode::kConflict,
                            fmt::format("a task with id '{}' already exists", t.id));
            }
            return Err(r);
        }
        if (auto r = txn->Commit(); !r) {
            return Err(r);
        }
        return std::pair<AsyncTask, bool>(t, true);
    }

    Result<std::optional<AsyncTask>> GetTask(std::string_view id) override {
        std::lock_guard lock(mu_);
        return QueryOne<AsyncTask>("SELECT " + kTaskCols + " FROM async_tasks WHERE id = ?1",
                                   ReadTask, [&](Statement& s) { s.BindTextNoCopy(1, id); });
    }

    Result<std::optional<AsyncTask>> UpdateTask(const AsyncTask& t) override {
        std::lock_guard lock(mu_);
        return UpdateTaskLocked(t);
    }

    Result<std::optional<AsyncTask>> UpdateTaskLocked(const AsyncTask& t) {
        // Parameters keep their kTaskCols numbers; the immutable ones (?2 type, ?6 key, ?7 group,
        // ?17 idempotency key, ?18 request hash, ?24 created at) are bound but unused.
        auto updated = QueryOne<AsyncTask>(
            "UPDATE async_tasks SET state = ?3, progress = ?4, message = ?5, model_alias = ?8, "
            "request_json = ?9, result_json = ?10, error_message = ?11, error_code = ?12, "
            "retryable = ?13, webhook_url = ?14, webhook_headers_json = ?15, "
            "timeout_seconds = ?16, attempt = ?19, retry_count = ?20, max_retries = ?21, "
            "upstream_job_id = ?22, mapping_id = ?23, updated_at_ms = ?25, started_at_ms = ?26, "
            "completed_at_ms = ?27, next_attempt_at_ms = ?28, version = version + 1 "
            "WHERE id = ?1 AND version = ?29 RETURNING " +
                kTaskCols,
            ReadTask, [&](Statement& s) { BindTaskFields(s, t); });
        if (!updated || *updated) {
            return updated;
        }
        // Nothing matched: either there is no such task or its version moved.
        auto stored = QueryOne<int64_t>(
            "SELECT version FROM async_tasks WHERE id = ?1",
            [](const Statement& s) { return s.Int(0); },
            [&](Statement& s) { s.BindTextNoCopy(1, t.id); });
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

    Result<std::vector<AsyncTask>> ListTasks(const TaskQuery& q) override {
        if (auto r = CheckPaging(q.limit, q.offset); !r) {
            return Err(r);
        }
        // At most sixteen distinct texts, each cached as its own prepared statement.
        std::string sql = "SELECT " + kTaskCols + " FROM async_tasks";
        if (q.non_terminal_only) {
            // The timeout sweeper's scan: walk the partial index of open tasks in order and stop
            // at the limit (left alone, the planner sorts every open task; see migration 0002).
            sql += " INDEXED BY async_tasks_open";
        }
        sql += " WHERE 1 = 1";
        if (q.virtual_key_id) {
            sql += " AND virtual_key_id = ?1";
        }
        if (q.state) {
            sql += " AND state = ?2";
        }
        if (q.non_terminal_only) {
            // Word for word the WHERE clause of the partial index async_tasks_open.
            sql += " AND state IN ('pending', 'running')";
        }
        if (q.created_before_ms) {
            sql += " AND created_at_ms < ?3";
        }
        sql += " ORDER BY created_at_ms, id LIMIT ?4 OFFSET ?5";
        std::lock_guard lock(mu_);
        return QueryMany<AsyncTask>(sql, ReadTask, [&](Statement& s) {
            if (q.virtual_key_id) {
                s.BindInt(1, *q.virtual_key_id);
            }
            if (q.state) {
                s.BindTextNoCopy(2, domain::ToString(*q.state));
            }
            if (q.created_before_ms) {
                s.BindInt(3, *q.created_before_ms);
            }
            s.BindInt(4, q.limit).BindInt(5, q.offset);
        });
    }

    // --- Webhooks ---

    Result<std::optional<WebhookSecret>> GetWebhookSecret(Id virtual_key_id) override {
        std::lock_guard lock(mu_);
        return QueryOne<WebhookSecret>(
            "SELECT " + kSecretCols + " FROM webhook_secrets WHERE virtual_key_id = ?1", ReadSecret,
            [&](Statement& s) { s.BindInt(1, virtual_key_id); });
    }

    Result<void> PutWebhookSecret(const WebhookSecret& w) override {
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        // Checked here (not left to the foreign key) so that the error is kInvalidRequest, as
        // for the other references to a missing parent.
        auto keys =
            CountLocked("SELECT COUNT(*) FROM virtual_keys WHERE id = ?1", w.virtual_key_id);
        if (!keys) {
            return Err(keys);
        }
        if (*keys == 0) {
            return Fail(ErrorCode::kInvalidRequest,
                        fmt::format("virtual key {} does not exist", w.virtual_key_id));
        }
        auto st = db_->Prepare(
            "INSERT INTO webhook_secrets (" + kSecretCols +
            ") VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (virtual_key_id) DO UPDATE SET "
            "secret_sealed = excluded.secret_sealed, previous_sealed = excluded.previous_sealed, "
            "previous_valid_until_ms = excluded.previous_valid_until_ms, "
            "created_at_ms = excluded.created_at_ms");
        if (!st) {
            return Err(st);
        }
        (*st)
            ->BindInt(1, w.virtual_key_id)
            .BindBlob(2, w.secret_sealed)
            .BindBlob(3, w.previous_sealed)
            .BindInt(4, w.previous_valid_until_ms)
            .BindInt(5, w.created_at_ms);
        if (auto r = (*st)->Run(); !r) {
            return r;
        }
        return txn->Commit();
    }

    Result<void> UpsertWebhookDeliveries(const std::vector<WebhookDelivery>& rows) override {
        if (rows.empty()) {
            return {};
        }
        std::lock_guard lock(mu_);
        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        if (!txn) {
            return Err(txn);
        }
        // One cached statement stepped once per row; text is bound without copies (the rows
        // outlive each step). An update leaves the identity columns alone (id, task_id,
        // virtual_key_id, created_at_ms), which also spares three of the four secondary indexes.
        // A pending row older than the stored one is dropped (its outcome was recorded first).
        auto st = db_->Prepare(
            "INSERT INTO webhook_deliveries (" + kDeliveryCols +
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) "
            "ON CONFLICT (id) DO UPDATE SET event_type = excluded.event_type, "
            "url = excluded.url, headers_json = excluded.headers_json, "
            "payload = excluded.payload, status = excluded.status, "
            "attempts = excluded.attempts, last_status_code = excluded.last_status_code, "
            "last_error = excluded.last_error, updated_at_ms = excluded.updated_at_ms, "
            "delivered_at_ms = excluded.delivered_at_ms WHERE excluded.status <> 'pending' OR "
            "excluded.updated_at_ms >= webhook_deliveries.updated_at_ms");
        if (!st) {
            return Err(st);
        }
        for (const auto& d : rows) {
            (*st)
                ->BindTextNoCopy(1, d.id)
                .BindTextNoCopy(2, d.task_id)
                .BindInt(3, d.virtual_key_id)
                .BindTextNoCopy(4, d.event_type)
                .BindTextNoCopy(5, d.url)
                .BindTextNoCopy(6, d.headers_json)
                .BindTextNoCopy(7, d.payload)
                .BindTextNoCopy(8, d.status)
                .BindInt(9, d.attempts)
                .BindInt(10, d.last_status_code)
                .BindTextNoCopy(11, d.last_error)
                .BindInt(12, d.created_at_ms)
                .BindInt(13, d.updated_at_ms)
                .BindInt(14, d.delivered_at_ms);
            if (auto r = (*st)->Run(); !r) {
                return r;  // the whole batch rolls back
            }
            (*st)->Reset();
        }
        return txn->Commit();
    }

    Result<std::optional<WebhookDelivery>> GetWebhookDelivery(std::string_view id) override {
        std::lock_guard lock(mu_);
        return QueryOne<WebhookDelivery>(
            "SELECT " + kDeliveryCols + " FROM webhook_deliveries WHERE id = ?1", ReadDelivery,
            [&](Statement& s) { s.BindTextNoCopy(1, id); });
    }

    Result<std::vector<WebhookDelivery>> ListWebhookDeliveries(
        const WebhookDeliveryQuery& q) override {
        if (auto r = CheckPaging(q.limit, q.offset); !r) {
            return Err(r);
        }
        // At most eight distinct texts, each cached as its own prepared statement.
        std::string sql = "SELECT " + kDeliveryCols + " FROM webhook_deliveries WHERE 1 = 1";
        if (q.status) {
            sql += " AND status = ?1";
        }
        if (q.virtual_key_id) {
            sql += " AND virtual_key_id = ?2";
        }
        if (q.task_id) {
            sql += " AND task_id = ?3";
        }
        sql += " ORDER BY created_at_ms DESC, id DESC LIMIT ?4 OFFSET ?5";
        std::lock_guard lock(mu_);
        return QueryMany<WebhookDelivery>(sql, ReadDelivery, [&](Statement& s) {
            if (q.status) {
                s.BindTextNoCopy(1, *q.status);
            }
            if (q.virtual_key_id) {
                s.BindInt(2, *q.virtual_key_id);
            }
            if (q.task_id) {
                s.BindTextNoCopy(3, *q.task_id);
            }
            s.BindInt(4, q.limit).BindInt(5, q.offset);
        });
    }

    // --- Settings ---

    Result<std::optional<std::string>> GetSetting(std::string_view key) override {
        std::lock_guard lock(mu_);
        return QueryOne<std::string>(
            "SELECT value FROM settings WHERE key = ?1",
            [](const Statement& s) { return s.Text(0); },
            [&](Statement& s) { s.BindText(1, key); });
    }

    Result<void> PutSetting(std::string_view key, std::string_view value) override {
        std::lock_guard lock(mu_);
        auto st = db_->Prepare(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value");
        if (!st) {
            return Err(st);
        }
        (*st)->BindText(1, key).BindText(2, value);
        return (*st)->Run();
    }

private:
    // --- Generic helpers (mu_ held) ---

    /// Runs `sql` and returns its first row (stepping the statement to completion, so that an
    /// UPDATE … RETURNING is fully applied), or nullopt when there is none.
    template <class T, class Reader, class Binder>
    Result<std::optional<T>> QueryOne(const std::string& sql, Reader read, Binder bind) {
        auto st = db_->Prepare(sql);
        if (!st) {
            return Err(st);
        }
        bind(**st);
        auto row = (*st)->Step();
        if (!row) {
            return Err(row);
        }
        if (!*row) {
            return std::optional<T>();
        }
        std::optional<T> out(read(**st));
        if (auto r = (*st)->Run(); !r) {
            return Err(r);
        }
        return out;
    }

    template <class T, class Reader, class Binder>
    Result<std::vector<T>> QueryMany(const std::string& sql, Reader read, Binder bind) {
        auto st = db_->Prepare(sql);
        if (!st) {
            return Err(st);
        }
        bind(**st);
        std::vector<T> out;
        for (;;) {
            auto row = (*st)->Step();
            if (!row) {
                return Err(row);
            }
            if (!*row) {
                return out;
            }
            out.push_back(read(**st));
        }
    }

    /// Runs a statement and returns the number of rows it changed.
    template <class Binder>
    Result<int> ExecChangesLocked(const std::string& sql, Binder bind) {
        auto st = db_->Prepare(sql);
        if (!st) {
            return Err(st);
        }
        bind(**st);
        if (auto r = (*st)->Run(); !r) {
            return Err(r);
        }
        return db_->Changes();
    }

    Result<int> ExecChangesLocked(const std::string& sql, Id id) {
        return ExecChangesLocked(sql, [&](Statement& s) { s.BindInt(1, id); });
    }

    Result<int64_t> CountLocked(const std::string& sql, Id id) {
        auto n = QueryOne<int64_t>(
            sql, [](const Statement& s) { return s.Int(0); },
            [&](Statement& s) { s.BindInt(1, id); });
        if (!n) {
            return Err(n);
        }
        return n->value_or(0);
    }

    Result<int> MaxVersionLocked() {
        auto v = QueryOne<int64_t>(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [](const Statement& s) { return s.Int(0); }, [](Statement&) {});
        if (!v) {
            return Err(v);
        }
        return static_cast<int>(v->value_or(0));
    }

    // --- Entity helpers (mu_ held) ---

    Result<std::vector<VirtualKeyGroup>> ListGroupsLocked() {
        return QueryMany<VirtualKeyGroup>(
            "SELECT " + kGroupCols + " FROM virtual_key_groups ORDER BY id", ReadGroup,
            [](Statement&) {});
    }

    Result<std::vector<VirtualKey>> ListKeysLocked() {
        return QueryMany<VirtualKey>("SELECT " + kKeyCols + " FROM virtual_keys ORDER BY id",
                                     ReadKey, [](Statement&) {});
    }

    Result<std::optional<VirtualKey>> GetKeyLocked(Id id) {
        return QueryOne<VirtualKey>("SELECT " + kKeyCols + " FROM virtual_keys WHERE id = ?1",
                                    ReadKey, [&](Statement& s) { s.BindInt(1, id); });
    }

    Result<std::vector<Provider>> ListProvidersLocked() {
        return QueryMany<Provider>("SELECT " + kProviderCols + " FROM providers ORDER BY id",
                                   ReadProvider, [](Statement&) {});
    }

    Result<std::optional<ProviderKey>> GetProviderKeyLocked(Id id) {
        return QueryOne<ProviderKey>(
            "SELECT " + kProviderKeyCols + " FROM provider_keys WHERE id = ?1", ReadProviderKey,
            [&](Statement& s) { s.BindInt(1, id); });
    }

    Result<std::vector<ModelMapping>> ListMappingsLocked() {
        return QueryMany<ModelMapping>(
            "SELECT " + kMappingCols + " FROM model_mappings ORDER BY id", ReadMapping,
            [](Statement&) {});
    }

    Result<std::optional<ModelMapping>> GetMappingLocked(Id id) {
        return QueryOne<ModelMapping>(
            "SELECT " + kMappingCols + " FROM model_mappings WHERE id = ?1", ReadMapping,
            [&](Statement& s) { s.BindInt(1, id); });
    }

    Result<std::vector<ModelCost>> ListCostsLocked() {
        auto costs = QueryMany<ModelCost>("SELECT " + kCostCols + " FROM model_costs ORDER BY id",
                                          ReadCost, [](Statement&) {});
        if (!costs) {
            return Err(costs);
        }
        auto links = QueryMany<std::pair<Id, Id>>(
            "SELECT cost_id, mapping_id FROM model_cost_mappings ORDER BY cost_id, mapping_id",
            [](const Statement& s) { return std::pair<Id, Id>(s.Int(0), s.Int(1)); },
            [](Statement&) {});
        if (!links) {
            return Err(links);
        }
        std::map<Id, std::vector<Id>> by_cost;
        for (const auto& [cost_id, mapping_id] : *links) {
            by_cost[cost_id].push_back(mapping_id);
        }
        for (auto& c : *costs) {
            if (auto it = by_cost.find(c.id); it != by_cost.end()) {
                c.mapping_ids = std::move(it->second);
            }
        }
        return costs;
    }

    Result<std::optional<ModelCost>> GetCostLocked(Id id) {
        auto cost = QueryOne<ModelCost>("SELECT " + kCostCols + " FROM model_costs WHERE id = ?1",
                                        ReadCost, [&](Statement& s) { s.BindInt(1, id); });
        if (!cost || !*cost) {
            return cost;
        }
        auto links = QueryMany<Id>(
            "SELECT mapping_id FROM model_cost_mappings WHERE cost_id = ?1 ORDER BY mapping_id",
            [](const Statement& s) { return s.Int(0); }, [&](Statement& s) { s.BindInt(1, id); });
        if (!links) {
            return Err(links);
        }
        (*cost)->mapping_ids = std::move(*links);
        return cost;
    }

    Result<void> RequireGroupLocked(Id group_id) {
        auto n = CountLocked("SELECT COUNT(*) FROM virtual_key_groups WHERE id = ?1", group_id);
        if (!n) {
            return Err(n);
        }
        if (*n == 0) {
            return Fail(ErrorCode::kInvalidRequest,
                        fmt::format("virtual key group {} does not exist", group_id));
        }
        return {};
    }

    Result<void> RequireProviderLocked(Id provider_id) {
        auto n = CountLocked("SELECT COUNT(*) FROM providers WHERE id = ?1", provider_id);
        if (!n) {
            return Err(n);
        }
        if (*n == 0) {
            return Fail(ErrorCode::kInvalidRequest,
                        fmt::format("provider {} does not exist", provider_id));
        }
        return {};
    }

    Result<void> RequireMappingsLocked(const std::vector<Id>& mapping_ids) {
        for (Id id : mapping_ids) {
            auto n = CountLocked("SELECT COUNT(*) FROM model_mappings WHERE id = ?1", id);
            if (!n) {
                return Err(n);
            }
            if (*n == 0) {
                return Fail(ErrorCode::kInvalidRequest,
                            fmt::format("model mapping {} does not exist", id));
            }
        }
        return {};
    }

    Result<void> InsertCostLinksLocked(Id cost_id, const std::vector<Id>& mapping_ids) {
        for (Id mapping_id : mapping_ids) {
            auto st = db_->Prepare(
                "INSERT INTO model_cost_mappings (cost_id, mapping_id) VALUES (?1, ?2)");
            if (!st) {
                return Err(st);
            }
            (*st)->BindInt(1, cost_id).BindInt(2, mapping_id);
            if (auto r = (*st)->Run(); !r) {
                return r;
            }
        }
        return {};
    }

    /// Clears is_primary on every key of `provider_id` except `keep_id`.
    Result<void> DemotePrimaryLocked(Id provider_id, Id keep_id, int64_t now_ms) {
        auto n = ExecChangesLocked(
            "UPDATE provider_keys SET is_primary = 0, updated_at_ms = ?3 "
            "WHERE provider_id = ?1 AND id != ?2 AND is_primary = 1",
            [&](Statement& s) {
                s.BindInt(1, provider_id).BindInt(2, keep_id).BindInt(3, now_ms);
            });
        if (!n) {
            return Err(n);
        }
        return {};
    }

    /// balance += delta, lifetime counters += credit/debit. Returns the new balance, or nullopt
    /// when the group does not exist. Overflow fails (STRICT refuses the REAL it would produce).
    Result<std::optional<Micros>> UpdateBalanceLocked(
        Id group_id, Micros delta, Micros credit, Micros debit, int64_t now_ms) {
        auto balance = QueryOne<Micros>(
            "UPDATE virtual_key_groups SET balance = balance + ?1, "
            "lifetime_credits_added = lifetime_credits_added + ?2, "
            "lifetime_spent = lifetime_spent + ?3, updated_at_ms = ?4 "
            "WHERE id = ?5 RETURNING balance",
            [](const Statement& s) { return s.Int(0); },
            [&](Statement& s) {
                s.BindInt(1, delta).BindInt(2, credit).BindInt(3, debit).BindInt(4, now_ms).BindInt(
                    5, group_id);
            });
        if (!balance && balance.error().code == ErrorCode::kInvalidRequest) {
            return Fail(ErrorCode::kInvalidRequest,
                        fmt::format("balance of group {} would overflow", group_id));
        }
        return balance;
    }

    /// Inserts a ledger row and returns its id.
    Result<Id> InsertTxnLocked(const GroupTransaction& t) {
        auto st = db_->Prepare(
            "INSERT INTO group_transactions (group_id, type, amount, balance_after, "
            "reference_type, reference_id, description, initiated_by, created_at_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
        if (!st) {
            return Err(st);
        }
        (*st)
            ->BindInt(1, t.group_id)
            .BindInt(2, static_cast<int64_t>(t.type))
            .BindInt(3, t.amount)
            .BindInt(4, t.balance_after)
            .BindInt(5, static_cast<int64_t>(t.reference_type))
            .BindText(6, t.reference_id)
            .BindText(7, t.description)
            .BindText(8, t.initiated_by)
            .BindInt(9, t.created_at_ms);
        if (auto r = (*st)->Run(); !r) {
            return Err(r);
        }
        return db_->LastInsertRowId();
    }

    /// Parameters 1..13 of a mapping INSERT/UPDATE.
    static void BindMappingFields(Statement& s, const ModelMapping& m) {
        s.BindText(1, m.model_alias)
            .BindText(2, m.provider_model_id)
            .BindInt(3, m.provider_id)
            .BindBool(4, m.is_enabled)
            .BindInt(5, m.priority)
            .BindOptInt(6, m.max_context_tokens_override)
            .BindBool(7, m.supports_chat)
            .BindBool(8, m.supports_streaming)
            .BindBool(9, m.supports_embeddings)
            .BindBool(10, m.supports_image_generation)
            .BindBool(11, m.supports_video_generation)
            .BindBool(12, m.supports_vision)
            .BindBool(13, m.supports_function_calling);
    }

    /// Parameters 1..8 of a cost INSERT/UPDATE.
    static void BindCostFields(Statement& s, const ModelCost& c) {
        s.BindText(1, c.cost_name)
            .BindInt(2, c.input_per_million)
            .BindInt(3, c.output_per_million)
            .BindInt(4, c.embedding_per_million)
            .BindInt(5, c.image_per_image)
            .BindInt(6, c.video_per_second)
            .BindInt(7, c.priority)
            .BindText(8, c.description);
    }

    std::mutex mu_;  // serialises every call (one connection, one statement cache)
    std::unique_ptr<Db> db_;
};

Result<void> ApplyPragmas(Db& db, const std::string& path, const SqliteOptions& options) {
    if (int rc = sqlite3_busy_timeout(db.handle(), std::max(0, options.busy_timeout_ms));
        rc != SQLITE_OK) {
        return tl::unexpected(db.ErrorFrom(rc, "busy_timeout"));
    }
    if (auto r = db.Exec("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL"); !r) {
        return r;
    }
    auto fk = db.Prepare("PRAGMA foreign_keys");
    if (!fk) {
        return Err(fk);
    }
    auto fk_row = (*fk)->Step();
    if (!fk_row) {
        return Err(fk_row);
    }
    if (!*fk_row || (*fk)->Int(0) != 1) {
        return Fail(ErrorCode::kInternal, "this SQLite build cannot enforce foreign keys");
    }
    // journal_mode answers with the mode now in force (it is persistent in the file).
    auto wal = db.Prepare("PRAGMA journal_mode = WAL");
    if (!wal) {
        return Err(wal);
    }
    auto wal_row = (*wal)->Step();
    if (!wal_row) {
        return Err(wal_row);
    }
    std::string mode = *wal_row ? (*wal)->Text(0) : std::string();
    if (mode != "wal" && path != ":memory:") {
        spdlog::warn("store: sqlite journal_mode is '{}', not 'wal', for {}", mode, path);
    }
    return {};
}

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               const SqliteOptions& options) {
    if (path.empty()) {
        return Fail(ErrorCode::kInvalidRequest, "sqlite path is empty");
    }
    if (path != ":memory:") {
        std::filesystem::path parent = std::filesystem::path(path).parent_path();
        std::error_code ec;
        if (!parent.empty()) {
            std::filesystem::create_directories(parent, ec);
        }
        if (ec) {
            return Fail(ErrorCode::kUnavailable, fmt::format("cannot create directory {}: {}",
                                                             parent.string(), ec.message()));
        }
    }
    auto db = Db::Open(path);
    if (!db) {
        return Err(db);
    }
    if (auto r = ApplyPragmas(**db, path, options); !r) {
        return Err(r);
    }
    return std::unique_ptr<Store>(std::make_unique<SqliteStore>(std::move(*db)));
}

}  // namespace conduit::store
