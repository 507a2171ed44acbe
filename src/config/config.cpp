#include "config/config.hpp"

#include "core/strings.hpp"

#include <array>
#include <limits>

namespace conduit::config {

namespace {

constexpr std::array<std::string_view, 3> kRoles = {"api", "hubs", "worker"};
constexpr std::array<std::string_view, 7> kLevels = {"trace", "debug",    "info", "warn",
                                                     "error", "critical", "off"};

template <size_t N>
bool OneOf(std::string_view value, const std::array<std::string_view, N>& allowed) {
    for (auto a : allowed) {
        if (value == a) {
            return true;
        }
    }
    return false;
}

tl::unexpected<core::Error> Invalid(std::string_view setting, std::string_view what) {
    return core::Fail(core::ErrorCode::kInvalidRequest,
                      "invalid configuration: " + std::string(setting) + " " + std::string(what),
                      std::string(setting));
}

// Checks lo <= value <= hi; `what` describes the expected range in the message.
core::Result<void> CheckRange(
    std::string_view setting, int64_t value, int64_t lo, int64_t hi, std::string_view what) {
    if (value < lo || value > hi) {
        return Invalid(setting, std::string(what) + " (got " + std::to_string(value) + ")");
    }
    return {};
}

}  // namespace

std::string DescribeModes(const Config& config) {
    std::string out = config.store.database_url.empty()
                          ? "store=sqlite(" + config.store.data_dir + ")"
                          : std::string("store=postgresql");
    out += config.redis.url.empty() ? " bus=in-process" : " bus=redis";
    if (config.rabbitmq.host.empty()) {
        out += " queue=embedded";
    } else {
        out += " queue=rabbitmq(" + config.rabbitmq.host + ":" +
               std::to_string(config.rabbitmq.port) + ")";
    }
    return out;
}

bool ParseHostPort(std::string_view text, std::string& host, uint16_t& port) {
    std::string_view h;
    std::string_view p;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return false;
        }
        h = text.substr(1, close - 1);
        p = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos || text.find(':') != colon) {
            return false;  // no port, or an unbracketed IPv6 address
        }
        h = text.substr(0, colon);
        p = text.substr(colon + 1);
    }
    if (h.empty() || p.empty() || p.front() == '+' || p.front() == '-') {
        return false;
    }
    auto n = core::ParseInt(p);
    if (!n || *n < 0 || *n > 65535) {
        return false;
    }
    host.assign(h);
    port = static_cast<uint16_t>(*n);
    return true;
}

bool HasRole(const Config& config, std::string_view role) {
    for (const auto& r : core::SplitTrimmed(config.roles, ',')) {
        if (r == role) {
            return true;
        }
    }
    return false;
}

