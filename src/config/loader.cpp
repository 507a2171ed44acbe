#include "config/loader.hpp"

#include "core/strings.hpp"

#include <CLI/CLI.hpp>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <limits>
#include <set>
#include <type_traits>
#include <variant>

namespace conduit::config {

namespace {

using StringField = std::string& (*)(Config&);
using IntField = int& (*)(Config&);
using Int64Field = int64_t& (*)(Config&);
using Target = std::variant<StringField, IntField, Int64Field>;

constexpr unsigned kSecret = 1;  // value never appears in messages or help
constexpr unsigned kList = 2;    // YAML may give a sequence; stored comma-joined

/// One setting, defined once: where it lives in the file, the environment and on the command line.
struct Option {
    std::string_view yaml;  // dotted path in the file; empty = not settable from the file
    std::vector<std::string_view> env;  // primary CONDUIT_* name first, then aliases
    std::string_view flag;              // command-line flag
    Target target;
    std::string_view help;
    unsigned traits = 0;
};

// A captureless accessor lambda, decayed to a function pointer so it fits `Target`.
// clang-format off
#define CONDUIT_FIELD(member) +[](Config& c) -> auto& { return c.member; }
// clang-format on

const std::vector<Option>& Options() {
    static const std::vector<Option> options = {
        {"", {"CONDUIT_CONFIG"}, "--config", CONDUIT_FIELD(config_file), "YAML configuration file"},
        {"roles",
         {"CONDUIT_ROLES"},
         "--roles",
         CONDUIT_FIELD(roles),
         "Comma-separated roles to run: api, hubs, worker",
         kList},
        // server
        {"server.listen",
         {"CONDUIT_LISTEN"},
         "--listen",
         CONDUIT_FIELD(server.listen),
         "Listen address host:port or [ipv6]:port"},
        {"server.threads",
         {"CONDUIT_THREADS"},
         "--threads",
         CONDUIT_FIELD(server.threads),
         "Event-loop threads (0 = number of cores)"},
        {"server.max_body_bytes",
         {"CONDUIT_MAX_BODY_BYTES"},
         "--max-body-bytes",
         CONDUIT_FIELD(server.max_body_bytes),
         "Largest request body; larger ones get 413"},
        {"server.max_header_bytes",
         {"CONDUIT_MAX_HEADER_BYTES"},
         "--max-header-bytes",
         CONDUIT_FIELD(server.max_header_bytes),
         "Largest request header block"},
        {"server.header_timeout_ms",
         {"CONDUIT_HEADER_TIMEOUT_MS"},
         "--header-timeout-ms",
         CONDUIT_FIELD(server.header_timeout_ms),
         "Time to receive request headers (else 408)"},
        {"server.body_timeout_ms",
         {"CONDUIT_BODY_TIMEOUT_MS"},
         "--body-timeout-ms",
         CONDUIT_FIELD(server.body_timeout_ms),
         "Time to receive a request body"},
        {"server.idle_timeout_ms",
         {"CONDUIT_IDLE_TIMEOUT_MS"},
         "--idle-timeout-ms",
         CONDUIT_FIELD(server.idle_timeout_ms),
         "Keep-alive idle timeout"},
        {"server.write_timeout_ms",
         {"CONDUIT_WRITE_TIMEOUT_MS"},
         "--write-timeout-ms",
         CONDUIT_FIELD(server.write_timeout_ms),
         "Time allowed for one write to a client"},
        {"server.shutdown_grace_ms",
         {"CONDUIT_SHUTDOWN_GRACE_MS"},
         "--shutdown-grace-ms",
         CONDUIT_FIELD(server.shutdown_grace_ms),
         "Time to finish in-flight requests on SIGTERM"},
        {"server.public_base_url",
         {"CONDUIT_PUBLIC_BASE_URL"},
         "--public-base-url",
         CONDUIT_FIELD(server.public_base_url),
         "External base URL for absolute links"},
        // upstream
        {"upstream.connect_timeout_ms",
         {"CONDUIT_UPSTREAM_CONNECT_TIMEOUT_MS"},
         "--upstream-connect-timeout-ms",
         CONDUIT_FIELD(upstream.connect_timeout_ms),
         "Upstream connect timeout"},
        {"upstream.first_byte_timeout_ms",
         {"CONDUIT_UPSTREAM_FIRST_BYTE_TIMEOUT_MS"},
         "--upstream-first-byte-timeout-ms",
         CONDUIT_FIELD(upstream.first_byte_timeout_ms),
         "Upstream time to first response byte"},
        {"upstream.idle_timeout_ms",
         {"CONDUIT_UPSTREAM_IDLE_TIMEOUT_MS"},
         "--upstream-idle-timeout-ms",
         CONDUIT_FIELD(upstream.idle_timeout_ms),
         "Upstream silence allowed mid-response"},
        {"upstream.total_timeout_ms",
         {"CONDUIT_UPSTREAM_TOTAL_TIMEOUT_MS"},
         "--upstream-total-timeout-ms",
         CONDUIT_FIELD(upstream.total_timeout_ms),
         "Upstream whole-request timeout"},
        {"upstream.max_connections_per_host",
         {"CONDUIT_UPSTREAM_MAX_CONNECTIONS_PER_HOST"},
         "--upstream-max-connections-per-host",
         CONDUIT_FIELD(upstream.max_connections_per_host),
         "Pooled upstream connections per host"},
        {"upstream.max_total_connections",
         {"CONDUIT_UPSTREAM_MAX_TOTAL_CONNECTIONS"},
         "--upstream-max-total-connections",
         CONDUIT_FIELD(upstream.max_total_connections),
         "Pooled upstream connections in total"},
        {"upstream.client",
         {"CONDUIT_UPSTREAM_CLIENT"},
         "--upstream-client",
         CONDUIT_FIELD(upstream.client),
         "Upstream HTTP client: auto (native, libcurl for proxied URLs), native or curl"},
        // store
        {"store.data_dir",
         {"CONDUIT_DATA_DIR"},
         "--data-dir",
         CONDUIT_FIELD(store.data_dir),
         "Data directory (SQLite database, embedded queue, generated master key)"},
        {"store.database_url",
         {"CONDUIT_DATABASE_URL", "DATABASE_URL"},
         "--database-url",
         CONDUIT_FIELD(store.database_url),
         "PostgreSQL URL; unset = SQLite in the data directory",
         kSecret},
        // log
        {"log.format",
         {"CONDUIT_LOG_FORMAT"},
         "--log-format",
         CONDUIT_FIELD(log.format),
         "Log format: text or json"},
        {"log.level",
         {"CONDUIT_LOG_LEVEL"},
         "--log-level",
         CONDUIT_FIELD(log.level),
         "Log level: trace, debug, info, warn, error, critical, off"},
        // spend
        {"spend.flush_interval_ms",
         {"CONDUIT_SPEND_FLUSH_INTERVAL_MS"},
         "--spend-flush-interval-ms",
         CONDUIT_FIELD(spend.flush_interval_ms),
         "Interval between batched usage/spend writes"},
        // security
        {"security.master_key",
         {"CONDUIT_MASTER_KEY", "CONDUIT_API_TO_API_BACKEND_AUTH_KEY"},
         "--master-key",
         CONDUIT_FIELD(security.master_key),
         "Admin master key",
         kSecret},
        {"security.encryption_key",
         {"CONDUIT_ENCRYPTION_KEY"},
         "--encryption-key",
         CONDUIT_FIELD(security.encryption_key),
         "Key encrypting stored provider credentials",
         kSecret},
        // redis
        {"redis.url",
         {"CONDUIT_REDIS_URL", "REDIS_URL"},
         "--redis-url",
         CONDUIT_FIELD(redis.url),
         "Redis URL; unset = in-process bus and counters",
         kSecret},
        {"redis.prefix",
         {"CONDUIT_REDIS_PREFIX"},
         "--redis-prefix",
         CONDUIT_FIELD(redis.prefix),
         "Prefix of every Redis key and channel (separate deployments sharing one Redis)"},
        // rabbitmq
        {"rabbitmq.host",
         {"CONDUIT_RABBITMQ_HOST", "CONDUITLLM__RABBITMQ__HOST"},
         "--rabbitmq-host",
         CONDUIT_FIELD(rabbitmq.host),
         "RabbitMQ host; unset = embedded durable queue"},
        {"rabbitmq.port",
         {"CONDUIT_RABBITMQ_PORT", "CONDUITLLM__RABBITMQ__PORT"},
         "--rabbitmq-port",
         CONDUIT_FIELD(rabbitmq.port),
         "RabbitMQ port"},
        {"rabbitmq.username",
         {"CONDUIT_RABBITMQ_USERNAME", "CONDUITLLM__RABBITMQ__USERNAME"},
         "--rabbitmq-username",
         CONDUIT_FIELD(rabbitmq.username),
         "RabbitMQ user name"},
        {"rabbitmq.password",
         {"CONDUIT_RABBITMQ_PASSWORD", "CONDUITLLM__RABBITMQ__PASSWORD"},
         "--rabbitmq-password",
         CONDUIT_FIELD(rabbitmq.password),
         "RabbitMQ password",
         kSecret},
        {"rabbitmq.vhost",
         {"CONDUIT_RABBITMQ_VHOST", "CONDUITLLM__RABBITMQ__VHOST"},
         "--rabbitmq-vhost",
         CONDUIT_FIELD(rabbitmq.vhost),
         "RabbitMQ virtual host"},
        {"rabbitmq.prefetch_count",
         {"CONDUIT_RABBITMQ_PREFETCH_COUNT", "CONDUITLLM__RABBITMQ__PREFETCHCOUNT"},
         "--rabbitmq-prefetch-count",
         CONDUIT_FIELD(rabbitmq.prefetch_count),
         "Unacknowledged deliveries per consumer"},
        {"rabbitmq.partition_count",
         {"CONDUIT_RABBITMQ_PARTITION_COUNT", "CONDUITLLM__RABBITMQ__PARTITIONCOUNT"},
         "--rabbitmq-partition-count",
         CONDUIT_FIELD(rabbitmq.partition_count),
         "Work-queue partitions (must match across instances)"},
        {"rabbitmq.concurrent_message_limit",
         {"CONDUIT_RABBITMQ_CONCURRENT_MESSAGE_LIMIT",
          "CONDUITLLM__RABBITMQ__CONCURRENTMESSAGELIMIT"},
         "--rabbitmq-concurrent-message-limit",
         CONDUIT_FIELD(rabbitmq.concurrent_message_limit),
         "Messages processed concurrently per instance"},
        {"rabbitmq.member_heartbeat_ms",
         {"CONDUIT_RABBITMQ_MEMBER_HEARTBEAT_MS"},
         "--rabbitmq-member-heartbeat-ms",
         CONDUIT_FIELD(rabbitmq.member_heartbeat_ms),
         "How often an instance announces itself to the others (work-queue partition ownership)"},
        {"rabbitmq.member_timeout_ms",
         {"CONDUIT_RABBITMQ_MEMBER_TIMEOUT_MS"},
         "--rabbitmq-member-timeout-ms",
         CONDUIT_FIELD(rabbitmq.member_timeout_ms),
         "Silence after which an instance's work-queue partitions move to the others"},
        // tasks
        {"tasks.poll_interval_ms",
         {"CONDUIT_TASK_POLL_INTERVAL_MS"},
         "--task-poll-interval-ms",
         CONDUIT_FIELD(tasks.poll_interval_ms),
         "How often running provider jobs are polled"},
        {"tasks.retry_base_ms",
         {"CONDUIT_TASK_RETRY_BASE_MS"},
         "--task-retry-base-ms",
         CONDUIT_FIELD(tasks.retry_base_ms),
         "First automatic task retry delay (doubles per attempt, with jitter)"},
        {"tasks.retry_max_ms",
         {"CONDUIT_TASK_RETRY_MAX_MS"},
         "--task-retry-max-ms",
         CONDUIT_FIELD(tasks.retry_max_ms),
         "Upper bound of the task retry delay"},
        {"tasks.max_retries",
         {"CONDUIT_TASK_MAX_RETRIES"},
         "--task-max-retries",
         CONDUIT_FIELD(tasks.max_retries),
         "Automatic retries of a failed task attempt"},
        {"tasks.sweep_interval_ms",
         {"CONDUIT_TASK_SWEEP_INTERVAL_MS"},
         "--task-sweep-interval-ms",
         CONDUIT_FIELD(tasks.sweep_interval_ms),
         "Period of the sweeper that resumes stale tasks and applies timeouts"},
        {"tasks.media_dir",
         {"CONDUIT_MEDIA_DIR"},
         "--media-dir",
         CONDUIT_FIELD(tasks.media_dir),
         "Directory for generated media (default: <data-dir>/media)"},
        {"tasks.queue_degraded_depth",
         {"CONDUIT_QUEUE_DEGRADED_DEPTH"},
         "--queue-degraded-depth",
         CONDUIT_FIELD(tasks.queue_degraded_depth),
         "Ready task messages above which /health/ready reports the work queue Degraded"},
        // webhooks
        {"webhooks.max_retries",
         {"CONDUIT_WEBHOOK_MAX_RETRIES"},
         "--webhook-max-retries",
         CONDUIT_FIELD(webhooks.max_retries),
         "Retries of a failed webhook delivery before it is dead"},
        {"webhooks.retry_base_ms",
         {"CONDUIT_WEBHOOK_RETRY_BASE_MS"},
         "--webhook-retry-base-ms",
         CONDUIT_FIELD(webhooks.retry_base_ms),
         "First webhook retry delay (doubles per attempt, with jitter)"},
        {"webhooks.retry_max_ms",
         {"CONDUIT_WEBHOOK_RETRY_MAX_MS"},
         "--webhook-retry-max-ms",
         CONDUIT_FIELD(webhooks.retry_max_ms),
         "Upper bound of the webhook retry delay (and of an honoured Retry-After)"},
        {"webhooks.request_timeout_ms",
         {"CONDUIT_WEBHOOK_TIMEOUT_MS"},
         "--webhook-timeout-ms",
         CONDUIT_FIELD(webhooks.request_timeout_ms),
         "Timeout of one webhook request"},
        {"webhooks.connect_timeout_ms",
         {"CONDUIT_WEBHOOK_CONNECT_TIMEOUT_MS"},
         "--webhook-connect-timeout-ms",
         CONDUIT_FIELD(webhooks.connect_timeout_ms),
         "Connect timeout of a webhook request"},
        {"webhooks.breaker_failures",
         {"CONDUIT_WEBHOOK_BREAKER_FAILURES"},
         "--webhook-breaker-failures",
         CONDUIT_FIELD(webhooks.breaker_failures),
         "Consecutive failures that open a receiver host's circuit breaker"},
        {"webhooks.breaker_open_ms",
         {"CONDUIT_WEBHOOK_BREAKER_OPEN_MS"},
         "--webhook-breaker-open-ms",
         CONDUIT_FIELD(webhooks.breaker_open_ms),
         "How long an open breaker waits before a probe"},
        {"webhooks.max_connections_per_host",
         {"CONDUIT_WEBHOOK_MAX_CONNECTIONS_PER_HOST"},
         "--webhook-max-connections-per-host",
         CONDUIT_FIELD(webhooks.max_connections_per_host),
         "Pooled connections per webhook receiver host"},
        // hubs
        {"hubs.keep_alive_ms",
         {"CONDUIT_HUB_KEEP_ALIVE_MS"},
         "--hub-keep-alive-ms",
         CONDUIT_FIELD(hubs.keep_alive_ms),
         "SignalR keep-alive ping period of the /hubs/* endpoints"},
        {"hubs.client_timeout_ms",
         {"CONDUIT_HUB_CLIENT_TIMEOUT_MS"},
         "--hub-client-timeout-ms",
         CONDUIT_FIELD(hubs.client_timeout_ms),
         "A hub client silent for this long is disconnected"},
        {"hubs.handshake_timeout_ms",
         {"CONDUIT_HUB_HANDSHAKE_TIMEOUT_MS"},
         "--hub-handshake-timeout-ms",
         CONDUIT_FIELD(hubs.handshake_timeout_ms),
         "Time a hub client has to send its handshake"},
        {"hubs.max_message_bytes",
         {"CONDUIT_HUB_MAX_MESSAGE_BYTES"},
         "--hub-max-message-bytes",
         CONDUIT_FIELD(hubs.max_message_bytes),
         "Largest message accepted from a hub client"},
        {"hubs.max_connections_per_key",
         {"CONDUIT_HUB_MAX_CONNECTIONS_PER_KEY"},
         "--hub-max-connections-per-key",
         CONDUIT_FIELD(hubs.max_connections_per_key),
         "Concurrent hub connections allowed per virtual key"},
        {"hubs.method_rate_per_minute",
         {"CONDUIT_HUB_METHOD_RATE_PER_MINUTE"},
         "--hub-method-rate-per-minute",
         CONDUIT_FIELD(hubs.method_rate_per_minute),
         "Hub method invocations allowed per virtual key and minute (0 = unlimited; per instance)"},
        {"hubs.long_poll_timeout_ms",
         {"CONDUIT_HUB_LONG_POLL_TIMEOUT_MS"},
         "--hub-long-poll-timeout-ms",
         CONDUIT_FIELD(hubs.long_poll_timeout_ms),
         "How long a hub long-poll request is held before it is answered empty"},
        {"hubs.disconnect_timeout_ms",
         {"CONDUIT_HUB_DISCONNECT_TIMEOUT_MS"},
         "--hub-disconnect-timeout-ms",
         CONDUIT_FIELD(hubs.disconnect_timeout_ms),
         "A negotiated connection never used, or dropped and not resumed, is forgotten after this"},
        {"hubs.transports",
         {"CONDUIT_HUB_TRANSPORTS"},
         "--hub-transports",
         CONDUIT_FIELD(hubs.transports),
         "Hub transports offered (comma-separated subset of WebSockets, ServerSentEvents, "
         "LongPolling)",
         kList},
        {"hubs.cors_origins",
         {"CONDUIT_HUB_CORS_ORIGINS"},
         "--hub-cors-origins",
         CONDUIT_FIELD(hubs.cors_origins),
         "Comma-separated origins allowed to connect to the hubs from a browser (* = any)",
         kList},
        {"governance.rate_limit_fail_policy",
         {"CONDUIT_RATE_LIMIT_FAIL_POLICY"},
         "--rate-limit-fail-policy",
         CONDUIT_FIELD(governance.rate_limit_fail_policy),
         "When the counters engine (Redis) cannot answer — rate limits, balance and budget "
         "reservations, hub method limits: open (admit) or closed (503)"},
        {"governance.default_max_tokens",
         {"CONDUIT_BUDGET_DEFAULT_MAX_TOKENS"},
         "--budget-default-max-tokens",
         CONDUIT_FIELD(governance.default_max_tokens),
         "Completion tokens a request without max_tokens reserves from its group's balance"},
        {"governance.breaker_window_ms",
         {"CONDUIT_BREAKER_WINDOW_MS"},
         "--breaker-window-ms",
         CONDUIT_FIELD(governance.breaker_window_ms),
         "Provider circuit breakers count failures over this sliding window"},
        {"governance.breaker_min_requests",
         {"CONDUIT_BREAKER_MIN_REQUESTS"},
         "--breaker-min-requests",
         CONDUIT_FIELD(governance.breaker_min_requests),
         "Requests in the window below which a breaker never opens"},
        {"governance.breaker_failure_percent",
         {"CONDUIT_BREAKER_FAILURE_PERCENT"},
         "--breaker-failure-percent",
         CONDUIT_FIELD(governance.breaker_failure_percent),
         "Share of failed requests (percent) in the window that opens a breaker"},
        {"governance.breaker_open_ms",
         {"CONDUIT_BREAKER_OPEN_MS"},
         "--breaker-open-ms",
         CONDUIT_FIELD(governance.breaker_open_ms),
         "How long an open breaker rejects before a probe is let through"},
        {"cache_stats.interval_ms",
         {"CONDUIT_CACHE_STATS_INTERVAL_MS"},
         "--cache-stats-interval-ms",
         CONDUIT_FIELD(cache_stats.interval_ms),
         "How often this instance pushes its cache statistics (one Redis round trip)"},
        {"cache_stats.collect_interval_ms",
         {"CONDUIT_CACHE_STATS_COLLECT_INTERVAL_MS"},
         "--cache-stats-collect-interval-ms",
         CONDUIT_FIELD(cache_stats.collect_interval_ms),
         "How often the cluster's cache statistics are aggregated for /metrics and health (0 = "
         "only when the admin route asks)"},
        {"cache_stats.stale_ms",
         {"CONDUIT_CACHE_STATS_STALE_MS"},
         "--cache-stats-stale-ms",
         CONDUIT_FIELD(cache_stats.stale_ms),
         "An instance without a cache statistics push for this long is pruned"},
        {"cache_stats.drift_percent",
         {"CONDUIT_CACHE_STATS_DRIFT_PERCENT"},
         "--cache-stats-drift-percent",
         CONDUIT_FIELD(cache_stats.drift_percent),
         "Tolerated difference (percent) between per-instance and global cache counts"},
    };
    return options;
}

#undef CONDUIT_FIELD

tl::unexpected<core::Error> Invalid(std::string message, std::string_view param = {}) {
    return core::Fail(core::ErrorCode::kInvalidRequest, std::move(message), std::string(param));
}

// The value as shown in a message: quoted, or withheld for secrets.
std::string Shown(const Option& opt, std::string_view raw) {
    return (opt.traits & kSecret) != 0 ? std::string("<secret withheld>")
                                       : "'" + std::string(raw) + "'";
}

// Parses `raw` into the option's field. `source` names where the value came from (a flag, an
// environment variable or a file key) for the error message.
core::Result<void> Assign(const Option& opt,
                          Config& config,
                          std::string_view raw,
                          std::string_view source) {
    return std::visit(
        [&](auto field) -> core::Result<void> {
            auto& dest = field(config);
            using T = std::remove_reference_t<decltype(dest)>;
            if constexpr (std::is_same_v<T, std::string>) {
                dest.assign(raw);
            } else {
                auto n = core::ParseInt(core::Trim(raw));
                if (!n || *n < std::numeric_limits<T>::min() ||
                    *n > std::numeric_limits<T>::max()) {
                    return Invalid(
                        std::string(source) + ": expected an integer, got " + Shown(opt, raw),
                        opt.yaml);
                }
                dest = static_cast<T>(*n);
            }
            return {};
        },
        opt.target);
}

// The default value as text, for --help.
std::string DefaultText(const Option& opt) {
    Config defaults;
    return std::visit(
        [&](auto field) -> std::string {
            const auto& v = field(defaults);
            if constexpr (std::is_same_v<std::remove_cvref_t<decltype(v)>, std::string>) {
                return v;
            } else {
                return std::to_string(v);
            }
        },
        opt.target);
}

// First non-empty value among the option's environment names; `name` receives the variable used.
std::optional<std::string> LookupEnv(const Option& opt,
                                     const EnvLookup& env,
                                     std::string_view& name) {
    for (auto n : opt.env) {
        auto v = env(n);
        if (v && !v->empty()) {
            name = n;
            return v;
        }
    }
    return std::nullopt;
}

const Option* FindByYaml(std::string_view path) {
    for (const auto& opt : Options()) {
        if (!opt.yaml.empty() && opt.yaml == path) {
            return &opt;
        }
    }
    return nullptr;
}

bool IsSection(std::string_view path) {
    for (const auto& opt : Options()) {
        if (opt.yaml.size() > path.size() && opt.yaml.substr(0, path.size()) == path &&
            opt.yaml[path.size()] == '.') {
            return true;
        }
    }
    return false;
}

// Applies one YAML mapping whose keys sit under `prefix` ("" for the top level).
core::Result<void> ApplyYamlMap(const YAML::Node& map,
                                const std::string& prefix,
                                const std::string& file,
                                Config& config) {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
        // The iterator yields temporaries; copy the (cheap, shared) node handles.
        const YAML::Node key = it->first;
        const YAML::Node value = it->second;
        const std::string where =
            "config file '" + file + "' line " + std::to_string(key.Mark().line + 1) + ": ";
        if (!key.IsScalar()) {
            return Invalid(where + "keys must be plain names");
        }
        const std::string path = prefix.empty() ? key.Scalar() : prefix + "." + key.Scalar();
        if (!seen.insert(path).second) {
            return Invalid(where + "duplicate key '" + path + "'", path);
        }
        if (const Option* opt = FindByYaml(path)) {
            if (value.IsNull()) {
                continue;  // "key:" with no value leaves the default
            }
            std::string raw;
            if (value.IsScalar()) {
                raw = value.Scalar();
            } else if (value.IsSequence() && (opt->traits & kList) != 0) {
                for (const auto& item : value) {
                    if (!item.IsScalar()) {
                        return Invalid(where + "'" + path + "' must be a list of names", path);
                    }
                    raw += (raw.empty() ? "" : ",") + item.Scalar();
                }
            } else {
                return Invalid(where + "'" + path + "' must be a single value", path);
            }
            if (auto r = Assign(*opt, config, raw, where + path); !r) {
                return r;
            }
        } else if (IsSection(path)) {
            if (value.IsNull()) {
                continue;
            }
            if (!value.IsMap()) {
                return Invalid(where + "'" + path + "' must be a mapping", path);
            }
            if (auto r = ApplyYamlMap(value, path, file, config); !r) {
                return r;
            }
        } else {
            return Invalid(where + "unknown key '" + path + "'", path);
        }
    }
    return {};
}

core::Result<void> ApplyFile(const std::string& file, Config& config) {
    YAML::Node root;
    try {
        root = YAML::LoadFile(file);
    } catch (const YAML::BadFile&) {
        return Invalid("cannot read config file '" + file + "'", "config_file");
    } catch (const YAML::Exception& e) {
        return Invalid("config file '" + file + "': " + e.what(), "config_file");
    }
    if (root.IsNull()) {
        return {};  // empty file
    }
    if (!root.IsMap()) {
        return Invalid("config file '" + file + "': the top level must be a mapping",
                       "config_file");
    }
    try {
        return ApplyYamlMap(root, "", file, config);
    } catch (const YAML::Exception& e) {
        return Invalid("config file '" + file + "': " + e.what(), "config_file");
    }
}

std::string_view GroupOf(const Option& opt) {
    auto section = opt.yaml.substr(0, opt.yaml.find('.'));
    if (section == "server") return "Server";
    if (section == "upstream") return "Upstream";
    if (section == "store") return "Storage";
    if (section == "log") return "Logging";
    if (section == "spend") return "Spend";
    if (section == "security") return "Security";
    if (section == "redis") return "Redis";
    if (section == "rabbitmq") return "RabbitMQ";
    if (section == "tasks") return "Tasks";
    if (section == "webhooks") return "Webhooks";
    return "General";
}

std::string HelpLine(const Option& opt) {
    std::string out(opt.help);
    out += " [env ";
    for (size_t i = 0; i < opt.env.size(); ++i) {
        out += (i == 0 ? "" : ", ");
        out += opt.env[i];
    }
    if (!opt.yaml.empty()) {
        out += "; file ";
        out += opt.yaml;
    }
    out += "]";
    return out;
}

// Describes the first argument CLI11 did not recognise, without echoing values (a mistyped
// "--mastr-key=..." must not print the key).
std::string DescribeExtra(const std::vector<std::string>& remaining) {
    for (const auto& arg : remaining) {
        if (!arg.empty() && arg.front() == '-') {
            return "unknown option '" + arg.substr(0, arg.find('=')) + "' (see --help)";
        }
    }
    return "unexpected positional argument (serve takes only options; see --help)";
}

core::Result<LoadOutcome> Load(const std::vector<std::string>& args, const EnvLookup& env) {
    const auto& options = Options();
    LoadOutcome outcome;

    CLI::App app{"Run the Conduit gateway.", "conduit serve"};
    app.footer(
        "Precedence: command-line flag > environment > config file > default.\n"
        "Empty environment variables count as unset.");
    std::vector<std::string> values(options.size());
    std::vector<CLI::Option*> flags(options.size(), nullptr);
    for (size_t i = 0; i < options.size(); ++i) {
        const Option& opt = options[i];
        const bool is_string = std::holds_alternative<StringField>(opt.target);
        auto* o = app.add_option(std::string(opt.flag), values[i], HelpLine(opt));
        o->type_name(is_string ? "TEXT" : "INT");
        o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
        o->group(std::string(GroupOf(opt)));
        if ((opt.traits & kSecret) == 0) {
            o->default_str(DefaultText(opt));
        }
        flags[i] = o;
    }

    std::vector<std::string> reversed(args.rbegin(), args.rend());
    try {
        app.parse(reversed);
    } catch (const CLI::CallForHelp&) {
        outcome.help_requested = true;
        outcome.help_text = app.help();
        return outcome;
    } catch (const CLI::ExtrasError&) {
        return Invalid(DescribeExtra(app.remaining()));
    } catch (const CLI::ParseError& e) {
        return Invalid(std::string("command line: ") + e.what());
    }

    Config& config = outcome.config;
    // Layer 1: the file. It is named by the flag or the environment.
    for (size_t i = 0; i < options.size(); ++i) {
        if (options[i].yaml.empty() && options[i].flag == "--config") {
            std::string_view name;
            std::optional<std::string> file =
                flags[i]->count() > 0 ? std::optional(values[i]) : LookupEnv(options[i], env, name);
            if (file && !file->empty()) {
                if (auto r = ApplyFile(*file, config); !r) {
                    return tl::unexpected(r.error());
                }
            }
        }
    }
    // Layer 2: the environment.
    for (const auto& opt : options) {
        std::string_view name;
        if (auto v = LookupEnv(opt, env, name)) {
            if (auto r = Assign(opt, config, *v, name); !r) {
                return tl::unexpected(r.error());
            }
        }
    }
    // Layer 3: the command line.
    for (size_t i = 0; i < options.size(); ++i) {
        if (flags[i]->count() > 0) {
            if (auto r = Assign(options[i], config, values[i], options[i].flag); !r) {
                return tl::unexpected(r.error());
            }
        }
    }

    config.log.format = core::ToLower(config.log.format);
    config.log.level = core::ToLower(config.log.level);
    if (auto r = Validate(config); !r) {
        return tl::unexpected(r.error());
    }
    return outcome;
}

}  // namespace

EnvLookup ProcessEnv() {
    return [](std::string_view name) -> std::optional<std::string> {
        const char* v = std::getenv(std::string(name).c_str());  // NOLINT(concurrency-mt-unsafe)
        if (v == nullptr) {
            return std::nullopt;
        }
        return std::string(v);
    };
}

core::Result<LoadOutcome> LoadServeConfig(const std::vector<std::string>& args,
                                          const EnvLookup& env) {
    try {
        return Load(args, env);
    } catch (const std::exception& e) {
        // CLI11 and yaml-cpp errors are handled in Load; this is a last resort (e.g. bad_alloc).
        return core::Fail(core::ErrorCode::kInternal,
                          std::string("loading configuration failed: ") + e.what());
    }
}

}  // namespace conduit::config
