#pragma once

// The behavioural contract of the store::Store port (src/store/store.hpp), as a typed,
// parameterised GoogleTest suite. Every adapter instantiates it once:
//
//     struct MyTraits {
//         /// Called once per test; returns a store over a fresh, empty database (not yet
//         /// migrated), or nullptr to skip the test (engine not configured).
//         std::unique_ptr<conduit::store::Store> Make();
//     };
//     namespace conduit::store::contract {
//     INSTANTIATE_TYPED_TEST_SUITE_P(MyEngine, StoreContract, MyTraits);
//     }
//
// One Traits object lives for the duration of each test (it may own a temp directory or a
// schema). The suite calls Migrate() itself.

#include "core/error.hpp"
#include "domain/entities.hpp"
#include "domain/task.hpp"
#include "store/store.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::store::contract {

using domain::AsyncTask;
using domain::GroupTransaction;
using domain::ModelCost;
using domain::ModelMapping;
using domain::Provider;
using domain::ProviderKey;
using domain::ProviderType;
using domain::ReferenceType;
using domain::RequestLogRow;
using domain::TaskState;
using domain::TransactionType;
using domain::VirtualKey;
using domain::VirtualKeyGroup;

constexpr int64_t kT0 = 1'700'000'000'000;  // an arbitrary fixed "now" (Unix ms)

namespace detail {

[[noreturn]] inline void ThrowFailed(const core::Error& e,
                                     const char* expr,
                                     const char* file,
                                     int line) {
    throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr +
                             " failed: " + e.message);
}

/// Value of a successful Result; a failed one fails the test (via an exception gtest reports).
template <class T>
T Ok(Result<T> r, const char* expr, const char* file, int line) {
    if (!r) {
        ThrowFailed(r.error(), expr, file, line);
    }
    return std::move(*r);
}

inline void Ok(Result<void> r, const char* expr, const char* file, int line) {
    if (!r) {
        ThrowFailed(r.error(), expr, file, line);
    }
}

}  // namespace detail

/// Readable name of an error code, for assertion messages.
inline const char* CodeName(core::ErrorCode code) {
    switch (code) {
        case core::ErrorCode::kInvalidRequest:
            return "kInvalidRequest";
        case core::ErrorCode::kConflict:
            return "kConflict";
        case core::ErrorCode::kNotFound:
            return "kNotFound";
        case core::ErrorCode::kUnavailable:
            return "kUnavailable";
        case core::ErrorCode::kInternal:
            return "kInternal";
        default:
            return "other";
    }
}

}  // namespace conduit::store::contract

/// Unwraps a store Result, failing the test when it holds an error.
#define STORE_OK(expr) ::conduit::store::contract::detail::Ok((expr), #expr, __FILE__, __LINE__)

/// Expects `expr` to fail with `code`.
#define STORE_EXPECT_ERROR(expr, want_code)                                                  \
    do {                                                                                     \
        auto store_expect_r_ = (expr);                                                       \
        EXPECT_FALSE(store_expect_r_.has_value()) << #expr << " unexpectedly succeeded";     \
        if (!store_expect_r_.has_value()) {                                                  \
            EXPECT_STREQ(::conduit::store::contract::CodeName(store_expect_r_.error().code), \
                         ::conduit::store::contract::CodeName(want_code))                    \
                << store_expect_r_.error().message;                                          \
        }                                                                                    \
    } while (0)

namespace conduit::store::contract {

/// `prefix` followed by the decimal `n` ("g" + 3 → "g3").
inline std::string Num(std::string_view prefix, int64_t n) {
    std::string out(prefix);
    out.append(std::to_string(n));  // append: g++ 12 warns (-Wrestrict) on "lit" + string
    return out;
}

// --- Sample entities (every field set to a distinctive value) ---

inline VirtualKeyGroup NewGroup(std::string name,
                                Micros balance = 0,
                                std::optional<std::string> external_id = std::nullopt,
                                int64_t t = kT0) {
    VirtualKeyGroup g;
    g.group_name = std::move(name);
    g.external_group_id = std::move(external_id);
    g.balance = balance;
    g.created_at_ms = t;
    g.updated_at_ms = t + 1;
    return g;
}

inline std::string FakeHash(int n) {
    std::string h = std::to_string(n);
    return std::string(64 - h.size(), 'a') + h;  // 64 "hex" characters, unique per n
}

inline VirtualKey NewKey(Id group_id, int n) {
    VirtualKey k;
    k.key_name = Num("key ", n);
    k.key_hash = FakeHash(n);
    k.key_prefix = Num("condt_K", n);
    k.group_id = group_id;
    k.allowed_models = "gpt-4*,claude-3-haiku";
    k.is_enabled = false;
    k.expires_at_ms = kT0 + 86'400'000;
    k.metadata = R"({"team":"växjö","n":1})";
    k.description = "it's a \"test\" key";
    k.rate_limit_rpm = 60;
    k.rate_limit_rpd = 10'000;
    k.rate_limit_tpm = 90'000;
    k.max_budget = 12'345'678;  // $12.345678
    k.budget_duration = "weekly";
    k.created_at_ms = kT0 + 10;
    k.updated_at_ms = kT0 + 11;
    return k;
}

inline Provider NewProvider(std::string name, ProviderType type = ProviderType::kAnthropic) {
    Provider p;
    p.type = type;
    p.name = std::move(name);
    p.base_url = "https://api.example.test/v1";
    p.is_enabled = false;
    p.created_at_ms = kT0 + 20;
    p.updated_at_ms = kT0 + 21;
    return p;
}

inline ProviderKey NewProviderKey(Id provider_id, std::string name, bool primary) {
    ProviderKey k;
    k.provider_id = provider_id;
    k.api_key_sealed = std::string("\x00\x01\xfe\xff sealed:", 12) + name;  // binary bytes
    k.key_hint = "x9Z" + name.substr(0, 1);
    k.base_url = "https://eu.example.test";
    k.organization = "org-" + name;
    k.key_name = std::move(name);
    k.is_primary = primary;
    k.is_enabled = false;
    k.created_at_ms = kT0 + 30;
    k.updated_at_ms = kT0 + 31;
    return k;
}

inline ModelMapping NewMapping(Id provider_id, std::string alias, std::string model) {
    ModelMapping m;
    m.model_alias = std::move(alias);
    m.provider_model_id = std::move(model);
    m.provider_id = provider_id;
    // Every flag the opposite of its default, so a dropped column shows.
    m.is_enabled = false;
    m.priority = 7;
    m.max_context_tokens_override = 128'000;
    m.supports_chat = false;
    m.supports_streaming = false;
    m.supports_embeddings = true;
    m.supports_image_generation = true;
    m.supports_video_generation = true;
    m.supports_vision = true;
    m.supports_function_calling = true;
    m.created_at_ms = kT0 + 40;
    m.updated_at_ms = kT0 + 41;
    return m;
}

inline ModelCost NewCost(std::string name, std::vector<Id> mapping_ids) {
    ModelCost c;
    c.cost_name = std::move(name);
    c.mapping_ids = std::move(mapping_ids);
    c.input_per_million = 2'500'000;
    c.output_per_million = 10'000'001;
    c.embedding_per_million = 130'000;
    c.image_per_image = 40'000;
    c.video_per_second = 500'003;
    c.priority = 3;
    c.description = "per-million prices";
    c.created_at_ms = kT0 + 50;
    c.updated_at_ms = kT0 + 51;
    return c;
}

inline RequestLogRow NewLog(std::string request_id, Id key_id, Id group_id, int64_t ts) {
    RequestLogRow r;
    r.request_id = std::move(request_id);
    r.virtual_key_id = key_id;
    r.group_id = group_id;
    r.model_alias = "gpt-4o";
    r.provider_model = "gpt-4o-2024-08-06";
    r.request_type = "chat";
    r.input_tokens = 1234;
    r.output_tokens = 567;
    r.cost = 9'876;
    r.response_time_ms = 321;
    r.status_code = 200;
    r.streamed = true;
    r.usage_estimated = true;
    r.client_ip = "203.0.113.7";
    r.timestamp_ms = ts;
    return r;
}

// --- Field-by-field comparisons ---

inline void ExpectGroupEq(const VirtualKeyGroup& e, const VirtualKeyGroup& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.group_name, a.group_name);
    EXPECT_EQ(e.external_group_id, a.external_group_id);
    EXPECT_EQ(e.balance, a.balance);
    EXPECT_EQ(e.lifetime_credits_added, a.lifetime_credits_added);
    EXPECT_EQ(e.lifetime_spent, a.lifetime_spent);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
}

inline void ExpectTxnEq(const GroupTransaction& e, const GroupTransaction& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.group_id, a.group_id);
    EXPECT_EQ(static_cast<int>(e.type), static_cast<int>(a.type));
    EXPECT_EQ(e.amount, a.amount);
    EXPECT_EQ(e.balance_after, a.balance_after);
    EXPECT_EQ(static_cast<int>(e.reference_type), static_cast<int>(a.reference_type));
    EXPECT_EQ(e.reference_id, a.reference_id);
    EXPECT_EQ(e.description, a.description);
    EXPECT_EQ(e.initiated_by, a.initiated_by);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
}

inline void ExpectKeyEq(const VirtualKey& e, const VirtualKey& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.key_name, a.key_name);
    EXPECT_EQ(e.key_hash, a.key_hash);
    EXPECT_EQ(e.key_prefix, a.key_prefix);
    EXPECT_EQ(e.group_id, a.group_id);
    EXPECT_EQ(e.allowed_models, a.allowed_models);
    EXPECT_EQ(e.is_enabled, a.is_enabled);
    EXPECT_EQ(e.expires_at_ms, a.expires_at_ms);
    EXPECT_EQ(e.metadata, a.metadata);
    EXPECT_EQ(e.description, a.description);
    EXPECT_EQ(e.rate_limit_rpm, a.rate_limit_rpm);
    EXPECT_EQ(e.rate_limit_rpd, a.rate_limit_rpd);
    EXPECT_EQ(e.rate_limit_tpm, a.rate_limit_tpm);
    EXPECT_EQ(e.max_budget, a.max_budget);
    EXPECT_EQ(e.budget_duration, a.budget_duration);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
}

inline void ExpectProviderEq(const Provider& e, const Provider& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(static_cast<int>(e.type), static_cast<int>(a.type));
    EXPECT_EQ(e.name, a.name);
    EXPECT_EQ(e.base_url, a.base_url);
    EXPECT_EQ(e.is_enabled, a.is_enabled);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
}

inline void ExpectProviderKeyEq(const ProviderKey& e, const ProviderKey& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.provider_id, a.provider_id);
    EXPECT_EQ(e.api_key_sealed, a.api_key_sealed);
    EXPECT_EQ(e.key_hint, a.key_hint);
    EXPECT_EQ(e.base_url, a.base_url);
    EXPECT_EQ(e.organization, a.organization);
    EXPECT_EQ(e.key_name, a.key_name);
    EXPECT_EQ(e.is_primary, a.is_primary);
    EXPECT_EQ(e.is_enabled, a.is_enabled);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
}

inline void ExpectMappingEq(const ModelMapping& e, const ModelMapping& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.model_alias, a.model_alias);
    EXPECT_EQ(e.provider_model_id, a.provider_model_id);
    EXPECT_EQ(e.provider_id, a.provider_id);
    EXPECT_EQ(e.is_enabled, a.is_enabled);
    EXPECT_EQ(e.priority, a.priority);
    EXPECT_EQ(e.max_context_tokens_override, a.max_context_tokens_override);
    EXPECT_EQ(e.supports_chat, a.supports_chat);
    EXPECT_EQ(e.supports_streaming, a.supports_streaming);
    EXPECT_EQ(e.supports_embeddings, a.supports_embeddings);
    EXPECT_EQ(e.supports_image_generation, a.supports_image_generation);
    EXPECT_EQ(e.supports_video_generation, a.supports_video_generation);
    EXPECT_EQ(e.supports_vision, a.supports_vision);
    EXPECT_EQ(e.supports_function_calling, a.supports_function_calling);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
}

inline void ExpectCostEq(const ModelCost& e, const ModelCost& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.cost_name, a.cost_name);
    EXPECT_EQ(e.mapping_ids, a.mapping_ids);
    EXPECT_EQ(e.input_per_million, a.input_per_million);
    EXPECT_EQ(e.output_per_million, a.output_per_million);
    EXPECT_EQ(e.embedding_per_million, a.embedding_per_million);
    EXPECT_EQ(e.image_per_image, a.image_per_image);
    EXPECT_EQ(e.video_per_second, a.video_per_second);
    EXPECT_EQ(e.priority, a.priority);
    EXPECT_EQ(e.description, a.description);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
}

/// Compares everything but the id (assigned by the store).
inline void ExpectLogEqIgnoringId(const RequestLogRow& e, const RequestLogRow& a) {
    EXPECT_EQ(e.request_id, a.request_id);
    EXPECT_EQ(e.virtual_key_id, a.virtual_key_id);
    EXPECT_EQ(e.group_id, a.group_id);
    EXPECT_EQ(e.model_alias, a.model_alias);
    EXPECT_EQ(e.provider_model, a.provider_model);
    EXPECT_EQ(e.request_type, a.request_type);
    EXPECT_EQ(e.input_tokens, a.input_tokens);
    EXPECT_EQ(e.output_tokens, a.output_tokens);
    EXPECT_EQ(e.cost, a.cost);
    EXPECT_EQ(e.response_time_ms, a.response_time_ms);
    EXPECT_EQ(e.status_code, a.status_code);
    EXPECT_EQ(e.streamed, a.streamed);
    EXPECT_EQ(e.usage_estimated, a.usage_estimated);
    EXPECT_EQ(e.client_ip, a.client_ip);
    EXPECT_EQ(e.timestamp_ms, a.timestamp_ms);
}

inline std::vector<std::string> RequestIds(const std::vector<RequestLogRow>& rows) {
    std::vector<std::string> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
        out.push_back(r.request_id);
    }
    return out;
}

template <class T>
std::vector<Id> IdsOf(const std::vector<T>& rows) {
    std::vector<Id> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
        out.push_back(r.id);
    }
    return out;
}

// --- Tasks and webhooks ---

