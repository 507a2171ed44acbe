#include "bus/counters.hpp"

#include <algorithm>
#include <limits>
#include <mutex>
#include <unordered_map>

namespace conduit::bus {

using core::ErrorCode;
using core::Fail;

core::Result<void> ValidateLimits(const std::vector<RateLimit>& limits) {
    if (limits.empty()) {
        return Fail(ErrorCode::kInvalidRequest, "no rate limit given");
    }
    for (const auto& l : limits) {
        if (l.key.empty()) {
            return Fail(ErrorCode::kInvalidRequest, "rate limit key is empty");
        }
        if (l.limit <= 0 || l.window_ms <= 0) {
            return Fail(ErrorCode::kInvalidRequest,
                        "rate limit and window must be positive (" + l.key + ")");
        }
        // A window beyond a year or a limit beyond a billion gains nothing and would overflow
        // the microsecond arithmetic.
        if (l.window_ms > 366LL * 86'400'000 || l.limit > 1'000'000'000) {
            return Fail(ErrorCode::kInvalidRequest, "rate limit out of range (" + l.key + ")");
        }
        if (l.cost < 0 || l.cost > 1'000'000'000'000LL) {
            return Fail(ErrorCode::kInvalidRequest, "rate limit cost out of range (" + l.key + ")");
        }
    }
    return {};
}

core::Result<void> ValidateReservations(const std::vector<Reservation>& reservations) {
    if (reservations.empty()) {
        return Fail(ErrorCode::kInvalidRequest, "no reservation given");
    }
    for (const auto& r : reservations) {
        if (r.key.empty()) {
            return Fail(ErrorCode::kInvalidRequest, "counter key is empty");
        }
        if (r.floor > r.cap) {
            return Fail(ErrorCode::kInvalidRequest,
                        "reservation floor above its cap (" + r.key + ")");
        }
    }
    return {};
}

core::Result<void> ValidateDeltas(const std::vector<Delta>& deltas) {
    if (deltas.empty()) {
        return Fail(ErrorCode::kInvalidRequest, "no delta given");
    }
    for (const auto& d : deltas) {
        if (d.key.empty()) {
            return Fail(ErrorCode::kInvalidRequest, "counter key is empty");
        }
    }
    return {};
}

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }

}  // namespace

GcraStep Gcra(const RateLimit& limit, int64_t tat_us, int64_t now_us, bool force) {
    // Emission interval T and tolerance tau = T * limit (not window_us: with T rounded down, a
    // full bucket still admits exactly `limit`).
    const int64_t window_us = limit.window_ms * 1000;
    const int64_t t = std::max<int64_t>(1, window_us / limit.limit);
    const int64_t tau = t * limit.limit;
    const int64_t tat = std::max(tat_us, now_us);
    // Debt saturates at 1000 windows, which also keeps cost * t (up to 1e12 * 3e13) from
    // overflowing (the Redis script does the same).
    const int64_t cap = 1000 * tau;
    const int64_t ahead = tat - now_us;  // debt before this request, in microseconds
    const int64_t need = limit.cost > cap / t ? cap : limit.cost * t;
    const int64_t new_ahead = std::min(cap, ahead + need);

    GcraStep step;
    step.fits = limit.cost <= limit.limit && new_ahead <= tau;
    const int64_t after = (step.fits || force) ? new_ahead : ahead;
    step.new_tat_us = now_us + after;
    if (!step.fits) {
        step.retry_after_us = limit.cost > limit.limit ? -1 : new_ahead - tau;
    }
    step.state.limit = limit.limit;
    step.state.remaining = std::max<int64_t>(0, (tau - after) / t);
    step.state.reset_ms = CeilDiv(after, 1000);
    return step;
}

namespace {

class InProcessCounters final : public Counters {
public:
    explicit InProcessCounters(const core::Clock& clock) : clock_(clock) {}

    void Acquire(std::vector<RateLimit> limits, RateCallback done) override {
        done(Rate(limits, false));
    }
    void Charge(std::vector<RateLimit> limits, RateCallback done) override {
        done(Rate(limits, true));
    }

