#include "app/app.hpp"

#include "admin/admin_api.hpp"
#include "bus/backplane.hpp"
#include "bus/cache_stats_sink.hpp"
#include "bus/counters.hpp"
#include "bus/embedded_queue.hpp"
#include "bus/rabbitmq/rabbitmq_queue.hpp"
#include "bus/redis/redis_backplane.hpp"
#include "bus/redis/redis_cache_stats.hpp"
#include "bus/redis/redis_counters.hpp"
#include "bus/work_queue.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/ids.hpp"
#include "core/secret_box.hpp"
#include "core/strings.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/budget_gate.hpp"
#include "gateway/config_state.hpp"
#include "gateway/errors.hpp"
#include "gateway/metrics.hpp"
#include "gateway/proxy.hpp"
#include "gateway/rate_gate.hpp"
#include "gateway/routing.hpp"
#include "gateway/spend_recorder.hpp"
#include "http_client/client.hpp"
#include "hubs/hubs.hpp"
#include "hubs/notifications.hpp"
#include "media/media_store.hpp"
#include "net/http_server.hpp"
#include "net/router.hpp"
#include "net/runtime.hpp"
#include "obs/cache_stats.hpp"
#include "obs/health.hpp"
#include "obs/metrics.hpp"
#include "obs/process_metrics.hpp"
#include "redis/url.hpp"
#include "store/executor.hpp"
#include "store/store_factory.hpp"
#include "tasks/provider_jobs.hpp"
#include "tasks/task_engine.hpp"
#include "tasks/task_routes.hpp"
#include "webhooks/admin_routes.hpp"
#include "webhooks/message.hpp"
#include "webhooks/options.hpp"
#include "webhooks/publisher.hpp"
#include "webhooks/recorder.hpp"
#include "webhooks/secrets.hpp"
#include "webhooks/worker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

namespace conduit::app {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

core::Result<std::string> LoadOrCreateSecretFile(const std::string& path, bool* generated) {
    if (generated != nullptr) {
        *generated = false;
    }
    std::error_code ec;
    if (fs::exists(path, ec)) {
        std::ifstream in(path);
        std::stringstream ss;
        ss << in.rdbuf();
        std::string value(core::Trim(ss.str()));
        if (value.empty()) {
            return core::Fail(core::ErrorCode::kInternal, "secret file " + path + " is empty");
        }
        return value;
    }
    std::string value = core::Base64UrlEncode(core::RandomBytes(32));
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        return core::Fail(core::ErrorCode::kInternal, "cannot create secret file " + path);
    }
    std::string line = value + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::fsync(fd);
    ::close(fd);
    if (!ok) {
        return core::Fail(core::ErrorCode::kInternal, "cannot write secret file " + path);
    }
    if (generated != nullptr) {
        *generated = true;
    }
    return value;
}

namespace {
/// Backplane channel: a webhook signing secret was created or rotated (payload: the key id).
constexpr std::string_view kSecretRotatedChannel = "conduit.webhooks.secret_rotated";
}  // namespace

namespace {

/// Thread-local cache of labelled series, so the per-request metric updates take no lock.
class HttpMetrics {
public:
    explicit HttpMetrics(obs::Registry& r)
        : requests_(r.Counter("conduit_http_requests_total",
                              "HTTP requests by route and status.",
                              {"route", "status"})),
          duration_(r.Histogram("conduit_http_request_duration_seconds",
                                "HTTP request duration (request read → response written).",
                                {"route"})) {}

    void Record(std::string_view route, int status, double seconds) {
        thread_local std::unordered_map<std::string, Entry> cache;
        std::string key;
        key.reserve(route.size() + 4);
        key.append(route);
        key.push_back('|');
        key.append(std::to_string(status));
        auto it = cache.find(key);
        if (it == cache.end()) {
            Entry e{&requests_.With({route, std::to_string(status)}), &duration_.With({route})};
            it = cache.emplace(std::move(key), e).first;
        }
        it->second.counter->Inc();
        it->second.histogram->Observe(seconds);
    }

private:
    struct Entry {
        obs::Counter* counter;
        obs::Histogram* histogram;
    };
    obs::CounterFamily& requests_;
    obs::HistogramFamily& duration_;
};

// Errors the HTTP server produces itself (before a request exists) still carry a request id.
net::Response ServerError(int status, std::string_view message) {
    net::Response r = gateway::ErrorResponse(
        core::Error{gateway::CodeForStatus(status), std::string(message), ""});
    r.headers.Add("X-Request-Id", core::NewRequestId());
    return r;
}

}  // namespace

struct App::Impl {
    explicit Impl(config::Config c) : cfg(std::move(c)) {}

    config::Config cfg;
    std::string master_key;
    std::unique_ptr<core::SecretBox> box;
    std::unique_ptr<store::Store> store;
    std::unique_ptr<store::Executor> executor;
    gateway::BalanceBook book;
    std::unique_ptr<gateway::ConfigState> config_state;
    std::unique_ptr<gateway::SpendRecorder> spend;
    std::unique_ptr<net::Runtime> runtime;
    std::vector<std::unique_ptr<http_client::Client>> clients;
    std::unique_ptr<gateway::GatewayMetrics> gateway_metrics;
    std::unique_ptr<HttpMetrics> http_metrics;
    // Governance (issue 5): shared counters (Redis when configured), the per-key rate gate in
    // front of /v1, and the provider deployments' breakers.
    std::unique_ptr<bus::Counters> counters;
    bus::RedisCounters* redis_counters = nullptr;  // the counters, when they are Redis
    std::unique_ptr<gateway::RateGate> rate_gate;
    std::unique_ptr<gateway::BudgetGate> budget_gate;
    std::unique_ptr<gateway::DeploymentHealth> deployment_health;
    std::unique_ptr<gateway::OpenAIProxy> proxy;
    net::Router router;
    obs::HealthRegistry health;
    std::unique_ptr<net::HttpServer> server;
    std::atomic<bool> stopping{false};
    std::atomic<int> exit_code{0};