/// A task with every field set to a distinctive, non-default value (`n` varies the text).
inline AsyncTask NewTask(std::string id, Id key_id, int n = 1, int64_t created = kT0 + 60) {
    AsyncTask t;
    t.id = std::move(id);
    t.type = std::string(domain::kVideoTask);
    t.state = TaskState::kRunning;
    t.progress = 42;
    t.message = Num("rendering frame ", n);
    t.virtual_key_id = key_id;
    t.group_id = 900 + key_id;
    t.model_alias = Num("video-model-", n);
    t.request_json = R"({"prompt":"a fjörd at dawn \"wide\"","duration":5,"n":)" + Num("", n) + "}";
    t.result_json = R"({"created":1,"data":[{"url":"/v1/media/abc"}]})";
    t.error_message = "upstream said: 'slow down'";
    t.error_code = "rate_limited";
    t.retryable = false;  // the default is true
    t.webhook_url = "https://hooks.example.test/conduit?x=1&y=2";
    t.webhook_headers_json = R"({"X-Team":"växjö"})";
    t.timeout_seconds = 900;
    t.idempotency_key = Num("idem-", n);
    t.request_hash = std::string(64, 'f');
    t.attempt = 2;
    t.retry_count = 1;
    t.max_retries = 5;  // the default is 3
    t.upstream_job_id = Num("job_", n);
    t.mapping_id = 77;
    t.created_at_ms = created;
    t.updated_at_ms = created + 1;
    t.started_at_ms = created + 2;
    t.completed_at_ms = created + 3;
    t.next_attempt_at_ms = created + 4;
    t.version = 7;
    return t;
}

/// A freshly submitted task: pending, no idempotency key, version 0.
inline AsyncTask NewPendingTask(std::string id, Id key_id, int64_t created) {
    AsyncTask t = NewTask(std::move(id), key_id, 1, created);
    t.state = TaskState::kPending;
    t.progress = 0;
    t.idempotency_key.clear();
    t.version = 0;
    return t;
}

inline void ExpectTaskEq(const AsyncTask& e, const AsyncTask& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.type, a.type);
    EXPECT_EQ(domain::ToString(e.state), domain::ToString(a.state));
    EXPECT_EQ(e.progress, a.progress);
    EXPECT_EQ(e.message, a.message);
    EXPECT_EQ(e.virtual_key_id, a.virtual_key_id);
    EXPECT_EQ(e.group_id, a.group_id);
    EXPECT_EQ(e.model_alias, a.model_alias);
    EXPECT_EQ(e.request_json, a.request_json);
    EXPECT_EQ(e.result_json, a.result_json);
    EXPECT_EQ(e.error_message, a.error_message);
    EXPECT_EQ(e.error_code, a.error_code);
    EXPECT_EQ(e.retryable, a.retryable);
    EXPECT_EQ(e.webhook_url, a.webhook_url);
    EXPECT_EQ(e.webhook_headers_json, a.webhook_headers_json);
    EXPECT_EQ(e.timeout_seconds, a.timeout_seconds);
    EXPECT_EQ(e.idempotency_key, a.idempotency_key);
    EXPECT_EQ(e.request_hash, a.request_hash);
    EXPECT_EQ(e.attempt, a.attempt);
    EXPECT_EQ(e.retry_count, a.retry_count);
    EXPECT_EQ(e.max_retries, a.max_retries);
    EXPECT_EQ(e.upstream_job_id, a.upstream_job_id);
    EXPECT_EQ(e.mapping_id, a.mapping_id);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
    EXPECT_EQ(e.started_at_ms, a.started_at_ms);
    EXPECT_EQ(e.completed_at_ms, a.completed_at_ms);
    EXPECT_EQ(e.next_attempt_at_ms, a.next_attempt_at_ms);
    EXPECT_EQ(e.version, a.version);
}

inline std::vector<std::string> TaskIds(const std::vector<AsyncTask>& rows) {
    std::vector<std::string> out;
    out.reserve(rows.size());
    for (const auto& t : rows) {
        out.push_back(t.id);
    }
    return out;
}

/// A delivery with every field set to a distinctive value.
inline WebhookDelivery NewDelivery(
    std::string id, std::string task_id, Id key_id, std::string status, int64_t created) {
    WebhookDelivery d;
    d.id = std::move(id);
    d.task_id = std::move(task_id);
    d.virtual_key_id = key_id;
    d.event_type = "task.progress";
    d.url = "https://hooks.example.test/in?k=" + std::to_string(key_id);
    d.headers_json = R"({"Authorization":"Bearer tok","X-Ü":"1"})";
    d.payload = R"({"type":"task.progress","task_id":")" + d.task_id + R"(","progress":50})";
    d.status = std::move(status);
    d.attempts = 1;
    d.last_status_code = 503;
    d.last_error = "HTTP 503 from hooks.example.test";
    d.created_at_ms = created;
    d.updated_at_ms = created + 5;
    d.delivered_at_ms = 0;
    return d;
}

inline void ExpectDeliveryEq(const WebhookDelivery& e, const WebhookDelivery& a) {
    EXPECT_EQ(e.id, a.id);
    EXPECT_EQ(e.task_id, a.task_id);
    EXPECT_EQ(e.virtual_key_id, a.virtual_key_id);
    EXPECT_EQ(e.event_type, a.event_type);
    EXPECT_EQ(e.url, a.url);
    EXPECT_EQ(e.headers_json, a.headers_json);
    EXPECT_EQ(e.payload, a.payload);
    EXPECT_EQ(e.status, a.status);
    EXPECT_EQ(e.attempts, a.attempts);
    EXPECT_EQ(e.last_status_code, a.last_status_code);
    EXPECT_EQ(e.last_error, a.last_error);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
    EXPECT_EQ(e.updated_at_ms, a.updated_at_ms);
    EXPECT_EQ(e.delivered_at_ms, a.delivered_at_ms);
}

inline std::vector<std::string> DeliveryIds(const std::vector<WebhookDelivery>& rows) {
    std::vector<std::string> out;
    out.reserve(rows.size());
    for (const auto& d : rows) {
        out.push_back(d.id);
    }
    return out;
}

inline void ExpectSecretEq(const WebhookSecret& e, const WebhookSecret& a) {
    EXPECT_EQ(e.virtual_key_id, a.virtual_key_id);
    EXPECT_EQ(e.secret_sealed, a.secret_sealed);
    EXPECT_EQ(e.previous_sealed, a.previous_sealed);
    EXPECT_EQ(e.previous_valid_until_ms, a.previous_valid_until_ms);
    EXPECT_EQ(e.created_at_ms, a.created_at_ms);
}

// --- The fixture ---

template <class Traits>
class StoreContract : public ::testing::Test {
protected:
    void SetUp() override {
        store_ = traits_.Make();
        if (!store_) {
            GTEST_SKIP() << "store engine not available";
        }
        auto migrated = store_->Migrate();
        ASSERT_TRUE(migrated.has_value()) << migrated.error().message;
    }

    Store& S() { return *store_; }

    /// A provider with one mapping, for tests that need a mapping id.
    std::pair<Id, Id> ProviderWithMapping(const std::string& alias) {
        Id pid = STORE_OK(S().CreateProvider(NewProvider("prov-" + alias))).id;
        Id mid = STORE_OK(S().CreateMapping(NewMapping(pid, alias, alias + "-upstream"))).id;
        return {pid, mid};
    }

    Traits traits_;
    std::unique_ptr<Store> store_;
};

TYPED_TEST_SUITE_P(StoreContract);

// ===== Basics =====

TYPED_TEST_P(StoreContract, PingAndEngine) {
    STORE_OK(this->S().Ping());
    auto engine = this->S().Engine();
    EXPECT_TRUE(engine == "sqlite" || engine == "postgresql") << engine;
}

TYPED_TEST_P(StoreContract, MigrateIsIdempotentAndKeepsData) {
    int version = STORE_OK(this->S().SchemaVersion());
    EXPECT_GE(version, 1);
    Id gid = STORE_OK(this->S().CreateGroup(NewGroup("kept", 42), "admin")).id;
    STORE_OK(this->S().PutSetting("k", "v"));

    STORE_OK(this->S().Migrate());
    STORE_OK(this->S().Migrate());

    EXPECT_EQ(STORE_OK(this->S().SchemaVersion()), version);
    auto g = STORE_OK(this->S().GetGroup(gid));
    ASSERT_TRUE(g.has_value());
    EXPECT_EQ(g->balance, 42);
    EXPECT_EQ(STORE_OK(this->S().GetSetting("k")), std::optional<std::string>("v"));
}

TYPED_TEST_P(StoreContract, EmptyDatabaseListsNothing) {
    EXPECT_TRUE(STORE_OK(this->S().ListGroups()).empty());
    EXPECT_TRUE(STORE_OK(this->S().ListKeys(std::nullopt)).empty());
    EXPECT_TRUE(STORE_OK(this->S().ListProviders()).empty());
    EXPECT_TRUE(STORE_OK(this->S().ListMappings()).empty());
    EXPECT_TRUE(STORE_OK(this->S().ListCosts()).empty());
    EXPECT_TRUE(STORE_OK(this->S().ListRequestLogs({})).empty());
    auto config = STORE_OK(this->S().LoadConfig());
    EXPECT_TRUE(config.groups.empty() && config.keys.empty() && config.providers.empty() &&
                config.provider_keys.empty() && config.mappings.empty() && config.costs.empty());
    EXPECT_FALSE(STORE_OK(this->S().GetGroup(1)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetKey(1)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetProvider(1)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetProviderKey(1)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetMapping(1)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetCost(1)).has_value());
}

// ===== Groups =====

TYPED_TEST_P(StoreContract, GroupRoundTripWithAndWithoutExternalId) {
    auto with = NewGroup("Ünïcødé 'team' \"A\"; --", 0, std::string("ext-42"), kT0 + 5);
    auto without = NewGroup("", 0, std::nullopt, kT0 + 6);
    auto a = STORE_OK(this->S().CreateGroup(with, "admin"));
    auto b = STORE_OK(this->S().CreateGroup(without, "admin"));
    EXPECT_GT(a.id, 0);
    EXPECT_GT(b.id, a.id);

    with.id = a.id;
    without.id = b.id;
    ExpectGroupEq(with, a);
    ExpectGroupEq(without, b);
    auto got_a = STORE_OK(this->S().GetGroup(a.id));
    auto got_b = STORE_OK(this->S().GetGroup(b.id));
    ASSERT_TRUE(got_a && got_b);
    ExpectGroupEq(with, *got_a);
    ExpectGroupEq(without, *got_b);
    EXPECT_FALSE(got_b->external_group_id.has_value());

    auto all = STORE_OK(this->S().ListGroups());
    ASSERT_EQ(all.size(), 2u);
    ExpectGroupEq(with, all[0]);
    ExpectGroupEq(without, all[1]);
}

TYPED_TEST_P(StoreContract, IdsIncreaseAndAreNeverReused) {
    std::vector<Id> ids;
    for (int i = 0; i < 5; ++i) {
        ids.push_back(STORE_OK(this->S().CreateGroup(NewGroup(Num("g", i)), "a")).id);
    }
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
    EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListGroups())), ids);

    // Deleting the newest row must not hand its id out again.
    EXPECT_TRUE(STORE_OK(this->S().DeleteGroup(ids.back())));
    Id next = STORE_OK(this->S().CreateGroup(NewGroup("next"), "a")).id;
    EXPECT_GT(next, ids.back());

    Id pid = STORE_OK(this->S().CreateProvider(NewProvider("p"))).id;
    EXPECT_TRUE(STORE_OK(this->S().DeleteProvider(pid)));
    EXPECT_GT(STORE_OK(this->S().CreateProvider(NewProvider("p2"))).id, pid);
}

TYPED_TEST_P(StoreContract, CreateGroupRecordsInitialCredit) {
    auto g = NewGroup("funded", 12'345'678, std::nullopt, kT0 + 100);
    g.lifetime_credits_added = 999;  // ignored: derived from the initial balance
    g.lifetime_spent = 555;          // ignored: a new group has spent nothing
    auto created = STORE_OK(this->S().CreateGroup(g, "ops@example.test"));
    EXPECT_EQ(created.balance, 12'345'678);
    EXPECT_EQ(created.lifetime_credits_added, 12'345'678);
    EXPECT_EQ(created.lifetime_spent, 0);
    auto stored = STORE_OK(this->S().GetGroup(created.id));
    ASSERT_TRUE(stored);
    ExpectGroupEq(created, *stored);

    auto txns = STORE_OK(this->S().ListTransactions(created.id, 100, 0));
    ASSERT_EQ(txns.size(), 1u);
    const auto& t = txns[0];
    EXPECT_GT(t.id, 0);
    EXPECT_EQ(t.group_id, created.id);
    EXPECT_EQ(t.type, TransactionType::kCredit);
    EXPECT_EQ(t.reference_type, ReferenceType::kInitial);
    EXPECT_EQ(t.amount, 12'345'678);
    EXPECT_EQ(t.balance_after, 12'345'678);
    EXPECT_EQ(t.initiated_by, "ops@example.test");
    EXPECT_EQ(t.created_at_ms, kT0 + 100);
}

TYPED_TEST_P(StoreContract, CreateGroupWithZeroBalanceHasNoLedger) {
    auto created = STORE_OK(this->S().CreateGroup(NewGroup("empty"), "admin"));
    EXPECT_EQ(created.balance, 0);
    EXPECT_EQ(created.lifetime_credits_added, 0);
    EXPECT_TRUE(STORE_OK(this->S().ListTransactions(created.id, 100, 0)).empty());
}

