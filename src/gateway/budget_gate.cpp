#include "gateway/budget_gate.hpp"

#include "core/money.hpp"
#include "gateway/errors.hpp"

#include <spdlog/spdlog.h>

#include <limits>

namespace conduit::gateway {

BudgetGate::BudgetGate(bus::Counters& counters,
                       BalanceBook& book,
                       obs::Registry& metrics,
                       Options options)
    : counters_(counters),
      book_(book),
      options_(options),
      refusals_(metrics.Counter("conduit_budget_refusals_total",
                                "Requests refused (402) because their worst-case cost did not fit "
                                "the group's available balance.")),
      engine_errors_(metrics.Counter(
          "conduit_budget_engine_errors_total",
          "Balance reservations the counters engine could not make (fail policy applied).")) {}

std::string BudgetGate::KeyFor(domain::Id group_id) {
    return "bal:grp:" + std::to_string(group_id);
}

void BudgetGate::Reserve(const net::ExchangePtr& ex,
                         domain::Id group_id,
                         domain::Micros worst,
                         std::function<void(std::optional<Hold>)> done) {
    if (worst <= 0) {
        done(std::nullopt);
        return;
    }
    const domain::Micros available = book_.Available(group_id).value_or(0);
    bus::Reservation r{KeyFor(group_id), -worst, std::numeric_limits<int64_t>::max(), 0, available};
    core::Loop* loop = &ex->loop();
    counters_.Reserve(
        {std::move(r)}, options_.ttl_ms,
        [this, ex, loop, group_id, worst,
         done = std::move(done)](core::Result<bus::ReserveDecision> result) mutable {
            auto decide = [this, ex, group_id, worst, result = std::move(result),
                           done = std::move(done)]() mutable {
                if (ex->closed()) {
                    if (result && result->admitted) {
                        Settle(Hold{group_id, worst}, 0);
                    }
                    return;
                }
                if (!result) {
                    engine_errors_.Inc();
                    if (options_.on_error == FailPolicy::kOpen) {
                        spdlog::warn("balance of group {} not reserved ({}); admitted (fail-open)",
                                     group_id, result.error().message);
                        done(std::nullopt);
                        return;
                    }
                    ex->Respond(ErrorResponse(core::Error::Make(
                        core::ErrorCode::kUnavailable,
                        "The balance cannot be checked right now; try again shortly.")));
                    return;
                }
                if (!result->admitted) {
                    refusals_.Inc();
                    const domain::Micros left = result->values.empty() ? 0 : result->values[0];
                    ex->Respond(ErrorResponse(core::Error::Make(
                        core::ErrorCode::kInsufficientBalance,
                        "Insufficient balance: this request may cost up to $" +
                            core::FormatMoney(worst) + " and the key's group has $" +
                            core::FormatMoney(std::max<domain::Micros>(0, left)) +
                            " available (requests in flight included). Lower max_tokens or add "
                            "credit.")));
                    return;
                }
                done(Hold{group_id, worst});
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
}

void BudgetGate::Credit(domain::Id group_id, domain::Micros delta) {
    if (delta != 0) {
        Apply(group_id, delta);
    }
}

void BudgetGate::Apply(domain::Id group_id, domain::Micros delta) {
    const domain::Micros available = book_.Available(group_id).value_or(0);
    bus::Reservation r{KeyFor(group_id), delta, std::numeric_limits<int64_t>::max(),
                       std::numeric_limits<int64_t>::min(), available - delta};
    counters_.Reserve({std::move(r)}, options_.ttl_ms,
                      [this, group_id, delta](core::Result<bus::ReserveDecision> result) {
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
