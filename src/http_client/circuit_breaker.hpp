#pragma once

#include <cstdint>
#include <string_view>

namespace conduit::http_client {

/// Consecutive-failure circuit breaker (per upstream host or provider deployment).
/// closed → (failure_threshold consecutive failures) → open → (open_ms elapsed) → half-open:
/// one probe is let through; success closes, failure re-opens. Not thread-safe: keep one per
/// loop, or guard externally. Time is passed in (steady ms) so the logic is testable.
class CircuitBreaker {
public:
    enum class State { kClosed, kOpen, kHalfOpen };

    CircuitBreaker(int failure_threshold, int64_t open_ms)
        : threshold_(failure_threshold), open_ms_(open_ms) {}

    /// True if a request may be sent now. In half-open state only one probe is allowed until
    /// its result is recorded.
    bool Allow(int64_t now_ms);
    void RecordSuccess();
    void RecordFailure(int64_t now_ms);
    State state(int64_t now_ms) const;
    int consecutive_failures() const { return failures_; }
    /// Number of transitions into the open state so far.
    int64_t trips() const { return trips_; }

private:
    int threshold_;
    int64_t open_ms_;
    int failures_ = 0;
    bool open_ = false;
    bool probe_in_flight_ = false;
    int64_t opened_at_ms_ = 0;
    int64_t trips_ = 0;
};

std::string_view ToString(CircuitBreaker::State s);

}  // namespace conduit::http_client