TYPED_TEST_P(StoreContract, CreateGroupRejectsNegativeInitialBalance) {
    STORE_EXPECT_ERROR(this->S().CreateGroup(NewGroup("neg", -1), "admin"),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_TRUE(STORE_OK(this->S().ListGroups()).empty());
}

TYPED_TEST_P(StoreContract, UpdateGroupChangesOnlyNameExternalIdAndUpdatedAt) {
    auto created =
        STORE_OK(this->S().CreateGroup(NewGroup("before", 1'000, std::string("x")), "admin"));
    auto change = created;
    change.group_name = "after";
    change.external_group_id = std::nullopt;
    change.balance = 77;  // must be ignored
    change.lifetime_credits_added = 77;
    change.lifetime_spent = 77;
    change.created_at_ms = 1;  // must be ignored
    change.updated_at_ms = kT0 + 999;
    auto updated = STORE_OK(this->S().UpdateGroup(change));
    ASSERT_TRUE(updated);

    auto expected = created;
    expected.group_name = "after";
    expected.external_group_id = std::nullopt;
    expected.updated_at_ms = kT0 + 999;
    ExpectGroupEq(expected, *updated);
    auto stored = STORE_OK(this->S().GetGroup(created.id));
    ASSERT_TRUE(stored);
    ExpectGroupEq(expected, *stored);

    change.external_group_id = "set-again";
    EXPECT_EQ(STORE_OK(this->S().UpdateGroup(change))->external_group_id,
              std::optional<std::string>("set-again"));

    change.id = created.id + 1000;
    EXPECT_FALSE(STORE_OK(this->S().UpdateGroup(change)).has_value());
}

TYPED_TEST_P(StoreContract, DeleteGroup) {
    auto a = STORE_OK(this->S().CreateGroup(NewGroup("a", 500), "admin"));
    auto b = STORE_OK(this->S().CreateGroup(NewGroup("b", 700), "admin"));
    EXPECT_TRUE(STORE_OK(this->S().DeleteGroup(a.id)));
    EXPECT_FALSE(STORE_OK(this->S().GetGroup(a.id)).has_value());
    EXPECT_TRUE(STORE_OK(this->S().ListTransactions(a.id, 100, 0)).empty());
    EXPECT_FALSE(STORE_OK(this->S().DeleteGroup(a.id)));
    EXPECT_FALSE(STORE_OK(this->S().DeleteGroup(b.id + 100)));
    // The other group and its ledger are untouched.
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListGroups())), std::vector<Id>{b.id});
    EXPECT_EQ(STORE_OK(this->S().ListTransactions(b.id, 100, 0)).size(), 1u);
}

TYPED_TEST_P(StoreContract, DeleteGroupConflictsWhileKeysExist) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("with keys"), "admin"));
    auto k1 = STORE_OK(this->S().CreateKey(NewKey(g.id, 1)));
    auto k2 = STORE_OK(this->S().CreateKey(NewKey(g.id, 2)));
    STORE_EXPECT_ERROR(this->S().DeleteGroup(g.id), core::ErrorCode::kConflict);
    EXPECT_TRUE(STORE_OK(this->S().GetGroup(g.id)).has_value());
    EXPECT_TRUE(STORE_OK(this->S().DeleteKey(k1.id)));
    STORE_EXPECT_ERROR(this->S().DeleteGroup(g.id), core::ErrorCode::kConflict);
    EXPECT_TRUE(STORE_OK(this->S().DeleteKey(k2.id)));
    EXPECT_TRUE(STORE_OK(this->S().DeleteGroup(g.id)));
}

// ===== Balance and ledger =====

TYPED_TEST_P(StoreContract, AdjustBalanceCreditAndDebit) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("wallet", 1'000'000), "admin"));

    auto credit = STORE_OK(this->S().AdjustBalance(g.id, 2'500'001, TransactionType::kCredit,
                                                   ReferenceType::kManual, "ticket-7", "top-up",
                                                   "alice", kT0 + 500));
    ASSERT_TRUE(credit);
    GroupTransaction want;
    want.id = credit->id;
    want.group_id = g.id;
    want.type = TransactionType::kCredit;
    want.amount = 2'500'001;
    want.balance_after = 3'500'001;
    want.reference_type = ReferenceType::kManual;
    want.reference_id = "ticket-7";
    want.description = "top-up";
    want.initiated_by = "alice";
    want.created_at_ms = kT0 + 500;
    ExpectTxnEq(want, *credit);

    auto debit = STORE_OK(this->S().AdjustBalance(g.id, -3'600'002, TransactionType::kDebit,
                                                  ReferenceType::kSystem, "", "correction", "bob",
                                                  kT0 + 600));
    ASSERT_TRUE(debit);
    EXPECT_GT(debit->id, credit->id);
    EXPECT_EQ(debit->amount, 3'600'002);  // always positive
    EXPECT_EQ(debit->balance_after, -100'001);
    EXPECT_EQ(debit->type, TransactionType::kDebit);
    EXPECT_EQ(debit->reference_type, ReferenceType::kSystem);

    auto after = STORE_OK(this->S().GetGroup(g.id));
    ASSERT_TRUE(after);
    EXPECT_EQ(after->balance, -100'001);
    EXPECT_EQ(after->lifetime_credits_added, 1'000'000 + 2'500'001);
    EXPECT_EQ(after->lifetime_spent, 3'600'002);
    EXPECT_EQ(after->updated_at_ms, kT0 + 600);
    EXPECT_EQ(after->created_at_ms, g.created_at_ms);

    auto txns = STORE_OK(this->S().ListTransactions(g.id, 100, 0));
    ASSERT_EQ(txns.size(), 3u);  // newest first: debit, credit, initial
    ExpectTxnEq(*debit, txns[0]);
    ExpectTxnEq(want, txns[1]);
    EXPECT_EQ(txns[2].reference_type, ReferenceType::kInitial);
}

TYPED_TEST_P(StoreContract, AdjustBalanceOfMissingGroupIsNullopt) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("only"), "admin"));
    auto r = STORE_OK(this->S().AdjustBalance(g.id + 1, 5, TransactionType::kCredit,
                                              ReferenceType::kManual, "", "", "a", kT0));
    EXPECT_FALSE(r.has_value());
    EXPECT_TRUE(STORE_OK(this->S().ListTransactions(g.id + 1, 10, 0)).empty());
    EXPECT_EQ(STORE_OK(this->S().GetGroup(g.id))->balance, 0);
}

TYPED_TEST_P(StoreContract, BalanceArithmeticIsExactOverManyAdjustments) {
    const Micros initial = 123'456'789;
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("exact", initial), "admin"));
    auto other = STORE_OK(this->S().CreateGroup(NewGroup("other", 5), "admin"));

    // Deterministic pseudo-random deltas of every size, mostly small odd micro-amounts.
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    Micros sum = 0, credits = 0, debits = 0;
    constexpr int kSteps = 300;
    for (int i = 0; i < kSteps; ++i) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        Micros magnitude = static_cast<Micros>((state >> 33) % 50'000'000) + 1;
        Micros delta = (state & 1) ? magnitude : -magnitude;
        auto type = delta > 0 ? TransactionType::kCredit : TransactionType::kDebit;
        auto t = STORE_OK(this->S().AdjustBalance(g.id, delta, type, ReferenceType::kManual,
                                                  std::to_string(i), "step", "test", kT0 + i));
        ASSERT_TRUE(t);
        sum += delta;
        (delta > 0 ? credits : debits) += magnitude;
        ASSERT_EQ(t->balance_after, initial + sum) << "step " << i;
        ASSERT_EQ(t->amount, magnitude);
    }
    auto after = STORE_OK(this->S().GetGroup(g.id));
    ASSERT_TRUE(after);
    EXPECT_EQ(after->balance, initial + sum);
    EXPECT_EQ(after->lifetime_credits_added, initial + credits);
    EXPECT_EQ(after->lifetime_spent, debits);
    EXPECT_EQ(after->lifetime_credits_added - after->lifetime_spent, after->balance);

    // The ledger is the balance's complete history: oldest first, each row moves the previous
    // balance by its signed amount, and the signed sum equals the balance.
    auto txns = STORE_OK(this->S().ListTransactions(g.id, kSteps + 10, 0));
    ASSERT_EQ(txns.size(), static_cast<size_t>(kSteps + 1));
    std::reverse(txns.begin(), txns.end());
    Micros running = 0;
    for (size_t i = 0; i < txns.size(); ++i) {
        const auto& t = txns[i];
        Micros signed_amount = t.type == TransactionType::kDebit ? -t.amount : t.amount;
        running += signed_amount;
        ASSERT_EQ(t.balance_after, running) << "row " << i;
        if (i > 0) {
            ASSERT_GT(t.id, txns[i - 1].id);
            ASSERT_EQ(t.reference_id, std::to_string(i - 1));
        }
    }
    EXPECT_EQ(running, after->balance);
    // The other group was never touched.
    EXPECT_EQ(STORE_OK(this->S().GetGroup(other.id))->balance, 5);
    EXPECT_EQ(STORE_OK(this->S().ListTransactions(other.id, 100, 0)).size(), 1u);
}

TYPED_TEST_P(StoreContract, AdjustBalanceOverflowFailsWithoutChange) {
    const Micros near_max = std::numeric_limits<Micros>::max() - 10;
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("rich", near_max), "admin"));
    auto r = this->S().AdjustBalance(g.id, 11, TransactionType::kCredit, ReferenceType::kManual, "",
                                     "", "a", kT0);
    EXPECT_FALSE(r.has_value());
    auto after = STORE_OK(this->S().GetGroup(g.id));
    EXPECT_EQ(after->balance, near_max);
    EXPECT_EQ(STORE_OK(this->S().ListTransactions(g.id, 10, 0)).size(), 1u);
    // The store stays usable.
    EXPECT_TRUE(STORE_OK(this->S().AdjustBalance(g.id, 10, TransactionType::kCredit,
                                                 ReferenceType::kManual, "", "", "a", kT0)));
    EXPECT_EQ(STORE_OK(this->S().GetGroup(g.id))->balance, near_max + 10);
}

TYPED_TEST_P(StoreContract, ListTransactionsNewestFirstWithPaging) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("paged"), "admin"));
    auto h = STORE_OK(this->S().CreateGroup(NewGroup("noise"), "admin"));
    for (int i = 1; i <= 7; ++i) {
        STORE_OK(this->S().AdjustBalance(g.id, i, TransactionType::kCredit, ReferenceType::kManual,
                                         std::to_string(i), "", "a", kT0 + i));
        STORE_OK(this->S().AdjustBalance(h.id, 100 + i, TransactionType::kCredit,
                                         ReferenceType::kManual, "h", "", "a", kT0 + i));
    }
    auto refs = [](const std::vector<GroupTransaction>& ts) {
        std::vector<std::string> out;
        for (const auto& t : ts) {
            out.push_back(t.reference_id);
        }
        return out;
    };
    EXPECT_EQ(refs(STORE_OK(this->S().ListTransactions(g.id, 100, 0))),
              (std::vector<std::string>{"7", "6", "5", "4", "3", "2", "1"}));
    EXPECT_EQ(refs(STORE_OK(this->S().ListTransactions(g.id, 3, 0))),
              (std::vector<std::string>{"7", "6", "5"}));
    EXPECT_EQ(refs(STORE_OK(this->S().ListTransactions(g.id, 3, 3))),
              (std::vector<std::string>{"4", "3", "2"}));
    EXPECT_EQ(refs(STORE_OK(this->S().ListTransactions(g.id, 3, 6))),
              (std::vector<std::string>{"1"}));
    EXPECT_TRUE(STORE_OK(this->S().ListTransactions(g.id, 3, 7)).empty());
    EXPECT_TRUE(STORE_OK(this->S().ListTransactions(g.id, 0, 0)).empty());
    for (const auto& t : STORE_OK(this->S().ListTransactions(g.id, 100, 0))) {
        EXPECT_EQ(t.group_id, g.id);
    }
}

// ===== Virtual keys =====

TYPED_TEST_P(StoreContract, KeyRoundTripWithAllOptionalsSet) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    auto k = NewKey(g.id, 1);
    auto created = STORE_OK(this->S().CreateKey(k));
    EXPECT_GT(created.id, 0);
    k.id = created.id;
    ExpectKeyEq(k, created);
    auto got = STORE_OK(this->S().GetKey(created.id));
    ASSERT_TRUE(got);
    ExpectKeyEq(k, *got);
}

TYPED_TEST_P(StoreContract, KeyRoundTripWithOptionalsUnset) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    auto k = NewKey(g.id, 2);
    k.expires_at_ms = std::nullopt;
    k.rate_limit_rpm = std::nullopt;
    k.rate_limit_rpd = std::nullopt;
    k.rate_limit_tpm = std::nullopt;
    k.max_budget = std::nullopt;
    k.budget_duration = "";
    k.is_enabled = true;
    k.allowed_models = "";
    k.metadata = "";
    k.description = "";
    auto created = STORE_OK(this->S().CreateKey(k));
    k.id = created.id;
    auto got = STORE_OK(this->S().GetKey(created.id));
    ASSERT_TRUE(got);
    ExpectKeyEq(k, *got);
    EXPECT_FALSE(got->expires_at_ms.has_value());
    EXPECT_FALSE(got->rate_limit_rpm.has_value());
    EXPECT_FALSE(got->rate_limit_rpd.has_value());
    EXPECT_FALSE(got->rate_limit_tpm.has_value());
    EXPECT_FALSE(got->max_budget.has_value());
    EXPECT_EQ(got->budget_duration, "");
}

TYPED_TEST_P(StoreContract, KeyBudgetFieldsUpdateAndZeroBudget) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    auto created = STORE_OK(this->S().CreateKey(NewKey(g.id, 3)));
    auto change = created;
    change.max_budget = 0;  // a zero budget is a budget (nothing may be spent), not "none"
    change.budget_duration = "monthly";
    change.rate_limit_tpm = std::nullopt;
    change.updated_at_ms = kT0 + 99;
    auto updated = STORE_OK(this->S().UpdateKey(change));
    ASSERT_TRUE(updated);
    ExpectKeyEq(change, *updated);
    auto got = STORE_OK(this->S().GetKey(created.id));
    ASSERT_TRUE(got);
    ASSERT_TRUE(got->max_budget.has_value());
    EXPECT_EQ(*got->max_budget, 0);
    EXPECT_EQ(got->budget_duration, "monthly");
    EXPECT_FALSE(got->rate_limit_tpm.has_value());
    auto config = STORE_OK(this->S().LoadConfig());
    ASSERT_EQ(config.keys.size(), 1u);
    ExpectKeyEq(change, config.keys[0]);
}

TYPED_TEST_P(StoreContract, CreateKeyConflictsOnDuplicateHash) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    auto first = STORE_OK(this->S().CreateKey(NewKey(g.id, 1)));
    auto dup = NewKey(g.id, 99);
    dup.key_hash = first.key_hash;
    STORE_EXPECT_ERROR(this->S().CreateKey(dup), core::ErrorCode::kConflict);
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListKeys(std::nullopt))), std::vector<Id>{first.id});
    // Same name, different hash is fine.
    auto same_name = NewKey(g.id, 3);
    same_name.key_name = first.key_name;
    STORE_OK(this->S().CreateKey(same_name));
}

TYPED_TEST_P(StoreContract, CreateKeyRejectsUnknownGroup) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    STORE_EXPECT_ERROR(this->S().CreateKey(NewKey(g.id + 50, 1)), core::ErrorCode::kInvalidRequest);
    EXPECT_TRUE(STORE_OK(this->S().ListKeys(std::nullopt)).empty());
    // The hash was not consumed by the failed attempt.
    STORE_OK(this->S().CreateKey(NewKey(g.id, 1)));
}

