#pragma once

#include "bus/counters.hpp"
#include "core/clock.hpp"
#include "domain/entities.hpp"
#include "gateway/config_state.hpp"
#include "net/exchange.hpp"
#include "obs/metrics.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace conduit::gateway {

/// What a request gets when the counters engine (Redis) cannot answer.
enum class FailPolicy {
    kOpen,    // admit (limits are briefly not enforced; the outage is counted and logged)
    kClosed,  // refuse with 503
};

/// Parses "open" / "closed" (case-insensitive); nullopt otherwise. Pure.
std::optional<FailPolicy> ParseFailPolicy(std::string_view text);

/// Per-virtual-key request rate limits (specs/api.md: `rateLimitRpm`, `rateLimitRpd`) enforced
/// in front of the `/v1` routes through the Counters port, so they hold across every instance
/// sharing the engine.
///
/// Headers (OpenAI's names): every response of a limited key carries
/// `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`
/// for the per-minute limit, the same with the suffix `-day` (`x-ratelimit-limit-requests-day`
/// ...) for the per-day limit, and `x-ratelimit-{limit,remaining,reset}-tokens` for the
/// tokens-per-minute limit (`rateLimitTpm`, charged after the request with its usage); a refusal is
/// `429 rate_limit_exceeded` with `Retry-After` (seconds, rounded up). A key without limits costs
/// nothing (no counters call).
class RateGate {
public:
    RateGate(bus::Counters& counters,
             ConfigState& config,
             const core::Clock& clock,
             obs::Registry& metrics,
             FailPolicy on_error);

    /// The limits of `key`, in the order RPM, RPD, TPM (empty when it has none). The TPM limit
    /// has cost 0 (admitted unless earlier requests' tokens put the bucket in debt). Pure.
    static std::vector<bus::RateLimit> LimitsFor(const domain::VirtualKey& key);
    static std::string TokenLimitKey(domain::Id key_id);

    /// After a request: charges its total tokens to `key`'s TPM bucket (beyond empty: a debt
    /// that refuses the key's next requests until it is paid back). No-op without a TPM limit.
    /// Any thread.
    void ChargeTokens(const domain::VirtualKey& key, int64_t tokens);

    /// A handler that admits a request against its key's limits before running `inner`.
    /// Requests without a valid key go straight to `inner` (which answers 401). Loop thread.
    net::Handler Wrap(net::Handler inner);

    /// Takes one request from `key`'s limits; runs `proceed` on ex's loop when admitted (with
    /// the headers set on `ex`), else answers 429 (or 503 under a closed policy when the engine
    /// failed). Loop thread of `ex`.
    void Admit(const net::ExchangePtr& ex,
               const domain::VirtualKey& key,
               std::function<void()> proceed);

    /// One hub method invocation of `key_id`: takes a token from its hub-method bucket
    /// (`per_minute`, 0 = none) and from its RPM / RPD limits, in one counters call. `done`
    /// gets nullopt when admitted, else the refusal text ("Rate limit exceeded: ..."; or, when
    /// the engine failed under the closed policy, "Rate limits cannot be checked ..."). Any
    /// thread; `done` may run on the counters' thread.
    void AdmitInvocation(domain::Id key_id,
                         int per_minute,
                         std::function<void(std::optional<std::string>)> done);

    /// Applies a rate decision for `limits` (in LimitsFor order) to `ex`: sets the
    /// x-ratelimit-* headers and returns true when the request may go on; otherwise answers
    /// (429 with Retry-After, or 503 when the engine failed under the closed policy) and returns
    /// false. An engine error under the open policy goes on. Loop thread of `ex`.
    bool Conclude(const net::ExchangePtr& ex,
                  const std::vector<bus::RateLimit>& limits,
                  const core::Result<bus::RateDecision>& decision);

private:
    bus::Counters& counters_;
    ConfigState& config_;
    const core::Clock& clock_;
    FailPolicy on_error_;
    obs::CounterFamily& rejections_;  // conduit_rate_limit_rejections_total{limit}
    obs::Counter& engine_errors_;     // conduit_rate_limit_engine_errors_total
};

/// Formats a duration the way OpenAI's x-ratelimit-reset-* headers do: "0s", "250ms", "1.5s",
/// "6m0s", "2h3m4s". Pure.
std::string FormatResetDuration(int64_t ms);

}  // namespace conduit::gateway
