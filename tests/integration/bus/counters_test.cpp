// The Counters contract suite (tests/contract/counters_contract.hpp) on the in-process adapter
// (always) and on Redis when CONDUIT_TEST_REDIS is set (scripts/engines.sh start redis), plus
// Redis-specific tests: the local pre-check, NOSCRIPT recovery, Redis unreachable.
#include "bus/redis/redis_counters.hpp"
#include "contract/counters_contract.hpp"
#include "core/crypto.hpp"
#include "redis/client.hpp"
#include "redis/url.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>

namespace conduit::bus {
namespace {

using namespace std::chrono_literals;

std::optional<std::string> RedisUrl() {
    const char* url = std::getenv("CONDUIT_TEST_REDIS");
    if (url == nullptr || *url == '\0') {
        return std::nullopt;
    }
    return std::string(url);
}

constexpr const char* kSkip =
    "CONDUIT_TEST_REDIS not set; run `eval \"$(scripts/engines.sh start redis)\"` to test the "
    "Redis Counters adapter";

std::string UniquePrefix() {
    return "cc" + std::to_string(::getpid()) + "x" + core::HexEncode(core::RandomBytes(4)) + ":";
}

std::unique_ptr<RedisCounters> MakeRedis(const std::string& url,
                                         const std::string& prefix,
                                         std::chrono::milliseconds timeout = 2000ms,
                                         std::chrono::milliseconds batch = 20ms) {
    RedisCountersOptions o;
    o.url = url;
    o.key_prefix = prefix;
    o.command_timeout = timeout;
    o.batch_interval = batch;
    auto c = MakeRedisCounters(std::move(o));
    EXPECT_TRUE(c.has_value()) << c.error().message;
    return c ? std::move(*c) : nullptr;
}

struct InProcessTraits {
    std::unique_ptr<Counters> c = MakeInProcessCounters();
    std::string SkipReason() const { return ""; }
    bus::Counters* Instance() { return c.get(); }
    bus::Counters* Peer() { return c.get(); }
};

/// Two adapters (two gateway instances) on one Redis and one key prefix.
struct RedisTraits {
    std::optional<std::string> url = RedisUrl();
    std::string prefix = UniquePrefix();
    std::unique_ptr<RedisCounters> a = url ? MakeRedis(*url, prefix) : nullptr;
    std::unique_ptr<RedisCounters> b = url ? MakeRedis(*url, prefix) : nullptr;
    std::string SkipReason() const { return kSkip; }
    bus::Counters* Instance() { return a.get(); }
    bus::Counters* Peer() { return b.get(); }
};

}  // namespace

namespace contract {
INSTANTIATE_TYPED_TEST_SUITE_P(InProcess, CountersContract, InProcessTraits);
INSTANTIATE_TYPED_TEST_SUITE_P(Redis, CountersContract, RedisTraits);
}  // namespace contract

namespace {

using contract::AcquireNow;

/// Sends one command on a fresh client and waits for the reply.
core::Result<redis::Reply> RunCommand(const std::string& url,
                                      std::initializer_list<std::string_view> args) {
    redis::ClientOptions o;
    o.endpoint = *redis::ParseUrl(url);
    redis::Client client(o);
    std::promise<core::Result<redis::Reply>> done;
    auto f = done.get_future();
    client.Command(args, [&done](core::Result<redis::Reply> r) { done.set_value(std::move(r)); });
    if (f.wait_for(10s) != std::future_status::ready) {
        return core::Fail(core::ErrorCode::kUpstreamTimeout, "no reply");
    }
    return f.get();
}

TEST(RedisCountersTest, BadUrlIsRejected) {
    RedisCountersOptions o;
    o.url = "http://127.0.0.1:6379/";
    EXPECT_FALSE(MakeRedisCounters(o).has_value());
}

TEST(RedisCountersTest, CertainRefusalsAreAnsweredWithoutRedis) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    auto c = MakeRedis(*url, UniquePrefix());
    const RateLimit l{"rpm", 1, 60'000, 1};
    auto first = AcquireNow(*c, {l});
    ASSERT_TRUE(first.has_value()) << first.error().message;
    EXPECT_TRUE(first->admitted);
    auto second = AcquireNow(*c, {l});
    ASSERT_TRUE(second.has_value());
    EXPECT_FALSE(second->admitted);
    EXPECT_FALSE(second->local);
    const auto trips = c->Stats().round_trips;
    // Known: no room for cost >= 1 for about a minute. Cost 0 (a look) still asks Redis.
    auto third = AcquireNow(*c, {{"other", 100, 60'000, 1}, l});
    ASSERT_TRUE(third.has_value());
    EXPECT_FALSE(third->admitted);
    EXPECT_TRUE(third->local);
    EXPECT_EQ(third->denied_index, 1);
    EXPECT_GT(third->retry_after_ms, 59'000);
    EXPECT_EQ(c->Stats().round_trips, trips);
    EXPECT_EQ(c->Stats().local_decisions, 1u);
    // A cost above the limit never needs Redis either.
    auto huge = AcquireNow(*c, {{"fresh", 10, 60'000, 11}});
    ASSERT_TRUE(huge.has_value());
    EXPECT_TRUE(huge->local);
    EXPECT_EQ(huge->retry_after_ms, -1);
    EXPECT_EQ(c->Stats().round_trips, trips);
    // The other limit of the locally refused call was not touched.
    auto look = AcquireNow(*c, {{"other", 100, 60'000, 0}});
    ASSERT_TRUE(look.has_value());
    EXPECT_EQ(look->states[0].remaining, 100);
}

TEST(RedisCountersTest, ScriptsAreReloadedAfterScriptFlush) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    auto c = MakeRedis(*url, UniquePrefix());
    ASSERT_TRUE(AcquireNow(*c, {{"a", 5, 60'000, 1}})->admitted);
    auto flushed = RunCommand(*url, {"SCRIPT", "FLUSH"});
    ASSERT_TRUE(flushed.has_value()) << flushed.error().message;
    auto again = AcquireNow(*c, {{"a", 5, 60'000, 1}});
    ASSERT_TRUE(again.has_value()) << again.error().message;
    EXPECT_TRUE(again->admitted);
    EXPECT_EQ(again->states[0].remaining, 3);
    EXPECT_GE(c->Stats().script_reloads, 1u);
}

TEST(RedisCountersTest, AdmitSettleAndChargeCostOneRoundTripPerRequest) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    // A long batch interval: the flusher never gets there first, so the count is exact.
    auto c = MakeRedis(*url, UniquePrefix(), 2000ms, 10'000ms);
    constexpr int kRequests = 200;
    constexpr int64_t kYear = 366LL * 86'400'000;  // refills ~0.03 tokens/s: exact below
    const std::vector<RateLimit> limits{{"vk:rpm", 1'000'000, 60'000, 1},
                                        {"vk:rpd", 1'000'000, 86'400'000, 1}};
    std::atomic<int> settled{0};
    for (int i = 0; i < kRequests; ++i) {
        // Admit: the limits and a worst-case hold of 100 from a balance of 1,000,000.
        auto d = contract::AdmitNow(
            *c, limits, {{"bal", -100, std::numeric_limits<int64_t>::max(), 0, 1'000'000}},
            600'000);
        ASSERT_TRUE(d.has_value()) << d.error().message;
        ASSERT_TRUE(d->admitted);
        // The request cost 40: settle (give back 60) and charge its tokens, without waiting.
        c->Add({{"bal", 60}}, 600'000, [&settled](auto r) { settled += r.has_value() ? 1 : 0; });
        c->Charge({{"vk:tpm", 1'000'000, kYear, 25}},
                  [&settled](auto r) { settled += r.has_value() ? 1 : 0; });
    }
    const auto st = c->Stats();
    EXPECT_EQ(st.round_trips, static_cast<uint64_t>(kRequests));
    EXPECT_EQ(st.deferred_ops, static_cast<uint64_t>(2 * kRequests));
    EXPECT_EQ(st.deferred_flushes, 0u);
    // The last request's settlement goes with the next call (here: a read).
    auto bal = contract::GetNow(*c, {"bal"});
    ASSERT_TRUE(bal.has_value());
    EXPECT_EQ(bal->at(0), 1'000'000 - 40 * kRequests);
    EXPECT_EQ(settled.load(), 2 * kRequests);
    auto tpm = contract::AcquireNow(*c, {{"vk:tpm", 1'000'000, kYear, 0}});
    ASSERT_TRUE(tpm.has_value());
    EXPECT_EQ(tpm->states[0].remaining, 1'000'000 - 25 * kRequests);
}

TEST(RedisCountersTest, ConcurrentAdmissionsShareScriptsAndStayExact) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    const std::string prefix = UniquePrefix();
    auto a = MakeRedis(*url, prefix);
    auto b = MakeRedis(*url, prefix);
    // 600 admissions fired at once from two instances against RPM 100 and a balance covering
    // 250 holds of 4: exactly 100 admitted; the queued ones ride in shared scripts.
    constexpr int kCalls = 600;
    std::vector<std::future<core::Result<AdmitDecision>>> pending;
    for (int i = 0; i < kCalls; ++i) {
        auto p = std::make_shared<std::promise<core::Result<AdmitDecision>>>();
        pending.push_back(p->get_future());
        RedisCounters& c = (i % 2 == 0) ? *a : *b;
        c.Admit({{"rpm", 100, 60'000, 1}},
                {{"bal", -4, std::numeric_limits<int64_t>::max(), 0, 1000}}, 0,
                [p](core::Result<AdmitDecision> r) { p->set_value(std::move(r)); });
    }
    int admitted = 0, rate_refused = 0;
    for (auto& f : pending) {
        ASSERT_EQ(f.wait_for(contract::kCountersWait), std::future_status::ready);
        auto r = f.get();
        ASSERT_TRUE(r.has_value()) << r.error().message;
        admitted += r->admitted ? 1 : 0;
        rate_refused += r->rate.admitted ? 0 : 1;
    }
    EXPECT_EQ(admitted, 100);
    EXPECT_EQ(rate_refused, kCalls - 100);
    EXPECT_EQ(contract::GetNow(*a, {"bal"})->at(0), 1000 - 4 * 100);
    const auto sa = a->Stats(), sb = b->Stats();
    // Refusals after the first known one are local; the rest went in fewer scripts than calls.
    EXPECT_EQ(sa.admissions + sb.admissions + sa.local_decisions + sb.local_decisions,
              static_cast<uint64_t>(kCalls));
    EXPECT_LT(sa.scripts + sb.scripts, sa.admissions + sb.admissions);
}

TEST(RedisCountersTest, DeferredChangesFailWithTheCallThatCarriedThem) {
    auto c = MakeRedis("redis://127.0.0.1:1/0", "x:", 300ms, 10'000ms);
    std::promise<core::Result<std::vector<int64_t>>> p;
    c->Add({{"bal", 5}}, 0, [&p](auto r) { p.set_value(std::move(r)); });
    auto d = AcquireNow(*c, {{"rpm", 5, 60'000, 1}});
    ASSERT_FALSE(d.has_value());
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
    auto added = f.get();
    ASSERT_FALSE(added.has_value());
    EXPECT_TRUE(added.error().code == core::ErrorCode::kUnavailable ||
                added.error().code == core::ErrorCode::kUpstreamTimeout);
}

TEST(RedisCountersTest, UnreachableRedisIsAnErrorNotADecision) {
    // Port 1 on loopback: nothing listens.
    auto c = MakeRedis("redis://127.0.0.1:1/0", "x:", 300ms);
    auto d = AcquireNow(*c, {{"rpm", 5, 60'000, 1}});
    ASSERT_FALSE(d.has_value());
    EXPECT_TRUE(d.error().code == core::ErrorCode::kUnavailable ||
                d.error().code == core::ErrorCode::kUpstreamTimeout)
        << d.error().message;
    auto r = contract::ReserveNow(*c, {{"b", 1, 10}});
    ASSERT_FALSE(r.has_value());
    EXPECT_GE(c->Stats().errors, 2u);
}

}  // namespace
}  // namespace conduit::bus