    // Async tasks and webhooks (issue 3).
    std::unique_ptr<bus::Backplane> backplane;
    bus::RedisBackplane* redis_backplane = nullptr;  // the backplane, when it is Redis
    std::unique_ptr<bus::WorkQueue> queue;
    std::unique_ptr<media::MediaStore> media;
    std::unique_ptr<tasks::ProviderJobs> jobs;
    std::vector<std::unique_ptr<http_client::Client>> webhook_clients;
    webhooks::WebhookOptions webhook_options;
    std::unique_ptr<webhooks::SecretService> secrets;
    std::unique_ptr<webhooks::DeliveryRecorder> recorder;
    std::unique_ptr<webhooks::WebhookPublisher> publisher;
    std::unique_ptr<webhooks::DeliveryWorker> webhook_worker;
    std::shared_ptr<tasks::TaskEngine> task_engine;
    // Real-time hubs (issue 4); destroyed before the backplane and the engine they use.
    std::unique_ptr<hubs::Hubs> hubs;
    // Senders of the notifications and spend hubs: this instance's hubs, or (without the hubs
    // role, with Redis) route-less publishers reaching the instances that have them.
    std::shared_ptr<realtime::HubServer> notifications_out;
    std::shared_ptr<realtime::HubServer> spend_out;
    std::shared_ptr<admin::AdminDeps> admin_deps;
    bool worker_role = false;
    // Queue depths, refreshed off the loops (Stats may block on the engine).
    obs::GaugeFamily* queue_gauge = nullptr;
    obs::GaugeFamily* queue_owned_gauge = nullptr;  // RabbitMQ: partitions this instance consumes
    obs::Gauge* queue_members_gauge = nullptr;      // RabbitMQ: instances sharing the partitions
    core::TimerPtr queue_stats_timer;
    // Configuration across instances: an admin write bumps the store's config version and
    // publishes an invalidation; every other instance reloads its snapshot at once, and checks
    // the version every few seconds as a safety net (a lost pub/sub message, Redis down).
    std::string instance_id = core::HexEncode(core::RandomBytes(8));
    std::string config_version_seen;  // store executor thread only
    core::TimerPtr config_check_timer;
    uint64_t config_subscription = 0;
    uint64_t secret_subscription = 0;  // webhook secret rotations on other instances
    // Distributed cache statistics (issue 6 item 3): pushed every interval, aggregated across
    // instances for /api/cache/statistics, /metrics and the health check.
    std::unique_ptr<bus::CacheStatsSink> cache_stats_sink;
    std::unique_ptr<bus::CacheStatsReporter> cache_stats;
    core::Result<void> InitCacheStats();
    void ConfigCommitted();        // store executor thread
    void ReloadConfigFromPeers();  // any thread
    void ScheduleConfigCheck();    // loop 0

    core::Result<void> Init();
    core::Result<void> InitGovernance();
    void DisableProviderKey(domain::Id provider_key_id, int status);
    core::Result<void> InitTasks(const std::string& host, uint16_t port);
    void InitHubs();
    void InitHubSources();
    void RefreshQueueStats();
    void ScheduleQueueStats() {
        RefreshQueueStats();
        queue_stats_timer = runtime->loop(0).StartTimer(5s, [this] { ScheduleQueueStats(); });
    }
    void RegisterRoutes();
    void RegisterHealthChecks();
    void Dispatch(const net::ExchangePtr& ex);
    void BeginShutdown();
};

App::App(config::Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}

App::~App() {
    if (impl_->runtime) {
        impl_->runtime->Stop();
    }
}

uint16_t App::port() const { return impl_->server ? impl_->server->port() : 0; }

core::Result<void> App::Init() { return impl_->Init(); }

core::Result<void> App::Impl::Init() {
    const auto& data_dir = cfg.store.data_dir;
    std::error_code ec;
    fs::create_directories(data_dir, ec);
    if (ec) {
        return core::Fail(core::ErrorCode::kInternal,
                          "cannot create data directory " + data_dir + ": " + ec.message());
    }

    // Master key: configured, else generated once into the data directory (specs/api.md §1).
    if (!cfg.security.master_key.empty()) {
        master_key = cfg.security.master_key;
        spdlog::info("master key: from configuration");
    } else {
        bool generated = false;
        auto path = (fs::path(data_dir) / "master.key").string();
        auto key = LoadOrCreateSecretFile(path, &generated);
        if (!key) {
            return tl::unexpected(key.error());
        }
        master_key = *key;
        if (generated) {
            // Printed once, at creation; it stays readable (0600) in the data directory.
            std::fprintf(stdout,
                         "Generated a master key (saved to %s, mode 0600):\n  %s\n"
                         "Use it as 'X-API-Key' for the admin API (/api/*).\n",
                         path.c_str(), master_key.c_str());
            std::fflush(stdout);
        } else {
            spdlog::info("master key: loaded from {}", path);
        }
    }
    // Encryption key for secrets at rest (provider API keys).
    std::string enc = cfg.security.encryption_key;
    if (enc.empty()) {
        auto key =
            LoadOrCreateSecretFile((fs::path(data_dir) / "encryption.key").string(), nullptr);
        if (!key) {
            return tl::unexpected(key.error());
        }
        enc = *key;
    }
    box = std::make_unique<core::SecretBox>(core::SecretBox::DeriveKey(enc));

    // SQLite in the data directory, or PostgreSQL when DATABASE_URL is set (store_factory).
    const store::StoreTarget store_target{cfg.store.database_url, data_dir};
    auto opened = store::OpenStore(store_target);
    if (!opened) {
        return tl::unexpected(opened.error());
    }
    store = std::move(*opened);
    if (auto m = store->Migrate(); !m) {
        return tl::unexpected(m.error());
    }
    auto version = store->SchemaVersion();
    spdlog::info("store: {} (schema version {})", store::DescribeStoreTarget(store_target),
                 version ? *version : -1);
    spdlog::info("modes: {}", config::DescribeModes(cfg));

    config_state = std::make_unique<gateway::ConfigState>(*store, book, *box);
    if (auto r = config_state->ReloadOnExecutor(); !r) {  // executor not started yet
        return tl::unexpected(r.error());
    }
    executor = std::make_unique<store::Executor>("conduit-store");
    spend = std::make_unique<gateway::SpendRecorder>(
        *store, *executor, book, std::chrono::milliseconds(cfg.spend.flush_interval_ms));

    runtime = std::make_unique<net::Runtime>(static_cast<size_t>(cfg.server.threads));
    http_client::PoolOptions pool;
    pool.max_connections_per_host = cfg.upstream.max_connections_per_host;
    pool.max_total_connections = cfg.upstream.max_total_connections;
    http_client::ClientKind kind = http_client::ClientKind::kAuto;
    http_client::ParseClientKind(cfg.upstream.client, kind);  // validated by config
    for (size_t i = 0; i < runtime->size(); ++i) {
        clients.push_back(http_client::MakeClient(runtime->loop(i), pool, kind));
    }
    spdlog::info("upstream client: {}", cfg.upstream.client);

    auto& registry = obs::Registry::Global();
    obs::RegisterProcessMetrics(registry);
    gateway_metrics = std::make_unique<gateway::GatewayMetrics>(registry);
    http_metrics = std::make_unique<HttpMetrics>(registry);

    http_client::Timeouts timeouts;
    timeouts.connect = std::chrono::milliseconds(cfg.upstream.connect_timeout_ms);
    timeouts.first_byte = std::chrono::milliseconds(cfg.upstream.first_byte_timeout_ms);
    timeouts.idle = std::chrono::milliseconds(cfg.upstream.idle_timeout_ms);
    timeouts.total = std::chrono::milliseconds(cfg.upstream.total_timeout_ms);
    if (auto g = InitGovernance(); !g) {
        return g;
    }
    gateway::ProxyDeps proxy_deps{*config_state,
                                  book,
                                  *spend,
                                  [this](size_t i) -> http_client::Client& { return *clients[i]; },
                                  timeouts,
                                  *gateway_metrics,
                                  core::SystemClock::Instance()};
    proxy_deps.health = deployment_health.get();
    proxy_deps.budget = budget_gate.get();
    proxy_deps.on_usage = [rg = rate_gate.get()](const domain::VirtualKey& key, int64_t tokens) {
        rg->ChargeTokens(key, tokens);
    };
    proxy_deps.on_key_rejected = [this](domain::Id provider_key_id, int status) {
        DisableProviderKey(provider_key_id, status);
    };
    proxy = std::make_unique<gateway::OpenAIProxy>(std::move(proxy_deps));

    RegisterRoutes();
    RegisterHealthChecks();
    if (auto c = InitCacheStats(); !c) {
        return c;
    }

    net::ServerOptions opt;
    std::string host;
    uint16_t port = 0;
    if (!config::ParseHostPort(cfg.server.listen, host, port)) {
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "invalid listen address: " + cfg.server.listen);
    }
    opt.host = host;
    opt.port = port;
    opt.max_body_bytes = cfg.server.max_body_bytes;
    opt.max_header_bytes = cfg.server.max_header_bytes;
    opt.header_timeout = std::chrono::milliseconds(cfg.server.header_timeout_ms);
    opt.body_timeout = std::chrono::milliseconds(cfg.server.body_timeout_ms);
    opt.idle_timeout = std::chrono::milliseconds(cfg.server.idle_timeout_ms);
    opt.write_timeout = std::chrono::milliseconds(cfg.server.write_timeout_ms);
    opt.error_response = &ServerError;
    server = std::make_unique<net::HttpServer>(
        *runtime, opt, [this](const net::ExchangePtr& ex) { Dispatch(ex); });
    auto bound = server->Start();
    if (!bound) {
        return tl::unexpected(bound.error());
    }
    // Tasks need the bound port for the media URLs; no request is dispatched before Run().
    if (auto t = InitTasks(host, *bound); !t) {
        return tl::unexpected(t.error());
    }
    if (config::HasRole(cfg, "hubs")) {
        InitHubs();
    }
    InitHubSources();
    // Every /v1 route (the OpenAI ones and the task routes) behind the key's request limits;
    // media downloads are capability URLs without a key. The proxied POST routes take their
    // limits in the BudgetGate's single admission call instead (one counters round trip with
    // the balance reservation). Before Run(): nothing is dispatched yet.
    size_t limited = router.WrapRoutes(
        [](std::string_view method, std::string_view pattern) {
            static constexpr std::string_view kAdmittedByProxy[] = {
                "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                "/v1/images/generations"};
            if (method == "POST" &&
                std::find(std::begin(kAdmittedByProxy), std::end(kAdmittedByProxy), pattern) !=
                    std::end(kAdmittedByProxy)) {
                return false;
            }
            return pattern.starts_with("/v1/") && !pattern.starts_with("/v1/media/");
        },
        [this](net::Handler inner) { return rate_gate->Wrap(std::move(inner)); });
    spdlog::info("rate limits: {} routes, counters {}, fail policy {}", limited, counters->Engine(),
                 cfg.governance.rate_limit_fail_policy);
    auto* srv = server.get();
    registry.AddCallbackGauge("conduit_http_connections_open", "Open client connections.",
                              [srv] { return static_cast<double>(srv->ActiveConnections()); });
    registry.AddCallbackGauge("conduit_http_requests_in_flight", "Requests being handled.",
                              [srv] { return static_cast<double>(srv->InFlight()); });
    auto* sp = spend.get();
    registry.AddCallbackGauge("conduit_pending_spend_updates",
                              "Request-log rows waiting for the next spend flush.",
                              [sp] { return static_cast<double>(sp->PendingRows()); });
    registry.AddCallbackCounter("conduit_spend_flushes_total", "Completed spend flushes.",
                                [sp] { return static_cast<double>(sp->flushes()); });
    registry.AddCallbackCounter("conduit_spend_flush_failures_total", "Failed spend flushes.",
                                [sp] { return static_cast<double>(sp->failures()); });
    auto* ex = executor.get();
    registry.AddCallbackGauge("conduit_store_queue_depth", "Store jobs waiting to run.",
                              [ex] { return static_cast<double>(ex->QueueDepth()); });
    spdlog::info("listening on http://{}:{} ({} threads)", host, *bound, runtime->size());
    return {};
}