core::Result<void> Validate(const Config& c) {
    std::string host;
    uint16_t port = 0;
    if (!ParseHostPort(c.server.listen, host, port)) {
        return Invalid(
            "server.listen",
            "must be host:port or [ipv6]:port with port 0..65535 (got '" + c.server.listen + "')");
    }
    const int64_t kMax = std::numeric_limits<int64_t>::max();
    const int64_t kMaxInt = std::numeric_limits<int>::max();
    // Each check is a (setting, value, lo, hi, expectation) row so the list stays readable.
    struct Check {
        std::string_view setting;
        int64_t value;
        int64_t lo;
        int64_t hi;
        std::string_view what;
    };
    const Check checks[] = {
        {"server.threads", c.server.threads, 0, 256, "must be 0..256 (0 = number of cores)"},
        {"server.max_body_bytes", c.server.max_body_bytes, 1024, kMax, "must be at least 1024"},
        {"server.max_header_bytes", c.server.max_header_bytes, 1024, kMax, "must be at least 1024"},
        {"server.header_timeout_ms", c.server.header_timeout_ms, 1, kMax, "must be positive"},
        {"server.body_timeout_ms", c.server.body_timeout_ms, 1, kMax, "must be positive"},
        {"server.idle_timeout_ms", c.server.idle_timeout_ms, 1, kMax, "must be positive"},
        {"server.write_timeout_ms", c.server.write_timeout_ms, 1, kMax, "must be positive"},
        {"server.shutdown_grace_ms", c.server.shutdown_grace_ms, 0, kMax, "must not be negative"},
        {"upstream.connect_timeout_ms", c.upstream.connect_timeout_ms, 1, kMax, "must be positive"},
        {"upstream.first_byte_timeout_ms", c.upstream.first_byte_timeout_ms, 1, kMax,
         "must be positive"},
        {"upstream.idle_timeout_ms", c.upstream.idle_timeout_ms, 1, kMax, "must be positive"},
        {"upstream.total_timeout_ms", c.upstream.total_timeout_ms, 1, kMax, "must be positive"},
        {"upstream.max_connections_per_host", c.upstream.max_connections_per_host, 1, kMaxInt,
         "must be positive"},
        {"upstream.max_total_connections", c.upstream.max_total_connections,
         c.upstream.max_connections_per_host, kMaxInt,
         "must be at least upstream.max_connections_per_host"},
        {"spend.flush_interval_ms", c.spend.flush_interval_ms, 1, kMax, "must be positive"},
        {"rabbitmq.port", c.rabbitmq.port, 1, 65535, "must be 1..65535"},
        {"rabbitmq.prefetch_count", c.rabbitmq.prefetch_count, 1, 65535, "must be 1..65535"},
        {"rabbitmq.partition_count", c.rabbitmq.partition_count, 1, kMaxInt, "must be positive"},
        {"rabbitmq.concurrent_message_limit", c.rabbitmq.concurrent_message_limit, 1, kMaxInt,
         "must be positive"},
        {"rabbitmq.member_heartbeat_ms", c.rabbitmq.member_heartbeat_ms, 10, kMax,
         "must be at least 10"},
        {"rabbitmq.member_timeout_ms", c.rabbitmq.member_timeout_ms,
         2 * static_cast<int64_t>(c.rabbitmq.member_heartbeat_ms), kMax,
         "must be at least twice rabbitmq.member_heartbeat_ms"},
        {"tasks.poll_interval_ms", c.tasks.poll_interval_ms, 1, kMax, "must be positive"},
        {"tasks.retry_base_ms", c.tasks.retry_base_ms, 0, kMax, "must not be negative"},
        {"tasks.retry_max_ms", c.tasks.retry_max_ms, c.tasks.retry_base_ms, kMax,
         "must be at least tasks.retry_base_ms"},
        {"tasks.max_retries", c.tasks.max_retries, 0, 100, "must be 0..100"},
        {"tasks.sweep_interval_ms", c.tasks.sweep_interval_ms, 10, kMax, "must be at least 10"},
        {"tasks.queue_degraded_depth", c.tasks.queue_degraded_depth, 1, kMax, "must be at least 1"},
        {"webhooks.max_retries", c.webhooks.max_retries, 0, 100, "must be 0..100"},
        {"webhooks.retry_base_ms", c.webhooks.retry_base_ms, 0, kMax, "must not be negative"},
        {"webhooks.retry_max_ms", c.webhooks.retry_max_ms, c.webhooks.retry_base_ms, kMax,
         "must be at least webhooks.retry_base_ms"},
        {"webhooks.request_timeout_ms", c.webhooks.request_timeout_ms, 1, kMax, "must be positive"},
        {"webhooks.connect_timeout_ms", c.webhooks.connect_timeout_ms, 1, kMax, "must be positive"},
        {"webhooks.breaker_failures", c.webhooks.breaker_failures, 1, kMaxInt, "must be positive"},
        {"webhooks.breaker_open_ms", c.webhooks.breaker_open_ms, 1, kMax, "must be positive"},
        {"webhooks.max_connections_per_host", c.webhooks.max_connections_per_host, 1, kMaxInt,
         "must be positive"},
        {"hubs.keep_alive_ms", c.hubs.keep_alive_ms, 100, kMax, "must be at least 100"},
        {"hubs.client_timeout_ms", c.hubs.client_timeout_ms, int64_t{c.hubs.keep_alive_ms} + 1,
         kMax, "must be greater than hubs.keep_alive_ms"},
        {"hubs.handshake_timeout_ms", c.hubs.handshake_timeout_ms, 100, kMax,
         "must be at least 100"},
        {"hubs.max_message_bytes", c.hubs.max_message_bytes, 1024, 16 * 1024 * 1024,
         "must be 1024..16777216"},
        {"hubs.max_connections_per_key", c.hubs.max_connections_per_key, 1, kMaxInt,
         "must be positive"},
        {"hubs.method_rate_per_minute", c.hubs.method_rate_per_minute, 0, kMaxInt,
         "must be 0 (unlimited) or more"},
        {"hubs.long_poll_timeout_ms", c.hubs.long_poll_timeout_ms, 100, kMaxInt,
         "must be at least 100"},
        {"hubs.disconnect_timeout_ms", c.hubs.disconnect_timeout_ms, 100, kMaxInt,
         "must be at least 100"},
        {"governance.default_max_tokens", c.governance.default_max_tokens, 1, kMaxInt,
         "must be positive"},
        {"governance.breaker_window_ms", c.governance.breaker_window_ms, 100, kMaxInt,
         "must be at least 100"},
        {"governance.breaker_min_requests", c.governance.breaker_min_requests, 1, kMaxInt,
         "must be positive"},
        {"governance.breaker_failure_percent", c.governance.breaker_failure_percent, 1, 100,
         "must be 1..100"},
        {"governance.breaker_open_ms", c.governance.breaker_open_ms, 1, kMaxInt,
         "must be positive"},
        {"cache_stats.interval_ms", c.cache_stats.interval_ms, 10, kMaxInt, "must be at least 10"},
        {"cache_stats.collect_interval_ms", c.cache_stats.collect_interval_ms, 0, kMaxInt,
         "must not be negative (0 = only on demand)"},
        {"cache_stats.stale_ms", c.cache_stats.stale_ms, int64_t{c.cache_stats.interval_ms} + 1,
         kMaxInt, "must be greater than cache_stats.interval_ms"},
        {"cache_stats.drift_percent", c.cache_stats.drift_percent, 0, 100, "must be 0..100"},
    };
    for (const auto& check : checks) {
        if (auto r = CheckRange(check.setting, check.value, check.lo, check.hi, check.what); !r) {
            return r;
        }
    }
    if (c.upstream.client != "auto" && c.upstream.client != "native" &&
        c.upstream.client != "curl") {
        return Invalid("upstream.client",
                       "must be auto, native or curl (got '" + c.upstream.client + "')");
    }
    if (c.governance.rate_limit_fail_policy != "open" &&
        c.governance.rate_limit_fail_policy != "closed") {
        return Invalid(
            "governance.rate_limit_fail_policy",
            "must be open or closed (got '" + c.governance.rate_limit_fail_policy + "')");
    }
    if (c.log.format != "text" && c.log.format != "json") {
        return Invalid("log.format", "must be text or json (got '" + c.log.format + "')");
    }
    if (!OneOf(c.log.level, kLevels)) {
        return Invalid("log.level",
                       "must be one of trace, debug, info, warn, error, critical, off (got '" +
                           c.log.level + "')");
    }
    auto roles = core::SplitTrimmed(c.roles, ',');
    if (roles.empty()) {
        return Invalid("roles", "must list at least one of api, hubs, worker");
    }
    for (const auto& r : roles) {
        if (!OneOf(r, kRoles)) {
            return Invalid("roles",
                           "contains unknown role '" + r + "' (allowed: api, hubs, worker)");
        }
    }
    auto transports = core::SplitTrimmed(c.hubs.transports, ',');
    if (transports.empty()) {
        return Invalid("hubs.transports",
                       "must list at least one of WebSockets, ServerSentEvents, LongPolling");
    }
    for (const auto& t : transports) {
        if (!core::IEquals(t, "WebSockets") && !core::IEquals(t, "ServerSentEvents") &&
            !core::IEquals(t, "LongPolling")) {
            return Invalid("hubs.transports", "contains unknown transport '" + t +
                                                  "' (allowed: WebSockets, ServerSentEvents, "
                                                  "LongPolling)");
        }
    }
    if (c.store.data_dir.empty()) {
        return Invalid("store.data_dir", "must not be empty");
    }
    const auto& base = c.server.public_base_url;
    if (!base.empty() && !core::IStartsWith(base, "http://") &&
        !core::IStartsWith(base, "https://")) {
        return Invalid("server.public_base_url", "must start with http:// or https://");
    }
    return {};
}

}  // namespace conduit::config