TYPED_TEST_P(StoreContract, UpdateKeyReplacesMutableFieldsOnly) {
    auto g1 = STORE_OK(this->S().CreateGroup(NewGroup("g1"), "admin"));
    auto g2 = STORE_OK(this->S().CreateGroup(NewGroup("g2"), "admin"));
    auto created = STORE_OK(this->S().CreateKey(NewKey(g1.id, 1)));

    VirtualKey change;
    change.id = created.id;
    change.key_name = "renamed";
    change.key_hash = FakeHash(777);   // immutable: ignored
    change.key_prefix = "condt_ZZZZ";  // immutable: ignored
    change.group_id = g2.id;
    change.allowed_models = "";
    change.is_enabled = true;
    change.expires_at_ms = std::nullopt;
    change.metadata = "{}";
    change.description = "new description";
    change.rate_limit_rpm = std::nullopt;
    change.rate_limit_rpd = 5;
    change.created_at_ms = 1;  // immutable: ignored
    change.updated_at_ms = kT0 + 5'000;
    auto updated = STORE_OK(this->S().UpdateKey(change));
    ASSERT_TRUE(updated);

    auto expected = change;
    expected.key_hash = created.key_hash;
    expected.key_prefix = created.key_prefix;
    expected.created_at_ms = created.created_at_ms;
    ExpectKeyEq(expected, *updated);
    auto stored = STORE_OK(this->S().GetKey(created.id));
    ASSERT_TRUE(stored);
    ExpectKeyEq(expected, *stored);
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListKeys(g2.id))), std::vector<Id>{created.id});
    EXPECT_TRUE(STORE_OK(this->S().ListKeys(g1.id)).empty());

    // Setting optionals again works too.
    change.expires_at_ms = kT0 + 1;
    change.rate_limit_rpm = 1;
    auto again = STORE_OK(this->S().UpdateKey(change));
    EXPECT_EQ(again->expires_at_ms, std::optional<int64_t>(kT0 + 1));
    EXPECT_EQ(again->rate_limit_rpm, std::optional<int64_t>(1));
}

TYPED_TEST_P(StoreContract, UpdateKeyMissingOrUnknownGroup) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    auto created = STORE_OK(this->S().CreateKey(NewKey(g.id, 1)));

    auto missing = created;
    missing.id = created.id + 100;
    EXPECT_FALSE(STORE_OK(this->S().UpdateKey(missing)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetKey(missing.id)).has_value());

    auto bad_group = created;
    bad_group.group_id = g.id + 100;
    bad_group.key_name = "should not stick";
    STORE_EXPECT_ERROR(this->S().UpdateKey(bad_group), core::ErrorCode::kInvalidRequest);
    ExpectKeyEq(created, *STORE_OK(this->S().GetKey(created.id)));
}

TYPED_TEST_P(StoreContract, DeleteKeyAndListKeysByGroup) {
    auto g1 = STORE_OK(this->S().CreateGroup(NewGroup("g1"), "admin"));
    auto g2 = STORE_OK(this->S().CreateGroup(NewGroup("g2"), "admin"));
    auto a = STORE_OK(this->S().CreateKey(NewKey(g1.id, 1)));
    auto b = STORE_OK(this->S().CreateKey(NewKey(g2.id, 2)));
    auto c = STORE_OK(this->S().CreateKey(NewKey(g1.id, 3)));
    EXPECT_LT(a.id, b.id);
    EXPECT_LT(b.id, c.id);

    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListKeys(std::nullopt))),
              (std::vector<Id>{a.id, b.id, c.id}));
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListKeys(g1.id))), (std::vector<Id>{a.id, c.id}));
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListKeys(g2.id))), (std::vector<Id>{b.id}));
    EXPECT_TRUE(STORE_OK(this->S().ListKeys(g2.id + 100)).empty());
    auto listed = STORE_OK(this->S().ListKeys(g1.id));
    ExpectKeyEq(c, listed[1]);

    EXPECT_TRUE(STORE_OK(this->S().DeleteKey(a.id)));
    EXPECT_FALSE(STORE_OK(this->S().DeleteKey(a.id)));
    EXPECT_FALSE(STORE_OK(this->S().DeleteKey(c.id + 100)));
    EXPECT_FALSE(STORE_OK(this->S().GetKey(a.id)).has_value());
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListKeys(std::nullopt))), (std::vector<Id>{b.id, c.id}));
    // The deleted key's hash can be used again.
    STORE_OK(this->S().CreateKey(NewKey(g2.id, 1)));
}

// ===== Providers and provider keys =====

TYPED_TEST_P(StoreContract, ProviderRoundTripUpdateAndEveryType) {
    auto p = NewProvider("OpenAI main", ProviderType::kOpenAI);
    auto created = STORE_OK(this->S().CreateProvider(p));
    EXPECT_GT(created.id, 0);
    p.id = created.id;
    ExpectProviderEq(p, created);
    ExpectProviderEq(p, *STORE_OK(this->S().GetProvider(p.id)));

    auto change = p;
    change.type = ProviderType::kOpenAICompatible;
    change.name = "renamed";
    change.base_url = "";
    change.is_enabled = true;
    change.created_at_ms = 1;  // ignored
    change.updated_at_ms = kT0 + 77;
    auto updated = STORE_OK(this->S().UpdateProvider(change));
    ASSERT_TRUE(updated);
    auto expected = change;
    expected.created_at_ms = p.created_at_ms;
    ExpectProviderEq(expected, *updated);
    ExpectProviderEq(expected, *STORE_OK(this->S().GetProvider(p.id)));

    change.id = p.id + 100;
    EXPECT_FALSE(STORE_OK(this->S().UpdateProvider(change)).has_value());

    std::vector<Id> ids{p.id};
    for (int t = 1; t <= 12; ++t) {
        auto made = STORE_OK(
            this->S().CreateProvider(NewProvider(Num("t", t), static_cast<ProviderType>(t))));
        EXPECT_EQ(static_cast<int>(STORE_OK(this->S().GetProvider(made.id))->type), t);
        ids.push_back(made.id);
    }
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListProviders())), ids);
}

TYPED_TEST_P(StoreContract, DeleteProviderCascadesKeysAndConflictsWithMappings) {
    auto p = STORE_OK(this->S().CreateProvider(NewProvider("p")));
    auto q = STORE_OK(this->S().CreateProvider(NewProvider("q")));
    auto k1 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p.id, "one", true)));
    auto k2 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p.id, "two", false)));
    auto qk = STORE_OK(this->S().CreateProviderKey(NewProviderKey(q.id, "q", true)));
    auto m = STORE_OK(this->S().CreateMapping(NewMapping(p.id, "alias", "model")));

    STORE_EXPECT_ERROR(this->S().DeleteProvider(p.id), core::ErrorCode::kConflict);
    EXPECT_TRUE(STORE_OK(this->S().GetProvider(p.id)).has_value());
    EXPECT_EQ(STORE_OK(this->S().ListProviderKeys(p.id)).size(), 2u);

    EXPECT_TRUE(STORE_OK(this->S().DeleteMapping(m.id)));
    EXPECT_TRUE(STORE_OK(this->S().DeleteProvider(p.id)));
    EXPECT_FALSE(STORE_OK(this->S().GetProvider(p.id)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetProviderKey(k1.id)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetProviderKey(k2.id)).has_value());
    EXPECT_TRUE(STORE_OK(this->S().ListProviderKeys(p.id)).empty());
    EXPECT_FALSE(STORE_OK(this->S().DeleteProvider(p.id)));
    // The other provider keeps its key.
    ExpectProviderKeyEq(qk, *STORE_OK(this->S().GetProviderKey(qk.id)));
}

TYPED_TEST_P(StoreContract, ProviderKeyRoundTripWithBinarySealedKey) {
    auto p = STORE_OK(this->S().CreateProvider(NewProvider("p")));
    auto k = NewProviderKey(p.id, "main", false);
    ASSERT_EQ(k.api_key_sealed[0], '\0');
    auto created = STORE_OK(this->S().CreateProviderKey(k));
    EXPECT_GT(created.id, 0);
    k.id = created.id;
    ExpectProviderKeyEq(k, created);
    ExpectProviderKeyEq(k, *STORE_OK(this->S().GetProviderKey(k.id)));

    auto empty = NewProviderKey(p.id, "empty", false);
    empty.api_key_sealed = "";
    empty.base_url = "";
    empty.organization = "";
    empty.is_enabled = true;
    auto made = STORE_OK(this->S().CreateProviderKey(empty));
    empty.id = made.id;
    ExpectProviderKeyEq(empty, *STORE_OK(this->S().GetProviderKey(made.id)));

    auto listed = STORE_OK(this->S().ListProviderKeys(p.id));
    ASSERT_EQ(listed.size(), 2u);
    ExpectProviderKeyEq(k, listed[0]);
    ExpectProviderKeyEq(empty, listed[1]);
    EXPECT_TRUE(STORE_OK(this->S().ListProviderKeys(p.id + 100)).empty());
}

TYPED_TEST_P(StoreContract, CreateProviderKeyRejectsUnknownProvider) {
    auto p = STORE_OK(this->S().CreateProvider(NewProvider("p")));
    STORE_EXPECT_ERROR(this->S().CreateProviderKey(NewProviderKey(p.id + 9, "x", true)),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_TRUE(STORE_OK(this->S().ListProviderKeys(p.id + 9)).empty());
}

TYPED_TEST_P(StoreContract, AtMostOnePrimaryKeyPerProvider) {
    auto p = STORE_OK(this->S().CreateProvider(NewProvider("p")));
    auto q = STORE_OK(this->S().CreateProvider(NewProvider("q")));
    auto q1 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(q.id, "q1", true)));
    auto k1 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p.id, "k1", true)));
    auto k2 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p.id, "k2", true)));
    auto primaries = [&](Id provider) {
        std::vector<Id> out;
        for (const auto& k : STORE_OK(this->S().ListProviderKeys(provider))) {
            if (k.is_primary) {
                out.push_back(k.id);
            }
        }
        return out;
    };
    EXPECT_EQ(primaries(p.id), std::vector<Id>{k2.id});
    EXPECT_FALSE(STORE_OK(this->S().GetProviderKey(k1.id))->is_primary);

    // A non-primary key leaves the primary alone.
    auto k3 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p.id, "k3", false)));
    EXPECT_EQ(primaries(p.id), std::vector<Id>{k2.id});

    // Promoting through an update demotes the others as well.
    auto promote = *STORE_OK(this->S().GetProviderKey(k1.id));
    promote.is_primary = true;
    EXPECT_TRUE(STORE_OK(this->S().UpdateProviderKey(promote))->is_primary);
    EXPECT_EQ(primaries(p.id), std::vector<Id>{k1.id});

    // Updating the primary key itself keeps it primary.
    promote.key_name = "k1 renamed";
    EXPECT_TRUE(STORE_OK(this->S().UpdateProviderKey(promote))->is_primary);
    EXPECT_EQ(primaries(p.id), std::vector<Id>{k1.id});

    // Demoting leaves no primary.
    promote.is_primary = false;
    STORE_OK(this->S().UpdateProviderKey(promote));
    EXPECT_TRUE(primaries(p.id).empty());

    // The other provider was never affected.
    EXPECT_EQ(primaries(q.id), std::vector<Id>{q1.id});
    (void)k3;
}

TYPED_TEST_P(StoreContract, UpdateProviderKey) {
    auto p = STORE_OK(this->S().CreateProvider(NewProvider("p")));
    auto other = STORE_OK(this->S().CreateProvider(NewProvider("other")));
    auto created = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p.id, "orig", false)));

    ProviderKey change;
    change.id = created.id;
    change.provider_id = other.id;  // a key never moves to another provider
    change.api_key_sealed = std::string("rotated\0key", 11);
    change.key_hint = "wxyz";
    change.base_url = "";
    change.organization = "org-new";
    change.key_name = "rotated";
    change.is_primary = false;
    change.is_enabled = true;
    change.created_at_ms = 1;  // ignored
    change.updated_at_ms = kT0 + 9'000;
    auto updated = STORE_OK(this->S().UpdateProviderKey(change));
    ASSERT_TRUE(updated);
    auto expected = change;
    expected.provider_id = p.id;
    expected.created_at_ms = created.created_at_ms;
    ExpectProviderKeyEq(expected, *updated);
    ExpectProviderKeyEq(expected, *STORE_OK(this->S().GetProviderKey(created.id)));

    change.id = created.id + 100;
    EXPECT_FALSE(STORE_OK(this->S().UpdateProviderKey(change)).has_value());

    EXPECT_TRUE(STORE_OK(this->S().DeleteProviderKey(created.id)));
    EXPECT_FALSE(STORE_OK(this->S().DeleteProviderKey(created.id)));
    EXPECT_FALSE(STORE_OK(this->S().GetProviderKey(created.id)).has_value());
    EXPECT_TRUE(STORE_OK(this->S().GetProvider(p.id)).has_value());
}

// ===== Model mappings =====

TYPED_TEST_P(StoreContract, MappingRoundTripUpdateAndDelete) {
    auto p = STORE_OK(this->S().CreateProvider(NewProvider("p")));
    auto q = STORE_OK(this->S().CreateProvider(NewProvider("q")));
    auto m = NewMapping(p.id, "gpt-4o", "gpt-4o-2024-08-06");
    auto created = STORE_OK(this->S().CreateMapping(m));
    EXPECT_GT(created.id, 0);
    m.id = created.id;
    ExpectMappingEq(m, created);
    ExpectMappingEq(m, *STORE_OK(this->S().GetMapping(m.id)));

    // Defaults (and an unset override) round-trip too.
    ModelMapping plain;
    plain.model_alias = "gpt-4o";  // a second deployment of the same alias
    plain.provider_model_id = "gpt-4o";
    plain.provider_id = q.id;
    plain.priority = -2;
    plain.created_at_ms = kT0;
    plain.updated_at_ms = kT0;
    auto plain_created = STORE_OK(this->S().CreateMapping(plain));
    plain.id = plain_created.id;
    ExpectMappingEq(plain, *STORE_OK(this->S().GetMapping(plain.id)));
    EXPECT_FALSE(STORE_OK(this->S().GetMapping(plain.id))->max_context_tokens_override);

    auto listed = STORE_OK(this->S().ListMappings());
    ASSERT_EQ(listed.size(), 2u);
    ExpectMappingEq(m, listed[0]);
    ExpectMappingEq(plain, listed[1]);

    // Update: every field flips, including the provider.
    ModelMapping change = plain;
    change.id = m.id;
    change.provider_id = q.id;
    change.model_alias = "renamed";
    change.created_at_ms = 1;  // ignored
    change.updated_at_ms = kT0 + 4'242;
    auto updated = STORE_OK(this->S().UpdateMapping(change));
    ASSERT_TRUE(updated);
    auto expected = change;
    expected.created_at_ms = m.created_at_ms;
    ExpectMappingEq(expected, *updated);
    ExpectMappingEq(expected, *STORE_OK(this->S().GetMapping(m.id)));

    change.id = plain.id + 100;
    EXPECT_FALSE(STORE_OK(this->S().UpdateMapping(change)).has_value());

    EXPECT_TRUE(STORE_OK(this->S().DeleteMapping(m.id)));
    EXPECT_FALSE(STORE_OK(this->S().DeleteMapping(m.id)));
    EXPECT_FALSE(STORE_OK(this->S().GetMapping(m.id)).has_value());
    EXPECT_EQ(IdsOf(STORE_OK(this->S().ListMappings())), std::vector<Id>{plain.id});
}