    void Reserve(std::vector<Reservation> reservations,
                 int64_t ttl_ms,
                 ReserveCallback done) override {
        if (auto ok = ValidateReservations(reservations); !ok) {
            done(tl::unexpected(ok.error()));
            return;
        }
        ReserveDecision d;
        {
            std::lock_guard lock(mu_);
            const int64_t now = NowUs();
            d = CheckReservationsLocked(reservations, ttl_ms, now);
            CommitReservationsLocked(reservations, ttl_ms, now, d);
        }
        done(std::move(d));
    }

    void Admit(std::vector<RateLimit> limits,
               std::vector<Reservation> reservations,
               int64_t ttl_ms,
               AdmitCallback done) override {
        if (limits.empty() && reservations.empty()) {
            done(Fail(ErrorCode::kInvalidRequest, "nothing to admit"));
            return;
        }
        if (!limits.empty()) {
            if (auto ok = ValidateLimits(limits); !ok) {
                done(tl::unexpected(ok.error()));
                return;
            }
        }
        if (!reservations.empty()) {
            if (auto ok = ValidateReservations(reservations); !ok) {
                done(tl::unexpected(ok.error()));
                return;
            }
        }
        AdmitDecision d;
        {
            std::lock_guard lock(mu_);
            const int64_t now = NowUs();
            std::vector<GcraStep> steps = CheckLimitsLocked(limits, false, now, d.rate);
            if (d.rate.admitted) {
                d.reserve = CheckReservationsLocked(reservations, ttl_ms, now);
            }
            d.admitted = d.rate.admitted && d.reserve.admitted;
            CommitLimitsLocked(limits, steps, d.admitted, now, d.rate);
            if (d.rate.admitted) {
                CommitReservationsLocked(reservations, ttl_ms, now, d.reserve);
            }
            MaybeSweepLocked(now);
        }
        done(std::move(d));
    }

    void Add(std::vector<Delta> deltas, int64_t ttl_ms, ValuesCallback done) override {
        if (auto ok = ValidateDeltas(deltas); !ok) {
            done(tl::unexpected(ok.error()));
            return;
        }
        std::vector<int64_t> values;
        {
            std::lock_guard lock(mu_);
            const int64_t now = NowUs();
            for (const auto& d : deltas) {
                if (d.init && !PresentLocked(d.key, now)) {
                    map_[d.key] = Entry{*d.init, ttl_ms > 0 ? now + ttl_ms * 1000 : 0};
                }
                values.push_back(AddLocked(d.key, d.amount, ttl_ms, now));
            }
        }
        done(std::move(values));
    }

    void Get(std::vector<std::string> keys, ValuesCallback done) override {
        std::vector<int64_t> values;
        {
            std::lock_guard lock(mu_);
            const int64_t now = NowUs();
            for (const auto& key : keys) {
                values.push_back(ValueLocked(key, now));
            }
        }
        done(std::move(values));
    }

    std::string_view Engine() const override { return "inprocess"; }

private:
    struct Entry {
        int64_t value = 0;      // a counter's value, or a bucket's TAT (steady microseconds)
        int64_t expire_us = 0;  // 0 = never
    };

    int64_t NowUs() const { return clock_.SteadyNs() / 1000; }

    core::Result<RateDecision> Rate(const std::vector<RateLimit>& limits, bool force) {
        if (auto ok = ValidateLimits(limits); !ok) {
            return tl::unexpected(ok.error());
        }
        RateDecision d;
        std::lock_guard lock(mu_);
        const int64_t now = NowUs();
        auto steps = CheckLimitsLocked(limits, force, now, d);
        CommitLimitsLocked(limits, steps, d.admitted, now, d);
        MaybeSweepLocked(now);
        return d;
    }

    /// The GCRA step of every limit; sets d.admitted / denied_index / retry_after_ms (admitted
    /// when `limits` is empty). Takes nothing.
    std::vector<GcraStep> CheckLimitsLocked(const std::vector<RateLimit>& limits,
                                            bool force,
                                            int64_t now,
                                            RateDecision& d) const {
        std::vector<GcraStep> steps;
        steps.reserve(limits.size());
        for (size_t i = 0; i < limits.size(); ++i) {
            steps.push_back(Gcra(limits[i], ValueLocked(limits[i].key, now), now, force));
            if (!steps.back().fits && !force && d.denied_index < 0) {
                d.denied_index = static_cast<int>(i);
                d.retry_after_ms = steps.back().retry_after_us < 0
                                       ? -1
                                       : CeilDiv(steps.back().retry_after_us, 1000);
            }
        }
        d.admitted = d.denied_index < 0;
        return steps;
    }

