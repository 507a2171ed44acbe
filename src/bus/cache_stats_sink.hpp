#pragma once

#include "core/clock.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"
#include "obs/cache_stats.hpp"
#include "obs/metrics.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace conduit::bus {

/// Settings shared by the cache statistics adapters.
struct CacheStatsOptions {
    /// An instance whose last push is older than this is stale: it leaves the registry and its
    /// figures leave the global aggregate (pruned by the next push of any instance).
    std::chrono::milliseconds stale_after{120'000};
    /// A region drifts when Σ per-instance counts and the global aggregate differ by more than
    /// this (percent).
    double drift_tolerance_percent = 5.0;
};

/// Where instances push their cache statistics and where the cluster view comes from
/// (DESIGN §1: in-process when embedded, Redis when distributed). Per instance, the engine
/// holds the last pushed cumulative figures and a heartbeat (registry of instances); the
/// global aggregate is kept alongside and moved by the difference between a push and the
/// instance's previous one, so a repeated push changes nothing and Σ instances = global unless
/// the engine lost data (an evicted or expired key): that is what drift detection reports.
///
/// Calls are asynchronous; `done` runs exactly once, possibly before the call returns
/// (in-process) or on the adapter's callback loop / I/O thread (Redis). Any thread.
class CacheStatsSink {
public:
    using PushCallback = std::function<void(core::Result<void>)>;
    using CollectCallback = std::function<void(core::Result<obs::ClusterCacheStats>)>;

    virtual ~CacheStatsSink() = default;

    /// Stores `snapshot` (the instance's cumulative figures, per region), heartbeats the
    /// instance and moves the global aggregate, in one atomic step (Redis: one round trip).
    /// Stale instances are pruned on the way.
    virtual void Push(const obs::InstanceSnapshot& snapshot, PushCallback done) = 0;
    /// Reads every instance's figures and the global aggregate in one atomic step (Redis: one
    /// round trip) and aggregates per region. Stale instances not pruned yet are counted (as
    /// they are in the global aggregate) and reported as stale. `with_instances` keeps the
    /// per-instance views.
    virtual void Collect(bool with_instances, CollectCallback done) = 0;
    /// "inprocess" or "redis".
    virtual std::string_view Engine() const = 0;
};

/// The in-process adapter (embedded mode, tests): the same semantics in one process. `clock`
/// must outlive it.
std::unique_ptr<CacheStatsSink> MakeInProcessCacheStats(
    CacheStatsOptions options, const core::Clock& clock = core::SystemClock::Instance());

/// Pushes this instance's statistics every `interval`, collects the cluster view every
/// `collect_interval`, and exposes both in /metrics (families conduit_cache_*). Timers run on
/// `loop`; Start/Stop on that loop's thread; Last/Collect from any thread.
class CacheStatsReporter {
public:
    struct Options {
        std::string instance_id;
        std::chrono::milliseconds interval{1000};
        /// 0 = no periodic collection (the cluster gauges and the health check then follow the
        /// on-demand collections, e.g. of the admin route).
        std::chrono::milliseconds collect_interval{10'000};
    };

    CacheStatsReporter(CacheStatsSink& sink,
                       obs::CacheStats& stats,
                       obs::Registry& metrics,
                       core::Loop& loop,
                       Options options);
    ~CacheStatsReporter();
    CacheStatsReporter(const CacheStatsReporter&) = delete;
    CacheStatsReporter& operator=(const CacheStatsReporter&) = delete;

    /// Starts the timers (the first push and collect happen at once). Loop thread.
    void Start();
    /// Stops the timers; callbacks still in flight are ignored. Loop thread; call it before
    /// destroying a started reporter.
    void Stop();
    /// Pushes now (then `done`, on the sink's callback context). Any thread.
    void PushNow(std::function<void(core::Result<void>)> done = {});
    /// Collects the cluster view now (also refreshes the cluster gauges). Any thread.
    void Collect(bool with_instances, CacheStatsSink::CollectCallback done);
    /// The last collected cluster view (nullopt before the first). Any thread.
    std::optional<obs::ClusterCacheStats> Last() const;
    /// Pushes that failed so far. Any thread.
    uint64_t PushFailures() const;

    /// This instance's figures in /metrics (counters moved by the difference since the last
    /// call, latency quantiles). Called by every push tick; public for tests. Any thread.
    void UpdateLocalMetrics(const std::vector<obs::RegionSnapshot>& regions);

private:
    struct State;
    void Tick();
    void CollectTick();

    CacheStatsSink& sink_;
    obs::CacheStats& stats_;
    core::Loop& loop_;
    Options options_;
    std::shared_ptr<State> state_;
    core::TimerPtr push_timer_;
    core::TimerPtr collect_timer_;
};

}  // namespace conduit::bus
