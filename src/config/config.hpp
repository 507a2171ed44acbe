#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::config {

/// HTTP listener settings (net component).
struct ServerConfig {
    std::string listen = "0.0.0.0:5000";        // host:port; [::]:port allowed; port 0 = ephemeral
    int threads = 0;                            // 0 = number of cores
    int64_t max_body_bytes = 32 * 1024 * 1024;  // 413 above this
    int64_t max_header_bytes = 64 * 1024;
    int header_timeout_ms = 10000;  // slow/partial headers → 408
    int body_timeout_ms = 60000;
    int idle_timeout_ms = 75000;  // keep-alive idle
    int write_timeout_ms = 30000;
    int shutdown_grace_ms = 15000;  // finish in-flight requests on SIGTERM
    std::string public_base_url;    // optional, for absolute URLs in responses
};

/// Upstream (provider and webhook) HTTP client settings (http_client component).
struct UpstreamConfig {
    int connect_timeout_ms = 5000;
    int first_byte_timeout_ms = 120000;
    int idle_timeout_ms = 120000;
    int total_timeout_ms = 600000;
    int max_connections_per_host = 256;
    int max_total_connections = 1024;
    std::string client = "auto";  // auto | native | curl (see http_client::ClientKind)
};

/// Persistence: SQLite in `data_dir` unless `database_url` names a PostgreSQL database.
struct StoreConfig {
    std::string data_dir = "./conduit-data";
    std::string database_url;  // empty → SQLite in data_dir; may contain a password
};

/// Logging output.
struct LogConfig {
    std::string format = "text";  // text | json
    std::string level = "info";   // trace | debug | info | warn | error | critical | off
};

/// Batched spend/usage writer.
struct SpendConfig {
    int flush_interval_ms = 1000;
};

/// Secrets. Never logged, never echoed in error messages.
struct SecurityConfig {
    std::string master_key;
    std::string encryption_key;
};

/// Redis backplane and counters; empty url → in-process.
struct RedisConfig {
    std::string url;                  // may contain a password
    std::string prefix = "conduit:";  // of every key and channel: deployments can share a Redis
};

/// RabbitMQ work queue; empty host → embedded durable queue.
struct RabbitMqConfig {
    std::string host;
    int port = 5672;
    std::string username = "guest";
    std::string password = "guest";
    std::string vhost = "/";
    int prefetch_count = 25;
    int partition_count = 30;
    int concurrent_message_limit = 50;
    /// Partition ownership across instances: heartbeat period, and silence after which an
    /// instance's partitions move to the others.
    int member_heartbeat_ms = 1000;
    int member_timeout_ms = 3000;
};

/// Async image/video tasks (issue 3).
struct TasksConfig {
    int poll_interval_ms = 1000;      // provider job polling period
    int retry_base_ms = 2000;         // first automatic retry delay (doubles, with jitter)
    int retry_max_ms = 60000;         // cap on the retry delay
    int max_retries = 3;              // automatic retries of a failed attempt
    int sweep_interval_ms = 2000;     // stale-task / timeout sweeper period
    std::string media_dir;            // generated media; empty = <data_dir>/media
    int queue_degraded_depth = 1000;  // ready task messages above which readiness is Degraded
};

/// Outgoing task webhooks (specs/api.md §6).
struct WebhooksConfig {
    int max_retries = 3;
    int retry_base_ms = 2000;
    int retry_max_ms = 300000;
    int request_timeout_ms = 10000;
    int connect_timeout_ms = 5000;
    int breaker_failures = 5;
    int breaker_open_ms = 60000;
    int max_connections_per_host = 50;
};

/// Real-time hubs (specs/api.md §5; SignalR settings of every /hubs/* endpoint).
struct HubsConfig {
    int keep_alive_ms = 15000;          // server ping period
    int client_timeout_ms = 30000;      // no message from the client for this long = gone
    int handshake_timeout_ms = 15000;   // handshake must arrive within this
    int max_message_bytes = 32 * 1024;  // largest client message
    int max_connections_per_key = 100;  // concurrent hub connections of one virtual key
    int method_rate_per_minute = 600;  // hub method invocations per virtual key and minute; 0 = off
    int long_poll_timeout_ms = 90000;  // a long poll is answered empty after this
    int disconnect_timeout_ms = 15000;  // an unused or dropped connection is forgotten after this
    std::string transports = "WebSockets,ServerSentEvents,LongPolling";  // offered, in order
    std::string cors_origins;  // comma-separated allowed origins ("*" = any); empty = none
};

/// Governance and resilience: what rate limits do when their engine (Redis) cannot answer, and
/// the circuit breaker of every provider deployment.
struct GovernanceConfig {
    std::string rate_limit_fail_policy = "open";  // open (admit) | closed (503)
    int default_max_tokens = 4096;     // completion tokens reserved when a request sets no max
    int breaker_window_ms = 30000;     // failures are counted over this window
    int breaker_min_requests = 10;     // fewer requests in the window never open it
    int breaker_failure_percent = 50;  // open at or above this share of failures
    int breaker_open_ms = 30000;       // reject this long, then probe
};

/// Distributed cache statistics (docs/cache-statistics.md): pushed to Redis (or kept in process
/// when embedded), aggregated across instances, drift checked.
struct CacheStatsConfig {
    int interval_ms = 1000;           // push of this instance's figures (one round trip each)
    int collect_interval_ms = 10000;  // refresh of the cluster view for /metrics, health; 0 = off
    int stale_ms = 120000;            // an instance silent this long leaves the registry
    int drift_percent = 5;            // drift tolerance (whole percent)
};

/// The whole typed configuration tree; each component receives only its own sub-struct.
struct Config {
    ServerConfig server;
    UpstreamConfig upstream;
    StoreConfig store;
    LogConfig log;
    SpendConfig spend;
    SecurityConfig security;
    RedisConfig redis;
    RabbitMqConfig rabbitmq;
    TasksConfig tasks;
    WebhooksConfig webhooks;
    HubsConfig hubs;
    GovernanceConfig governance;
    CacheStatsConfig cache_stats;
    std::string roles = "api,hubs,worker";  // comma-separated subset of api, hubs, worker
    std::string config_file;                // the YAML file that was loaded, if any
};

/// One-line summary of the engines in use, e.g. "store=sqlite(./conduit-data) bus=in-process
/// queue=embedded" or "store=postgresql bus=redis queue=rabbitmq(host:5672)". Never contains a
/// secret (no URLs, user names or passwords). Pure; any thread.
std::string DescribeModes(const Config& config);

/// Splits "host:port" or "[v6addr]:port" into its parts (brackets removed). Port may be 0..65535;
/// the host must be non-empty. Returns false (outputs unspecified) on malformed input. Pure.
bool ParseHostPort(std::string_view text, std::string& host, uint16_t& port);

/// True if `role` ("api", "hubs" or "worker") is listed in `config.roles`. Pure.
bool HasRole(const Config& config, std::string_view role);

/// Checks ranges and enumerations of a merged Config. The error (kInvalidRequest) names the
/// offending setting by its YAML path in both the message and `param`, and never contains a secret.
/// Pure; any thread.
core::Result<void> Validate(const Config& config);

}  // namespace conduit::config
