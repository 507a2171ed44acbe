#pragma once

#include "core/error.hpp"
#include "domain/entities.hpp"
#include "domain/task.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::store {

using core::Result;
using domain::Id;
using domain::Micros;

/// Spend accumulated for one group since the last flush.
struct GroupSpend {
    Id group_id = 0;
    Micros amount = 0;  // positive = debit
    int64_t request_count = 0;
    std::string description;  // ledger text, e.g. "API usage by virtual key #3"
};

/// Filter for request-log queries. Results are newest first.
struct RequestLogQuery {
    std::optional<Id> virtual_key_id;
    std::optional<Id> group_id;
    std::optional<int64_t> since_ms;
    int limit = 100;
    int offset = 0;
};

/// Filter for task queries. Results are oldest first (by created_at, then id).
struct TaskQuery {
    std::optional<Id> virtual_key_id;
    std::optional<domain::TaskState> state;
    bool non_terminal_only = false;
    std::optional<int64_t> created_before_ms;
    int limit = 100;
    int offset = 0;
};

/// A virtual key's webhook signing secret (sealed with core::SecretBox). During a rotation the
/// previous secret keeps signing until `previous_valid_until_ms`.
struct WebhookSecret {
    Id virtual_key_id = 0;
    std::string secret_sealed;
    std::string previous_sealed;  // empty when there is none
    int64_t previous_valid_until_ms = 0;
    int64_t created_at_ms = 0;
};

/// One webhook delivery (one event for one URL), across its attempts.
struct WebhookDelivery {
    std::string id;  // the webhook-id header value (stable across retries)
    std::string task_id;
    Id virtual_key_id = 0;
    std::string event_type;  // task.completed, task.failed, ...
    std::string url;
    std::string headers_json;
    std::string payload;
    std::string status;  // pending | delivered | failed (retrying) | dead
    int attempts = 0;
    int last_status_code = 0;
    std::string last_error;
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
    int64_t delivered_at_ms = 0;
};

/// Filter for webhook deliveries. Newest first.
struct WebhookDeliveryQuery {
    std::optional<std::string> status;
    std::optional<Id> virtual_key_id;
    std::optional<std::string> task_id;
    int limit = 100;
    int offset = 0;
};

/// The persistence port (DESIGN §1): configuration, keys, ledger, logs, async tasks and webhooks.
///
/// Adapters: SQLite (embedded default) and, later, PostgreSQL. Every adapter passes the same
/// contract suite (tests/contract/store_contract.hpp).
///
/// Threading: calls are blocking and must never run on an event loop. The composition root runs
/// them on the store's own executor thread(s) (store::Executor). Implementations must be safe to
/// call from one thread at a time at least; timestamps come from the caller.
///
/// Errors: kNotFound is never used for a missing row (those return nullopt / false); kConflict
/// for uniqueness or referential conflicts; kUnavailable when the database cannot be reached;
/// kInternal otherwise.
class Store {
public:
    virtual ~Store() = default;

    /// "sqlite" or "postgresql".
    virtual std::string_view Engine() const = 0;
    /// Applies pending schema migrations (idempotent, versioned).
    virtual Result<void> Migrate() = 0;
    /// Current schema version (number of applied migrations).
    virtual Result<int> SchemaVersion() = 0;
    /// Cheap round trip proving the database answers (readiness check).
    virtual Result<void> Ping() = 0;