TYPED_TEST_P(StoreContract, MappingRejectsUnknownProvider) {
    auto p = STORE_OK(this->S().CreateProvider(NewProvider("p")));
    STORE_EXPECT_ERROR(this->S().CreateMapping(NewMapping(p.id + 5, "a", "b")),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_TRUE(STORE_OK(this->S().ListMappings()).empty());

    auto m = STORE_OK(this->S().CreateMapping(NewMapping(p.id, "a", "b")));
    auto change = m;
    change.provider_id = p.id + 5;
    change.model_alias = "should not stick";
    STORE_EXPECT_ERROR(this->S().UpdateMapping(change), core::ErrorCode::kInvalidRequest);
    ExpectMappingEq(m, *STORE_OK(this->S().GetMapping(m.id)));
}

// ===== Model costs =====

TYPED_TEST_P(StoreContract, CostRoundTripWithMappingLinks) {
    auto [p, m1] = this->ProviderWithMapping("a");
    Id m2 = STORE_OK(this->S().CreateMapping(NewMapping(p, "b", "b-up"))).id;
    Id m3 = STORE_OK(this->S().CreateMapping(NewMapping(p, "c", "c-up"))).id;

    // Links come back ascending, duplicates collapsed.
    auto c = NewCost("gpt-4o pricing", {m3, m1, m3});
    auto created = STORE_OK(this->S().CreateCost(c));
    EXPECT_GT(created.id, 0);
    c.id = created.id;
    c.mapping_ids = {m1, m3};
    ExpectCostEq(c, created);
    ExpectCostEq(c, *STORE_OK(this->S().GetCost(c.id)));

    auto none = NewCost("unlinked", {});
    none.input_per_million = 0;
    auto none_created = STORE_OK(this->S().CreateCost(none));
    none.id = none_created.id;
    ExpectCostEq(none, *STORE_OK(this->S().GetCost(none.id)));

    auto listed = STORE_OK(this->S().ListCosts());
    ASSERT_EQ(listed.size(), 2u);
    ExpectCostEq(c, listed[0]);
    ExpectCostEq(none, listed[1]);

    // Update replaces every field and the whole link set.
    auto change = NewCost("renamed", {m2});
    change.id = c.id;
    change.input_per_million = 1;
    change.output_per_million = 2;
    change.embedding_per_million = 3;
    change.image_per_image = 4;
    change.video_per_second = 5;
    change.priority = -1;
    change.description = "";
    change.created_at_ms = 1;  // ignored
    change.updated_at_ms = kT0 + 8'888;
    auto updated = STORE_OK(this->S().UpdateCost(change));
    ASSERT_TRUE(updated);
    auto expected = change;
    expected.created_at_ms = c.created_at_ms;
    ExpectCostEq(expected, *updated);
    ExpectCostEq(expected, *STORE_OK(this->S().GetCost(c.id)));

    change.id = none.id + 100;
    EXPECT_FALSE(STORE_OK(this->S().UpdateCost(change)).has_value());
}

TYPED_TEST_P(StoreContract, CostRejectsUnknownMappingWithoutSideEffects) {
    auto [p, m1] = this->ProviderWithMapping("a");
    (void)p;
    STORE_EXPECT_ERROR(this->S().CreateCost(NewCost("bad", {m1, m1 + 100})),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_TRUE(STORE_OK(this->S().ListCosts()).empty());

    auto good = STORE_OK(this->S().CreateCost(NewCost("good", {m1})));
    auto change = good;
    change.cost_name = "should not stick";
    change.mapping_ids = {m1 + 100};
    STORE_EXPECT_ERROR(this->S().UpdateCost(change), core::ErrorCode::kInvalidRequest);
    ExpectCostEq(good, *STORE_OK(this->S().GetCost(good.id)));
}

TYPED_TEST_P(StoreContract, DeletingMappingOrCostRemovesLinks) {
    auto [p, m1] = this->ProviderWithMapping("a");
    Id m2 = STORE_OK(this->S().CreateMapping(NewMapping(p, "b", "b-up"))).id;
    auto c1 = STORE_OK(this->S().CreateCost(NewCost("c1", {m1, m2})));
    auto c2 = STORE_OK(this->S().CreateCost(NewCost("c2", {m2})));

    EXPECT_TRUE(STORE_OK(this->S().DeleteMapping(m2)));
    EXPECT_EQ(STORE_OK(this->S().GetCost(c1.id))->mapping_ids, std::vector<Id>{m1});
    EXPECT_TRUE(STORE_OK(this->S().GetCost(c2.id))->mapping_ids.empty());

    EXPECT_TRUE(STORE_OK(this->S().DeleteCost(c1.id)));
    EXPECT_FALSE(STORE_OK(this->S().DeleteCost(c1.id)));
    EXPECT_FALSE(STORE_OK(this->S().GetCost(c1.id)).has_value());
    EXPECT_TRUE(STORE_OK(this->S().GetMapping(m1)).has_value());  // the mapping survives
    // The mapping can be linked again, and deleting it no longer conflicts with anything.
    auto c3 = STORE_OK(this->S().CreateCost(NewCost("c3", {m1})));
    EXPECT_EQ(c3.mapping_ids, std::vector<Id>{m1});
    EXPECT_TRUE(STORE_OK(this->S().DeleteMapping(m1)));
    EXPECT_TRUE(STORE_OK(this->S().GetCost(c3.id))->mapping_ids.empty());
    EXPECT_TRUE(STORE_OK(this->S().DeleteProvider(p)));
}

// ===== LoadConfig =====

TYPED_TEST_P(StoreContract, LoadConfigReturnsEverything) {
    auto g1 = STORE_OK(this->S().CreateGroup(NewGroup("g1", 10, std::string("e1")), "a"));
    auto g2 = STORE_OK(this->S().CreateGroup(NewGroup("g2"), "a"));
    STORE_OK(this->S().AdjustBalance(g2.id, -3, TransactionType::kDebit, ReferenceType::kManual, "",
                                     "", "a", kT0 + 3));
    g2 = *STORE_OK(this->S().GetGroup(g2.id));
    auto k1 = STORE_OK(this->S().CreateKey(NewKey(g1.id, 1)));
    auto k2 = STORE_OK(this->S().CreateKey(NewKey(g2.id, 2)));
    auto p1 = STORE_OK(this->S().CreateProvider(NewProvider("p1", ProviderType::kOpenAI)));
    auto p2 = STORE_OK(this->S().CreateProvider(NewProvider("p2", ProviderType::kGroq)));
    auto pk1 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p1.id, "a", true)));
    auto pk2 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p2.id, "b", false)));
    auto pk3 = STORE_OK(this->S().CreateProviderKey(NewProviderKey(p1.id, "c", false)));
    auto m1 = STORE_OK(this->S().CreateMapping(NewMapping(p1.id, "x", "x1")));
    auto m2 = STORE_OK(this->S().CreateMapping(NewMapping(p2.id, "x", "x2")));
    auto c1 = STORE_OK(this->S().CreateCost(NewCost("c1", {m2.id, m1.id})));
    auto c2 = STORE_OK(this->S().CreateCost(NewCost("c2", {})));

    auto config = STORE_OK(this->S().LoadConfig());
    ASSERT_EQ(config.groups.size(), 2u);
    ExpectGroupEq(*STORE_OK(this->S().GetGroup(g1.id)), config.groups[0]);
    ExpectGroupEq(g2, config.groups[1]);
    EXPECT_EQ(config.groups[1].balance, -3);
    ASSERT_EQ(config.keys.size(), 2u);
    ExpectKeyEq(k1, config.keys[0]);
    ExpectKeyEq(k2, config.keys[1]);
    ASSERT_EQ(config.providers.size(), 2u);
    ExpectProviderEq(p1, config.providers[0]);
    ExpectProviderEq(p2, config.providers[1]);
    ASSERT_EQ(config.provider_keys.size(), 3u);  // every provider's keys, by id
    ExpectProviderKeyEq(pk1, config.provider_keys[0]);
    ExpectProviderKeyEq(pk2, config.provider_keys[1]);
    ExpectProviderKeyEq(pk3, config.provider_keys[2]);
    ASSERT_EQ(config.mappings.size(), 2u);
    ExpectMappingEq(m1, config.mappings[0]);
    ExpectMappingEq(m2, config.mappings[1]);
    ASSERT_EQ(config.costs.size(), 2u);
    ExpectCostEq(c1, config.costs[0]);
    EXPECT_EQ(config.costs[0].mapping_ids, (std::vector<Id>{m1.id, m2.id}));
    ExpectCostEq(c2, config.costs[1]);

    // A second load sees later changes (no stale snapshot is kept).
    STORE_OK(this->S().DeleteKey(k1.id));
    EXPECT_EQ(STORE_OK(this->S().LoadConfig()).keys.size(), 1u);
}

// ===== Spend =====

TYPED_TEST_P(StoreContract, ApplySpendDebitsAndLogs) {
    auto a = STORE_OK(this->S().CreateGroup(NewGroup("a", 1'000'000), "admin"));
    auto b = STORE_OK(this->S().CreateGroup(NewGroup("b", 50), "admin"));
    std::vector<GroupSpend> debits = {
        {a.id, 123'457, 3, "API usage by virtual key #3"},
        {b.id, 200, 1, "API usage by virtual key #4"},  // overdraws: spend already happened
        {a.id, 1, 1, "API usage by virtual key #5"},
    };
    std::vector<RequestLogRow> logs = {NewLog("req-1", 3, a.id, kT0 + 1),
                                       NewLog("req-2", 4, b.id, kT0 + 2)};
    logs[1].streamed = false;
    logs[1].usage_estimated = false;
    logs[1].status_code = 429;
    logs[1].client_ip = "";
    STORE_OK(this->S().ApplySpend(debits, logs, kT0 + 1'000));

    auto ga = *STORE_OK(this->S().GetGroup(a.id));
    EXPECT_EQ(ga.balance, 1'000'000 - 123'457 - 1);
    EXPECT_EQ(ga.lifetime_spent, 123'458);
    EXPECT_EQ(ga.lifetime_credits_added, 1'000'000);
    EXPECT_EQ(ga.updated_at_ms, kT0 + 1'000);
    auto gb = *STORE_OK(this->S().GetGroup(b.id));
    EXPECT_EQ(gb.balance, -150);
    EXPECT_EQ(gb.lifetime_spent, 200);

    auto ta = STORE_OK(this->S().ListTransactions(a.id, 10, 0));
    ASSERT_EQ(ta.size(), 3u);
    EXPECT_EQ(ta[0].type, TransactionType::kDebit);
    EXPECT_EQ(ta[0].reference_type, ReferenceType::kVirtualKey);
    EXPECT_EQ(ta[0].amount, 1);
    EXPECT_EQ(ta[0].balance_after, 1'000'000 - 123'458);
    EXPECT_EQ(ta[0].description, "API usage by virtual key #5");
    EXPECT_EQ(ta[0].created_at_ms, kT0 + 1'000);
    EXPECT_EQ(ta[1].amount, 123'457);
    EXPECT_EQ(ta[1].balance_after, 1'000'000 - 123'457);
    EXPECT_EQ(ta[1].description, "API usage by virtual key #3");
    auto tb = STORE_OK(this->S().ListTransactions(b.id, 10, 0));
    ASSERT_EQ(tb.size(), 2u);
    EXPECT_EQ(tb[0].amount, 200);
    EXPECT_EQ(tb[0].balance_after, -150);

    auto stored = STORE_OK(this->S().ListRequestLogs({}));
    ASSERT_EQ(stored.size(), 2u);
    ExpectLogEqIgnoringId(logs[1], stored[0]);
    ExpectLogEqIgnoringId(logs[0], stored[1]);
    EXPECT_GT(stored[0].id, stored[1].id);
    EXPECT_GT(stored[1].id, 0);
}

TYPED_TEST_P(StoreContract, ApplySpendIsAllOrNothing) {
    auto a = STORE_OK(this->S().CreateGroup(NewGroup("a", 1'000), "admin"));
    auto before = *STORE_OK(this->S().GetGroup(a.id));
    std::vector<GroupSpend> debits = {{a.id, 100, 1, "first"}, {a.id + 999, 5, 1, "missing"}};
    std::vector<RequestLogRow> logs = {NewLog("r1", 1, a.id, kT0)};
    STORE_EXPECT_ERROR(this->S().ApplySpend(debits, logs, kT0 + 5),
                       core::ErrorCode::kInvalidRequest);

    ExpectGroupEq(before, *STORE_OK(this->S().GetGroup(a.id)));
    EXPECT_EQ(STORE_OK(this->S().ListTransactions(a.id, 10, 0)).size(), 1u);
    EXPECT_TRUE(STORE_OK(this->S().ListRequestLogs({})).empty());

    // Negative amounts are refused before anything is written.
    std::vector<GroupSpend> negative = {{a.id, 100, 1, "ok"}, {a.id, -1, 1, "refund?"}};
    STORE_EXPECT_ERROR(this->S().ApplySpend(negative, logs, kT0 + 6),
                       core::ErrorCode::kInvalidRequest);
    ExpectGroupEq(before, *STORE_OK(this->S().GetGroup(a.id)));
    EXPECT_TRUE(STORE_OK(this->S().ListRequestLogs({})).empty());

    // The store is fully usable after the failed batches.
    STORE_OK(this->S().ApplySpend({{a.id, 100, 1, "ok"}}, logs, kT0 + 7));
    EXPECT_EQ(STORE_OK(this->S().GetGroup(a.id))->balance, 900);
    EXPECT_EQ(STORE_OK(this->S().ListRequestLogs({})).size(), 1u);
}

TYPED_TEST_P(StoreContract, ApplySpendWithOnlyLogsOrNothing) {
    auto a = STORE_OK(this->S().CreateGroup(NewGroup("a", 10), "admin"));
    STORE_OK(this->S().ApplySpend({}, {}, kT0));
    STORE_OK(this->S().ApplySpend({}, {NewLog("only-log", 1, a.id, kT0)}, kT0));
    EXPECT_EQ(STORE_OK(this->S().GetGroup(a.id))->balance, 10);
    EXPECT_EQ(STORE_OK(this->S().ListTransactions(a.id, 10, 0)).size(), 1u);
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs({}))),
              std::vector<std::string>{"only-log"});
}

// ===== Request logs =====

TYPED_TEST_P(StoreContract, RequestLogFiltersAndPaging) {
    // key 1 in group 10, key 2 in group 10, key 3 in group 20 (log rows need no real keys).
    std::vector<RequestLogRow> logs =
        {
            NewLog("k1-t100", 1, 10, 100), NewLog("k2-t150", 2, 10, 150),
            NewLog("k3-t200", 3, 20, 200), NewLog("k1-t300", 1, 10, 300),
            NewLog("k3-t300", 3, 20, 300),  // same timestamp: the later insert is newer
            NewLog("k1-t050", 1, 10, 50),   // inserted late, but oldest by time
        };
    STORE_OK(this->S().ApplySpend({}, logs, kT0));

    RequestLogQuery all;
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(all))),
              (std::vector<std::string>{"k3-t300", "k1-t300", "k3-t200", "k2-t150", "k1-t100",
                                        "k1-t050"}));

    RequestLogQuery by_key;
    by_key.virtual_key_id = 1;
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(by_key))),
              (std::vector<std::string>{"k1-t300", "k1-t100", "k1-t050"}));

    RequestLogQuery by_group;
    by_group.group_id = 10;
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(by_group))),
              (std::vector<std::string>{"k1-t300", "k2-t150", "k1-t100", "k1-t050"}));

    RequestLogQuery since;
    since.since_ms = 150;  // inclusive
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(since))),
              (std::vector<std::string>{"k3-t300", "k1-t300", "k3-t200", "k2-t150"}));

    RequestLogQuery combined;
    combined.group_id = 10;
    combined.virtual_key_id = 1;
    combined.since_ms = 100;
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(combined))),
              (std::vector<std::string>{"k1-t300", "k1-t100"}));

    RequestLogQuery mismatch;
    mismatch.group_id = 20;
    mismatch.virtual_key_id = 1;
    EXPECT_TRUE(STORE_OK(this->S().ListRequestLogs(mismatch)).empty());

    RequestLogQuery page;
    page.limit = 2;
    page.offset = 0;
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(page))),
              (std::vector<std::string>{"k3-t300", "k1-t300"}));
    page.offset = 2;
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(page))),
              (std::vector<std::string>{"k3-t200", "k2-t150"}));
    page.offset = 5;
    EXPECT_EQ(RequestIds(STORE_OK(this->S().ListRequestLogs(page))),
              (std::vector<std::string>{"k1-t050"}));
    page.offset = 6;
    EXPECT_TRUE(STORE_OK(this->S().ListRequestLogs(page)).empty());

    RequestLogQuery filtered_page;
    filtered_page.group_id = 10;
    filtered_page.limit = 1;
    filtered_page.offset = 1;
    auto one = STORE_OK(this->S().ListRequestLogs(filtered_page));
    ASSERT_EQ(one.size(), 1u);
    ExpectLogEqIgnoringId(logs[1], one[0]);

    RequestLogQuery none;
    none.limit = 0;
    EXPECT_TRUE(STORE_OK(this->S().ListRequestLogs(none)).empty());
}