core::Result<void> App::Impl::InitGovernance() {
    auto& registry = obs::Registry::Global();
    if (!cfg.redis.url.empty()) {
        bus::RedisCountersOptions ro;
        ro.url = cfg.redis.url;
        ro.key_prefix = cfg.redis.prefix;
        // With one event loop, replies are delivered on it: one wake-up per script for all the
        // decisions it carries (from the I/O thread, each decision would be posted on its own).
        if (runtime->size() == 1) {
            ro.loop = &runtime->loop(0);
        }
        auto made = bus::MakeRedisCounters(std::move(ro));
        if (!made) {
            return tl::unexpected(made.error());
        }
        redis_counters = made->get();
        counters = std::move(*made);
        auto* rc = redis_counters;
        registry.AddCallbackCounter(
            "conduit_counters_round_trips_total",
            "Commands sent to the Redis counters (rate limits, balance reservations).",
            [rc] { return static_cast<double>(rc->Stats().round_trips); });
        registry.AddCallbackCounter(
            "conduit_counters_admissions_total",
            "Admissions (rate limits + reservations) decided by Redis; several share a script "
            "under load.",
            [rc] { return static_cast<double>(rc->Stats().admissions); });
        registry.AddCallbackCounter(
            "conduit_counters_deferred_total",
            "Settlements and token charges deferred and merged into the next script.",
            [rc] { return static_cast<double>(rc->Stats().deferred_ops); });
        registry.AddCallbackCounter(
            "conduit_counters_local_decisions_total",
            "Rate-limit refusals decided without Redis (the local pre-check).",
            [rc] { return static_cast<double>(rc->Stats().local_decisions); });
        health.Add("counters", {"ready"}, obs::SyncHealthCheck([rc] {
                       auto st = rc->Stats();
                       if (!st.connected) {
                           // Rate limits follow the fail policy meanwhile.
                           return obs::HealthResult{
                               obs::HealthStatus::kDegraded,
                               "redis unreachable (" + std::to_string(st.errors) + " errors)"};
                       }
                       return obs::HealthResult{
                           obs::HealthStatus::kHealthy,
                           "redis: " + std::to_string(st.round_trips) + " round trips, " +
                               std::to_string(st.local_decisions) + " local refusals"};
                   }));
    } else {
        counters = bus::MakeInProcessCounters();
    }
    auto policy = gateway::ParseFailPolicy(cfg.governance.rate_limit_fail_policy);
    rate_gate =
        std::make_unique<gateway::RateGate>(*counters, *config_state, core::SystemClock::Instance(),
                                            registry, policy.value_or(gateway::FailPolicy::kOpen));

    gateway::BudgetGate::Options budget;
    budget.default_max_tokens = cfg.governance.default_max_tokens;
    budget.on_error = policy.value_or(gateway::FailPolicy::kOpen);
    budget_gate = std::make_unique<gateway::BudgetGate>(*counters, book, registry, budget);
    // The proxy routes admit rate limits and reservations in one counters call.
    budget_gate->SetRateGate(rate_gate.get());
    // Per-key budgets: the period spend read on the store executor (the thread of the flushes).
    budget_gate->SetSpendLoader([this](domain::Id key_id, int64_t since_ms,
                                       std::function<void(core::Result<domain::Micros>)> done) {
        executor->Submit([this, key_id, since_ms, done = std::move(done)] {
            done(store->KeySpendSince(key_id, since_ms));
        });
    });
    spend->SetPendingObserver(
        [bg = budget_gate.get()](const domain::RequestLogRow& row, bool flushed) {
            flushed ? bg->OnFlushed(row) : bg->OnRecorded(row);
        });

    const auto& g = cfg.governance;
    domain::BreakerOptions bo;
    bo.window_ms = g.breaker_window_ms;
    bo.min_requests = g.breaker_min_requests;
    bo.failure_ratio = g.breaker_failure_percent / 100.0;
    bo.open_ms = g.breaker_open_ms;
    deployment_health = std::make_unique<gateway::DeploymentHealth>(bo, registry);
    deployment_health->SetOnChange([this](const gateway::DeploymentHealth::Change& c) {
        const auto to = domain::ToString(c.to);
        if (c.to == domain::WindowBreaker::State::kOpen) {
            spdlog::warn("circuit breaker of provider '{}' ({}, mapping {}) opened",
                         c.provider_name, c.alias, c.mapping_id);
        } else {
            spdlog::info("circuit breaker of provider '{}' ({}, mapping {}) is {}", c.provider_name,
                         c.alias, c.mapping_id, to);
        }
        // This instance's view, to this instance's clients (every instance judges the
        // providers it talks to).
        if (hubs) {
            const char* status = c.to == domain::WindowBreaker::State::kClosed ? "Healthy"
                                 : c.to == domain::WindowBreaker::State::kOpen ? "Unhealthy"
                                                                               : "Degraded";
            hubs->OnProviderHealthChanged(
                c.provider_id, status,
                "circuit breaker " + std::string(to) + " for model '" + c.alias + "'");
        }
    });
    return {};
}

