#include "obs/health.hpp"

#include "core/clock.hpp"
#include "core/strings.hpp"
#include "obs/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>

namespace conduit::obs {

namespace {

using core::SystemClock;

// Milliseconds rounded to the microsecond.
double ElapsedMs(int64_t from_ns, int64_t to_ns) {
    return std::round(static_cast<double>(to_ns - from_ns) / 1e3) / 1e3;
}

struct NamedCheck {
    std::string name;
    HealthCheckFn fn;
};

// State of one Run. Touched only on the loop thread; kept alive by the deadline timer's callback
// and by the checks' completion callbacks.
class RunState : public std::enable_shared_from_this<RunState> {
public:
    RunState(core::Loop& loop,
             std::vector<NamedCheck> checks,
             std::function<void(HealthReport)> done)
        : loop_(loop),
          checks_(std::move(checks)),
          done_(std::move(done)),
          finished_(checks_.size(), false),
          remaining_(checks_.size()) {
        report_.checks.resize(checks_.size());
        for (std::size_t i = 0; i < checks_.size(); ++i) {
            report_.checks[i].name = checks_[i].name;
        }
    }

    void Start(std::chrono::milliseconds deadline) {
        start_ns_ = SystemClock::SteadyNowNs();
        if (checks_.empty()) {
            Finish();
            return;
        }
        auto self = shared_from_this();
        timer_ = loop_.StartTimer(deadline, [self] { self->Finish(/*from_timer=*/true); });
        for (std::size_t i = 0; i < checks_.size(); ++i) {
            const int64_t check_start = SystemClock::SteadyNowNs();
            // Always hop through Post: a check may answer on another thread, or synchronously
            // from inside this loop.
            checks_[i].fn([self, i, check_start](HealthResult result) {
                const int64_t end = SystemClock::SteadyNowNs();
                self->loop_.Post([self, i, check_start, end, r = std::move(result)]() mutable {
                    self->Complete(i, std::move(r), ElapsedMs(check_start, end));
                });
            });
        }
    }

private:
    void Complete(std::size_t i, HealthResult result, double duration_ms) {
        if (completed_ || finished_[i]) {
            return;  // after the deadline, or a check answering twice
        }
        finished_[i] = true;
        auto& entry = report_.checks[i];
        entry.status = result.status;
        entry.description = std::move(result.description);
        entry.duration_ms = duration_ms;
        if (--remaining_ == 0) {
            Finish();
        }
    }

    void Finish(bool from_timer = false) {
        if (completed_) {
            return;
        }
        completed_ = true;
        const int64_t now = SystemClock::SteadyNowNs();
        if (timer_ && !from_timer) {
            timer_->Cancel();
            timer_.reset();
        } else if (timer_) {
            // Not destroyed inside its own callback; dropping it later breaks the
            // state -> timer -> callback -> state cycle.
            loop_.Post([self = shared_from_this()] { self->timer_.reset(); });
        }
        for (std::size_t i = 0; i < checks_.size(); ++i) {
            auto& entry = report_.checks[i];
            if (!finished_[i]) {
                entry.status = HealthStatus::kUnhealthy;
                entry.description = "timed out";
                entry.duration_ms = ElapsedMs(start_ns_, now);
            }
            report_.status = std::max(report_.status, entry.status);
        }
        report_.total_duration_ms = ElapsedMs(start_ns_, now);
        checks_.clear();  // releases the check functions (and whatever they captured)
        auto done = std::move(done_);
        done(std::move(report_));
    }

    core::Loop& loop_;
    std::vector<NamedCheck> checks_;
    std::function<void(HealthReport)> done_;
    std::vector<bool> finished_;
    std::size_t remaining_;
    HealthReport report_;
    int64_t start_ns_ = 0;
    core::TimerPtr timer_;
    bool completed_ = false;
};

}  // namespace

std::string_view ToString(HealthStatus status) {
    switch (status) {
        case HealthStatus::kHealthy:
            return "Healthy";
        case HealthStatus::kDegraded:
            return "Degraded";
        case HealthStatus::kUnhealthy:
            return "Unhealthy";
    }
    return "Unhealthy";
}

HealthCheckFn SyncHealthCheck(std::function<HealthResult()> fn) {
    return [fn = std::move(fn)](const std::function<void(HealthResult)>& done) { done(fn()); };
}

std::string HealthReport::ToJson() const {
    std::string out = R"({"status":")";
    out += ToString(status);
    out += R"(","checks":[)";
    for (std::size_t i = 0; i < checks.size(); ++i) {
        const auto& c = checks[i];
        out += i == 0 ? R"({"name":)" : R"(,{"name":)";
        out += core::JsonQuote(c.name);
        out += R"(,"status":")";
        out += ToString(c.status);
        out += R"(","duration_ms":)";
        out += FormatMetricValue(c.duration_ms);
        out += R"(,"description":)";
        out += core::JsonQuote(c.description);
        out.push_back('}');
    }
    out += R"(],"total_duration_ms":)";
    out += FormatMetricValue(total_duration_ms);
    out.push_back('}');
    return out;
}

int HealthReport::HttpStatus() const { return status == HealthStatus::kUnhealthy ? 503 : 200; }

void HealthRegistry::Add(std::string name, std::vector<std::string> tags, HealthCheckFn fn) {
    std::lock_guard lock(mu_);
    checks_.push_back(Check{std::move(name), std::move(tags), std::move(fn)});
}

void HealthRegistry::Run(std::optional<std::string> tag,
                         core::Loop& loop,
                         std::chrono::milliseconds deadline,
                         std::function<void(HealthReport)> done) const {
    std::vector<NamedCheck> selected;
    {
        std::lock_guard lock(mu_);
        for (const auto& c : checks_) {
            if (!tag || std::find(c.tags.begin(), c.tags.end(), *tag) != c.tags.end()) {
                selected.push_back(NamedCheck{c.name, c.fn});
            }
        }
    }
    // Post even when already on the loop thread, so `done` never runs inside Run.
    auto state = std::make_shared<RunState>(loop, std::move(selected), std::move(done));
    loop.Post([state = std::move(state), deadline] { state->Start(deadline); });
}

}  // namespace conduit::obs