    // --- Virtual key groups and their ledger ---
    virtual Result<std::vector<domain::VirtualKeyGroup>> ListGroups() = 0;
    virtual Result<std::optional<domain::VirtualKeyGroup>> GetGroup(Id id) = 0;
    /// Inserts `g` (id assigned). `g.balance` is the initial balance; when non-zero it is
    /// recorded as a Credit transaction with reference type Initial, and lifetime credits set.
    virtual Result<domain::VirtualKeyGroup> CreateGroup(const domain::VirtualKeyGroup& g,
                                                        std::string_view initiated_by) = 0;
    /// Updates name and external id only (balances change through AdjustBalance/ApplySpend).
    virtual Result<std::optional<domain::VirtualKeyGroup>> UpdateGroup(
        const domain::VirtualKeyGroup& g) = 0;
    /// kConflict while virtual keys still belong to the group.
    virtual Result<bool> DeleteGroup(Id id) = 0;
    /// Atomically adds `delta` (negative = debit) to the balance (credits also raise
    /// lifetime_credits_added, debits raise lifetime_spent) and records one ledger row whose
    /// amount is |delta|. nullopt if the group does not exist.
    virtual Result<std::optional<domain::GroupTransaction>> AdjustBalance(
        Id group_id,
        Micros delta,
        domain::TransactionType type,
        domain::ReferenceType ref,
        std::string_view reference_id,
        std::string_view description,
        std::string_view initiated_by,
        int64_t now_ms) = 0;
    /// Newest first.
    virtual Result<std::vector<domain::GroupTransaction>> ListTransactions(Id group_id,
                                                                           int limit,
                                                                           int offset) = 0;

    // --- Virtual keys ---
    virtual Result<std::vector<domain::VirtualKey>> ListKeys(std::optional<Id> group_id) = 0;
    virtual Result<std::optional<domain::VirtualKey>> GetKey(Id id) = 0;
    /// kConflict on a duplicate key_hash; kInvalidRequest if the group does not exist.
    virtual Result<domain::VirtualKey> CreateKey(const domain::VirtualKey& k) = 0;
    /// Replaces every mutable field (not key_hash/key_prefix/created_at).
    virtual Result<std::optional<domain::VirtualKey>> UpdateKey(const domain::VirtualKey& k) = 0;
    virtual Result<bool> DeleteKey(Id id) = 0;

    // --- Providers and their keys ---
    virtual Result<std::vector<domain::Provider>> ListProviders() = 0;
    virtual Result<std::optional<domain::Provider>> GetProvider(Id id) = 0;
    virtual Result<domain::Provider> CreateProvider(const domain::Provider& p) = 0;
    virtual Result<std::optional<domain::Provider>> UpdateProvider(const domain::Provider& p) = 0;
    /// Deletes the provider and its keys; kConflict while model mappings reference it.
    virtual Result<bool> DeleteProvider(Id id) = 0;

    virtual Result<std::vector<domain::ProviderKey>> ListProviderKeys(Id provider_id) = 0;
    virtual Result<std::optional<domain::ProviderKey>> GetProviderKey(Id id) = 0;
    /// When `is_primary`, every other key of the provider stops being primary (same
    /// transaction). kInvalidRequest if the provider does not exist.
    virtual Result<domain::ProviderKey> CreateProviderKey(const domain::ProviderKey& k) = 0;
    virtual Result<std::optional<domain::ProviderKey>> UpdateProviderKey(
        const domain::ProviderKey& k) = 0;
    virtual Result<bool> DeleteProviderKey(Id id) = 0;

    // --- Model mappings ---
    virtual Result<std::vector<domain::ModelMapping>> ListMappings() = 0;
    virtual Result<std::optional<domain::ModelMapping>> GetMapping(Id id) = 0;
    /// kInvalidRequest if the provider does not exist.
    virtual Result<domain::ModelMapping> CreateMapping(const domain::ModelMapping& m) = 0;
    virtual Result<std::optional<domain::ModelMapping>> UpdateMapping(
        const domain::ModelMapping& m) = 0;
    virtual Result<bool> DeleteMapping(Id id) = 0;

    // --- Model costs (with their mapping links) ---
    virtual Result<std::vector<domain::ModelCost>> ListCosts() = 0;
    virtual Result<std::optional<domain::ModelCost>> GetCost(Id id) = 0;
    /// kInvalidRequest if a mapping id does not exist.
    virtual Result<domain::ModelCost> CreateCost(const domain::ModelCost& c) = 0;
    virtual Result<std::optional<domain::ModelCost>> UpdateCost(const domain::ModelCost& c) = 0;
    virtual Result<bool> DeleteCost(Id id) = 0;

    /// Every group, key, provider, provider key, mapping and cost, in one consistent read.
    virtual Result<domain::ConfigData> LoadConfig() = 0;