void App::Impl::DisableProviderKey(domain::Id provider_key_id, int status) {
    // Off the loop: the store call and the reload run on the executor. Concurrent reports of
    // the same key find it already disabled.
    executor->Submit([this, provider_key_id, status] {
        auto key = store->GetProviderKey(provider_key_id);
        if (!key || !*key || !(*key)->is_enabled) {
            return;
        }
        domain::ProviderKey k = **key;
        k.is_enabled = false;
        k.updated_at_ms = core::SystemClock::Instance().NowUnixMs();
        if (auto r = store->UpdateProviderKey(k); !r) {
            spdlog::error("could not disable provider key #{}: {}", provider_key_id,
                          r.error().message);
            return;
        }
        if (auto r = config_state->ReloadOnExecutor(); !r) {
            spdlog::error("configuration reload failed: {}", r.error().message);
        }
        spdlog::warn("provider key #{} of provider {} disabled: the provider answered HTTP {}",
                     provider_key_id, k.provider_id, status);
        ConfigCommitted();
        if (admin_deps && admin_deps->on_config_change) {
            admin_deps->on_config_change(
                admin::ConfigChange{"ProviderKey", "Updated", provider_key_id, ""});
        }
        if (hubs) {
            hubs->OnProviderHealthChanged(k.provider_id, "Degraded",
                                          "provider key #" + std::to_string(provider_key_id) +
                                              " was rejected (HTTP " + std::to_string(status) +
                                              ") and disabled");
        }
    });
}

