#include "domain/routing.hpp"

#include <gtest/gtest.h>

#include <map>

namespace conduit::domain {
namespace {

using V = std::vector<size_t>;

TEST(RoutingStrategyTest, NamesRoundTripAndOriginalAliasesMap) {
    for (auto s :
         {RoutingStrategy::kSimple, RoutingStrategy::kRoundRobin, RoutingStrategy::kLeastCost,
          RoutingStrategy::kLeastLatency, RoutingStrategy::kPriority}) {
        EXPECT_EQ(ParseRoutingStrategy(ToString(s)), s);
    }
    EXPECT_EQ(ParseRoutingStrategy("LeastUsed"), RoutingStrategy::kRoundRobin);
    EXPECT_EQ(ParseRoutingStrategy("passthrough"), RoutingStrategy::kSimple);
    EXPECT_FALSE(ParseRoutingStrategy("fastest").has_value());
}

TEST(RoutingStrategyTest, ConfigLooksUpAliasesCaseInsensitively) {
    RouterConfig c;
    c.strategies["gpt-4"] = RoutingStrategy::kLeastCost;
    c.fallbacks["gpt-4"] = {"gpt-4o-mini"};
    EXPECT_EQ(c.StrategyFor("GPT-4"), RoutingStrategy::kLeastCost);
    EXPECT_EQ(c.StrategyFor("other"), RoutingStrategy::kSimple);
    EXPECT_EQ(c.FallbacksFor("Gpt-4"), (std::vector<std::string>{"gpt-4o-mini"}));
    c.fallbacks_enabled = false;
    EXPECT_TRUE(c.FallbacksFor("gpt-4").empty());
}

TEST(OrderDeploymentsTest, SimpleKeepsOrderAndSkipsUnavailable) {
    std::vector<DeploymentView> d(3);
    d[1].available = false;
    EXPECT_EQ(OrderDeployments(RoutingStrategy::kSimple, d, 7), (V{0, 2}));
    d[0].available = d[2].available = false;
    EXPECT_TRUE(OrderDeployments(RoutingStrategy::kSimple, d, 0).empty());
}

TEST(OrderDeploymentsTest, RoundRobinSpreadsEvenly) {
    std::vector<DeploymentView> d(3);
    std::map<size_t, int> first;
    for (uint64_t t = 0; t < 300; ++t) {
        auto o = OrderDeployments(RoutingStrategy::kRoundRobin, d, t);
        ASSERT_EQ(o.size(), 3u);
        first[o[0]]++;
    }
    EXPECT_EQ(first[0], 100);
    EXPECT_EQ(first[1], 100);
    EXPECT_EQ(first[2], 100);
    EXPECT_EQ(OrderDeployments(RoutingStrategy::kRoundRobin, d, 1), (V{1, 2, 0}));
}

TEST(OrderDeploymentsTest, LeastCostPutsUnknownPricesLast) {
    std::vector<DeploymentView> d(4);
    d[0].price = 30;
    d[1].price = -1;
    d[2].price = 10;
    d[3].price = 30;
    EXPECT_EQ(OrderDeployments(RoutingStrategy::kLeastCost, d, 5), (V{2, 0, 3, 1}));
}

TEST(OrderDeploymentsTest, LeastLatencySamplesUnmeasuredFirst) {
    std::vector<DeploymentView> d(3);
    d[0].latency_ms = 80;
    d[1].latency_ms = 20;
    d[2].latency_ms = -1;
    EXPECT_EQ(OrderDeployments(RoutingStrategy::kLeastLatency, d, 0), (V{2, 1, 0}));
}

TEST(OrderDeploymentsTest, PriorityRotatesWithinTiersOnly) {
    std::vector<DeploymentView> d(4);
    d[0].priority = 1;
    d[1].priority = 5;
    d[2].priority = 5;
    d[3].priority = 1;
    EXPECT_EQ(OrderDeployments(RoutingStrategy::kPriority, d, 0), (V{1, 2, 0, 3}));
    EXPECT_EQ(OrderDeployments(RoutingStrategy::kPriority, d, 1), (V{2, 1, 3, 0}));
    d[1].available = d[2].available = false;  // the top tier is down: the next one serves
    EXPECT_EQ(OrderDeployments(RoutingStrategy::kPriority, d, 0), (V{0, 3}));
}

BreakerOptions Small() {
    BreakerOptions o;
    o.window_ms = 10'000;
    o.buckets = 10;
    o.min_requests = 4;
    o.failure_ratio = 0.5;
    o.open_ms = 5'000;
    o.half_open_probes = 1;
    return o;
}

TEST(WindowBreakerTest, OpensAtTheFailureRatioOnlyWithEnoughRequests) {
    WindowBreaker b(Small());
    int64_t t = 1'000'000;
    // Three failures: below the minimum throughput, stays closed.
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(b.TryAcquire(t));
        EXPECT_FALSE(b.Record(false, t));
    }
    EXPECT_EQ(b.state(t), WindowBreaker::State::kClosed);
    ASSERT_TRUE(b.TryAcquire(t));
    EXPECT_TRUE(b.Record(false, t));  // 4 of 4 failed
    EXPECT_EQ(b.state(t), WindowBreaker::State::kOpen);
    EXPECT_FALSE(b.Available(t));
    EXPECT_FALSE(b.TryAcquire(t + 4'999));
    EXPECT_EQ(b.trips(), 1);
}

TEST(WindowBreakerTest, SuccessesKeepItClosedAndOldFailuresSlideOut) {
    WindowBreaker b(Small());
    int64_t t = 1'000'000;
    for (int i = 0; i < 3; ++i) {
        b.TryAcquire(t);
        b.Record(false, t);
    }
    for (int i = 0; i < 4; ++i) {
        b.TryAcquire(t);
        b.Record(true, t);
    }
    EXPECT_EQ(b.state(t), WindowBreaker::State::kClosed);  // 3 failures of 7
    b.TryAcquire(t);
    EXPECT_TRUE(b.Record(false, t));  // 4 of 8 is exactly the ratio: open
    EXPECT_EQ(b.state(t), WindowBreaker::State::kOpen);

    WindowBreaker c(Small());
    for (int i = 0; i < 3; ++i) {
        c.TryAcquire(t);
        c.Record(false, t);
    }
    // Ten seconds later those failures have left the window.
    t += 10'000;
    c.TryAcquire(t);
    EXPECT_FALSE(c.Record(false, t));
    EXPECT_EQ(c.WindowCounts(t), (std::pair<int64_t, int64_t>{1, 1}));
    EXPECT_EQ(c.state(t), WindowBreaker::State::kClosed);
}

TEST(WindowBreakerTest, HalfOpenProbeClosesOrReopens) {
    WindowBreaker b(Small());
    int64_t t = 1'000'000;
    for (int i = 0; i < 4; ++i) {
        b.TryAcquire(t);
        b.Record(false, t);
    }
    ASSERT_EQ(b.state(t), WindowBreaker::State::kOpen);
    t += 5'000;
    EXPECT_EQ(b.state(t), WindowBreaker::State::kHalfOpen);
    EXPECT_TRUE(b.Available(t));
    ASSERT_TRUE(b.TryAcquire(t));  // the probe
    EXPECT_FALSE(b.Available(t));  // one probe at a time
    EXPECT_FALSE(b.TryAcquire(t));
    EXPECT_TRUE(b.Record(false, t));  // probe failed: open again
    EXPECT_EQ(b.state(t), WindowBreaker::State::kOpen);
    EXPECT_EQ(b.trips(), 2);
    t += 5'000;
    ASSERT_TRUE(b.TryAcquire(t));
    EXPECT_TRUE(b.Record(true, t));  // probe succeeded: closed with a fresh window
    EXPECT_EQ(b.state(t), WindowBreaker::State::kClosed);
    EXPECT_EQ(b.WindowCounts(t), (std::pair<int64_t, int64_t>{0, 0}));
}

TEST(WindowBreakerTest, CancelledProbeFreesTheSlot) {
    WindowBreaker b(Small());
    int64_t t = 0;
    for (int i = 0; i < 4; ++i) {
        b.TryAcquire(t);
        b.Record(false, t);
    }
    t += 5'000;
    ASSERT_TRUE(b.TryAcquire(t));
    b.Release();
    EXPECT_TRUE(b.TryAcquire(t));
}

}  // namespace
}  // namespace conduit::domain
