#pragma once

#include "bus/counters.hpp"
#include "domain/entities.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/rate_gate.hpp"
#include "net/exchange.hpp"
#include "obs/metrics.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace conduit::gateway {

/// The prepaid balance of a key's group, enforced with reservations through the Counters port
/// (exact across every instance sharing the engine):
///
/// - Before the upstream call a request reserves its worst-case cost (prompt estimate + the
///   client's max_tokens, or a configured default, at the highest price of the deployments it
///   may use) from the group's *available* counter, which never goes below 0 — refused: 402.
///   So the overshoot past a zero balance is bounded by the requests in flight.
/// - When the request ends the reservation is settled: the difference to the actual cost (all
///   of it for a failed request) goes back.
/// - The counter (`bal:grp:{id}`) is created from this instance's view of the balance (the
///   store's balance minus its unflushed spend) the first time it is needed, and forgotten
///   after `ttl` without use, which also heals drift (e.g. an instance that died holding
///   reservations). Admin credits and adjustments are applied to it (Credit()).
///
/// Per-key budgets (`max_budget` per `budget_duration`, calendar periods in UTC) and the key's
/// rate limits ride on the same Counters::Admit call (all or nothing, one round trip; the
/// settlements are Counters::Add calls, which the adapter defers and batches): a key with a
/// budget also adds its request's
/// worst case to `bud:vk:{id}:{yyyymmdd of the period start}` (`...:total` for a lifetime
/// budget) with cap = max_budget — refused: 402 `budget_exceeded`, naming the period and its
/// reset. The hold is settled like the group's. Crossing 80/90/100 % of the budget (the period
/// counter after a settle, holds in flight included; a budget refusal counts as 100 %, since
/// exact reservations rarely let the spend land on the budget itself) sends one BudgetAlert per
/// threshold per period, cluster-wide (a `budalert:` counter reserved with cap 1 decides which
/// instance sends it).
///
/// The key counter's initial value (new period, counters engine restart, in-process counters
/// after a gateway restart, expiry after `ttl` without use) is what the key already spent in the
/// period, from a small per-key cache, never from a store call on the request path:
///   base = KeySpendSince(period start) read on the store executor
///          + this instance's spend of the period not yet flushed at that read (OnRecorded /
///            OnFlushed, which run on the recording thread and on the store executor — the
///            same thread as the read, so a row is counted exactly once)
///          + this instance's spend recorded since.
/// The cache is refreshed off the loop (load_spend) at first use and then at most every
/// `refresh_ms` while the key is used; only the very first request of a budgeted key on an
/// instance waits for one executor round trip.
/// Bound on error: exact for one instance. With several instances sharing the engine, the
/// shared counter is exact while it exists; when it has to be re-created, the base misses the
/// other instances' spend not yet flushed (≤ one flush interval of their traffic) plus what they
/// flushed since this instance's last refresh (≤ refresh_ms of their traffic). Counters idle for
/// `ttl` are re-created only after every instance has flushed, so only an engine restart or the
/// first minutes of a period see that bound. Task bills (committed with the task) are included
/// through the store read only. Like the group counter, a key counter re-created while requests
/// are in flight may end up to their unsettled worst cases low when they settle (bounded by the
/// requests in flight; healed at the next re-creation).
///
/// Every call runs on the exchange's loop; callbacks come back on it.
class BudgetGate {
public:
    struct Options {
        int64_t default_max_tokens = 4096;  // completion tokens assumed when max_tokens is absent
        int64_t ttl_ms = 600'000;
        FailPolicy on_error = FailPolicy::kOpen;
        /// How often a used key's cached period spend is re-read from the store.
        int64_t refresh_ms = 10'000;
    };

    /// A reservation to settle.
    struct Hold {
        domain::Id group_id = 0;
        domain::Micros worst = 0;
        // Set when the key has a budget: its period counter.
        domain::Id key_id = 0;
        std::string key_counter;  // empty = no key budget reserved
        domain::Micros key_budget = 0;
        domain::BudgetPeriod period = domain::BudgetPeriod::kTotal;
        int64_t period_start_ms = 0;
    };

    /// Reads what `key_id` spent since `since_ms` (Store::KeySpendSince) and calls `done` ON THE
    /// STORE EXECUTOR THREAD right after the read (the consistency rule above).
    using SpendLoader = std::function<void(domain::Id key_id,
                                           int64_t since_ms,
                                           std::function<void(core::Result<domain::Micros>)> done)>;

    /// A key's period spend crossed a threshold (80, 90, 100 %). Any thread.
    struct Alert {
        domain::Id key_id = 0;
        int percent = 0;                   // the threshold crossed
        domain::Micros current_spend = 0;  // the period counter (in-flight holds included)
        domain::Micros budget = 0;
        domain::BudgetPeriod period = domain::BudgetPeriod::kTotal;
        std::optional<int64_t> period_end_ms;  // none for a lifetime budget
    };

    BudgetGate(bus::Counters& counters,
               BalanceBook& book,
               obs::Registry& metrics,
               Options options,
               const core::Clock& clock = core::SystemClock::Instance());

    const Options& options() const { return options_; }

    /// Start-up wiring (before the first request).
    void SetSpendLoader(SpendLoader loader) { load_spend_ = std::move(loader); }
    void SetAlertSink(std::function<void(const Alert&)> sink) { on_alert_ = std::move(sink); }

