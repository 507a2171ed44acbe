#pragma once

#include "core/loop.hpp"

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::obs {

/// Outcome of a health check, ordered from best to worst.
enum class HealthStatus { kHealthy, kDegraded, kUnhealthy };

/// "Healthy", "Degraded" or "Unhealthy", as the API reports it.
std::string_view ToString(HealthStatus status);

/// What one check reports.
struct HealthResult {
    HealthStatus status = HealthStatus::kHealthy;
    std::string description;
};

/// An asynchronous check: it must call `done` once, from any thread, when it knows the result.
/// It is started on the loop thread and must not block.
using HealthCheckFn = std::function<void(std::function<void(HealthResult)> done)>;

/// Wraps a quick synchronous, non-blocking check (e.g. reading a pool's gauge) as a HealthCheckFn.
HealthCheckFn SyncHealthCheck(std::function<HealthResult()> fn);

/// One check's line in a report.
struct HealthCheckReport {
    std::string name;
    HealthStatus status = HealthStatus::kHealthy;
    double duration_ms = 0;
    std::string description;
};

/// The result of running a set of checks: overall status is the worst check (Healthy when none).
struct HealthReport {
    HealthStatus status = HealthStatus::kHealthy;
    std::vector<HealthCheckReport> checks;  // registration order
    double total_duration_ms = 0;

    /// `{"status":…,"checks":[{"name","status","duration_ms","description"}],"total_duration_ms":N}`
    std::string ToJson() const;
    /// 503 when Unhealthy, else 200.
    int HttpStatus() const;
};

/// Named health checks with tags ("live", "ready", …), run on demand by the /health handlers.
/// Add and Run are thread-safe.
class HealthRegistry {
public:
    /// Registers a check. Start-up normally; names should be unique.
    void Add(std::string name, std::vector<std::string> tags, HealthCheckFn fn);

    /// Starts every check carrying `tag` (all checks when nullopt) and calls `done` exactly once,
    /// on `loop`'s thread and never from inside Run, when all have reported or when `deadline`
    /// passes; checks still running then are reported Unhealthy "timed out" and their late
    /// results are ignored. Callable from any thread (hops to `loop` first); `loop` must outlive
    /// the run.
    void Run(std::optional<std::string> tag,
             core::Loop& loop,
             std::chrono::milliseconds deadline,
             std::function<void(HealthReport)> done) const;

private:
    struct Check {
        std::string name;
        std::vector<std::string> tags;
        HealthCheckFn fn;
    };

    mutable std::mutex mu_;
    std::vector<Check> checks_;
};

}  // namespace conduit::obs