TYPED_TEST_P(StoreContract, KeySpendSinceSumsOneKeysCostsFromATime) {
    EXPECT_EQ(STORE_OK(this->S().KeySpendSince(1, 0)), 0);  // no rows at all
    auto row = [](std::string id, Id key, int64_t ts, Micros cost) {
        auto r = NewLog(std::move(id), key, 10, ts);
        r.cost = cost;
        return r;
    };
    STORE_OK(this->S().ApplySpend(
        {},
        {row("a", 1, 100, 1'000'001), row("b", 1, 200, 2), row("c", 2, 200, 500),
         row("d", 1, 300, 0), row("e", 1, 299, 4'000'000'000'000)},
        kT0));
    EXPECT_EQ(STORE_OK(this->S().KeySpendSince(1, 0)), 4'000'001'000'003);
    EXPECT_EQ(STORE_OK(this->S().KeySpendSince(1, 200)), 4'000'000'000'002);  // inclusive
    EXPECT_EQ(STORE_OK(this->S().KeySpendSince(1, 201)), 4'000'000'000'000);
    EXPECT_EQ(STORE_OK(this->S().KeySpendSince(1, 301)), 0);
    EXPECT_EQ(STORE_OK(this->S().KeySpendSince(2, 0)), 500);
    EXPECT_EQ(STORE_OK(this->S().KeySpendSince(3, 0)), 0);  // unknown key
}

TYPED_TEST_P(StoreContract, RequestLogDefaultLimitIsOneHundred) {
    std::vector<RequestLogRow> logs;
    for (int i = 0; i < 130; ++i) {
        logs.push_back(NewLog(Num("r", i), 1, 1, kT0 + i));
    }
    STORE_OK(this->S().ApplySpend({}, logs, kT0));
    auto rows = STORE_OK(this->S().ListRequestLogs({}));
    ASSERT_EQ(rows.size(), 100u);
    EXPECT_EQ(rows.front().request_id, "r129");
    EXPECT_EQ(rows.back().request_id, "r30");
}

// ===== Settings =====

TYPED_TEST_P(StoreContract, SettingsGetPutOverwrite) {
    EXPECT_FALSE(STORE_OK(this->S().GetSetting("missing")).has_value());
    STORE_OK(this->S().PutSetting("webhook.secret_version", "1"));
    STORE_OK(this->S().PutSetting("empty", ""));
    STORE_OK(this->S().PutSetting("json", R"({"a":[1,2],"b":"ü"})"));
    EXPECT_EQ(STORE_OK(this->S().GetSetting("webhook.secret_version")),
              std::optional<std::string>("1"));
    EXPECT_EQ(STORE_OK(this->S().GetSetting("empty")), std::optional<std::string>(""));
    EXPECT_EQ(STORE_OK(this->S().GetSetting("json")),
              std::optional<std::string>(R"({"a":[1,2],"b":"ü"})"));

    STORE_OK(this->S().PutSetting("webhook.secret_version", "2"));
    EXPECT_EQ(STORE_OK(this->S().GetSetting("webhook.secret_version")),
              std::optional<std::string>("2"));
    EXPECT_EQ(STORE_OK(this->S().GetSetting("json")),
              std::optional<std::string>(R"({"a":[1,2],"b":"ü"})"));
    EXPECT_FALSE(STORE_OK(this->S().GetSetting("Webhook.secret_version")).has_value());
}

TYPED_TEST_P(StoreContract, NegativePagingIsRejected) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    STORE_EXPECT_ERROR(this->S().ListTransactions(g.id, -1, 0), core::ErrorCode::kInvalidRequest);
    STORE_EXPECT_ERROR(this->S().ListTransactions(g.id, 10, -1), core::ErrorCode::kInvalidRequest);
    RequestLogQuery q;
    q.limit = -5;
    STORE_EXPECT_ERROR(this->S().ListRequestLogs(q), core::ErrorCode::kInvalidRequest);
}

// ===== Async tasks =====

TYPED_TEST_P(StoreContract, TasksAndWebhooksStartEmpty) {
    EXPECT_TRUE(STORE_OK(this->S().ListTasks({})).empty());
    EXPECT_FALSE(STORE_OK(this->S().GetTask("task_missing")).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookSecret(1)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookDelivery("msg_missing")).has_value());
    STORE_OK(this->S().UpsertWebhookDeliveries({}));
    EXPECT_TRUE(STORE_OK(this->S().ListWebhookDeliveries({})).empty());
}

TYPED_TEST_P(StoreContract, TaskRoundTripEveryField) {
    AsyncTask t = NewTask("task_0123456789abcdef0123456789abcdef", 5);
    auto [returned, created] = STORE_OK(this->S().CreateTask(t));
    EXPECT_TRUE(created);
    ExpectTaskEq(t, returned);
    auto got = STORE_OK(this->S().GetTask(t.id));
    ASSERT_TRUE(got.has_value());
    ExpectTaskEq(t, *got);

    // Defaults and empty texts come back as they went in.
    AsyncTask bare;
    bare.id = "task_bare";
    bare.type = std::string(domain::kImageTask);
    bare.virtual_key_id = 5;
    bare.created_at_ms = kT0;
    bare.updated_at_ms = kT0;
    EXPECT_TRUE(STORE_OK(this->S().CreateTask(bare)).second);
    auto got_bare = STORE_OK(this->S().GetTask("task_bare"));
    ASSERT_TRUE(got_bare.has_value());
    ExpectTaskEq(bare, *got_bare);

    // Every state is stored and read back as itself.
    const TaskState states[] = {TaskState::kPending, TaskState::kRunning,   TaskState::kCompleted,
                                TaskState::kFailed,  TaskState::kCancelled, TaskState::kTimedOut};
    for (int i = 0; i < 6; ++i) {
        AsyncTask s = NewTask(Num("task_state_", i), 6, i);
        s.state = states[i];
        EXPECT_TRUE(STORE_OK(this->S().CreateTask(s)).second);
        auto read = STORE_OK(this->S().GetTask(s.id));
        ASSERT_TRUE(read.has_value());
        EXPECT_EQ(domain::ToString(read->state), domain::ToString(states[i]));
    }

    // A large request (image edits can carry inline base64 input).
    AsyncTask big = NewTask("task_big", 7);
    big.request_json = R"({"image":")" + std::string(300'000, 'Q') + R"("})";
    STORE_OK(this->S().CreateTask(big));
    auto got_big = STORE_OK(this->S().GetTask("task_big"));
    ASSERT_TRUE(got_big.has_value());
    EXPECT_EQ(got_big->request_json, big.request_json);

    // Ids are matched exactly.
    EXPECT_FALSE(STORE_OK(this->S().GetTask("TASK_BARE")).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetTask("task_bar")).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetTask("")).has_value());
}

TYPED_TEST_P(StoreContract, CreateTaskIsIdempotentPerVirtualKey) {
    AsyncTask first = NewTask("task_a", 1, 1);  // Idempotency-Key "idem-1"
    first.state = TaskState::kPending;
    first.version = 0;
    auto r1 = STORE_OK(this->S().CreateTask(first));
    EXPECT_TRUE(r1.second);

    // Same key, same virtual key: nothing new; the stored task comes back.
    AsyncTask replay = NewTask("task_b", 1, 2);
    replay.idempotency_key = first.idempotency_key;
    auto r2 = STORE_OK(this->S().CreateTask(replay));
    EXPECT_FALSE(r2.second);
    ExpectTaskEq(first, r2.first);
    EXPECT_FALSE(STORE_OK(this->S().GetTask("task_b")).has_value());

    // A replay returns the task as it is now.
    AsyncTask moved = r1.first;
    moved.state = TaskState::kCompleted;
    moved.progress = 100;
    ASSERT_TRUE(STORE_OK(this->S().UpdateTask(moved)).has_value());
    auto r3 = STORE_OK(this->S().CreateTask(replay));
    EXPECT_FALSE(r3.second);
    EXPECT_EQ(r3.first.id, "task_a");
    EXPECT_EQ(r3.first.state, TaskState::kCompleted);
    EXPECT_EQ(r3.first.progress, 100);
    EXPECT_EQ(r3.first.version, 1);

    // The same key under another virtual key is another task.
    AsyncTask other_vk = NewTask("task_c", 2, 1);
    ASSERT_EQ(other_vk.idempotency_key, first.idempotency_key);
    auto r4 = STORE_OK(this->S().CreateTask(other_vk));
    EXPECT_TRUE(r4.second);
    ExpectTaskEq(other_vk, r4.first);

    // Another key of the same virtual key is another task; keys compare exactly.
    EXPECT_TRUE(STORE_OK(this->S().CreateTask(NewTask("task_d", 1, 3))).second);
    AsyncTask upper = NewTask("task_e", 1, 1);
    upper.idempotency_key = "IDEM-1";
    EXPECT_TRUE(STORE_OK(this->S().CreateTask(upper)).second);

    // Without a key nothing is deduplicated, even for identical requests.
    EXPECT_TRUE(STORE_OK(this->S().CreateTask(NewPendingTask("task_f", 1, kT0))).second);
    EXPECT_TRUE(STORE_OK(this->S().CreateTask(NewPendingTask("task_g", 1, kT0))).second);

    TaskQuery vk1;
    vk1.virtual_key_id = 1;
    auto ids = TaskIds(STORE_OK(this->S().ListTasks(vk1)));
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(ids, (std::vector<std::string>{"task_a", "task_d", "task_e", "task_f", "task_g"}));
    TaskQuery vk2;
    vk2.virtual_key_id = 2;
    EXPECT_EQ(TaskIds(STORE_OK(this->S().ListTasks(vk2))), std::vector<std::string>{"task_c"});
}

TYPED_TEST_P(StoreContract, CreateTaskRejectsDuplicateIdAndInvalidRows) {
    AsyncTask t = NewPendingTask("task_dup", 1, kT0);
    STORE_OK(this->S().CreateTask(t));

    AsyncTask again = NewTask("task_dup", 2, 9);
    STORE_EXPECT_ERROR(this->S().CreateTask(again), core::ErrorCode::kConflict);
    // A taken id is an error even with a fresh idempotency key, and that key stays unused.
    again.virtual_key_id = 1;
    again.idempotency_key = "fresh";
    STORE_EXPECT_ERROR(this->S().CreateTask(again), core::ErrorCode::kConflict);
    auto stored = STORE_OK(this->S().GetTask("task_dup"));
    ASSERT_TRUE(stored.has_value());
    ExpectTaskEq(t, *stored);
    AsyncTask fresh = NewTask("task_fresh", 1, 9);
    fresh.idempotency_key = "fresh";
    EXPECT_TRUE(STORE_OK(this->S().CreateTask(fresh)).second);

    STORE_EXPECT_ERROR(this->S().CreateTask(NewPendingTask("", 1, kT0)),
                       core::ErrorCode::kInvalidRequest);
    AsyncTask over = NewPendingTask("task_over", 1, kT0);
    over.progress = 101;
    STORE_EXPECT_ERROR(this->S().CreateTask(over), core::ErrorCode::kInvalidRequest);
    over.progress = -1;
    STORE_EXPECT_ERROR(this->S().CreateTask(over), core::ErrorCode::kInvalidRequest);
    over.progress = 100;
    EXPECT_TRUE(STORE_OK(this->S().CreateTask(over)).second);

    EXPECT_EQ(TaskIds(STORE_OK(this->S().ListTasks({}))),
              (std::vector<std::string>{"task_dup", "task_over", "task_fresh"}));
}