core::Result<void> App::Impl::InitTasks(const std::string& host, uint16_t port) {
    auto& registry = obs::Registry::Global();
    const auto& clock = core::SystemClock::Instance();
    worker_role = config::HasRole(cfg, "worker");
    std::vector<core::Loop*> loops;
    for (size_t i = 0; i < runtime->size(); ++i) {
        loops.push_back(&runtime->loop(i));
    }
    // The Backplane: Redis pub/sub when configured (task events reach every instance and its
    // hubs), else in-process.
    if (!cfg.redis.url.empty()) {
        bus::RedisBackplaneOptions ro;
        ro.url = cfg.redis.url;
        ro.channel_prefix = cfg.redis.prefix;
        auto made = bus::MakeRedisBackplane(std::move(ro));
        if (!made) {
            return tl::unexpected(made.error());
        }
        redis_backplane = made->get();
        backplane = std::move(*made);
        auto endpoint = redis::ParseUrl(cfg.redis.url);  // valid: the backplane accepted it
        spdlog::info("backplane: {}",
                     endpoint ? redis::RedactedUrl(*endpoint) : std::string("redis"));
        auto* rb = redis_backplane;
        health.Add("backplane", {"ready"}, obs::SyncHealthCheck([rb] {
                       auto st = rb->Stats();
                       if (!st.publisher_connected || !st.subscriber_connected) {
                           // Local delivery goes on; other instances miss this one's events.
                           return obs::HealthResult{obs::HealthStatus::kDegraded,
                                                    "redis unreachable (" +
                                                        std::to_string(st.publish_failed) +
                                                        " publishes failed)"};
                       }
                       return obs::HealthResult{obs::HealthStatus::kHealthy,
                                                "redis: " + std::to_string(st.published) +
                                                    " published, " + std::to_string(st.delivered) +
                                                    " delivered"};
                   }));
    } else {
        backplane = bus::MakeInProcessBackplane();
    }

    // Webhook delivery settings (specs/api.md §6).
    auto& wc = cfg.webhooks;
    webhook_options.max_retries = wc.max_retries;
    webhook_options.retry_base = std::chrono::milliseconds(wc.retry_base_ms);
    webhook_options.retry_max = std::chrono::milliseconds(wc.retry_max_ms);
    webhook_options.retry_after_max = webhook_options.retry_max;  // Retry-After is capped too
    webhook_options.request_timeout = std::chrono::milliseconds(wc.request_timeout_ms);
    webhook_options.connect_timeout = std::chrono::milliseconds(wc.connect_timeout_ms);
    webhook_options.breaker_failures = wc.breaker_failures;
    webhook_options.breaker_open = std::chrono::milliseconds(wc.breaker_open_ms);

    // The work queue: RabbitMQ when configured, else the embedded queue in the data directory.
    bus::QueueOptions task_queue;
    task_queue.partitions = cfg.rabbitmq.partition_count;
    task_queue.prefetch = cfg.rabbitmq.prefetch_count;
    task_queue.concurrency = cfg.rabbitmq.concurrent_message_limit;
    std::map<std::string, bus::QueueOptions, std::less<>> topics;
    topics[std::string(tasks::kTasksTopic)] = task_queue;
    topics[webhook_options.topic] = webhooks::WebhookQueueOptions(webhook_options, task_queue);
    if (!cfg.rabbitmq.host.empty()) {
        bus::RabbitMqQueueOptions o;
        o.host = cfg.rabbitmq.host;
        o.port = cfg.rabbitmq.port;
        o.user = cfg.rabbitmq.username;
        o.password = cfg.rabbitmq.password;
        o.vhost = cfg.rabbitmq.vhost;
        o.instance_id = instance_id;  // partition ownership across instances (heartbeats)
        o.member_heartbeat = std::chrono::milliseconds(cfg.rabbitmq.member_heartbeat_ms);
        o.member_timeout = std::chrono::milliseconds(cfg.rabbitmq.member_timeout_ms);
        o.loops = loops;
        o.defaults = task_queue;
        o.topics = topics;
        queue = bus::MakeRabbitMqQueue(std::move(o));
    } else {
        bus::EmbeddedQueueOptions o;
        o.path = (fs::path(cfg.store.data_dir) / "queue.db").string();
        o.loops = loops;
        o.defaults = task_queue;
        o.topics = topics;
        queue = bus::MakeEmbeddedQueue(std::move(o));
    }

    // Media: a directory (default <data_dir>/media) served at /v1/media/{key}.
    std::string base = cfg.server.public_base_url;
    if (base.empty()) {
        bool wildcard = host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
        std::string h = wildcard ? "127.0.0.1" : host;
        if (h.find(':') != std::string::npos && h.front() != '[') {
            h = "[" + h + "]";
        }
        base = "http://" + h + ":" + std::to_string(port);
    }
    while (!base.empty() && base.back() == '/') {
        base.pop_back();
    }
    std::string media_dir = cfg.tasks.media_dir.empty()
                                ? (fs::path(cfg.store.data_dir) / "media").string()
                                : cfg.tasks.media_dir;
    auto opened = media::OpenLocalMediaStore(media_dir, base);
    if (!opened) {
        return tl::unexpected(opened.error());
    }
    media = std::move(*opened);

    http_client::Timeouts timeouts;
    timeouts.connect = std::chrono::milliseconds(cfg.upstream.connect_timeout_ms);
    timeouts.first_byte = std::chrono::milliseconds(cfg.upstream.first_byte_timeout_ms);
    timeouts.idle = std::chrono::milliseconds(cfg.upstream.idle_timeout_ms);
    timeouts.total = std::chrono::milliseconds(cfg.upstream.total_timeout_ms);
    jobs = std::make_unique<tasks::ProviderJobs>(
        [this](size_t i) -> http_client::Client& { return *clients[i]; }, timeouts);

    // Webhooks: their own pooled clients (receivers are not upstream providers), secrets,
    // delivery records, the publisher the engine queues through, and the delivery worker.
    auto pool = webhooks::WebhookPoolOptions();
    pool.max_connections_per_host = wc.max_connections_per_host;
    for (size_t i = 0; i < runtime->size(); ++i) {
        webhook_clients.push_back(
            http_client::MakeClient(runtime->loop(i), pool, http_client::ClientKind::kCurl));
    }
    secrets =
        std::make_unique<webhooks::SecretService>(*store, *executor, *box, clock, webhook_options);
    recorder = std::make_unique<webhooks::DeliveryRecorder>(*store, *executor, runtime->loop(0),
                                                            webhook_options, registry);
    publisher =
        std::make_unique<webhooks::WebhookPublisher>(*queue, *recorder, clock, webhook_options);
    if (worker_role) {
        auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
        auto rng_mu = std::make_shared<std::mutex>();
        webhook_worker = std::make_unique<webhooks::DeliveryWorker>(
            webhooks::WorkerDeps{
                *queue, loops,
                [this](size_t i) -> http_client::Client& { return *webhook_clients[i]; }, *secrets,
                *recorder, *store, *executor, clock, &registry,
                [rng, rng_mu] {
                    std::lock_guard lock(*rng_mu);
                    return std::uniform_real_distribution<double>(0.0, 1.0)(*rng);
                }},
            webhook_options);
        webhook_worker->Register();
    }

    tasks::TaskOptions topt;
    topt.poll_interval = std::chrono::milliseconds(cfg.tasks.poll_interval_ms);
    topt.retry_base = std::chrono::milliseconds(cfg.tasks.retry_base_ms);
    topt.retry_max = std::chrono::milliseconds(cfg.tasks.retry_max_ms);
    topt.max_retries = cfg.tasks.max_retries;
    topt.sweep_interval = std::chrono::milliseconds(cfg.tasks.sweep_interval_ms);
    auto* pub = publisher.get();
    task_engine = std::make_shared<tasks::TaskEngine>(tasks::TaskEngineDeps{
        *store, *executor, *config_state, *spend, *queue, *backplane, *media, *jobs, clock, topt,
        [pub, &clock](const domain::AsyncTask& task, std::string_view event_type,
                      std::string delivery_id, std::string payload,
                      std::function<void(core::Result<void>)> done) {
            webhooks::WebhookEvent e;
            e.delivery_id = std::move(delivery_id);
            e.event_type = std::string(event_type);
            e.task_id = task.id;
            e.virtual_key_id = task.virtual_key_id;
            e.url = task.webhook_url;
            e.headers = webhooks::DecodeHeaders(task.webhook_headers_json);
            e.payload = std::move(payload);
            e.timestamp_s = clock.NowUnixMs() / 1000;
            std::vector<webhooks::WebhookEvent> batch;
            batch.push_back(std::move(e));
            pub->Enqueue(std::move(batch), std::move(done));
        }});
    task_engine->SubscribeEvents();
    if (worker_role) {
        auto next = std::make_shared<std::atomic<size_t>>(0);
        auto* rt = runtime.get();
        task_engine->StartWorker([rt, next]() -> core::Loop& {
            return rt->loop(next->fetch_add(1, std::memory_order_relaxed) % rt->size());
        });
    }
    tasks::RegisterTaskRoutes(router, std::make_shared<tasks::TaskRoutesDeps>(tasks::TaskRoutesDeps{
                                          task_engine, *config_state, book, *media, clock, base}));
    webhooks::RegisterWebhookAdminRoutes(
        router, std::make_shared<webhooks::WebhookAdminDeps>(webhooks::WebhookAdminDeps{
                    *store, *executor, *secrets, *publisher, *recorder, clock, master_key,
                    // Other instances drop their cached copy of the key's signing secrets.
                    [bp = backplane.get()](int64_t key_id) {
                        bp->Publish(std::string(kSecretRotatedChannel), std::to_string(key_id));
                    }}));
    secret_subscription =
        backplane->Subscribe(std::string(kSecretRotatedChannel),
                             [sv = secrets.get()](std::string_view, std::string_view payload) {
                                 int64_t key_id = 0;
                                 auto [end, ec] = std::from_chars(
                                     payload.data(), payload.data() + payload.size(), key_id);
                                 if (ec == std::errc() && end == payload.data() + payload.size()) {
                                     sv->Invalidate(key_id);
                                 }
                             });

    if (auto started = queue->Start(); !started) {
        return core::Fail(started.error().code, std::string("work queue (") +
                                                    std::string(queue->Engine()) +
                                                    ") did not start: " + started.error().message);
    }
    spdlog::info("work queue: {} ({} partitions); media: {} at {}/v1/media/; roles: {}",
                 queue->Engine(), task_queue.partitions, media_dir, base, cfg.roles);

    queue_gauge = &registry.Gauge("conduit_queue_messages",
                                  "Work queue messages by topic and state (refreshed every 5 s).",
                                  {"topic", "state"});
    queue_owned_gauge = &registry.Gauge(
        "conduit_queue_partitions_owned",
        "Work queue partitions this instance consumes, by topic (RabbitMQ; refreshed every 5 s).",
        {"topic"});
    queue_members_gauge = &registry.Gauge("conduit_queue_members",
                                          "Instances sharing the work queue partitions, as this "
                                          "one sees them (refreshed every 5 s).");
    return {};
}

