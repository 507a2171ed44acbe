#include "http_client/backoff.hpp"
#include "http_client/circuit_breaker.hpp"

#include <gtest/gtest.h>

namespace conduit::http_client {
namespace {

using namespace std::chrono_literals;

TEST(Backoff, ExponentialWithJitterAndCap) {
    EXPECT_EQ(BackoffDelay(1, 2000ms, 60000ms, 1.0), 2000ms);
    EXPECT_EQ(BackoffDelay(2, 2000ms, 60000ms, 1.0), 4000ms);
    EXPECT_EQ(BackoffDelay(3, 2000ms, 60000ms, 1.0), 8000ms);
    EXPECT_EQ(BackoffDelay(3, 2000ms, 60000ms, 0.0), 4000ms);  // jitter floor: 50 %
    EXPECT_EQ(BackoffDelay(10, 2000ms, 60000ms, 1.0), 60000ms);
    EXPECT_EQ(BackoffDelay(0, 100ms, 1000ms, 1.0), 100ms);
}

TEST(Backoff, RetryAfterSeconds) {
    EXPECT_EQ(ParseRetryAfter("7"), 7000ms);
    EXPECT_LT(ParseRetryAfter("soon").count(), 0);
    EXPECT_LT(ParseRetryAfter("").count(), 0);
}

TEST(CircuitBreaker, OpensAfterConsecutiveFailuresProbesAndCloses) {
    CircuitBreaker b(3, 1000);
    EXPECT_TRUE(b.Allow(0));
    b.RecordFailure(0);
    b.RecordFailure(0);
    b.RecordSuccess();  // resets the run
    b.RecordFailure(0);
    b.RecordFailure(0);
    EXPECT_EQ(b.state(0), CircuitBreaker::State::kClosed);
    b.RecordFailure(10);
    EXPECT_EQ(b.state(10), CircuitBreaker::State::kOpen);
    EXPECT_FALSE(b.Allow(500));
    EXPECT_EQ(b.state(1010), CircuitBreaker::State::kHalfOpen);
    EXPECT_TRUE(b.Allow(1010));   // one probe
    EXPECT_FALSE(b.Allow(1011));  // only one
    b.RecordFailure(1020);        // probe failed: open again for a full period
    EXPECT_FALSE(b.Allow(1500));
    EXPECT_TRUE(b.Allow(2020));
    b.RecordSuccess();
    EXPECT_EQ(b.state(2021), CircuitBreaker::State::kClosed);
    EXPECT_EQ(b.trips(), 2);
}

}  // namespace
}  // namespace conduit::http_client
