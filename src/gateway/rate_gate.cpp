#include "gateway/rate_gate.hpp"

#include "core/strings.hpp"
#include "gateway/errors.hpp"
#include "gateway/proxy.hpp"

#include <spdlog/spdlog.h>

#include <memory>

namespace conduit::gateway {

namespace {

constexpr int64_t kMinuteMs = 60'000;
constexpr int64_t kDayMs = 86'400'000;

bool IsTokens(const bus::RateLimit& limit) { return limit.key.ends_with(":tpm"); }

/// Header suffix per limit, in LimitsFor's order.
std::string_view SuffixFor(const bus::RateLimit& limit) {
    if (IsTokens(limit)) {
        return "tokens";
    }
    return limit.window_ms == kDayMs ? "requests-day" : "requests";
}

void SetHeaders(net::Headers& h,
                const std::vector<bus::RateLimit>& limits,
                const std::vector<bus::RateLimitState>& states) {
    for (size_t i = 0; i < limits.size() && i < states.size(); ++i) {
        const auto& s = states[i];
        if (s.remaining < 0) {
            continue;  // unknown (decided without the engine)
        }
        const std::string suffix(SuffixFor(limits[i]));
        h.Set("x-ratelimit-limit-" + suffix, std::to_string(s.limit));
        h.Set("x-ratelimit-remaining-" + suffix, std::to_string(s.remaining));
        h.Set("x-ratelimit-reset-" + suffix, FormatResetDuration(s.reset_ms));
    }
}

}  // namespace

std::optional<FailPolicy> ParseFailPolicy(std::string_view text) {
    if (core::IEquals(text, "open")) {
        return FailPolicy::kOpen;
    }
    if (core::IEquals(text, "closed")) {
        return FailPolicy::kClosed;
    }
    return std::nullopt;
}

std::string FormatResetDuration(int64_t ms) {
    if (ms <= 0) {
        return "0s";
    }
    if (ms < 1000) {
        return std::to_string(ms) + "ms";
    }
    if (ms < kMinuteMs) {
        std::string out = std::to_string(ms / 1000);
        if (int64_t frac = ms % 1000; frac != 0) {
            std::string f = std::to_string(frac);
            f.insert(0, 3 - f.size(), '0');
            while (!f.empty() && f.back() == '0') {
                f.pop_back();
            }
            out += "." + f;
        }
        return out + "s";
    }
    const int64_t s = (ms + 999) / 1000;  // whole seconds, rounded up
    std::string out;
    if (s >= 3600) {
        out += std::to_string(s / 3600) + "h";
    }
    out += std::to_string((s % 3600) / 60) + "m" + std::to_string(s % 60) + "s";
    return out;
}

RateGate::RateGate(bus::Counters& counters,
                   ConfigState& config,
                   const core::Clock& clock,
                   obs::Registry& metrics,
                   FailPolicy on_error)
    : counters_(counters),
      config_(config),
      clock_(clock),
      on_error_(on_error),
      rejections_(metrics.Counter("conduit_rate_limit_rejections_total",
                                  "Requests refused by a virtual key's rate limit, by limit.",
                                  {"limit"})),
      engine_errors_(metrics.Counter(
          "conduit_rate_limit_engine_errors_total",
          "Rate-limit decisions the counters engine could not make (fail policy applied).")) {}

std::vector<bus::RateLimit> RateGate::LimitsFor(const domain::VirtualKey& key) {
    std::vector<bus::RateLimit> out;
    const std::string base = "rl:vk:" + std::to_string(key.id) + ":";
    if (key.rate_limit_rpm && *key.rate_limit_rpm > 0) {
        out.push_back({base + "rpm", *key.rate_limit_rpm, kMinuteMs, 1});
    }
    if (key.rate_limit_rpd && *key.rate_limit_rpd > 0) {
        out.push_back({base + "rpd", *key.rate_limit_rpd, kDayMs, 1});
    }
    if (key.rate_limit_tpm && *key.rate_limit_tpm > 0) {
        // Cost 0: only refused while a previous request's tokens left the bucket in debt.
        out.push_back({TokenLimitKey(key.id), *key.rate_limit_tpm, kMinuteMs, 0});
    }
    return out;
}

std::string RateGate::TokenLimitKey(domain::Id key_id) {
    return "rl:vk:" + std::to_string(key_id) + ":tpm";
}

void RateGate::ChargeTokens(const domain::VirtualKey& key, int64_t tokens) {
    if (!key.rate_limit_tpm || *key.rate_limit_tpm <= 0 || tokens <= 0) {
        return;
    }
    const domain::Id key_id = key.id;
    counters_.Charge({{TokenLimitKey(key_id), *key.rate_limit_tpm, kMinuteMs, tokens}},
                     [this, key_id](core::Result<bus::RateDecision> r) {
                         if (!r) {
                             engine_errors_.Inc();
                             spdlog::warn("tokens of key {} not charged ({})", key_id,
                                          r.error().message);
                         }
                     });
}

net::Handler RateGate::Wrap(net::Handler inner) {
    auto shared = std::make_shared<net::Handler>(std::move(inner));
    return [this, shared](const net::ExchangePtr& ex) {
        auto snapshot = config_.Get();
        auto key =
            snapshot->Authenticate(OpenAIProxy::PresentedKey(ex->request()), clock_.NowUnixMs());
        if (!key) {
            (*shared)(ex);  // the handler answers 401 in its own words
            return;
        }
        Admit(ex, (*key)->key, [shared, ex] { (*shared)(ex); });
    };
}

void RateGate::Admit(const net::ExchangePtr& ex,
                     const domain::VirtualKey& key,
                     std::function<void()> proceed) {
    auto limits = LimitsFor(key);
    if (limits.empty()) {
        proceed();
        return;
    }
    auto kept = std::make_shared<std::vector<bus::RateLimit>>(limits);
    core::Loop* loop = &ex->loop();
    counters_.Acquire(std::move(limits), [this, ex, loop, kept, proceed = std::move(proceed)](
                                             core::Result<bus::RateDecision> r) mutable {
        auto decide = [this, ex, kept, r = std::move(r), proceed = std::move(proceed)]() mutable {
            if (!ex->closed() && Conclude(ex, *kept, r)) {
                proceed();
            }
        };
        if (loop->InLoopThread()) {
            decide();
        } else {
            loop->Post(std::move(decide));
        }
    });
}

void RateGate::AdmitInvocation(domain::Id key_id,
                               int per_minute,
                               std::function<void(std::optional<std::string>)> done) {
    std::vector<bus::RateLimit> limits;
    if (per_minute > 0) {
        limits.push_back({"rl:vk:" + std::to_string(key_id) + ":hub", per_minute, kMinuteMs, 1});
    }
    auto snapshot = config_.Get();
    if (const auto* entry = snapshot->FindKey(key_id)) {
        for (auto& l : LimitsFor(entry->key)) {
            if (!IsTokens(l)) {
                limits.push_back(std::move(l));  // invocations have no tokens
            }
        }
    }
    if (limits.empty()) {
        done(std::nullopt);
        return;
    }
    auto kept = std::make_shared<std::vector<bus::RateLimit>>(limits);
    counters_.Acquire(std::move(limits), [this, kept, per_minute, done = std::move(done)](
                                             core::Result<bus::RateDecision> r) {
        if (!r) {
            engine_errors_.Inc();
            if (on_error_ == FailPolicy::kOpen) {
                done(std::nullopt);
            } else {
                done(std::string("Rate limits cannot be checked right now; try again shortly."));
            }
            return;
        }
        if (r->admitted) {
            done(std::nullopt);
            return;
        }
        const auto& refused = (*kept)[static_cast<size_t>(r->denied_index)];
        const bool hub = per_minute > 0 && r->denied_index == 0;
        const bool daily = refused.window_ms == kDayMs;
        rejections_.With({hub ? "hub" : daily ? "rpd" : "rpm"}).Inc();
        const int64_t retry_s =
            r->retry_after_ms < 0 ? refused.window_ms / 1000 : (r->retry_after_ms + 999) / 1000;
        const std::string what = hub     ? "hub method invocations per minute"
                                 : daily ? "requests per day"
                                         : "requests per minute";
        done("Rate limit exceeded: " + what + " (limit " + std::to_string(refused.limit) +
             "); try again in " + std::to_string(std::max<int64_t>(1, retry_s)) + "s.");
    });
}

bool RateGate::Conclude(const net::ExchangePtr& ex,
                        const std::vector<bus::RateLimit>& limits,
                        const core::Result<bus::RateDecision>& r) {
    if (!r) {
        engine_errors_.Inc();
        if (on_error_ == FailPolicy::kOpen) {
            spdlog::warn("rate limits ({}) not checked ({}); admitted (fail-open)",
                         limits.empty() ? std::string() : limits.front().key, r.error().message);
            return true;
        }
        ex->Respond(ErrorResponse(
            core::Error::Make(core::ErrorCode::kUnavailable,
                              "Rate limits cannot be checked right now; try again shortly.")));
        return false;
    }
    SetHeaders(ex->extra_headers(), limits, r->states);
    if (r->admitted) {
        return true;
    }
    const auto& refused = limits[static_cast<size_t>(r->denied_index)];
    const bool daily = refused.window_ms == kDayMs;
    const bool tokens = IsTokens(refused);
    rejections_.With({tokens ? "tpm" : daily ? "rpd" : "rpm"}).Inc();
    const int64_t retry_s =
        r->retry_after_ms < 0 ? refused.window_ms / 1000 : (r->retry_after_ms + 999) / 1000;
    ex->extra_headers().Set("Retry-After", std::to_string(std::max<int64_t>(1, retry_s)));
    const std::string what = tokens  ? "tokens per minute"
                             : daily ? "requests per day"
                                     : "requests per minute";
    ex->Respond(ErrorResponse(core::Error::Make(
        core::ErrorCode::kRateLimited,
        "Rate limit reached for " + what + " (limit " + std::to_string(refused.limit) +
            "). Please try again in " + std::to_string(std::max<int64_t>(1, retry_s)) + "s.")));
    return false;
}

}  // namespace conduit::gateway