void App::Impl::InitHubs() {
    const auto& hc = cfg.hubs;
    hubs::HubsOptions o;
    o.hub.keep_alive = std::chrono::milliseconds(hc.keep_alive_ms);
    o.hub.client_timeout = std::chrono::milliseconds(hc.client_timeout_ms);
    o.hub.handshake_timeout = std::chrono::milliseconds(hc.handshake_timeout_ms);
    o.hub.max_message_bytes = static_cast<size_t>(hc.max_message_bytes);
    o.hub.long_poll_timeout = std::chrono::milliseconds(hc.long_poll_timeout_ms);
    o.hub.disconnect_timeout = std::chrono::milliseconds(hc.disconnect_timeout_ms);
    {
        const auto offered = core::SplitTrimmed(hc.transports, ',');
        auto has = [&offered](std::string_view name) {
            return std::any_of(offered.begin(), offered.end(),
                               [name](const std::string& t) { return core::IEquals(t, name); });
        };
        o.hub.websockets = has("WebSockets");
        o.hub.server_sent_events = has("ServerSentEvents");
        o.hub.long_polling = has("LongPolling");
    }
    o.hub.cors_origins = core::SplitTrimmed(hc.cors_origins, ',');
    o.hub.cors_extra_headers = {"x-api-key"};
    o.max_connections_per_key = hc.max_connections_per_key;
    o.method_rate_per_minute = hc.method_rate_per_minute;
    const auto& clock = core::SystemClock::Instance();
    auto* cs = config_state.get();
    auto engine = task_engine;
    hubs = hubs::RegisterHubs(
        router, hubs::HubsDeps{
                    // The virtual key as the task routes take it (Bearer / x-api-key), or the
                    // access_token query parameter the SignalR clients send for SSE and browsers.
                    [cs, &clock](const net::Request& req,
                                 std::string_view token) -> std::optional<domain::Id> {
                        auto snap = cs->Get();
                        std::string_view presented =
                            token.empty() ? gateway::OpenAIProxy::PresentedKey(req) : token;
                        auto key = snap->Authenticate(presented, clock.NowUnixMs());
                        if (!key) {
                            return std::nullopt;
                        }
                        return (*key)->key.id;
                    },
                    [engine](core::Loop& loop, std::string task_id, domain::Id key_id,
                             std::function<void(core::Result<domain::AsyncTask>)> done) {
                        engine->Get(loop, std::move(task_id), key_id, std::move(done));
                    },
                    *backplane, clock, o,
                    // Cross-instance hub sends only when there are other instances (Redis).
                    redis_backplane != nullptr ? backplane.get() : nullptr,
                    // Navigation items from the store's mappings and providers (read on the
                    // store executor; the snapshot holds only the enabled ones).
                    [this](std::function<void(core::Result<hubs::NavigationData>)> done) {
                        executor->Submit([this, done = std::move(done)] {
                            auto data = store->LoadConfig();
                            if (!data) {
                                done(tl::unexpected(data.error()));
                                return;
                            }
                            done(hubs::NavigationData{std::move(data->mappings),
                                                      std::move(data->providers)});
                        });
                    },
                    // Method invocations against the key's limits, through the shared counters
                    // (cluster-wide in Redis mode).
                    [rg = rate_gate.get(), per_minute = hc.method_rate_per_minute](
                        domain::Id key_id, std::function<void(std::optional<std::string>)> done) {
                        rg->AdmitInvocation(key_id, per_minute, std::move(done));
                    }});
    hubs->RefreshNavigation();
    spdlog::info("hubs: {}, {}, {}, {}, {}, {}", hubs::kTasksHubPath, hubs::kImageHubPath,
                 hubs::kVideoHubPath, hubs::kSpendHubPath, hubs::kNotificationsHubPath,
                 hubs::kNavigationHubPath);
}

namespace {
constexpr std::string_view kConfigVersionSetting = "config.version";
constexpr std::string_view kConfigInvalidateChannel = "conduit.config.invalidate";
}  // namespace

void App::Impl::ConfigCommitted() {
    std::string version = core::HexEncode(core::RandomBytes(8));
    if (auto r = store->PutSetting(kConfigVersionSetting, version); !r) {
        spdlog::warn("configuration version not recorded: {}", r.error().message);
    } else {
        config_version_seen = version;
    }
    backplane->Publish(std::string(kConfigInvalidateChannel), instance_id);
}

void App::Impl::ReloadConfigFromPeers() {
    executor->Submit([this] {
        auto v = store->GetSetting(kConfigVersionSetting);
        if (v && *v) {
            config_version_seen = **v;
        }
        if (auto r = config_state->ReloadOnExecutor(); !r) {
            spdlog::error("configuration reload (change on another instance) failed: {}",
                          r.error().message);
        }
    });
}

void App::Impl::ScheduleConfigCheck() {
    executor->Submit([this] {
        auto v = store->GetSetting(kConfigVersionSetting);
        if (!v || !*v || **v == config_version_seen) {
            return;
        }
        config_version_seen = **v;
        spdlog::info("configuration changed on another instance: reloading");
        if (auto r = config_state->ReloadOnExecutor(); !r) {
            spdlog::error("configuration reload failed: {}", r.error().message);
        }
    });
    config_check_timer = runtime->loop(0).StartTimer(3s, [this] { ScheduleConfigCheck(); });
}

void App::Impl::InitHubSources() {
    admin_deps->on_reloaded = [this] { ConfigCommitted(); };
    config_subscription = backplane->Subscribe(std::string(kConfigInvalidateChannel),
                                               [this](std::string_view, std::string_view origin) {
                                                   if (origin != instance_id) {
                                                       ReloadConfigFromPeers();
                                                   }
                                               });
    // Admin configuration changes go to every instance (their hubs send ModelMappingChanged and
    // NavigationStateUpdated to their own clients).
    auto* bp = backplane.get();
    admin_deps->on_config_change = [bp](const admin::ConfigChange& c) {
        bp->Publish(std::string(hubs::kConfigChangedChannel),
                    hubs::ConfigChangeJson(
                        hubs::ConfigChange{c.entity, c.change_type, c.id, c.model_alias}));
    };
    if (hubs) {
        notifications_out = hubs->notifications;
        spend_out = hubs->spend;
    } else if (redis_backplane != nullptr) {
        notifications_out = hubs::HubPublisher(*backplane, hubs::kNotificationsHubPath);
        spend_out = hubs::HubPublisher(*backplane, hubs::kSpendHubPath);
    }
    if (notifications_out) {
        auto out = notifications_out;
        admin_deps->announce = [out](const std::string& message, const std::string& severity) {
            out->SendToAll("SystemAnnouncement",
                           boost::json::array{boost::json::string_view(message),
                                              boost::json::string_view(severity)});
        };
    }
    if (spend_out) {
        // SpendUpdate after every billed request: computed from the snapshot and the
        // BalanceBook (no store access), one publish per request (no coalescing: each update
        // carries its own request's metadata).
        auto out = spend_out;
        auto* cs = config_state.get();
        auto* bk = &book;
        spend->SetObserver([out, cs, bk](const domain::RequestLogRow& row) {
            if (!hubs::IsBilled(row) || (!out->has_backplane() && out->ConnectionCount() == 0)) {
                return;  // not billed, or one instance and nobody on the spend hub
            }
            hubs::SpendTotals totals;
            auto snap = cs->Get();
            if (const auto* g = snap->FindGroup(row.group_id)) {
                auto available = bk->Available(row.group_id);
                totals.budget_remaining = available;
                // Lifetime spend as of the snapshot plus what was spent since (balance drop).
                totals.total_spend = g->lifetime_spent + (available ? g->balance - *available : 0);
            }
            if (const auto* deps = snap->Deployments(row.model_alias)) {
                for (const auto& d : *deps) {
                    if (d.mapping.provider_model_id == row.provider_model) {
                        totals.provider = d.provider.name;
                        break;
                    }
                }
            }
            hubs::SendSpendUpdate(*out, row, totals);
        });
        budget_gate->SetAlertSink([out](const gateway::BudgetGate::Alert& a) {
            hubs::BudgetAlertInfo info;
            info.key_id = a.key_id;
            info.percent = a.percent;
            info.current_spend = a.current_spend;
            info.budget = a.budget;
            info.period = std::string(domain::BudgetPeriodName(a.period));
            info.period_end_ms = a.period_end_ms;
            hubs::SendBudgetAlert(*out, info);
        });
    }
}

