#pragma once

#include "core/money.hpp"
#include "domain/routing.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::domain {

using Id = int64_t;
using core::Micros;

/// A prepaid account shared by virtual keys. Balances are exact micro-units.
struct VirtualKeyGroup {
    Id id = 0;
    std::string group_name;
    std::optional<std::string> external_group_id;
    Micros balance = 0;
    Micros lifetime_credits_added = 0;
    Micros lifetime_spent = 0;
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
};

/// Ledger entry kinds (numbers as in the original).
enum class TransactionType { kCredit = 1, kDebit = 2, kRefund = 3, kAdjustment = 4 };
enum class ReferenceType { kManual = 1, kVirtualKey = 2, kSystem = 3, kInitial = 4 };

/// One ledger row: every balance change is recorded with the balance after it.
struct GroupTransaction {
    Id id = 0;
    Id group_id = 0;
    TransactionType type = TransactionType::kAdjustment;
    Micros amount = 0;  // always positive; the type gives the direction
    Micros balance_after = 0;
    ReferenceType reference_type = ReferenceType::kManual;
    std::string reference_id;
    std::string description;
    std::string initiated_by;
    int64_t created_at_ms = 0;
};

/// The period of a virtual key's budget (calendar-aligned in UTC; kTotal never resets).
enum class BudgetPeriod { kDaily, kWeekly, kMonthly, kTotal };

/// "daily" | "weekly" | "monthly" | "total" (case-insensitive); nullopt otherwise. Pure.
inline std::optional<BudgetPeriod> ParseBudgetPeriod(std::string_view text) {
    auto eq = [text](std::string_view name) {
        if (text.size() != name.size()) {
            return false;
        }
        for (size_t i = 0; i < name.size(); ++i) {
            char c = text[i];
            if (c >= 'A' && c <= 'Z') {
                c = static_cast<char>(c - 'A' + 'a');
            }
            if (c != name[i]) {
                return false;
            }
        }
        return true;
    };
    if (eq("daily")) {
        return BudgetPeriod::kDaily;
    }
    if (eq("weekly")) {
        return BudgetPeriod::kWeekly;
    }
    if (eq("monthly")) {
        return BudgetPeriod::kMonthly;
    }
    if (eq("total")) {
        return BudgetPeriod::kTotal;
    }
    return std::nullopt;
}

inline std::string_view BudgetPeriodName(BudgetPeriod p) {
    switch (p) {
        case BudgetPeriod::kDaily:
            return "daily";
        case BudgetPeriod::kWeekly:
            return "weekly";
        case BudgetPeriod::kMonthly:
            return "monthly";
        case BudgetPeriod::kTotal:
            return "total";
    }
    return "total";
}

/// A client credential. Only the SHA-256 of the key is stored.
struct VirtualKey {
    Id id = 0;
    std::string key_name;
    std::string key_hash;    // lowercase hex SHA-256 of the full key
    std::string key_prefix;  // first characters of the key, for display ("condt_AbCd")
    Id group_id = 0;
    std::string allowed_models;  // comma-separated; "prefix*" wildcards; empty = all
    bool is_enabled = true;
    std::optional<int64_t> expires_at_ms;
    std::string metadata;  // JSON text as given by the operator
    std::string description;
    std::optional<int64_t> rate_limit_rpm;
    std::optional<int64_t> rate_limit_rpd;
    std::optional<int64_t> rate_limit_tpm;  // tokens per minute
    /// Spending cap per `budget_duration` period (micro-units); none = unlimited.
    std::optional<Micros> max_budget;
    /// "daily" | "weekly" | "monthly" | "total" (calendar periods in UTC); empty = none
    /// ("total" when max_budget is set without a duration).
    std::string budget_duration;
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
};

/// Provider kinds; numbers as in the original's ProviderType enum (Anthropic is ours).
enum class ProviderType {
    kOpenAI = 1,
    kGroq = 2,
    kReplicate = 3,
    kFireworks = 4,
    kOpenAICompatible = 5,
    kMiniMax = 6,
    kUltravox = 7,
    kElevenLabs = 8,
    kCerebras = 9,
    kSambaNova = 10,
    kDeepInfra = 11,
    kAnthropic = 12,
};

struct Provider {
    Id id = 0;
    ProviderType type = ProviderType::kOpenAICompatible;
    std::string name;
    std::string base_url;
    bool is_enabled = true;
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
};

/// A provider API key. `api_key_sealed` is the key encrypted at rest (core::SecretBox); the
/// plaintext exists only in the in-memory snapshot.
struct ProviderKey {
    Id id = 0;
    Id provider_id = 0;
    std::string api_key_sealed;
    std::string key_hint;  // last 4 characters, for display
    std::string base_url;  // overrides the provider's when set
    std::string organization;
    std::string key_name;
    bool is_primary = false;
    bool is_enabled = true;
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
};

/// Maps a client-facing model alias to a provider's model id. Several mappings may share an
/// alias (deployments); the highest priority enabled one is used.
struct ModelMapping {
    Id id = 0;
    std::string model_alias;
    std::string provider_model_id;
    Id provider_id = 0;
    bool is_enabled = true;
    int priority = 0;
    std::optional<int64_t> max_context_tokens_override;
    bool supports_chat = true;
    bool supports_streaming = true;
    bool supports_embeddings = false;
    bool supports_image_generation = false;
    bool supports_video_generation = false;
    bool supports_vision = false;
    bool supports_function_calling = false;
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
};

/// Prices in micro-units. Per-million prices are micro-units per million tokens.
struct ModelCost {
    Id id = 0;
    std::string cost_name;
    std::vector<Id> mapping_ids;
    Micros input_per_million = 0;
    Micros output_per_million = 0;
    Micros embedding_per_million = 0;
    Micros image_per_image = 0;
    Micros video_per_second = 0;
    int priority = 0;
    std::string description;
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
};

/// One proxied request, as written to the request log.
struct RequestLogRow {
    Id id = 0;
    std::string request_id;
    Id virtual_key_id = 0;
    Id group_id = 0;
    std::string model_alias;
    std::string provider_model;
    std::string request_type;  // chat, completion, embedding, image
    int64_t input_tokens = 0;
    int64_t output_tokens = 0;
    Micros cost = 0;
    int64_t response_time_ms = 0;
    int status_code = 0;
    bool streamed = false;
    bool usage_estimated = false;
    std::string client_ip;
    int64_t timestamp_ms = 0;
};

/// Everything the request path needs, loaded at once to build a snapshot.
struct ConfigData {
    /// Router settings (a setting row, not a table; defaults when absent).
    RouterConfig router;
    std::vector<VirtualKeyGroup> groups;
    std::vector<VirtualKey> keys;
    std::vector<Provider> providers;
    std::vector<ProviderKey> provider_keys;
    std::vector<ModelMapping> mappings;
    std::vector<ModelCost> costs;
};

}  // namespace conduit::domain