    /// Takes the tokens when `take`, and reports each bucket's state in d.states.
    void CommitLimitsLocked(const std::vector<RateLimit>& limits,
                            const std::vector<GcraStep>& steps,
                            bool take,
                            int64_t now,
                            RateDecision& d) {
        for (size_t i = 0; i < limits.size(); ++i) {
            if (take) {
                // A bucket is full again (and forgettable) once its TAT has passed.
                Entry& e = map_[limits[i].key];
                e.value = steps[i].new_tat_us;
                e.expire_us = steps[i].new_tat_us;
                d.states.push_back(steps[i].state);
            } else {
                // Nothing taken: report each bucket as it stands.
                d.states.push_back(
                    Gcra(RateLimit{limits[i].key, limits[i].limit, limits[i].window_ms, 0},
                         ValueLocked(limits[i].key, now), now, false)
                        .state);
            }
        }
    }

    /// Creates missing counters that have an `init`, and decides whether every reservation fits
    /// (admitted when `reservations` is empty). Adds nothing.
    ReserveDecision CheckReservationsLocked(const std::vector<Reservation>& reservations,
                                            int64_t ttl_ms,
                                            int64_t now) {
        ReserveDecision d;
        for (size_t i = 0; i < reservations.size(); ++i) {
            const auto& r = reservations[i];
            if (r.init && !PresentLocked(r.key, now)) {
                map_[r.key] = Entry{*r.init, ttl_ms > 0 ? now + ttl_ms * 1000 : 0};
            }
            const int64_t after = ValueLocked(r.key, now) + r.amount;
            if ((after > r.cap || after < r.floor) && d.denied_index < 0) {
                d.denied_index = static_cast<int>(i);
            }
        }
        d.admitted = d.denied_index < 0;
        return d;
    }

    /// Adds the amounts when d.admitted, and reports each counter's value in d.values.
    void CommitReservationsLocked(const std::vector<Reservation>& reservations,
                                  int64_t ttl_ms,
                                  int64_t now,
                                  ReserveDecision& d) {
        for (const auto& r : reservations) {
            d.values.push_back(d.admitted ? AddLocked(r.key, r.amount, ttl_ms, now)
                                          : ValueLocked(r.key, now));
        }
    }

    bool PresentLocked(const std::string& key, int64_t now) const {
        auto it = map_.find(key);
        return it != map_.end() && (it->second.expire_us == 0 || it->second.expire_us > now);
    }

    int64_t ValueLocked(const std::string& key, int64_t now) const {
        auto it = map_.find(key);
        if (it == map_.end() || (it->second.expire_us != 0 && it->second.expire_us <= now)) {
            return 0;
        }
        return it->second.value;
    }

    int64_t AddLocked(const std::string& key, int64_t delta, int64_t ttl_ms, int64_t now) {
        Entry& e = map_[key];
        if (e.expire_us != 0 && e.expire_us <= now) {
            e = Entry{};
        }
        e.value += delta;
        if (ttl_ms > 0) {
            e.expire_us = now + ttl_ms * 1000;
        }
        MaybeSweepLocked(now);
        return e.value;
    }

    void MaybeSweepLocked(int64_t now) {
        if (map_.size() < sweep_at_) {
            return;
        }
        std::erase_if(map_, [now](const auto& kv) {
            return kv.second.expire_us != 0 && kv.second.expire_us <= now;
        });
        sweep_at_ = std::max<size_t>(1024, map_.size() * 2);
    }

    const core::Clock& clock_;
    std::mutex mu_;  // guards map_, sweep_at_
    std::unordered_map<std::string, Entry> map_;
    size_t sweep_at_ = 1024;
};

}  // namespace

std::unique_ptr<Counters> MakeInProcessCounters(const core::Clock& clock) {
    return std::make_unique<InProcessCounters>(clock);
}

}  // namespace conduit::bus
