#include "obs/health.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace conduit::obs {
namespace {

using namespace std::chrono_literals;

// A loop driven by hand: posted work runs on Drain(), timers run on FireTimers().
class FakeLoop final : public core::Loop {
public:
    struct FakeTimer final : core::Timer {
        void Cancel() override { cancelled = true; }
        std::chrono::nanoseconds delay{};
        std::function<void()> fn;
        bool cancelled = false;
        bool fired = false;
    };

    std::size_t Index() const override { return 0; }
    void Post(std::function<void()> fn) override {
        std::lock_guard lock(mu_);
        posted_.push_back(std::move(fn));
    }
    core::TimerPtr StartTimer(std::chrono::nanoseconds delay, std::function<void()> fn) override {
        auto t = std::make_shared<FakeTimer>();
        t->delay = delay;
        t->fn = std::move(fn);
        timers.push_back(t);
        return t;
    }
    bool InLoopThread() const override { return true; }

    /// Runs posted work (including work posted meanwhile) until none is left.
    void Drain() {
        for (;;) {
            std::function<void()> fn;
            {
                std::lock_guard lock(mu_);
                if (posted_.empty()) {
                    return;
                }
                fn = std::move(posted_.front());
                posted_.pop_front();
            }
            fn();
        }
    }
    /// Fires every pending timer, then drains.
    void FireTimers() {
        for (auto& t : std::vector(timers)) {
            if (!t->cancelled && !t->fired) {
                t->fired = true;
                auto fn = std::move(t->fn);
                fn();
            }
        }
        Drain();
    }

