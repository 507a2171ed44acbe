#include "bus/cache_stats_sink.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <map>
#include <utility>

namespace conduit::bus {
namespace {

using obs::CacheCounts;
using obs::kCacheRegionCount;

/// Adds `after - before` to `into`, field by field (unsigned wrap-around: a counter that went
/// down moves the total down).
void AddDifference(CacheCounts& into, const CacheCounts& after, const CacheCounts& before) {
    into.hits += after.hits - before.hits;
    into.misses += after.misses - before.misses;
    into.sets += after.sets - before.sets;
    into.removes += after.removes - before.removes;
    into.evictions += after.evictions - before.evictions;
    into.errors += after.errors - before.errors;
}

std::array<CacheCounts, kCacheRegionCount> CountsByRegion(const obs::InstanceSnapshot& s) {
    std::array<CacheCounts, kCacheRegionCount> out{};
    for (const auto& r : s.regions) {
        if (auto i = static_cast<size_t>(r.region); i < kCacheRegionCount) {
            out[i] = r.counts;
        }
    }
    return out;
}

class InProcessCacheStats final : public CacheStatsSink {
public:
    InProcessCacheStats(CacheStatsOptions options, const core::Clock& clock)
        : options_(options), clock_(clock) {}

    void Push(const obs::InstanceSnapshot& snapshot, PushCallback done) override {
        {
            std::lock_guard lock(mu_);
            const int64_t now = clock_.NowUnixMs();
            PruneLocked(now);
            obs::InstanceSnapshot stored = snapshot;
            stored.heartbeat_ms = now;
            const auto after = CountsByRegion(stored);
            std::array<CacheCounts, kCacheRegionCount> before{};
            if (auto it = instances_.find(snapshot.instance_id); it != instances_.end()) {
                before = CountsByRegion(it->second);
            }
            for (size_t i = 0; i < kCacheRegionCount; ++i) {
                AddDifference(global_[i], after[i], before[i]);
            }
            instances_[snapshot.instance_id] = std::move(stored);
        }
        done({});
    }

    void Collect(bool with_instances, CollectCallback done) override {
        const auto started = std::chrono::steady_clock::now();
        obs::ClusterCacheStats out;
        std::vector<obs::InstanceSnapshot> instances;
        {
            std::lock_guard lock(mu_);
            const int64_t now = clock_.NowUnixMs();
            out.generated_ms = now;
            instances.reserve(instances_.size());
            for (const auto& [id, s] : instances_) {
                instances.push_back(s);
                if (now - s.heartbeat_ms > options_.stale_after.count()) {
                    ++out.stale_instances;  // pruned by the next push, like with Redis
                } else {
                    ++out.active_instances;
                }
            }
            out.regions =
                obs::AggregateRegions(instances, global_, options_.drift_tolerance_percent);
        }
        out.mode = "embedded";
        out.tolerance_percent = options_.drift_tolerance_percent;
        if (with_instances) {
            out.instances = std::move(instances);
        }
        out.aggregation_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
                .count();
        done(std::move(out));
    }

    std::string_view Engine() const override { return "inprocess"; }

private:
    size_t PruneLocked(int64_t now) {
        size_t pruned = 0;
        for (auto it = instances_.begin(); it != instances_.end();) {
            if (now - it->second.heartbeat_ms > options_.stale_after.count()) {
                const auto before = CountsByRegion(it->second);
                for (size_t i = 0; i < kCacheRegionCount; ++i) {
                    AddDifference(global_[i], CacheCounts{}, before[i]);
                }
                it = instances_.erase(it);
                ++pruned;
            } else {
                ++it;
            }
        }
        if (pruned > 0 && instances_.empty()) {
            global_ = {};
        }
        return pruned;
    }

    CacheStatsOptions options_;
    const core::Clock& clock_;
    std::mutex mu_;  // guards instances_ and global_
    std::map<std::string, obs::InstanceSnapshot> instances_;
    std::array<CacheCounts, kCacheRegionCount> global_{};
};

constexpr std::array<double, 3> kQuantiles = {0.5, 0.95, 0.99};
constexpr std::array<std::string_view, 4> kQuantileLabels = {"0.5", "0.95", "0.99", "1"};

}  // namespace

std::unique_ptr<CacheStatsSink> MakeInProcessCacheStats(CacheStatsOptions options,
                                                        const core::Clock& clock) {
    return std::make_unique<InProcessCacheStats>(options, clock);
}

/// What the timers' callbacks share with the reporter (they may outlive it).
struct CacheStatsReporter::State {
    // Per region: the series of this instance and of the cluster, resolved once.
    struct RegionSeries {
        obs::Counter* hits = nullptr;
        obs::Counter* misses = nullptr;
        obs::Counter* sets = nullptr;
        obs::Counter* removes = nullptr;
        obs::Counter* evictions = nullptr;
        obs::Counter* errors = nullptr;
        std::array<obs::Gauge*, 4> latency{};  // p50, p95, p99, max
        obs::Gauge* cluster_hits = nullptr;
        obs::Gauge* cluster_misses = nullptr;
        obs::Gauge* cluster_hit_ratio = nullptr;
        std::array<obs::Gauge*, 4> cluster_latency{};
        obs::Gauge* drift = nullptr;
    };