TYPED_TEST_P(StoreContract, UpdateTaskWithSpendCommitsBothOrNeither) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g", 1'000), "admin"));
    AsyncTask t = NewPendingTask("task_bill", 3, kT0);
    t.group_id = g.id;
    STORE_OK(this->S().CreateTask(t));
    AsyncTask done = t;
    done.state = TaskState::kCompleted;
    done.progress = 100;
    RequestLogRow log = NewLog("task_bill", 3, g.id, kT0 + 10);
    log.cost = 250;

    // Applied: the task moves and the bill lands, together.
    auto out = STORE_OK(this->S().UpdateTaskWithSpend(done, log, "Generation", kT0 + 10));
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(domain::ToString(out->state), "completed");
    EXPECT_EQ(out->version, 1);
    EXPECT_EQ(STORE_OK(this->S().GetGroup(g.id))->balance, 750);
    auto logs = STORE_OK(this->S().ListRequestLogs({}));
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_EQ(logs[0].request_id, "task_bill");
    EXPECT_EQ(logs[0].cost, 250);
    auto txns = STORE_OK(this->S().ListTransactions(g.id, 10, 0));
    ASSERT_FALSE(txns.empty());
    EXPECT_EQ(txns[0].description, "Generation");
    EXPECT_EQ(txns[0].amount, 250);

    // The same (now stale) completion again: a conflict, and nobody is billed twice.
    STORE_EXPECT_ERROR(this->S().UpdateTaskWithSpend(done, log, "Generation", kT0 + 11),
                       core::ErrorCode::kConflict);
    EXPECT_EQ(STORE_OK(this->S().GetGroup(g.id))->balance, 750);
    EXPECT_EQ(STORE_OK(this->S().ListRequestLogs({})).size(), 1u);

    // An unknown task: nothing written.
    AsyncTask ghost = done;
    ghost.id = "task_ghost";
    EXPECT_FALSE(STORE_OK(this->S().UpdateTaskWithSpend(ghost, log, "x", kT0 + 12)).has_value());
    EXPECT_EQ(STORE_OK(this->S().ListRequestLogs({})).size(), 1u);

    // A bill for a missing group rolls the task change back too.
    AsyncTask again = *out;
    again.progress = 99;
    RequestLogRow orphan = log;
    orphan.group_id = g.id + 999;
    STORE_EXPECT_ERROR(this->S().UpdateTaskWithSpend(again, orphan, "x", kT0 + 13),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(STORE_OK(this->S().GetTask("task_bill"))->version, 1);
    EXPECT_EQ(STORE_OK(this->S().ListRequestLogs({})).size(), 1u);

    // A free generation is logged without a ledger debit.
    RequestLogRow free_log = log;
    free_log.cost = 0;
    STORE_OK(this->S().UpdateTaskWithSpend(again, free_log, "free", kT0 + 14));
    EXPECT_EQ(STORE_OK(this->S().GetGroup(g.id))->balance, 750);
    EXPECT_EQ(STORE_OK(this->S().ListRequestLogs({})).size(), 2u);
    EXPECT_EQ(STORE_OK(this->S().ListTransactions(g.id, 10, 0)).size(), txns.size());
}

TYPED_TEST_P(StoreContract, UpdateTaskIsOptimistic) {
    AsyncTask t = NewPendingTask("task_u", 3, kT0);
    t.idempotency_key = "idem-u";
    STORE_OK(this->S().CreateTask(t));

    AsyncTask next = t;  // every mutable field changed
    next.state = TaskState::kRunning;
    next.progress = 10;
    next.message = "started";
    next.model_alias = "video-model-2";
    next.request_json = R"({"prompt":"retry"})";
    next.result_json = R"({"partial":true})";
    next.error_message = "previous attempt failed";
    next.error_code = "upstream_error";
    next.retryable = true;
    next.webhook_url = "https://other.example.test/hook";
    next.webhook_headers_json = "";
    next.timeout_seconds = 60;
    next.attempt = 3;
    next.retry_count = 2;
    next.max_retries = 9;
    next.upstream_job_id = "job_new";
    next.mapping_id = 78;
    next.updated_at_ms = kT0 + 100;
    next.started_at_ms = kT0 + 101;
    next.completed_at_ms = kT0 + 102;
    next.next_attempt_at_ms = kT0 + 103;
    // ... and every immutable one, which the store must ignore.
    next.type = std::string(domain::kImageTask);
    next.virtual_key_id = 99;
    next.group_id = 98;
    next.idempotency_key = "changed";
    next.request_hash = "other-hash";
    next.created_at_ms = kT0 + 999;

    auto out = STORE_OK(this->S().UpdateTask(next));
    ASSERT_TRUE(out.has_value());
    AsyncTask want = next;
    want.type = t.type;
    want.virtual_key_id = t.virtual_key_id;
    want.group_id = t.group_id;
    want.idempotency_key = t.idempotency_key;
    want.request_hash = t.request_hash;
    want.created_at_ms = t.created_at_ms;
    want.version = 1;
    ExpectTaskEq(want, *out);
    auto got = STORE_OK(this->S().GetTask("task_u"));
    ASSERT_TRUE(got.has_value());
    ExpectTaskEq(want, *got);

    // A stale or future version conflicts and changes nothing.
    STORE_EXPECT_ERROR(this->S().UpdateTask(next), core::ErrorCode::kConflict);  // version 0
    AsyncTask ahead = *out;
    ahead.version = 5;
    ahead.progress = 99;
    STORE_EXPECT_ERROR(this->S().UpdateTask(ahead), core::ErrorCode::kConflict);
    ExpectTaskEq(want, *STORE_OK(this->S().GetTask("task_u")));

    // Each update from the latest row bumps the version by one.
    AsyncTask cur = *out;
    for (int i = 0; i < 2; ++i) {
        cur.progress += 10;
        auto r = STORE_OK(this->S().UpdateTask(cur));
        ASSERT_TRUE(r.has_value());
        EXPECT_EQ(r->version, cur.version + 1);
        cur = *r;
    }
    EXPECT_EQ(cur.version, 3);
    EXPECT_EQ(cur.progress, 30);

    // Two writers that read the same version: the first wins, the second must re-read.
    AsyncTask a = cur;
    AsyncTask b = cur;
    a.state = TaskState::kCompleted;
    b.state = TaskState::kCancelled;
    EXPECT_TRUE(STORE_OK(this->S().UpdateTask(a)).has_value());
    STORE_EXPECT_ERROR(this->S().UpdateTask(b), core::ErrorCode::kConflict);
    auto final_row = STORE_OK(this->S().GetTask("task_u"));
    ASSERT_TRUE(final_row.has_value());
    EXPECT_EQ(final_row->state, TaskState::kCompleted);
    EXPECT_EQ(final_row->version, 4);

    // An update cannot break the row's rules either.
    AsyncTask bad = *final_row;
    bad.progress = 101;
    STORE_EXPECT_ERROR(this->S().UpdateTask(bad), core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(STORE_OK(this->S().GetTask("task_u"))->version, 4);

    // The idempotency key still resolves under the original virtual key.
    AsyncTask replay = NewPendingTask("task_replay", 3, kT0);
    replay.idempotency_key = "idem-u";
    auto r = STORE_OK(this->S().CreateTask(replay));
    EXPECT_FALSE(r.second);
    EXPECT_EQ(r.first.id, "task_u");

    // A missing task is nullopt, not a conflict.
    AsyncTask missing = cur;
    missing.id = "task_nope";
    EXPECT_FALSE(STORE_OK(this->S().UpdateTask(missing)).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetTask("task_nope")).has_value());
}

TYPED_TEST_P(StoreContract, ListTasksFiltersAndOrdering) {
    struct Row {
        const char* id;
        Id key;
        TaskState state;
        int64_t created;
    };
    // Inserted out of time order; t3 and t4 share a timestamp (then id decides).
    const Row rows[] = {
        {"t5", 2, TaskState::kFailed, 300},   {"t1", 1, TaskState::kPending, 100},
        {"t4", 1, TaskState::kRunning, 200},  {"t3", 1, TaskState::kCompleted, 200},
        {"t2", 2, TaskState::kRunning, 150},  {"t8", 1, TaskState::kCancelled, 260},
        {"t7", 2, TaskState::kTimedOut, 250}, {"t6", 1, TaskState::kPending, 50},
    };
    for (const auto& row : rows) {
        AsyncTask t = NewPendingTask(row.id, row.key, row.created);
        t.state = row.state;
        STORE_OK(this->S().CreateTask(t));
    }
    auto list = [&](const TaskQuery& q) { return TaskIds(STORE_OK(this->S().ListTasks(q))); };
    using V = std::vector<std::string>;

    EXPECT_EQ(list({}), (V{"t6", "t1", "t2", "t3", "t4", "t7", "t8", "t5"}));

    TaskQuery by_key;
    by_key.virtual_key_id = 1;
    EXPECT_EQ(list(by_key), (V{"t6", "t1", "t3", "t4", "t8"}));

    TaskQuery by_state;
    by_state.state = TaskState::kRunning;
    EXPECT_EQ(list(by_state), (V{"t2", "t4"}));
    by_state.state = TaskState::kTimedOut;
    EXPECT_EQ(list(by_state), (V{"t7"}));

    TaskQuery open;
    open.non_terminal_only = true;
    EXPECT_EQ(list(open), (V{"t6", "t1", "t2", "t4"}));
    open.virtual_key_id = 2;
    EXPECT_EQ(list(open), (V{"t2"}));
    open.virtual_key_id.reset();
    open.state = TaskState::kCompleted;
    EXPECT_TRUE(list(open).empty());
    open.state = TaskState::kPending;
    EXPECT_EQ(list(open), (V{"t6", "t1"}));

    TaskQuery before;
    before.created_before_ms = 200;  // strictly earlier
    EXPECT_EQ(list(before), (V{"t6", "t1", "t2"}));
    before.created_before_ms = 201;
    before.non_terminal_only = true;
    EXPECT_EQ(list(before), (V{"t6", "t1", "t2", "t4"}));
    before.created_before_ms = 50;
    EXPECT_TRUE(list(before).empty());

    TaskQuery combined;
    combined.virtual_key_id = 1;
    combined.state = TaskState::kPending;
    combined.created_before_ms = 100;
    EXPECT_EQ(list(combined), (V{"t6"}));

    TaskQuery page;
    page.limit = 3;
    EXPECT_EQ(list(page), (V{"t6", "t1", "t2"}));
    page.offset = 3;
    EXPECT_EQ(list(page), (V{"t3", "t4", "t7"}));
    page.offset = 6;
    EXPECT_EQ(list(page), (V{"t8", "t5"}));
    page.offset = 8;
    EXPECT_TRUE(list(page).empty());

    TaskQuery open_page;  // the timeout sweeper pages through open tasks, oldest first
    open_page.non_terminal_only = true;
    open_page.limit = 1;
    open_page.offset = 1;
    EXPECT_EQ(list(open_page), (V{"t1"}));

    TaskQuery none;
    none.limit = 0;
    EXPECT_TRUE(list(none).empty());

    // The non-terminal view follows updates both ways.
    auto t1 = *STORE_OK(this->S().GetTask("t1"));
    t1.state = TaskState::kCompleted;
    ASSERT_TRUE(STORE_OK(this->S().UpdateTask(t1)).has_value());
    auto t5 = *STORE_OK(this->S().GetTask("t5"));
    t5.state = TaskState::kPending;  // operator retry of a failed task
    ASSERT_TRUE(STORE_OK(this->S().UpdateTask(t5)).has_value());
    TaskQuery open_again;
    open_again.non_terminal_only = true;
    EXPECT_EQ(list(open_again), (V{"t6", "t2", "t4", "t5"}));

    TaskQuery negative;
    negative.limit = -1;
    STORE_EXPECT_ERROR(this->S().ListTasks(negative), core::ErrorCode::kInvalidRequest);
    negative.limit = 10;
    negative.offset = -1;
    STORE_EXPECT_ERROR(this->S().ListTasks(negative), core::ErrorCode::kInvalidRequest);
}

TYPED_TEST_P(StoreContract, ListTasksDefaultLimitIsOneHundred) {
    for (int i = 0; i < 130; ++i) {
        STORE_OK(this->S().CreateTask(NewPendingTask(Num("task_", 1000 + i), 1, kT0 + i)));
    }
    auto rows = STORE_OK(this->S().ListTasks({}));
    ASSERT_EQ(rows.size(), 100u);
    EXPECT_EQ(rows.front().id, "task_1000");
    EXPECT_EQ(rows.back().id, "task_1099");
    TaskQuery open;
    open.non_terminal_only = true;
    EXPECT_EQ(STORE_OK(this->S().ListTasks(open)).size(), 100u);
}

// ===== Webhooks =====

TYPED_TEST_P(StoreContract, WebhookSecretPutGetReplace) {
    auto g = STORE_OK(this->S().CreateGroup(NewGroup("g"), "admin"));
    auto k1 = STORE_OK(this->S().CreateKey(NewKey(g.id, 1)));
    auto k2 = STORE_OK(this->S().CreateKey(NewKey(g.id, 2)));
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookSecret(k1.id)).has_value());

    WebhookSecret s1;
    s1.virtual_key_id = k1.id;
    s1.secret_sealed = "v1:c2VhbGVkLW9uZQ==";
    s1.created_at_ms = kT0;
    STORE_OK(this->S().PutWebhookSecret(s1));
    auto got = STORE_OK(this->S().GetWebhookSecret(k1.id));
    ASSERT_TRUE(got.has_value());
    ExpectSecretEq(s1, *got);
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookSecret(k2.id)).has_value());

    // Rotation: the new secret, with the old one valid for a grace period (any bytes).
    WebhookSecret s2;
    s2.virtual_key_id = k1.id;
    s2.secret_sealed = std::string("v1:\x00\xfe\xff", 6) + "two";
    s2.previous_sealed = s1.secret_sealed;
    s2.previous_valid_until_ms = kT0 + 86'400'000;
    s2.created_at_ms = kT0 + 10;
    STORE_OK(this->S().PutWebhookSecret(s2));
    got = STORE_OK(this->S().GetWebhookSecret(k1.id));
    ASSERT_TRUE(got.has_value());
    ExpectSecretEq(s2, *got);

    // Dropping the previous secret once the grace period is over.
    WebhookSecret s3 = s2;
    s3.previous_sealed.clear();
    s3.previous_valid_until_ms = 0;
    STORE_OK(this->S().PutWebhookSecret(s3));
    got = STORE_OK(this->S().GetWebhookSecret(k1.id));
    ASSERT_TRUE(got.has_value());
    ExpectSecretEq(s3, *got);

    // Keys have their own secrets.
    WebhookSecret other;
    other.virtual_key_id = k2.id;
    other.secret_sealed = "v1:b3RoZXI=";
    other.created_at_ms = kT0 + 20;
    STORE_OK(this->S().PutWebhookSecret(other));
    ExpectSecretEq(s3, *STORE_OK(this->S().GetWebhookSecret(k1.id)));
    ExpectSecretEq(other, *STORE_OK(this->S().GetWebhookSecret(k2.id)));

    // Only existing keys have secrets, and a secret goes with its key.
    WebhookSecret orphan = other;
    orphan.virtual_key_id = k2.id + 1000;
    STORE_EXPECT_ERROR(this->S().PutWebhookSecret(orphan), core::ErrorCode::kInvalidRequest);
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookSecret(orphan.virtual_key_id)).has_value());
    EXPECT_TRUE(STORE_OK(this->S().DeleteKey(k1.id)));
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookSecret(k1.id)).has_value());
    ExpectSecretEq(other, *STORE_OK(this->S().GetWebhookSecret(k2.id)));
}

