#pragma once

#include <chrono>
#include <cstdint>

namespace conduit::core {

/// Source of time. Production uses SystemClock; tests inject a fake. Thread-safe.
class Clock {
public:
    virtual ~Clock() = default;
    /// Wall-clock time in milliseconds since the Unix epoch.
    virtual int64_t NowUnixMs() const = 0;
    /// Monotonic nanoseconds (arbitrary origin), for durations.
    virtual int64_t SteadyNs() const = 0;
};

class SystemClock final : public Clock {
public:
    int64_t NowUnixMs() const override {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
    }
    int64_t SteadyNs() const override { return SteadyNowNs(); }

    static int64_t SteadyNowNs() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }
    /// The process-wide system clock.
    static const SystemClock& Instance() {
        static const SystemClock clock;
        return clock;
    }
};

/// Formats Unix milliseconds as ISO-8601 UTC with millisecond precision
/// ("2026-01-02T03:04:05.678Z").
std::string FormatIso8601(int64_t unix_ms);
/// Parses ISO-8601 ("2026-01-02T03:04:05Z", fractional seconds and +hh:mm offsets accepted).
/// Returns false on malformed input.
bool ParseIso8601(std::string_view text, int64_t& unix_ms);

}  // namespace conduit::core