    std::atomic<bool> alive{true};
    std::atomic<uint64_t> push_failures{0};
    std::atomic<bool> push_in_flight{false};
    std::atomic<bool> collect_in_flight{false};
    mutable std::mutex mu;  // guards last and exported
    std::optional<obs::ClusterCacheStats> last;
    std::array<CacheCounts, kCacheRegionCount> exported{};  // counts already added to /metrics
    std::array<RegionSeries, kCacheRegionCount> series;
    obs::Gauge* instances_active = nullptr;
    obs::Gauge* aggregation_seconds = nullptr;
    obs::Counter* push_failures_metric = nullptr;

    void Publish(const obs::ClusterCacheStats& s) {
        instances_active->Set(static_cast<double>(s.active_instances));
        aggregation_seconds->Set(s.aggregation_ms / 1000.0);
        for (const auto& agg : s.regions) {
            auto i = static_cast<size_t>(agg.region);
            if (i >= kCacheRegionCount) {
                continue;
            }
            auto& rs = series[i];
            rs.cluster_hits->Set(static_cast<double>(agg.counts.hits));
            rs.cluster_misses->Set(static_cast<double>(agg.counts.misses));
            rs.cluster_hit_ratio->Set(agg.counts.HitRate());
            for (size_t q = 0; q < kQuantiles.size(); ++q) {
                rs.cluster_latency[q]->Set(agg.latency.QuantileNs(kQuantiles[q]) / 1e9);
            }
            rs.cluster_latency[3]->Set(static_cast<double>(agg.latency.MaxNs()) / 1e9);
            rs.drift->Set(agg.drift_percent);
        }
        std::lock_guard lock(mu);
        last = s;
    }
};

CacheStatsReporter::CacheStatsReporter(CacheStatsSink& sink,
                                       obs::CacheStats& stats,
                                       obs::Registry& metrics,
                                       core::Loop& loop,
                                       Options options)
    : sink_(sink),
      stats_(stats),
      loop_(loop),
      options_(std::move(options)),
      state_(std::make_shared<State>()) {
    auto& requests = metrics.Counter("conduit_cache_requests_total",
                                     "Cache lookups of this instance by region and result.",
                                     {"region", "result"});
    auto& sets = metrics.Counter("conduit_cache_sets_total",
                                 "Entries stored in a cache of this instance.", {"region"});
    auto& removes =
        metrics.Counter("conduit_cache_removes_total",
                        "Cache entries invalidated explicitly on this instance.", {"region"});
    auto& evictions =
        metrics.Counter("conduit_cache_evictions_total",
                        "Cache entries dropped for capacity or age on this instance.", {"region"});
    auto& errors = metrics.Counter("conduit_cache_errors_total",
                                   "Cache fills that failed on this instance.", {"region"});
    auto& latency = metrics.Gauge(
        "conduit_cache_latency_seconds",
        "Cache lookup latency quantiles of this instance since start (quantile 1 = max).",
        {"region", "quantile"});
    auto& cluster_requests = metrics.Gauge(
        "conduit_cache_cluster_requests",
        "Cache lookups summed over every active instance (last collection).", {"region", "result"});
    auto& cluster_ratio =
        metrics.Gauge("conduit_cache_cluster_hit_ratio",
                      "Cache hit ratio over every active instance (last collection).", {"region"});
    auto& cluster_latency = metrics.Gauge(
        "conduit_cache_cluster_latency_seconds",
        "Cache lookup latency quantiles merged over every active instance (quantile 1 = max).",
        {"region", "quantile"});
    auto& drift = metrics.Gauge(
        "conduit_cache_drift_percent",
        "Difference between the sum of per-instance cache counts and the global aggregate.",
        {"region"});
    state_->instances_active = &metrics.Gauge(
        "conduit_cache_instances_active",
        "Instances pushing cache statistics (heartbeat younger than the staleness).");
    state_->aggregation_seconds =
        &metrics.Gauge("conduit_cache_stats_aggregation_seconds",
                       "Duration of the last collection of the cluster's cache statistics.");
    state_->push_failures_metric = &metrics.Counter("conduit_cache_stats_push_failures_total",
                                                    "Cache statistics pushes that failed.");
    for (size_t i = 0; i < kCacheRegionCount; ++i) {
        const std::string region(obs::CacheRegionName(static_cast<obs::CacheRegion>(i)));
        auto& rs = state_->series[i];
        rs.hits = &requests.With({region, "hit"});
        rs.misses = &requests.With({region, "miss"});
        rs.sets = &sets.With({region});
        rs.removes = &removes.With({region});
        rs.evictions = &evictions.With({region});
        rs.errors = &errors.With({region});
        rs.cluster_hits = &cluster_requests.With({region, "hit"});
        rs.cluster_misses = &cluster_requests.With({region, "miss"});
        rs.cluster_hit_ratio = &cluster_ratio.With({region});
        rs.drift = &drift.With({region});
        for (size_t q = 0; q < kQuantileLabels.size(); ++q) {
            rs.latency[q] = &latency.With({region, kQuantileLabels[q]});
            rs.cluster_latency[q] = &cluster_latency.With({region, kQuantileLabels[q]});
        }
    }
}

CacheStatsReporter::~CacheStatsReporter() { state_->alive = false; }

void CacheStatsReporter::Start() {
    Tick();
    if (options_.collect_interval.count() > 0) {
        CollectTick();
    }
}

void CacheStatsReporter::Stop() {
    state_->alive = false;
    for (auto* t : {&push_timer_, &collect_timer_}) {
        if (*t) {
            (*t)->Cancel();
            t->reset();
        }
    }
}

void CacheStatsReporter::Tick() {
    if (!state_->alive) {
        return;
    }
    PushNow();
    push_timer_ = loop_.StartTimer(options_.interval, [this] { Tick(); });
}

void CacheStatsReporter::CollectTick() {
    if (!state_->alive) {
        return;
    }
    if (!state_->collect_in_flight.exchange(true)) {
        std::weak_ptr<State> weak = state_;
        sink_.Collect(false, [weak](core::Result<obs::ClusterCacheStats> r) {
            auto st = weak.lock();
            if (!st) {
                return;
            }
            st->collect_in_flight = false;
            if (!r) {
                spdlog::debug("cache statistics: collect failed: {}", r.error().message);
                return;
            }
            if (st->alive) {
                st->Publish(*r);
            }
        });
    }
    collect_timer_ = loop_.StartTimer(options_.collect_interval, [this] { CollectTick(); });
}

void CacheStatsReporter::PushNow(std::function<void(core::Result<void>)> done) {
    obs::InstanceSnapshot snap;
    snap.instance_id = options_.instance_id;
    snap.regions = stats_.Snapshot();
    UpdateLocalMetrics(snap.regions);
    // One push at a time: a slow engine gets the newer cumulative figures next tick instead of
    // a queue of stale ones (pushes are cumulative, so skipping one loses nothing).
    if (!done && state_->push_in_flight.exchange(true)) {
        return;
    }
    const bool tracked = !done;
    std::weak_ptr<State> weak = state_;
    sink_.Push(snap, [weak, tracked, done = std::move(done)](core::Result<void> r) {
        if (auto st = weak.lock()) {
            if (tracked) {
                st->push_in_flight = false;
            }
            if (!r) {
                st->push_failures.fetch_add(1);
                st->push_failures_metric->Inc();
                spdlog::debug("cache statistics: push failed: {}", r.error().message);
            }
        }
        if (done) {
            done(std::move(r));
        }
    });
}

void CacheStatsReporter::Collect(bool with_instances, CacheStatsSink::CollectCallback done) {
    std::weak_ptr<State> weak = state_;
    sink_.Collect(with_instances,
                  [weak, done = std::move(done)](core::Result<obs::ClusterCacheStats> r) {
                      if (r) {
                          if (auto st = weak.lock(); st && st->alive) {
                              st->Publish(*r);
                          }
                      }
                      done(std::move(r));
                  });
}

std::optional<obs::ClusterCacheStats> CacheStatsReporter::Last() const {
    std::lock_guard lock(state_->mu);
    return state_->last;
}

uint64_t CacheStatsReporter::PushFailures() const { return state_->push_failures.load(); }

void CacheStatsReporter::UpdateLocalMetrics(const std::vector<obs::RegionSnapshot>& regions) {
    std::lock_guard lock(state_->mu);
    for (const auto& r : regions) {
        auto i = static_cast<size_t>(r.region);
        if (i >= kCacheRegionCount) {
            continue;
        }
        auto& rs = state_->series[i];
        auto& prev = state_->exported[i];
        const auto& c = r.counts;
        // Counts only grow locally; a snapshot read slightly out of order never goes back.
        auto add = [](obs::Counter* m, uint64_t now, uint64_t& before) {
            if (now > before) {
                m->Inc(now - before);
                before = now;
            }
        };
        add(rs.hits, c.hits, prev.hits);
        add(rs.misses, c.misses, prev.misses);
        add(rs.sets, c.sets, prev.sets);
        add(rs.removes, c.removes, prev.removes);
        add(rs.evictions, c.evictions, prev.evictions);
        add(rs.errors, c.errors, prev.errors);
        for (size_t q = 0; q < kQuantiles.size(); ++q) {
            rs.latency[q]->Set(r.latency.QuantileNs(kQuantiles[q]) / 1e9);
        }
        rs.latency[3]->Set(static_cast<double>(r.latency.MaxNs()) / 1e9);
    }
}

}  // namespace conduit::bus