    // --- Spend ---
    /// In ONE transaction: for each entry debit the group's balance by `amount` (raising
    /// lifetime_spent) and record a Debit ledger row (reference type VirtualKey), then insert
    /// every request-log row. All or nothing.
    virtual Result<void> ApplySpend(const std::vector<GroupSpend>& debits,
                                    const std::vector<domain::RequestLogRow>& logs,
                                    int64_t now_ms) = 0;
    virtual Result<std::vector<domain::RequestLogRow>> ListRequestLogs(
        const RequestLogQuery& q) = 0;
    /// The sum of the request-log costs of virtual key `key_id` with timestamp_ms >= `since_ms`
    /// (what the key spent in a budget period, as far as it is flushed). 0 when there are none.
    virtual Result<Micros> KeySpendSince(Id key_id, int64_t since_ms) = 0;

    // --- Async tasks ---
    /// Inserts `t` (id chosen by the caller; every field stored as given, `version` included).
    /// If `t.idempotency_key` is set and a task of the same virtual key already has it, nothing
    /// is inserted and that task is returned with `created = false` (decided atomically, so two
    /// concurrent submissions with one key yield one task). kConflict if the id is taken;
    /// kInvalidRequest for an empty id or a progress outside 0..100.
    virtual Result<std::pair<domain::AsyncTask, bool>> CreateTask(const domain::AsyncTask& t) = 0;
    virtual Result<std::optional<domain::AsyncTask>> GetTask(std::string_view id) = 0;
    /// Optimistic update: replaces every mutable field when the stored version equals
    /// `t.version`, and returns the row with version + 1. nullopt if the task does not exist;
    /// kConflict if its version moved (re-read and retry). Immutable (kept from the stored row):
    /// id, type, virtual_key_id, group_id, idempotency_key, request_hash, created_at_ms.
    virtual Result<std::optional<domain::AsyncTask>> UpdateTask(const domain::AsyncTask& t) = 0;
    /// UpdateTask and, when it applies, the spend of `log` (a Debit of `log.cost` from
    /// `log.group_id` with `description`, skipped when the cost is 0, plus the request-log row)
    /// in ONE transaction: a task is never completed without its bill, nor billed twice.
    /// Errors as UpdateTask's and ApplySpend's; on any error nothing is written.
    virtual Result<std::optional<domain::AsyncTask>> UpdateTaskWithSpend(
        const domain::AsyncTask& t,
        const domain::RequestLogRow& log,
        std::string description,
        int64_t now_ms) = 0;
    /// Tasks matching every set filter of `q` (non_terminal_only: pending or running;
    /// created_before_ms: strictly earlier), oldest first. kInvalidRequest for a negative limit
    /// or offset.
    virtual Result<std::vector<domain::AsyncTask>> ListTasks(const TaskQuery& q) = 0;

    // --- Webhooks ---
    virtual Result<std::optional<WebhookSecret>> GetWebhookSecret(Id virtual_key_id) = 0;
    /// Inserts or replaces the key's secret row (every field). kInvalidRequest if the virtual key
    /// does not exist; the row is deleted with its key.
    virtual Result<void> PutWebhookSecret(const WebhookSecret& s) = 0;
    /// Inserts or replaces delivery rows by id, in one transaction (called in batches; all or
    /// nothing). A replaced row keeps its identity (task_id, virtual_key_id, created_at_ms);
    /// every other field is replaced. Rows are applied in order, so the last of several rows
    /// with one id wins. kInvalidRequest for an empty id.
    virtual Result<void> UpsertWebhookDeliveries(const std::vector<WebhookDelivery>& rows) = 0;
    virtual Result<std::optional<WebhookDelivery>> GetWebhookDelivery(std::string_view id) = 0;
    /// Deliveries matching every set filter of `q`, newest first (by created_at_ms, then id).
    /// kInvalidRequest for a negative limit or offset.
    virtual Result<std::vector<WebhookDelivery>> ListWebhookDeliveries(
        const WebhookDeliveryQuery& q) = 0;

    // --- Settings (small key/value pairs) ---
    virtual Result<std::optional<std::string>> GetSetting(std::string_view key) = 0;
    virtual Result<void> PutSetting(std::string_view key, std::string_view value) = 0;
};

}  // namespace conduit::store
