#pragma once

#include "bus/counters.hpp"
#include "domain/entities.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/rate_gate.hpp"
#include "net/exchange.hpp"
#include "obs/metrics.hpp"

#include <functional>
#include <optional>
#include <string>

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
/// Every call runs on the exchange's loop; callbacks come back on it.
class BudgetGate {
public:
    struct Options {
        int64_t default_max_tokens = 4096;  // completion tokens assumed when max_tokens is absent
        int64_t ttl_ms = 600'000;
        FailPolicy on_error = FailPolicy::kOpen;
    };

    /// A reservation to settle.
    struct Hold {
        domain::Id group_id = 0;
        domain::Micros worst = 0;
    };

    BudgetGate(bus::Counters& counters, BalanceBook& book, obs::Registry& metrics, Options options);

    const Options& options() const { return options_; }

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

private:
    /// Adds `delta` to the group's counter, creating it from the BalanceBook (as if `delta` was
    /// already in it) when absent.
    void Apply(domain::Id group_id, domain::Micros delta);

    bus::Counters& counters_;
    BalanceBook& book_;
    Options options_;
    obs::Counter& refusals_;       // conduit_budget_refusals_total
    obs::Counter& engine_errors_;  // conduit_budget_engine_errors_total
};

}  // namespace conduit::gateway
