#pragma once

#include "core/error.hpp"
#include "core/money.hpp"
#include "domain/entities.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

/// The sources of the navigation-state, notifications and spend hubs (specs/api.md §5): admin
/// configuration changes, announcements, provider health, billed requests; and the per-key hub
/// method rate limit. Pure helpers; no I/O.
namespace conduit::hubs {

/// Backplane channel of configuration changes committed through the admin API: every instance
/// receives each change once and rebuilds/sends what its own hub clients need.
inline constexpr std::string_view kConfigChangedChannel = "conduit.config.changed";

/// One committed configuration change (the admin write path publishes it after the reload).
struct ConfigChange {
    /// What changed: "ModelMapping", "Provider", "ProviderKey", "ModelCost", "VirtualKey",
    /// "VirtualKeyGroup".
    std::string entity;
    /// "Created", "Updated" or "Deleted" (the ModelMappingChanged changeType).
    std::string change_type;
    domain::Id id = 0;
    std::string model_alias;  // ModelMapping only

    /// True when the navigation items may depend on it (mappings, providers, provider keys).
    bool AffectsNavigation() const;
};

/// `{"entity","changeType","id","modelAlias"}`. Pure.
std::string ConfigChangeJson(const ConfigChange& change);
/// Parses ConfigChangeJson's output; an error for anything else. Pure.
core::Result<ConfigChange> ParseConfigChange(std::string_view json);

/// What the navigation items are built from (loaded from the store on every instance).
struct NavigationData {
    std::vector<domain::ModelMapping> mappings;
    std::vector<domain::Provider> providers;
};

/// A provider's health as last reported (ProviderHealthChanged): status "Healthy", "Degraded",
/// "Unhealthy" (the circuit breaker's words) and a message.
struct ProviderHealth {
    std::string status;
    std::string message;
};

/// The navigation items, one per model alias (sorted by alias): `{id, path, isEnabled, badgeText,
/// badgeColor, tooltip}`.
/// - id: the alias; path: `/v1/models/{alias}`.
/// - isEnabled: some mapping of the alias is enabled, its provider is enabled, and that provider
///   is not reported Unhealthy.
/// - badge: none when usable and healthy; "Disabled"/gray when every mapping is disabled;
///   "Provider disabled"/gray when the enabled mappings' providers are all disabled;
///   "Unhealthy"/red when every usable provider is reported Unhealthy; "Degraded"/orange when
///   usable but some provider of it is reported Degraded or Unhealthy.
/// - tooltip: the deployments ("provider/model, ..."), or why it is not usable.
/// Pure.
boost::json::array NavigationItems(const NavigationData& data,
                                   const std::map<domain::Id, ProviderHealth>& health);

/// What a SpendUpdate reports besides the request-log row.
struct SpendTotals {
    core::Micros total_spend = 0;                  // the key's group, lifetime
    std::optional<core::Micros> budget_remaining;  // the group's available balance
    std::string provider;                          // provider name ("" when unknown)
};

/// The argument list of `SpendUpdate({timestamp, totalSpend, budgetRemaining, newSpend, model,
/// provider, metadata:{requestId, endpoint, inputTokens, outputTokens}})` as JSON text, money
/// as exact decimal numbers (core::FormatMoney of micro-units). Pure.
std::string SpendUpdateArgsJson(const domain::RequestLogRow& row, const SpendTotals& totals);

/// A virtual key's period spend crossed `percent` (80, 90 or 100) of its budget.
struct BudgetAlertInfo {
    domain::Id key_id = 0;
    int percent = 0;
    core::Micros current_spend = 0;
    core::Micros budget = 0;
    std::string period;                    // daily | weekly | monthly | total
    std::optional<int64_t> period_end_ms;  // none for a lifetime budget
};

/// The argument list of `BudgetAlert({alertType, message, currentSpend, budgetLimit,
/// percentageUsed, severity, recommendations[], budgetPeriodEnd})` as JSON text: alertType
/// "budget_threshold" (80/90 %) or "budget_exceeded" (100 %), severity warning / critical /
/// error, money as exact decimal numbers, budgetPeriodEnd ISO-8601 (null for a total budget).
/// Pure.
std::string BudgetAlertArgsJson(const BudgetAlertInfo& alert);

/// The API route a request-log row's request_type came from ("/v1/chat/completions", ...).
std::string_view EndpointOf(std::string_view request_type);

/// Hub method invocations per virtual key per minute: a token bucket per key (capacity = the
/// per-minute rate, refilled continuously), local to this instance. The fallback when no
/// HubsDeps::limit_invocation is set (the gateway sets one on the shared Counters). Thread-safe.
class KeyRateLimiter {
public:
    /// `per_minute` 0 = unlimited.
    explicit KeyRateLimiter(int per_minute) : per_minute_(per_minute) {}
    /// Takes one invocation for `key_id` at `now_ms` (steady milliseconds); false when over.
    bool Allow(domain::Id key_id, int64_t now_ms);

private:
    struct Bucket {
        double tokens = 0;
        int64_t last_ms = 0;
    };
    int per_minute_;
    std::mutex mu_;
    std::unordered_map<domain::Id, Bucket> buckets_;
    int64_t last_sweep_ms_ = 0;
};

}  // namespace conduit::hubs