void App::Impl::RefreshQueueStats() {
    // Stats may block (a SQLite read, a broker round trip): asked on the store executor.
    executor->Submit([this] {
        for (std::string_view topic : {tasks::kTasksTopic, std::string_view("webhooks")}) {
            auto st = queue->Stats(topic);
            if (!st) {
                continue;  // the work_queue health check reports why
            }
            queue_gauge->With({topic, "ready"}).Set(static_cast<double>(st->ready));
            queue_gauge->With({topic, "delayed"}).Set(static_cast<double>(st->delayed));
            queue_gauge->With({topic, "in_flight"}).Set(static_cast<double>(st->in_flight));
            queue_gauge->With({topic, "dead"}).Set(static_cast<double>(st->dead));
            if (st->partitions_owned >= 0) {
                queue_owned_gauge->With({topic}).Set(static_cast<double>(st->partitions_owned));
            }
            queue_members_gauge->Set(static_cast<double>(st->members));
        }
    });
}

void App::Impl::Dispatch(const net::ExchangePtr& ex) {
    auto& req = ex->request();
    auto incoming = req.headers.Get("x-request-id");
    ex->extra_headers().Add("X-Request-Id", core::IsValidRequestId(incoming)
                                                ? std::string(incoming)
                                                : core::NewRequestId());
    auto match = router.Match(req.method, req.path(), req.path_params);
    std::string_view route = match.handler != nullptr ? match.name : std::string_view("unmatched");
    int64_t received = req.received_ns;
    HttpMetrics* hm = http_metrics.get();
    ex->SetOnComplete([hm, route, received](int status, size_t) {
        double secs = static_cast<double>(core::SystemClock::SteadyNowNs() - received) / 1e9;
        hm->Record(route, status, secs);
    });
    if (match.handler == nullptr) {
        if (match.path_matched) {
            net::Response r = gateway::ErrorResponse(
                {core::ErrorCode::kMethodNotAllowed,
                 "Method " + req.method + " is not allowed on " + std::string(req.path()) + ".",
                 ""});
            r.headers.Add("Allow", match.allowed_methods);
            ex->Respond(std::move(r));
        } else {
            ex->Respond(gateway::ErrorResponse(
                {core::ErrorCode::kNotFound,
                 "Unknown route " + req.method + " " + std::string(req.path()) + ".", ""}));
        }
        return;
    }
    (*match.handler)(ex);
}

void App::Impl::RegisterRoutes() {
    auto* p = proxy.get();
    router.Add("POST", "/v1/chat/completions", [p](const auto& ex) { p->ChatCompletions(ex); });
    router.Add("POST", "/v1/completions", [p](const auto& ex) { p->Completions(ex); });
    router.Add("POST", "/v1/embeddings", [p](const auto& ex) { p->Embeddings(ex); });
    router.Add("POST", "/v1/images/generations", [p](const auto& ex) { p->ImageGenerations(ex); });
    router.Add("GET", "/v1/models", [p](const auto& ex) { p->ListModels(ex); });
    router.Add("GET", "/v1/models/{id}", [p](const auto& ex) { p->GetModel(ex); });

    router.Add("GET", "/metrics", [](const net::ExchangePtr& ex) {
        ex->Respond(net::Response::Text(200, obs::Registry::Global().Render(),
                                        "text/plain; version=0.0.4; charset=utf-8"));
    });
    auto health_route = [this](std::optional<std::string> tag) {
        return [this, tag](const net::ExchangePtr& ex) {
            health.Run(tag, ex->loop(), 5000ms, [ex](obs::HealthReport report) {
                net::Response r = net::Response::Json(report.HttpStatus(), report.ToJson());
                r.headers.Add("Cache-Control", "no-store");
                ex->Respond(std::move(r));
            });
        };
    };
    router.Add("GET", "/health", health_route(std::nullopt));
    router.Add("GET", "/health/live", health_route(std::string("live")));
    router.Add("GET", "/health/ready", health_route(std::string("ready")));

    admin_deps = std::make_shared<admin::AdminDeps>(admin::AdminDeps{
        *store, *executor, *config_state, book, *box, core::SystemClock::Instance(), master_key});
    admin_deps->on_balance_adjusted = [this](domain::Id group_id, domain::Micros delta) {
        budget_gate->Credit(group_id, delta);
    };
    admin::RegisterAdminRoutes(router, admin_deps);  // hooks set in InitHubSources()
}

void App::Impl::RegisterHealthChecks() {
    health.Add("process", {"live"}, obs::SyncHealthCheck([] {
                   return obs::HealthResult{obs::HealthStatus::kHealthy, "event loops running"};
               }));
    // Readiness really asks the store: the check runs on the store executor and answers from
    // there (a stuck or unreachable database shows up as a timeout or an error).
    auto* st = store.get();
    auto* exec = executor.get();
    health.Add("store", {"ready"}, [st, exec](std::function<void(obs::HealthResult)> done) {
        exec->Submit([st, done = std::move(done)] {
            auto r = st->Ping();
            if (r) {
                done({obs::HealthStatus::kHealthy, std::string(st->Engine()) + " reachable"});
            } else {
                done({obs::HealthStatus::kUnhealthy, r.error().message});
            }
        });
    });
    auto* sp = spend.get();
    auto* cs = config_state.get();
    health.Add("spend_flush", {"ready"}, obs::SyncHealthCheck([sp] {
                   // Flushes that keep failing mean spend accumulates only in memory.
                   if (sp->PendingRows() > 100000) {
                       return obs::HealthResult{
                           obs::HealthStatus::kDegraded,
                           std::to_string(sp->PendingRows()) + " spend rows waiting to be written"};
                   }
                   return obs::HealthResult{obs::HealthStatus::kHealthy,
                                            std::to_string(sp->flushes()) + " flushes, " +
                                                std::to_string(sp->failures()) + " failures"};
               }));
    health.Add("configuration", {"ready"}, obs::SyncHealthCheck([cs] {
                   auto w = cs->warnings();
                   if (!w.empty()) {
                       return obs::HealthResult{obs::HealthStatus::kDegraded, w.front()};
                   }
                   return obs::HealthResult{obs::HealthStatus::kHealthy,
                                            "snapshot version " + std::to_string(cs->version())};
               }));
    // The work queue answers (its Stats round trip runs on the executor, like the store check).
    health.Add("work_queue", {"ready"}, [this](std::function<void(obs::HealthResult)> done) {
        executor->Submit([this, done = std::move(done)] {
            auto stats = queue->Stats(tasks::kTasksTopic);
            if (!stats) {
                done({obs::HealthStatus::kUnhealthy,
                      std::string(queue->Engine()) + ": " + stats.error().message});
                return;
            }
            std::string detail = std::string(queue->Engine()) + ": " +
                                 std::to_string(stats->ready) + " task messages ready, " +
                                 std::to_string(stats->in_flight) + " in flight, " +
                                 std::to_string(stats->dead) + " dead";
            // A backlog the workers are not draining (or no worker role at all) degrades.
            done({stats->ready > cfg.tasks.queue_degraded_depth ? obs::HealthStatus::kDegraded
                                                                : obs::HealthStatus::kHealthy,
                  detail});
        });
    });
    std::vector<http_client::Client*> raw;
    for (auto& c : clients) {
        raw.push_back(c.get());
    }
    int limit = cfg.upstream.max_total_connections;
    health.Add("upstream_pool", {"ready"}, obs::SyncHealthCheck([raw, limit] {
                   size_t active = 0;
                   for (auto* c : raw) {
                       active += c->Active();  // a size read; approximate across threads
                   }
                   double ratio = static_cast<double>(active) /
                                  static_cast<double>(limit * static_cast<int>(raw.size()));
                   if (ratio >= 0.9) {
                       return obs::HealthResult{obs::HealthStatus::kDegraded,
                                                std::to_string(active) +
                                                    " upstream calls in "
                                                    "flight (≥ 90 % of the "
                                                    "pool)"};
                   }
                   return obs::HealthResult{obs::HealthStatus::kHealthy,
                                            std::to_string(active) + " upstream calls in flight"};
               }));
    // Provider deployments whose circuit breaker is open or probing: Degraded (routing skips
    // them; requests still succeed elsewhere while any deployment is up).
    auto* dh = deployment_health.get();
    health.Add("providers", {"ready"}, obs::SyncHealthCheck([dh] {
                   const int64_t now = gateway::SteadyNowMs();
                   std::string down;
                   size_t n = 0;
                   for (const auto& st : dh->Statuses(now)) {
                       if (st.state == domain::WindowBreaker::State::kClosed) {
                           continue;
                       }
                       ++n;
                       if (n <= 5) {
                           down += (down.empty() ? "" : ", ") + st.provider_name + " (" + st.alias +
                                   ", " + std::string(domain::ToString(st.state)) + ")";
                       }
                   }
                   if (n > 0) {
                       return obs::HealthResult{
                           obs::HealthStatus::kDegraded,
                           std::to_string(n) + " deployment(s) with an open breaker: " + down};
                   }
                   return obs::HealthResult{obs::HealthStatus::kHealthy,
                                            "every provider deployment's breaker is closed"};
               }));
}