TYPED_TEST_P(StoreContract, WebhookDeliveryUpsertInsertsThenReplaces) {
    WebhookDelivery d = NewDelivery("msg_1", "task_a", 4, "pending", kT0);
    STORE_OK(this->S().UpsertWebhookDeliveries({d}));
    auto got = STORE_OK(this->S().GetWebhookDelivery("msg_1"));
    ASSERT_TRUE(got.has_value());
    ExpectDeliveryEq(d, *got);

    WebhookDelivery retry = d;
    retry.status = "failed";
    retry.attempts = 2;
    retry.last_status_code = 502;
    retry.last_error = "bad gateway";
    retry.updated_at_ms = kT0 + 2'000;
    STORE_OK(this->S().UpsertWebhookDeliveries({retry}));
    ExpectDeliveryEq(retry, *STORE_OK(this->S().GetWebhookDelivery("msg_1")));

    WebhookDelivery done = retry;
    done.event_type = "task.completed";
    done.url = "https://moved.example.test/hook";
    done.headers_json = "{}";
    done.payload = R"({"type":"task.completed"})";
    done.status = "delivered";
    done.attempts = 3;
    done.last_status_code = 200;
    done.last_error.clear();
    done.updated_at_ms = kT0 + 4'000;
    done.delivered_at_ms = kT0 + 4'000;
    // The identity of a delivery is kept from its first row.
    done.task_id = "task_other";
    done.virtual_key_id = 99;
    done.created_at_ms = kT0 + 9'999;
    STORE_OK(this->S().UpsertWebhookDeliveries({done}));
    WebhookDelivery want = done;
    want.task_id = d.task_id;
    want.virtual_key_id = d.virtual_key_id;
    want.created_at_ms = d.created_at_ms;
    ExpectDeliveryEq(want, *STORE_OK(this->S().GetWebhookDelivery("msg_1")));
    auto all = STORE_OK(this->S().ListWebhookDeliveries({}));
    ASSERT_EQ(all.size(), 1u);
    ExpectDeliveryEq(want, all[0]);

    // A pending row older than the stored outcome (the publishing instance wrote it after
    // another instance's worker recorded the delivery) is dropped; a newer one (an operator's
    // redelivery) replaces it.
    STORE_OK(this->S().UpsertWebhookDeliveries({d}));
    ExpectDeliveryEq(want, *STORE_OK(this->S().GetWebhookDelivery("msg_1")));
    WebhookDelivery again = d;
    again.updated_at_ms = kT0 + 5'000;
    STORE_OK(this->S().UpsertWebhookDeliveries({again}));
    EXPECT_EQ(STORE_OK(this->S().GetWebhookDelivery("msg_1"))->status, "pending");
    STORE_OK(this->S().UpsertWebhookDeliveries({done}));
    ExpectDeliveryEq(want, *STORE_OK(this->S().GetWebhookDelivery("msg_1")));

    // Several rows with one id in one batch: the last one wins.
    WebhookDelivery a1 = NewDelivery("msg_2", "task_b", 4, "pending", kT0 + 10);
    WebhookDelivery a2 = a1;
    a2.status = "failed";
    a2.attempts = 2;
    WebhookDelivery a3 = a2;
    a3.status = "dead";
    a3.attempts = 4;
    STORE_OK(this->S().UpsertWebhookDeliveries({a1, a2, a3}));
    ExpectDeliveryEq(a3, *STORE_OK(this->S().GetWebhookDelivery("msg_2")));

    EXPECT_FALSE(STORE_OK(this->S().GetWebhookDelivery("MSG_1")).has_value());
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookDelivery("msg_3")).has_value());
    STORE_OK(this->S().UpsertWebhookDeliveries({}));
    EXPECT_EQ(STORE_OK(this->S().ListWebhookDeliveries({})).size(), 2u);
}

TYPED_TEST_P(StoreContract, WebhookDeliveryBatchesAreLargeAndAllOrNothing) {
    std::vector<WebhookDelivery> batch;
    for (int i = 0; i < 500; ++i) {
        batch.push_back(
            NewDelivery(Num("msg_", i), Num("task_", i % 50), 1 + i % 5, "pending", kT0 + i));
    }
    STORE_OK(this->S().UpsertWebhookDeliveries(batch));
    WebhookDeliveryQuery all;
    all.limit = 1'000;
    auto rows = STORE_OK(this->S().ListWebhookDeliveries(all));
    ASSERT_EQ(rows.size(), 500u);
    ExpectDeliveryEq(batch[499], rows.front());
    ExpectDeliveryEq(batch[0], rows.back());

    // Half of them delivered, plus 100 new ones, in one batch.
    std::vector<WebhookDelivery> second;
    for (int i = 0; i < 500; i += 2) {
        WebhookDelivery d = batch[i];
        d.status = "delivered";
        d.attempts = 2;
        d.last_status_code = 204;
        d.delivered_at_ms = kT0 + 10'000 + i;
        second.push_back(d);
    }
    for (int i = 500; i < 600; ++i) {
        second.push_back(NewDelivery(Num("msg_", i), "task_x", 9, "pending", kT0 + i));
    }
    STORE_OK(this->S().UpsertWebhookDeliveries(second));
    EXPECT_EQ(STORE_OK(this->S().ListWebhookDeliveries(all)).size(), 600u);
    WebhookDeliveryQuery delivered = all;
    delivered.status = "delivered";
    EXPECT_EQ(STORE_OK(this->S().ListWebhookDeliveries(delivered)).size(), 250u);
    WebhookDeliveryQuery pending = all;
    pending.status = "pending";
    EXPECT_EQ(STORE_OK(this->S().ListWebhookDeliveries(pending)).size(), 350u);
    ExpectDeliveryEq(second[5], *STORE_OK(this->S().GetWebhookDelivery("msg_10")));
    ExpectDeliveryEq(batch[11], *STORE_OK(this->S().GetWebhookDelivery("msg_11")));

    // The default page is the newest hundred.
    auto page = STORE_OK(this->S().ListWebhookDeliveries({}));
    ASSERT_EQ(page.size(), 100u);
    EXPECT_EQ(page.front().id, "msg_599");
    EXPECT_EQ(page.back().id, "msg_500");

    // One bad row (empty id) rolls back the whole batch, rows before it included.
    WebhookDelivery fresh = NewDelivery("msg_new", "task_y", 1, "pending", kT0 + 5'000);
    WebhookDelivery dead = batch[1];
    dead.status = "dead";
    WebhookDelivery nameless = NewDelivery("", "task_y", 1, "pending", kT0 + 5'001);
    STORE_EXPECT_ERROR(this->S().UpsertWebhookDeliveries({fresh, dead, nameless}),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_FALSE(STORE_OK(this->S().GetWebhookDelivery("msg_new")).has_value());
    EXPECT_EQ(STORE_OK(this->S().GetWebhookDelivery("msg_1"))->status, "pending");
    EXPECT_EQ(STORE_OK(this->S().ListWebhookDeliveries(all)).size(), 600u);

    // The store is fully usable afterwards.
    STORE_OK(this->S().UpsertWebhookDeliveries({fresh, dead}));
    ExpectDeliveryEq(fresh, *STORE_OK(this->S().GetWebhookDelivery("msg_new")));
    EXPECT_EQ(STORE_OK(this->S().GetWebhookDelivery("msg_1"))->status, "dead");
}

TYPED_TEST_P(StoreContract, WebhookDeliveryListFiltersNewestFirst) {
    // Inserted out of time order; d2 and d5 share a timestamp (then the larger id is newer).
    STORE_OK(this->S().UpsertWebhookDeliveries({
        NewDelivery("d4", "task_b", 2, "dead", 300),
        NewDelivery("d1", "task_a", 1, "delivered", 100),
        NewDelivery("d6", "task_c", 1, "delivered", 50),
        NewDelivery("d2", "task_a", 1, "failed", 200),
        NewDelivery("d5", "task_c", 1, "pending", 200),
        NewDelivery("d3", "task_b", 2, "pending", 150),
    }));
    auto list = [&](const WebhookDeliveryQuery& q) {
        return DeliveryIds(STORE_OK(this->S().ListWebhookDeliveries(q)));
    };
    using V = std::vector<std::string>;

    EXPECT_EQ(list({}), (V{"d4", "d5", "d2", "d3", "d1", "d6"}));

    WebhookDeliveryQuery by_status;
    by_status.status = "pending";
    EXPECT_EQ(list(by_status), (V{"d5", "d3"}));
    by_status.status = "delivered";
    EXPECT_EQ(list(by_status), (V{"d1", "d6"}));
    by_status.status = "Delivered";
    EXPECT_TRUE(list(by_status).empty());

    WebhookDeliveryQuery by_key;
    by_key.virtual_key_id = 1;
    EXPECT_EQ(list(by_key), (V{"d5", "d2", "d1", "d6"}));
    by_key.virtual_key_id = 2;
    EXPECT_EQ(list(by_key), (V{"d4", "d3"}));
    by_key.virtual_key_id = 3;
    EXPECT_TRUE(list(by_key).empty());

    WebhookDeliveryQuery by_task;
    by_task.task_id = "task_a";
    EXPECT_EQ(list(by_task), (V{"d2", "d1"}));
    by_task.task_id = "task_c";
    EXPECT_EQ(list(by_task), (V{"d5", "d6"}));

    WebhookDeliveryQuery combined;
    combined.virtual_key_id = 1;
    combined.status = "pending";
    EXPECT_EQ(list(combined), (V{"d5"}));
    combined.virtual_key_id.reset();
    combined.task_id = "task_a";
    combined.status = "delivered";
    EXPECT_EQ(list(combined), (V{"d1"}));
    combined.virtual_key_id = 2;
    EXPECT_TRUE(list(combined).empty());

    WebhookDeliveryQuery page;
    page.limit = 2;
    EXPECT_EQ(list(page), (V{"d4", "d5"}));
    page.offset = 2;
    EXPECT_EQ(list(page), (V{"d2", "d3"}));
    page.offset = 4;
    EXPECT_EQ(list(page), (V{"d1", "d6"}));
    page.offset = 6;
    EXPECT_TRUE(list(page).empty());

    WebhookDeliveryQuery filtered_page;
    filtered_page.virtual_key_id = 1;
    filtered_page.limit = 1;
    filtered_page.offset = 2;
    EXPECT_EQ(list(filtered_page), (V{"d1"}));

    WebhookDeliveryQuery none;
    none.limit = 0;
    EXPECT_TRUE(list(none).empty());

    // A status change moves a row between the status views (order by creation is kept).
    auto d6 = *STORE_OK(this->S().GetWebhookDelivery("d6"));
    d6.status = "pending";
    STORE_OK(this->S().UpsertWebhookDeliveries({d6}));
    by_status.status = "pending";
    EXPECT_EQ(list(by_status), (V{"d5", "d3", "d6"}));

    WebhookDeliveryQuery negative;
    negative.limit = -1;
    STORE_EXPECT_ERROR(this->S().ListWebhookDeliveries(negative), core::ErrorCode::kInvalidRequest);
    negative.limit = 1;
    negative.offset = -3;
    STORE_EXPECT_ERROR(this->S().ListWebhookDeliveries(negative), core::ErrorCode::kInvalidRequest);
}

REGISTER_TYPED_TEST_SUITE_P(StoreContract,
                            PingAndEngine,
                            MigrateIsIdempotentAndKeepsData,
                            EmptyDatabaseListsNothing,
                            GroupRoundTripWithAndWithoutExternalId,
                            IdsIncreaseAndAreNeverReused,
                            CreateGroupRecordsInitialCredit,
                            CreateGroupWithZeroBalanceHasNoLedger,
                            CreateGroupRejectsNegativeInitialBalance,
                            UpdateGroupChangesOnlyNameExternalIdAndUpdatedAt,
                            DeleteGroup,
                            DeleteGroupConflictsWhileKeysExist,
                            AdjustBalanceCreditAndDebit,
                            AdjustBalanceOfMissingGroupIsNullopt,
                            BalanceArithmeticIsExactOverManyAdjustments,
                            AdjustBalanceOverflowFailsWithoutChange,
                            ListTransactionsNewestFirstWithPaging,
                            KeyRoundTripWithAllOptionalsSet,
                            KeyRoundTripWithOptionalsUnset,
                            KeyBudgetFieldsUpdateAndZeroBudget,
                            CreateKeyConflictsOnDuplicateHash,
                            CreateKeyRejectsUnknownGroup,
                            UpdateKeyReplacesMutableFieldsOnly,
                            UpdateKeyMissingOrUnknownGroup,
                            DeleteKeyAndListKeysByGroup,
                            ProviderRoundTripUpdateAndEveryType,
                            DeleteProviderCascadesKeysAndConflictsWithMappings,
                            ProviderKeyRoundTripWithBinarySealedKey,
                            CreateProviderKeyRejectsUnknownProvider,
                            AtMostOnePrimaryKeyPerProvider,
                            UpdateProviderKey,
                            MappingRoundTripUpdateAndDelete,
                            MappingRejectsUnknownProvider,
                            CostRoundTripWithMappingLinks,
                            CostRejectsUnknownMappingWithoutSideEffects,
                            DeletingMappingOrCostRemovesLinks,
                            LoadConfigReturnsEverything,
                            ApplySpendDebitsAndLogs,
                            ApplySpendIsAllOrNothing,
                            ApplySpendWithOnlyLogsOrNothing,
                            RequestLogFiltersAndPaging,
                            KeySpendSinceSumsOneKeysCostsFromATime,
                            RequestLogDefaultLimitIsOneHundred,
                            SettingsGetPutOverwrite,
                            NegativePagingIsRejected,
                            TasksAndWebhooksStartEmpty,
                            TaskRoundTripEveryField,
                            CreateTaskIsIdempotentPerVirtualKey,
                            CreateTaskRejectsDuplicateIdAndInvalidRows,
                            UpdateTaskIsOptimistic,
                            UpdateTaskWithSpendCommitsBothOrNeither,
                            ListTasksFiltersAndOrdering,
                            ListTasksDefaultLimitIsOneHundred,
                            WebhookSecretPutGetReplace,
                            WebhookDeliveryUpsertInsertsThenReplaces,
                            WebhookDeliveryBatchesAreLargeAndAllOrNothing,
                            WebhookDeliveryListFiltersNewestFirst);

}  // namespace conduit::store::contract
