#include "gateway/budget_gate.hpp"

#include "core/clock.hpp"
#include "core/money.hpp"
#include "gateway/errors.hpp"
#include "obs/cache_stats.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <limits>

namespace conduit::gateway {

namespace {

// Cache statistics of the per-key period spend cache (region key_budgets).
obs::CacheRegionStats& SpendCacheStats() {
    return obs::CacheStats::Global().Region(obs::CacheRegion::kKeyBudgets);
}

constexpr int64_t kDayMs = 86'400'000;
constexpr int kThresholds[] = {80, 90, 100};

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

std::string PeriodWord(domain::BudgetPeriod p) {
    switch (p) {
        case domain::BudgetPeriod::kDaily:
            return "daily";
        case domain::BudgetPeriod::kWeekly:
            return "weekly";
        case domain::BudgetPeriod::kMonthly:
            return "monthly";
        case domain::BudgetPeriod::kTotal:
            return "total";
    }
    return "total";
}

}  // namespace

int64_t BudgetPeriodStartMs(domain::BudgetPeriod period, int64_t now_ms) {
    using namespace std::chrono;
    const int64_t day = FloorDiv(now_ms, kDayMs);
    switch (period) {
        case domain::BudgetPeriod::kDaily:
            return day * kDayMs;
        case domain::BudgetPeriod::kWeekly: {
            // 1970-01-01 was a Thursday: Monday-based weekday = (day + 3) mod 7.
            const int64_t weekday = ((day + 3) % 7 + 7) % 7;
            return (day - weekday) * kDayMs;
        }
        case domain::BudgetPeriod::kMonthly: {
            const year_month_day ymd{sys_days{days{day}}};
            const sys_days first{ymd.year() / ymd.month() / 1};
            return static_cast<int64_t>(first.time_since_epoch().count()) * kDayMs;
        }
        case domain::BudgetPeriod::kTotal:
            return 0;
    }
    return 0;
}

std::optional<int64_t> BudgetPeriodEndMs(domain::BudgetPeriod period, int64_t start_ms) {
    using namespace std::chrono;
    switch (period) {
        case domain::BudgetPeriod::kDaily:
            return start_ms + kDayMs;
        case domain::BudgetPeriod::kWeekly:
            return start_ms + 7 * kDayMs;
        case domain::BudgetPeriod::kMonthly: {
            const year_month_day ymd{sys_days{days{FloorDiv(start_ms, kDayMs)}}};
            const sys_days next{(ymd.year() / ymd.month() + months{1}) / 1};
            return static_cast<int64_t>(next.time_since_epoch().count()) * kDayMs;
        }
        case domain::BudgetPeriod::kTotal:
            return std::nullopt;
    }
    return std::nullopt;
}

domain::BudgetPeriod KeyBudgetPeriod(const domain::VirtualKey& key) {
    return domain::ParseBudgetPeriod(key.budget_duration).value_or(domain::BudgetPeriod::kTotal);
}

std::vector<int> CrossedThresholds(domain::Micros before,
                                   domain::Micros after,
                                   domain::Micros budget) {
    std::vector<int> out;
    if (budget <= 0 || after <= before) {
        return out;
    }
    for (int pct : kThresholds) {
        // spend >= pct % of budget, in exact integer arithmetic (no overflow for realistic money:
        // micro-units × 100 stays far below 2^63).
        const bool was = before * 100 >= budget * pct;
        const bool is = after * 100 >= budget * pct;
        if (is && !was) {
            out.push_back(pct);
        }
    }
    return out;
}

BudgetGate::BudgetGate(bus::Counters& counters,
                       BalanceBook& book,
                       obs::Registry& metrics,
                       Options options,
                       const core::Clock& clock)
    : counters_(counters),
      book_(book),
      options_(options),
      clock_(clock),
      refusals_(metrics.Counter("conduit_budget_refusals_total",
                                "Requests refused (402) because their worst-case cost did not fit "
                                "the group's available balance.")),
      engine_errors_(metrics.Counter(
          "conduit_budget_engine_errors_total",
          "Balance reservations the counters engine could not make (fail policy applied).")),
      key_refusals_(metrics.Counter("conduit_key_budget_refusals_total",
                                    "Requests refused (402 budget_exceeded) because their "
                                    "worst-case cost did not fit the key's period budget.")) {}

std::string BudgetGate::KeyFor(domain::Id group_id) {
    return "bal:grp:" + std::to_string(group_id);
}

std::string BudgetGate::KeyBudgetCounter(domain::Id key_id,
                                         domain::BudgetPeriod period,
                                         int64_t period_start_ms) {
    std::string out = "bud:vk:" + std::to_string(key_id) + ":";
    if (period == domain::BudgetPeriod::kTotal) {
        return out + "total";
    }
    using namespace std::chrono;
    const year_month_day ymd{sys_days{days{FloorDiv(period_start_ms, kDayMs)}}};
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04d%02u%02u", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
    return out + buf;
}

void BudgetGate::Reserve(const net::ExchangePtr& ex,
                         domain::Id group_id,
                         domain::Micros worst,
                         std::function<void(std::optional<Hold>)> done) {
    domain::VirtualKey none;
    none.group_id = group_id;
    ReserveBoth(ex, none, worst, std::nullopt, 0, std::move(done));
}

void BudgetGate::Admit(const net::ExchangePtr& ex,
                       const domain::VirtualKey& key,
                       domain::Micros worst,
                       std::function<void(std::optional<Hold>)> done) {
    if (!key.max_budget || worst <= 0) {
        ReserveBoth(ex, key, worst, std::nullopt, 0, std::move(done));
        return;
    }
    const auto period = KeyBudgetPeriod(key);
    const int64_t now = clock_.NowUnixMs();
    const int64_t start = BudgetPeriodStartMs(period, now);
    const int64_t lookup_ns = core::SystemClock::SteadyNowNs();
    std::unique_lock lock(mu_);
    auto& e = keys_[key.id];
    if (e.period != period || e.period_start_ms != start) {
        if (e.loaded) {
            SpendCacheStats().Remove();
        }
        // A new period (or a changed duration): nothing of it is flushed yet as far as this
        // instance knows; the reload below adds what other instances flushed.
        const bool rolled = e.loaded && e.period == period && start > e.period_start_ms;
        e.period = period;
        e.period_start_ms = start;
        e.base = 0;
        e.unflushed = 0;
        e.loaded = rolled;
        e.loaded_at_ms = 0;
    }
    if (!e.loaded_at_ms || now - e.loaded_at_ms >= options_.refresh_ms) {
        StartLoadLocked(key.id, e);
    }
    const auto lookup_took = static_cast<uint64_t>(core::SystemClock::SteadyNowNs() - lookup_ns);
    if (!e.loaded) {
        SpendCacheStats().Miss(lookup_took);
        // The first request of this key on this instance waits for one executor round trip.
        auto key_copy = std::make_shared<domain::VirtualKey>(key);
        core::Loop* loop = &ex->loop();
        e.waiting.push_back([this, ex, loop, key_copy, worst, done = std::move(done)]() mutable {
            loop->Post([this, ex, key_copy, worst, done = std::move(done)]() mutable {
                Admit(ex, *key_copy, worst, std::move(done));
            });
        });
        return;
    }
    SpendCacheStats().Hit(lookup_took);
    const domain::Micros base = e.base;
    lock.unlock();
    ReserveBoth(ex, key, worst, base, start, std::move(done));
}

void BudgetGate::StartLoadLocked(domain::Id key_id, KeyEntry& e) {
    if (e.loading || !load_spend_) {
        if (!load_spend_) {
            e.loaded = true;  // no store: budgets count from 0 (tests, tools)
            e.loaded_at_ms = clock_.NowUnixMs();
        }
        return;
    }
    e.loading = true;
    const int64_t since = e.period_start_ms;
    std::weak_ptr<bool> alive = alive_;
    load_spend_(key_id, since, [this, alive, key_id, since](core::Result<domain::Micros> spent) {
        if (alive.expired()) {
            return;
        }
        std::vector<std::function<void()>> waiting;
        {
            std::lock_guard lock(mu_);
            auto it = keys_.find(key_id);
            if (it == keys_.end()) {
                return;
            }
            auto& entry = it->second;
            entry.loading = false;
            if (entry.period_start_ms != since) {
                return;  // the period moved on meanwhile; the next request reloads
            }
            if (!spent) {
                SpendCacheStats().Error();
                spdlog::warn("spend of key {} not read ({}); its budget counts from the cache",
                             key_id, spent.error().message);
                entry.loaded_at_ms = clock_.NowUnixMs();  // retry after refresh_ms
                if (!entry.loaded) {
                    entry.base = entry.unflushed;
                }
            } else {
                entry.base = *spent + entry.unflushed;
                entry.loaded_at_ms = clock_.NowUnixMs();
                SpendCacheStats().Set();
            }
            entry.loaded = true;
            waiting.swap(entry.waiting);
        }
        for (auto& w : waiting) {
            w();
        }
    });
}

void BudgetGate::OnRecorded(const domain::RequestLogRow& row) {
    if (row.cost == 0) {
        return;
    }
    std::lock_guard lock(mu_);
    auto it = keys_.find(row.virtual_key_id);
    if (it == keys_.end() || row.timestamp_ms < it->second.period_start_ms) {
        return;
    }
    it->second.unflushed += row.cost;
    it->second.base += row.cost;
}

void BudgetGate::OnFlushed(const domain::RequestLogRow& row) {
    if (row.cost == 0) {
        return;
    }
    std::lock_guard lock(mu_);
    auto it = keys_.find(row.virtual_key_id);
    if (it == keys_.end() || row.timestamp_ms < it->second.period_start_ms) {
        return;
    }
    it->second.unflushed -= row.cost;
}

void BudgetGate::ReserveBoth(const net::ExchangePtr& ex,
                             const domain::VirtualKey& key,
                             domain::Micros worst,
                             std::optional<domain::Micros> key_base,
                             int64_t period_start_ms,
                             std::function<void(std::optional<Hold>)> done) {
    const domain::Id group_id = key.group_id;
    std::vector<bus::RateLimit> limits;
    if (rate_ != nullptr && key.id != 0) {
        limits = RateGate::LimitsFor(key);
    }
    if (worst <= 0 && limits.empty()) {
        done(std::nullopt);
        return;
    }
    Hold hold{group_id, worst};
    std::vector<bus::Reservation> rs;
    if (worst > 0) {
        const domain::Micros available = book_.Available(group_id).value_or(0);
        rs.push_back({KeyFor(group_id), -worst, std::numeric_limits<int64_t>::max(), 0, available});
        if (key_base && key.max_budget) {
            hold.key_id = key.id;
            hold.period = KeyBudgetPeriod(key);
            hold.period_start_ms = period_start_ms;
            hold.key_budget = *key.max_budget;
            hold.key_counter = KeyBudgetCounter(key.id, hold.period, period_start_ms);
            rs.push_back({hold.key_counter, worst, *key.max_budget,
                          std::numeric_limits<int64_t>::min(), *key_base});
        }
    }
    core::Loop* loop = &ex->loop();
    auto kept = std::make_shared<std::vector<bus::RateLimit>>(limits);
    // One counters call: the key's rate limits and the reservations, all or nothing.
    counters_.Admit(
        std::move(limits), std::move(rs), options_.ttl_ms,
        [this, ex, loop, hold, kept,
         done = std::move(done)](core::Result<bus::AdmitDecision> result) mutable {
            auto decide = [this, ex, hold, kept, result = std::move(result),
                           done = std::move(done)]() mutable {
                const domain::Micros hold_worst = hold.worst;
                if (ex->closed()) {
                    if (result && result->admitted && hold_worst > 0) {
                        Settle(hold, 0);
                    }
                    return;
                }
                if (!kept->empty()) {
                    core::Result<bus::RateDecision> rate =
                        result ? core::Result<bus::RateDecision>(result->rate)
                               : core::Result<bus::RateDecision>(tl::unexpected(result.error()));
                    if (!rate_->Conclude(ex, *kept, rate)) {
                        return;  // refused (429), or 503 under the closed policy
                    }
                }
                if (hold_worst <= 0) {
                    done(std::nullopt);
                    return;
                }
                if (!result) {
                    engine_errors_.Inc();
                    if (options_.on_error == FailPolicy::kOpen) {
                        spdlog::warn("balance of group {} not reserved ({}); admitted (fail-open)",
                                     hold.group_id, result.error().message);
                        done(std::nullopt);
                        return;
                    }
                    ex->Respond(ErrorResponse(core::Error::Make(
                        core::ErrorCode::kUnavailable,
                        "The balance cannot be checked right now; try again shortly.")));
                    return;
                }
                const bus::ReserveDecision& rd = result->reserve;
                if (!rd.admitted && rd.denied_index == 1) {
                    key_refusals_.Inc();
                    const domain::Micros used = rd.values.size() > 1 ? rd.values[1] : 0;
                    const domain::Micros left = std::max<domain::Micros>(0, hold.key_budget - used);
                    auto end = BudgetPeriodEndMs(hold.period, hold.period_start_ms);
                    std::string message =
                        "Budget exceeded: this key's " + PeriodWord(hold.period) + " budget of $" +
                        core::FormatMoney(hold.key_budget) + " has $" + core::FormatMoney(left) +
                        " left (requests in flight included) and this request may cost up to $" +
                        core::FormatMoney(hold_worst) + ". ";
                    message += end ? "The budget resets at " + core::FormatIso8601(*end) + "."
                                   : std::string("A total budget does not reset.");
                    ex->Respond(ErrorResponse(
                        core::Error::Make(core::ErrorCode::kBudgetExceeded, std::move(message))));
                    CheckAlerts(hold, used, /*refused=*/true);
                    return;
                }
                if (!rd.admitted) {
                    refusals_.Inc();
                    const domain::Micros left = rd.values.empty() ? 0 : rd.values[0];
                    ex->Respond(ErrorResponse(core::Error::Make(
                        core::ErrorCode::kInsufficientBalance,
                        "Insufficient balance: this request may cost up to $" +
                            core::FormatMoney(hold_worst) + " and the key's group has $" +
                            core::FormatMoney(std::max<domain::Micros>(0, left)) +
                            " available (requests in flight included). Lower max_tokens or add "
                            "credit.")));
                    return;
                }
                done(hold);
            };
            if (loop->InLoopThread()) {
                decide();
            } else {
                loop->Post(std::move(decide));
            }
        });
}

void BudgetGate::Settle(const Hold& hold, domain::Micros actual) {
    const domain::Micros refund = hold.worst - actual;
    if (refund != 0) {
        Apply(hold.group_id, refund);
    }
    if (!hold.key_counter.empty()) {
        SettleKey(hold, actual);
    }
}

void BudgetGate::SettleKey(const Hold& hold, domain::Micros actual) {
    const domain::Micros delta = actual - hold.worst;  // <= 0 unless usage beat the estimate
    // Created (when it expired meanwhile) from the cache, which already holds `actual` (the row
    // was recorded before the settle): as if delta was already in it.
    domain::Micros base = 0;
    {
        std::lock_guard lock(mu_);
        auto it = keys_.find(hold.key_id);
        if (it != keys_.end() && it->second.period_start_ms == hold.period_start_ms) {
            base = it->second.base;
        }
    }
    std::weak_ptr<bool> alive = alive_;
    counters_.Add({{hold.key_counter, delta, base - delta}}, options_.ttl_ms,
                  [this, alive, hold, actual](core::Result<std::vector<int64_t>> result) {
                      if (alive.expired()) {
                          return;
                      }
                      if (!result) {
                          engine_errors_.Inc();
                          spdlog::warn("budget counter of key {} not settled ({})", hold.key_id,
                                       result.error().message);
                          return;
                      }
                      if (actual > 0 && !result->empty()) {
                          CheckAlerts(hold, result->front());
                      }
                  });
}

void BudgetGate::CheckAlerts(const Hold& hold, domain::Micros value, bool refused) {
    if (!on_alert_) {
        return;
    }
    // Which thresholds the counter is past; each is sent once per period cluster-wide: the
    // instance whose cap-1 reservation on `budalert:...:{pct}` succeeds sends it. A refusal
    // counts as 100 % (the budget is exhausted for the requests being made).
    std::vector<int> past = CrossedThresholds(0, value, hold.key_budget);
    if (refused && (past.empty() || past.back() != 100)) {
        past.push_back(100);
    }
    if (past.empty()) {
        return;
    }
    const auto end = BudgetPeriodEndMs(hold.period, hold.period_start_ms);
    const int64_t now = clock_.NowUnixMs();
    // Kept until the period is over (+ a day), a year for a lifetime budget.
    const int64_t ttl = end ? std::max<int64_t>(*end - now, 0) + kDayMs : 366 * kDayMs;
    const std::string base =
        "budalert:" + KeyBudgetCounter(hold.key_id, hold.period, hold.period_start_ms) + ":";
    for (int pct : past) {
        std::string flag = base + std::to_string(pct);
        {
            // Decided already (by this instance or, as its answer said, by another): no call.
            std::lock_guard lock(mu_);
            if (alerts_decided_.count(flag) != 0) {
                continue;
            }
        }
        // One call per threshold: Reserve is all or nothing.
        bus::Reservation r{flag, 1, 1, std::numeric_limits<int64_t>::min(), std::nullopt};
        std::weak_ptr<bool> alive = alive_;
        counters_.Reserve(
            {std::move(r)}, ttl,
            [this, alive, hold, value, pct, end,
             flag = std::move(flag)](core::Result<bus::ReserveDecision> result) {
                if (alive.expired() || !result) {
                    return;  // the engine failed: the next settle asks again
                }
                {
                    std::lock_guard lock(mu_);
                    if (alerts_decided_.size() >= 100'000) {
                        alerts_decided_.clear();  // old periods; asking again is harmless
                    }
                    alerts_decided_.insert(flag);
                }
                if (!result->admitted) {
                    return;  // sent already
                }
                Alert a;
                a.key_id = hold.key_id;
                a.percent = pct;
                a.current_spend = value;
                a.budget = hold.key_budget;
                a.period = hold.period;
                a.period_end_ms = end;
                on_alert_(a);
            });
    }
}

void BudgetGate::Credit(domain::Id group_id, domain::Micros delta) {
    if (delta != 0) {
        Apply(group_id, delta);
    }
}

void BudgetGate::Apply(domain::Id group_id, domain::Micros delta) {
    const domain::Micros available = book_.Available(group_id).value_or(0);
    counters_.Add({{KeyFor(group_id), delta, available - delta}}, options_.ttl_ms,
                  [this, group_id, delta](core::Result<std::vector<int64_t>> result) {
                      if (!result) {
                          engine_errors_.Inc();
                          spdlog::warn(
                              "balance counter of group {} not adjusted by {} ({}); "
                              "it heals when it expires",
                              group_id, delta, result.error().message);
                      }
                  });
}

}  // namespace conduit::gateway
