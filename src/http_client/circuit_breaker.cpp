#include "http_client/circuit_breaker.hpp"

namespace conduit::http_client {

bool CircuitBreaker::Allow(int64_t now_ms) {
    if (!open_) {
        return true;
    }
    if (now_ms - opened_at_ms_ < open_ms_) {
        return false;
    }
    if (probe_in_flight_) {
        return false;
    }
    probe_in_flight_ = true;
    return true;
}

void CircuitBreaker::RecordSuccess() {
    failures_ = 0;
    open_ = false;
    probe_in_flight_ = false;
}

void CircuitBreaker::RecordFailure(int64_t now_ms) {
    ++failures_;
    if (open_) {
        // A failed half-open probe re-opens for a full period.
        if (probe_in_flight_) {
            probe_in_flight_ = false;
            opened_at_ms_ = now_ms;
            ++trips_;
        }
        return;
    }
    if (failures_ >= threshold_) {
        open_ = true;
        opened_at_ms_ = now_ms;
        ++trips_;
    }
}

CircuitBreaker::State CircuitBreaker::state(int64_t now_ms) const {
    if (!open_) {
        return State::kClosed;
    }
    return now_ms - opened_at_ms_ >= open_ms_ ? State::kHalfOpen : State::kOpen;
}

std::string_view ToString(CircuitBreaker::State s) {
    switch (s) {
        case CircuitBreaker::State::kClosed:
            return "closed";
        case CircuitBreaker::State::kOpen:
            return "open";
        case CircuitBreaker::State::kHalfOpen:
            return "half_open";
    }
    return "unknown";
}

}  // namespace conduit::http_client