    std::vector<std::shared_ptr<FakeTimer>> timers;

private:
    std::mutex mu_;
    std::deque<std::function<void()>> posted_;
};

HealthCheckFn Fixed(HealthStatus s, const std::string& description = {}) {
    return SyncHealthCheck([s, description] { return HealthResult{s, description}; });
}

struct Collector {
    std::function<void(HealthReport)> Fn() {
        return [this](HealthReport r) {
            ++calls;
            report = std::move(r);
        };
    }
    int calls = 0;
    HealthReport report;
};

TEST(Health, NoChecksIsHealthyAndNeverCompletesInsideRun) {
    HealthRegistry reg;
    FakeLoop loop;
    Collector c;
    reg.Run(std::nullopt, loop, 1s, c.Fn());
    EXPECT_EQ(c.calls, 0);
    loop.Drain();
    ASSERT_EQ(c.calls, 1);
    EXPECT_EQ(c.report.status, HealthStatus::kHealthy);
    EXPECT_TRUE(c.report.checks.empty());
    EXPECT_EQ(c.report.HttpStatus(), 200);
}

TEST(Health, OverallStatusIsTheWorstCheck) {
    HealthRegistry reg;
    reg.Add("a", {"ready"}, Fixed(HealthStatus::kHealthy));
    reg.Add("b", {"ready"}, Fixed(HealthStatus::kDegraded, "pool at 95%"));
    FakeLoop loop;
    Collector c;
    reg.Run(std::nullopt, loop, 1s, c.Fn());
    loop.Drain();
    ASSERT_EQ(c.calls, 1);
    EXPECT_EQ(c.report.status, HealthStatus::kDegraded);
    EXPECT_EQ(c.report.HttpStatus(), 200);
    ASSERT_EQ(c.report.checks.size(), 2u);
    EXPECT_EQ(c.report.checks[0].name, "a");
    EXPECT_EQ(c.report.checks[1].name, "b");
    EXPECT_EQ(c.report.checks[1].description, "pool at 95%");
    // All checks answered: the deadline timer was cancelled.
    ASSERT_EQ(loop.timers.size(), 1u);
    EXPECT_EQ(loop.timers[0]->delay, 1s);
    EXPECT_TRUE(loop.timers[0]->cancelled);

    reg.Add("c", {"live"}, Fixed(HealthStatus::kUnhealthy, "db down"));
    reg.Run(std::nullopt, loop, 1s, c.Fn());
    loop.Drain();
    EXPECT_EQ(c.calls, 2);
    EXPECT_EQ(c.report.status, HealthStatus::kUnhealthy);
    EXPECT_EQ(c.report.HttpStatus(), 503);
}

TEST(Health, TagSelectsChecks) {
    HealthRegistry reg;
    reg.Add("process", {"live", "ready"}, Fixed(HealthStatus::kHealthy));
    reg.Add("db", {"ready"}, Fixed(HealthStatus::kUnhealthy));
    FakeLoop loop;
    Collector c;
    reg.Run("live", loop, 1s, c.Fn());
    loop.Drain();
    ASSERT_EQ(c.report.checks.size(), 1u);
    EXPECT_EQ(c.report.checks[0].name, "process");
    EXPECT_EQ(c.report.status, HealthStatus::kHealthy);
    reg.Run("ready", loop, 1s, c.Fn());
    loop.Drain();
    EXPECT_EQ(c.report.checks.size(), 2u);
    EXPECT_EQ(c.report.status, HealthStatus::kUnhealthy);
    reg.Run("nothing", loop, 1s, c.Fn());
    loop.Drain();
    EXPECT_TRUE(c.report.checks.empty());
    EXPECT_EQ(c.calls, 3);
}

TEST(Health, DeadlineMarksPendingChecksTimedOutAndIgnoresLateResults) {
    HealthRegistry reg;
    std::function<void(HealthResult)> held;
    reg.Add("fast", {}, Fixed(HealthStatus::kHealthy, "ok"));
    reg.Add("slow", {},
            [&held](std::function<void(HealthResult)> done) { held = std::move(done); });
    FakeLoop loop;
    Collector c;
    reg.Run(std::nullopt, loop, 250ms, c.Fn());
    loop.Drain();
    EXPECT_EQ(c.calls, 0);  // still waiting for "slow"
    ASSERT_TRUE(held);
    ASSERT_EQ(loop.timers.size(), 1u);
    EXPECT_EQ(loop.timers[0]->delay, 250ms);

    loop.FireTimers();
    ASSERT_EQ(c.calls, 1);
    EXPECT_EQ(c.report.status, HealthStatus::kUnhealthy);
    EXPECT_EQ(c.report.HttpStatus(), 503);
    EXPECT_EQ(c.report.checks[0].status, HealthStatus::kHealthy);
    EXPECT_EQ(c.report.checks[1].status, HealthStatus::kUnhealthy);
    EXPECT_EQ(c.report.checks[1].description, "timed out");

    held(HealthResult{HealthStatus::kHealthy, "late"});
    loop.Drain();
    EXPECT_EQ(c.calls, 1);
    EXPECT_EQ(c.report.checks[1].description, "timed out");
}

TEST(Health, CheckAnsweringTwiceCountsOnce) {
    HealthRegistry reg;
    reg.Add("twice", {}, [](const std::function<void(HealthResult)>& done) {
        done(HealthResult{HealthStatus::kDegraded, "first"});
        done(HealthResult{HealthStatus::kUnhealthy, "second"});
    });
    reg.Add("other", {}, Fixed(HealthStatus::kHealthy));
    FakeLoop loop;
    Collector c;
    reg.Run(std::nullopt, loop, 1s, c.Fn());
    loop.Drain();
    loop.FireTimers();
    ASSERT_EQ(c.calls, 1);
    EXPECT_EQ(c.report.checks[0].description, "first");
    EXPECT_EQ(c.report.status, HealthStatus::kDegraded);
}

TEST(Health, ResultFromAnotherThreadIsMarshalledToTheLoop) {
    HealthRegistry reg;
    std::function<void(HealthResult)> held;
    reg.Add("db", {"ready"}, [&held](std::function<void(HealthResult)> done) {
        held = std::move(done);  // answered later, from a "DB thread"
    });
    FakeLoop loop;
    Collector c;
    reg.Run("ready", loop, 1s, c.Fn());
    loop.Drain();  // starts the check
    ASSERT_TRUE(held);
    std::thread worker([&held] { held({HealthStatus::kHealthy, "ping"}); });
    worker.join();
    EXPECT_EQ(c.calls, 0);  // the result is only posted so far
    loop.Drain();
    ASSERT_EQ(c.calls, 1);
    EXPECT_EQ(c.report.checks[0].description, "ping");
    EXPECT_GE(c.report.checks[0].duration_ms, 0);
    EXPECT_GE(c.report.total_duration_ms, c.report.checks[0].duration_ms);
}

TEST(Health, ReportJsonShape) {
    HealthReport r;
    r.status = HealthStatus::kDegraded;
    r.checks = {{"db", HealthStatus::kHealthy, 1.5, "ok"},
                {"queue", HealthStatus::kDegraded, 0.25, "depth \"1200\""}};
    r.total_duration_ms = 2;
    EXPECT_EQ(r.ToJson(),
              R"({"status":"Degraded","checks":[)"
              R"({"name":"db","status":"Healthy","duration_ms":1.5,"description":"ok"},)"
              R"({"name":"queue","status":"Degraded","duration_ms":0.25,)"
              R"("description":"depth \"1200\""}],"total_duration_ms":2})");
    EXPECT_EQ(HealthReport{}.ToJson(), R"({"status":"Healthy","checks":[],"total_duration_ms":0})");
}

TEST(Health, RunReportParsesAsJson) {
    HealthRegistry reg;
    reg.Add("a", {}, Fixed(HealthStatus::kUnhealthy, "x\ny"));
    FakeLoop loop;
    Collector c;
    reg.Run(std::nullopt, loop, 1s, c.Fn());
    loop.Drain();
    boost::system::error_code ec;
    const auto v = boost::json::parse(c.report.ToJson(), ec);
    ASSERT_FALSE(ec);
    const auto& o = v.as_object();
    EXPECT_EQ(o.at("status").as_string(), "Unhealthy");
    EXPECT_TRUE(o.at("total_duration_ms").is_number());
    const auto& check = o.at("checks").as_array().at(0).as_object();
    EXPECT_EQ(check.at("name").as_string(), "a");
    EXPECT_EQ(check.at("description").as_string(), "x\ny");
    EXPECT_TRUE(check.at("duration_ms").is_number());
}

}  // namespace
}  // namespace conduit::obs
