#include "bus/backplane.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace conduit::bus {
namespace {

struct Recorder {
    std::mutex mu;
    std::vector<std::pair<std::string, std::string>> got;
    Backplane::Handler Handler() {
        return [this](std::string_view channel, std::string_view payload) {
            std::lock_guard lock(mu);
            got.emplace_back(std::string(channel), std::string(payload));
        };
    }
};

TEST(InProcessBackplaneTest, ExactAndPrefixPatterns) {
    auto bp = MakeInProcessBackplane();
    Recorder exact, prefix, all, other;
    bp->Subscribe("tasks.updated", exact.Handler());
    bp->Subscribe("tasks.*", prefix.Handler());
    bp->Subscribe("*", all.Handler());
    bp->Subscribe("keys.*", other.Handler());

    bp->Publish("tasks.updated", "1");
    bp->Publish("tasks.created", "2");
    bp->Publish("tasks", "3");  // not matched by "tasks.*"

    ASSERT_EQ(exact.got.size(), 1u);
    EXPECT_EQ(exact.got[0], (std::pair<std::string, std::string>("tasks.updated", "1")));
    ASSERT_EQ(prefix.got.size(), 2u);
    EXPECT_EQ(prefix.got[1].first, "tasks.created");
    EXPECT_EQ(all.got.size(), 3u);
    EXPECT_TRUE(other.got.empty());
}

TEST(InProcessBackplaneTest, HandlersRunSynchronouslyOnThePublisherThread) {
    auto bp = MakeInProcessBackplane();
    std::thread::id seen;
    bp->Subscribe("c",
                  [&](std::string_view, std::string_view) { seen = std::this_thread::get_id(); });
    bp->Publish("c", "x");
    EXPECT_EQ(seen, std::this_thread::get_id());
}

TEST(InProcessBackplaneTest, UnsubscribeStopsDelivery) {
    auto bp = MakeInProcessBackplane();
    Recorder a, b;
    uint64_t ida = bp->Subscribe("c", a.Handler());
    uint64_t idb = bp->Subscribe("c", b.Handler());
    EXPECT_NE(ida, idb);
    bp->Publish("c", "1");
    bp->Unsubscribe(ida);
    bp->Unsubscribe(12345);  // unknown: ignored
    bp->Publish("c", "2");
    EXPECT_EQ(a.got.size(), 1u);
    EXPECT_EQ(b.got.size(), 2u);
}

TEST(InProcessBackplaneTest, HandlerMayUseTheBackplane) {
    auto bp = MakeInProcessBackplane();
    Recorder r;
    uint64_t self = 0;
    self = bp->Subscribe("ping", [&](std::string_view, std::string_view payload) {
        bp->Unsubscribe(self);  // no deadlock: handlers run outside the lock
        bp->Publish("pong", std::string(payload));
    });
    bp->Subscribe("pong", r.Handler());
    bp->Publish("ping", "x");
    bp->Publish("ping", "y");  // unsubscribed by now
    ASSERT_EQ(r.got.size(), 1u);
    EXPECT_EQ(r.got[0].second, "x");
}

TEST(InProcessBackplaneTest, ConcurrentPublishersAndSubscribers) {
    auto bp = MakeInProcessBackplane();
    std::atomic<int> received{0};
    bp->Subscribe("load.*", [&](std::string_view, std::string_view) { received.fetch_add(1); });
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 1000; ++i) {
                bp->Publish("load." + std::to_string(t), "x");
                if (i % 100 == 0) {
                    bp->Unsubscribe(
                        bp->Subscribe("other", [](std::string_view, std::string_view) {}));
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    EXPECT_EQ(received.load(), 4000);
}

}  // namespace
}  // namespace conduit::bus