    /// Admits a request of `key` in ONE counters call (Counters::Admit, all or nothing): the
    /// key's rate limits (when a RateGate is attached: RPM, RPD, TPM debt; refusals answered by
    /// the RateGate, 429), `worst` from its group's balance and, when the key has a budget, from
    /// its period budget. Same contract as the group-only Reserve otherwise.
    void Admit(const net::ExchangePtr& ex,
               const domain::VirtualKey& key,
               domain::Micros worst,
               std::function<void(std::optional<Hold>)> done);
    /// Start-up wiring: Admit also takes the key's rate limits (so a governed request costs one
    /// counters round trip; settlements and token charges are deferred and batched by the
    /// adapter).
    void SetRateGate(RateGate* rate) { rate_ = rate; }
    /// A row entered the spend recorder (before it can be flushed). Recording thread.
    void OnRecorded(const domain::RequestLogRow& row);
    /// A recorded row was committed to the store (or dropped). Store executor thread.
    void OnFlushed(const domain::RequestLogRow& row);

    /// Reserves `worst` from `group_id`'s balance. `done(hold)` runs on ex's loop when the
    /// request may go on (hold is nullopt when nothing was reserved: worst is 0, or the engine
    /// failed under the open policy); otherwise BudgetGate answers (402, or 503 under the closed
    /// policy) and `done` is not called.
    void Reserve(const net::ExchangePtr& ex,
                 domain::Id group_id,
                 domain::Micros worst,
                 std::function<void(std::optional<Hold>)> done);
    /// Settles a reservation with the request's actual cost (0 when it failed). Any thread.
    void Settle(const Hold& hold, domain::Micros actual);
    /// An admin credit or adjustment of `delta`, already committed and in the BalanceBook.
    /// Any thread.
    void Credit(domain::Id group_id, domain::Micros delta);

    static std::string KeyFor(domain::Id group_id);
    /// `bud:vk:{id}:{yyyymmdd}` of the period starting at `period_start_ms` (`:total`).
    static std::string KeyBudgetCounter(domain::Id key_id,
                                        domain::BudgetPeriod period,
                                        int64_t period_start_ms);

private:
    /// The cached period spend of one budgeted key (guarded by mu_).
    struct KeyEntry {
        domain::BudgetPeriod period = domain::BudgetPeriod::kTotal;
        int64_t period_start_ms = 0;
        domain::Micros base = 0;       // the counter's initial value (see above)
        domain::Micros unflushed = 0;  // this instance's recorded, unflushed spend of the period
        bool loaded = false;
        bool loading = false;
        int64_t loaded_at_ms = 0;
        std::vector<std::function<void()>> waiting;  // requests waiting for the first load
    };

    void ReserveBoth(const net::ExchangePtr& ex,
                     const domain::VirtualKey& key,
                     domain::Micros worst,
                     std::optional<domain::Micros> key_base,
                     int64_t period_start_ms,
                     std::function<void(std::optional<Hold>)> done);
    /// Starts a load of `key_id`'s period spend (mu_ held by the caller).
    void StartLoadLocked(domain::Id key_id, KeyEntry& e);
    void SettleKey(const Hold& hold, domain::Micros actual);
    void CheckAlerts(const Hold& hold, domain::Micros value, bool refused = false);

    /// Adds `delta` to the group's counter, creating it from the BalanceBook (as if `delta` was
    /// already in it) when absent.
    void Apply(domain::Id group_id, domain::Micros delta);

    bus::Counters& counters_;
    BalanceBook& book_;
    Options options_;
    const core::Clock& clock_;
    SpendLoader load_spend_;
    std::function<void(const Alert&)> on_alert_;
    std::mutex mu_;
    std::unordered_map<domain::Id, KeyEntry> keys_;
    /// BudgetAlert flags (`budalert:...:{pct}`) whose reservation this instance saw answered:
    /// later settles of the period do not ask again (guarded by mu_).
    std::unordered_set<std::string> alerts_decided_;
    RateGate* rate_ = nullptr;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    obs::Counter& refusals_;       // conduit_budget_refusals_total
    obs::Counter& engine_errors_;  // conduit_budget_engine_errors_total
    obs::Counter& key_refusals_;   // conduit_key_budget_refusals_total
};

/// Start of the budget period containing `now_ms` (UTC: day at 00:00, week on Monday 00:00,
/// month on the 1st; 0 for kTotal). Pure.
int64_t BudgetPeriodStartMs(domain::BudgetPeriod period, int64_t now_ms);
/// End (exclusive) of the period starting at `start_ms`; nullopt for kTotal. Pure.
std::optional<int64_t> BudgetPeriodEndMs(domain::BudgetPeriod period, int64_t start_ms);
/// The budget period of a key with a budget (kTotal when its duration is empty/unknown). Pure.
domain::BudgetPeriod KeyBudgetPeriod(const domain::VirtualKey& key);
/// The thresholds (80, 90, 100) that `after` reaches and `before` did not, of `budget`. Pure.
std::vector<int> CrossedThresholds(domain::Micros before,
                                   domain::Micros after,
                                   domain::Micros budget);

}  // namespace conduit::gateway