core::Result<void> App::Impl::InitCacheStats() {
    bus::CacheStatsOptions so;
    so.stale_after = std::chrono::milliseconds(cfg.cache_stats.stale_ms);
    so.drift_tolerance_percent = cfg.cache_stats.drift_percent;
    if (!cfg.redis.url.empty()) {
        bus::RedisCacheStatsOptions ro;
        ro.url = cfg.redis.url;
        ro.key_prefix = cfg.redis.prefix;
        ro.stats = so;
        auto made = bus::MakeRedisCacheStats(std::move(ro));
        if (!made) {
            return tl::unexpected(made.error());
        }
        cache_stats_sink = std::move(*made);
    } else {
        cache_stats_sink = bus::MakeInProcessCacheStats(so);
    }
    bus::CacheStatsReporter::Options ro;
    ro.instance_id = instance_id;
    ro.interval = std::chrono::milliseconds(cfg.cache_stats.interval_ms);
    ro.collect_interval = std::chrono::milliseconds(cfg.cache_stats.collect_interval_ms);
    cache_stats =
        std::make_unique<bus::CacheStatsReporter>(*cache_stats_sink, obs::CacheStats::Global(),
                                                  obs::Registry::Global(), runtime->loop(0), ro);
    auto* reporter = cache_stats.get();
    admin_deps->cache_statistics = [reporter](bool with_instances,
                                              std::function<void(core::Result<std::string>)> done) {
        reporter->Collect(with_instances, [with_instances, done = std::move(done)](
                                              core::Result<obs::ClusterCacheStats> r) {
            done(r ? core::Result<std::string>(r->ToJson(with_instances))
                   : tl::unexpected(r.error()));
        });
    };
    health.Add("cache_statistics", {"ready"}, obs::SyncHealthCheck([reporter] {
                   auto last = reporter->Last();
                   if (!last) {
                       return obs::HealthResult{obs::HealthStatus::kHealthy, "not collected yet"};
                   }
                   std::string drifting;
                   for (const auto& r : last->regions) {
                       if (r.drifting) {
                           drifting += fmt::format("{}{} {:.1f} %", drifting.empty() ? "" : ", ",
                                                   obs::CacheRegionName(r.region), r.drift_percent);
                       }
                   }
                   if (!drifting.empty()) {
                       return obs::HealthResult{
                           obs::HealthStatus::kDegraded,
                           fmt::format("drift above {} %: {}", last->tolerance_percent, drifting)};
                   }
                   return obs::HealthResult{
                       obs::HealthStatus::kHealthy,
                       fmt::format("{} instances, no drift", last->active_instances)};
               }));
    spdlog::info("cache statistics: {} every {} ms (instance {})", cache_stats_sink->Engine(),
                 cfg.cache_stats.interval_ms, instance_id);
    return {};
}

void App::Impl::BeginShutdown() {
    if (stopping.exchange(true)) {
        spdlog::warn("second stop signal: exiting without waiting");
        runtime->Stop();
        return;
    }
    auto drain = [this] {
        spdlog::info("shutting down: draining connections (grace {} ms)",
                     cfg.server.shutdown_grace_ms);
        server->Shutdown(std::chrono::milliseconds(cfg.server.shutdown_grace_ms), [this] {
            spdlog::info("connections drained");
            runtime->Stop();
        });
    };
    if (!hubs) {
        drain();
        return;
    }
    // Hub clients first: a Close message that allows reconnecting (official clients with
    // automatic reconnect move to another instance), and their SSE streams and held polls end
    // now instead of holding the drain for its whole grace period.
    auto* rt = runtime.get();
    hubs->CloseAll([rt, drain] {
        spdlog::info("hubs: connections closed (reconnect allowed)");
        rt->loop(0).Post(drain);
    });
}

int App::Run() {
    auto& d = *impl_;
    d.runtime->OnSignal([this](int) { impl_->BeginShutdown(); });
    d.spend->Start();
    d.runtime->loop(0).Post([&d] { d.ScheduleQueueStats(); });
    d.executor->Submit([&d] {
        if (auto v = d.store->GetSetting(kConfigVersionSetting); v && *v) {
            d.config_version_seen = **v;
        }
    });
    d.runtime->loop(0).Post([&d] { d.ScheduleConfigCheck(); });
    d.runtime->loop(0).Post([&d] { d.cache_stats->Start(); });
    d.runtime->Run();
    // Loops have stopped: stop the task worker and the queue (unsettled work is redelivered on
    // the next start), write pending delivery records, release the clients (they own loop
    // resources), then flush spend and close the store.
    if (d.task_engine) {
        d.task_engine->StopWorker();
    }
    if (d.queue) {
        d.queue->Stop();
    }
    if (d.recorder) {
        d.recorder->Flush();
    }
    d.webhook_clients.clear();
    d.clients.clear();
    d.spend->Stop();
    d.executor->Stop();
    spdlog::info("stopped");
    return d.exit_code.load();
}

void App::RequestStop() {
    auto* impl = impl_.get();
    impl->runtime->loop(0).Post([impl] { impl->BeginShutdown(); });
}

}  // namespace conduit::app
