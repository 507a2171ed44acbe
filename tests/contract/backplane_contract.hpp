#pragma once

// The behavioural contract of the bus::Backplane port (src/bus/backplane.hpp), as a typed
// GoogleTest suite. Every adapter instantiates it:
//
//     struct MyTraits {
//         /// Why Subscriber() returns nullptr (engine not configured); shown by GTEST_SKIP.
//         std::string SkipReason() const;
//         /// The instance whose handlers the test registers (owned by the traits; nullptr =
//         /// skip). Each test gets a fresh Traits object: its own bus namespace.
//         conduit::bus::Backplane* Subscriber();
//         /// The instance the test publishes on: Subscriber() itself, or another instance on the
//         /// same bus (another gateway instance).
//         conduit::bus::Backplane* Publisher();
//         /// Returns once every Subscribe/Unsubscribe/Publish made so far took effect on the
//         /// bus (no-op for synchronous adapters).
//         void Sync();
//     };
//     namespace conduit::bus::contract {
//     INSTANTIATE_TYPED_TEST_SUITE_P(MyEngine, BackplaneContract, MyTraits);
//     }
//
// Delivery may be asynchronous: tests wait on conditions, and check that nothing more arrived
// with a fence (a message on another channel, published after, received last).

#include "bus/backplane.hpp"
#include "fakes/test_support.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::bus::contract {

/// Generous wait for anything that should happen "soon".
constexpr auto kBackplaneWait = std::chrono::seconds(30);

/// Collects what a handler received (thread-safe).
class Recorder {
public:
    Backplane::Handler Handler() {
        return [this](std::string_view channel, std::string_view payload) {
            std::lock_guard lock(mu_);
            got_.emplace_back(std::string(channel), std::string(payload));
        };
    }
    size_t Count() {
        std::lock_guard lock(mu_);
        return got_.size();
    }
    std::vector<std::pair<std::string, std::string>> Got() {
        std::lock_guard lock(mu_);
        return got_;
    }
    std::vector<std::string> Payloads() {
        std::lock_guard lock(mu_);
        std::vector<std::string> out;
        for (const auto& g : got_) {
            out.push_back(g.second);
        }
        return out;
    }
    bool WaitCount(size_t n) {
        return conduit::testing::WaitFor([&] { return Count() >= n; }, kBackplaneWait);
    }

private:
    std::mutex mu_;
    std::vector<std::pair<std::string, std::string>> got_;
};

template <class Traits>
class BackplaneContract : public ::testing::Test {
protected:
    void SetUp() override {
        sub_ = traits_.Subscriber();
        if (sub_ == nullptr) {
            GTEST_SKIP() << traits_.SkipReason();
        }
        pub_ = traits_.Publisher();
    }

    /// Publishes a marker on a fresh channel after everything published so far and waits for
    /// it: afterwards, whatever those earlier messages would deliver was delivered.
    void Fence() {
        Recorder r;
        std::string channel = "fence." + std::to_string(++fences_);
        uint64_t id = sub_->Subscribe(channel, r.Handler());
        traits_.Sync();
        pub_->Publish(channel, "fence");
        ASSERT_TRUE(r.WaitCount(1)) << "fence message not delivered";
        sub_->Unsubscribe(id);
    }

    Traits traits_;
    Backplane* sub_ = nullptr;
    Backplane* pub_ = nullptr;
    int fences_ = 0;
};

TYPED_TEST_SUITE_P(BackplaneContract);

using Msg = std::pair<std::string, std::string>;

TYPED_TEST_P(BackplaneContract, DeliversToExactAndPrefixSubscribers) {
    Recorder exact, prefix, all, other;
    this->sub_->Subscribe("tasks.updated", exact.Handler());
    this->sub_->Subscribe("tasks.*", prefix.Handler());
    this->sub_->Subscribe("*", all.Handler());
    this->sub_->Subscribe("keys.*", other.Handler());
    this->traits_.Sync();

    this->pub_->Publish("tasks.updated", "1");
    this->pub_->Publish("tasks.created", "2");
    this->pub_->Publish("tasks", "3");  // not matched by "tasks.*"
    ASSERT_TRUE(all.WaitCount(3));
    ASSERT_TRUE(exact.WaitCount(1));
    ASSERT_TRUE(prefix.WaitCount(2));
    this->Fence();

    EXPECT_EQ(exact.Got(), (std::vector<Msg>{{"tasks.updated", "1"}}));
    EXPECT_EQ(prefix.Got(), (std::vector<Msg>{{"tasks.updated", "1"}, {"tasks.created", "2"}}));
    auto got_all = all.Got();
    ASSERT_GE(got_all.size(), 3u);  // + the fence
    EXPECT_EQ(got_all[0], (Msg{"tasks.updated", "1"}));
    EXPECT_EQ(got_all[1], (Msg{"tasks.created", "2"}));
    EXPECT_EQ(got_all[2], (Msg{"tasks", "3"}));
    EXPECT_EQ(other.Count(), 0u);
}

TYPED_TEST_P(BackplaneContract, PrefixPatternIsLiteralNotGlob) {
    Recorder weird, star;
    this->sub_->Subscribe("a[b]?c*d.*", weird.Handler());
    this->sub_->Subscribe("x*", star.Handler());
    this->traits_.Sync();
    this->pub_->Publish("axc1d.no", "glob would match");
    this->pub_->Publish("a[b]?c*d.yes", "1");
    this->pub_->Publish("x", "2");
    this->pub_->Publish("xyz", "3");
    this->pub_->Publish("yx", "4");
    ASSERT_TRUE(weird.WaitCount(1));
    ASSERT_TRUE(star.WaitCount(2));
    this->Fence();
    EXPECT_EQ(weird.Got(), (std::vector<Msg>{{"a[b]?c*d.yes", "1"}}));
    EXPECT_EQ(star.Got(), (std::vector<Msg>{{"x", "2"}, {"xyz", "3"}}));
}

TYPED_TEST_P(BackplaneContract, EachHandlerGetsAMessageOnce) {
    Recorder a, b, p;
    this->sub_->Subscribe("room.7", a.Handler());
    this->sub_->Subscribe("room.7", b.Handler());
    this->sub_->Subscribe("room.*", p.Handler());
    this->traits_.Sync();
    for (int i = 0; i < 5; ++i) {
        this->pub_->Publish("room.7", std::to_string(i));
    }
    ASSERT_TRUE(a.WaitCount(5));
    this->Fence();
    EXPECT_EQ(a.Count(), 5u);
    EXPECT_EQ(b.Count(), 5u);
    EXPECT_EQ(p.Count(), 5u);
}

TYPED_TEST_P(BackplaneContract, UnsubscribeStopsDelivery) {
    Recorder a, b;
    uint64_t ida = this->sub_->Subscribe("c", a.Handler());
    uint64_t idb = this->sub_->Subscribe("c", b.Handler());
    EXPECT_NE(ida, idb);
    this->traits_.Sync();
    this->pub_->Publish("c", "1");
    ASSERT_TRUE(a.WaitCount(1));
    ASSERT_TRUE(b.WaitCount(1));
    this->sub_->Unsubscribe(ida);
    this->sub_->Unsubscribe(12345678);  // unknown: ignored
    this->traits_.Sync();
    this->pub_->Publish("c", "2");
    ASSERT_TRUE(b.WaitCount(2));
    this->sub_->Unsubscribe(idb);  // the last handler of "c"
    this->traits_.Sync();
    this->pub_->Publish("c", "3");
    this->Fence();
    EXPECT_EQ(a.Payloads(), (std::vector<std::string>{"1"}));
    EXPECT_EQ(b.Payloads(), (std::vector<std::string>{"1", "2"}));
}

TYPED_TEST_P(BackplaneContract, PublishOrderPreservedPerChannel) {
    constexpr int kCount = 2000;
    Recorder exact, prefix;
    this->sub_->Subscribe("order.a", exact.Handler());
    this->sub_->Subscribe("order.*", prefix.Handler());
    this->traits_.Sync();
    std::vector<std::string> expected;
    for (int i = 0; i < kCount; ++i) {
        expected.push_back(std::to_string(i));
        this->pub_->Publish("order.a", expected.back());
    }
    ASSERT_TRUE(exact.WaitCount(kCount));
    ASSERT_TRUE(prefix.WaitCount(kCount));
    EXPECT_EQ(exact.Payloads(), expected);
    EXPECT_EQ(prefix.Payloads(), expected);
}

TYPED_TEST_P(BackplaneContract, LargePayloads) {
    Recorder r;
    this->sub_->Subscribe("big", r.Handler());
    this->traits_.Sync();
    std::vector<std::string> sent;
    for (int n = 0; n < 3; ++n) {
        std::string payload(1024 * 1024 + n, '\0');
        uint32_t x = 12345 + n;
        for (auto& c : payload) {
            x = x * 1103515245u + 12345u;
            c = static_cast<char>(x >> 24);
        }
        sent.push_back(payload);
        this->pub_->Publish("big", std::move(payload));
    }
    ASSERT_TRUE(r.WaitCount(3));
    auto got = r.Payloads();
    ASSERT_EQ(got.size(), 3u);
    for (int n = 0; n < 3; ++n) {
        EXPECT_TRUE(got[n] == sent[n]) << "payload " << n << " differs (size " << got[n].size()
                                       << " vs " << sent[n].size() << ")";
    }
}

TYPED_TEST_P(BackplaneContract, BinarySafePayloadsAndChannels) {
    std::string all_bytes;
    for (int i = 0; i < 256; ++i) {
        all_bytes.push_back(static_cast<char>(i));
    }
    const std::vector<std::string> payloads = {
        std::string("a\0b", 3), "\x1e{}\x1e", "\r\n$3\r\n*1\r\n", "",
        std::string(1, '\0'),   "cbp1",       all_bytes};
    const std::string channel = std::string("bin\x1e.\0ch", 8);
    Recorder exact, prefix;
    this->sub_->Subscribe(channel, exact.Handler());
    this->sub_->Subscribe(std::string("bin\x1e*", 5), prefix.Handler());
    this->traits_.Sync();
    for (const auto& p : payloads) {
        this->pub_->Publish(channel, p);
    }
    ASSERT_TRUE(exact.WaitCount(payloads.size()));
    ASSERT_TRUE(prefix.WaitCount(payloads.size()));
    EXPECT_EQ(exact.Payloads(), payloads);
    EXPECT_EQ(prefix.Payloads(), payloads);
    EXPECT_EQ(exact.Got()[0].first, channel);
}

TYPED_TEST_P(BackplaneContract, ManyChannelsSubscribeUnsubscribeChurn) {
    constexpr int kChannels = 1000;
    Recorder r;
    for (int round = 0; round < 3; ++round) {
        std::vector<uint64_t> ids;
        for (int i = 0; i < kChannels; ++i) {
            ids.push_back(this->sub_->Subscribe("ch." + std::to_string(i), r.Handler()));
            if (i % 10 == 0) {  // churn: subscribe + unsubscribe a second handler
                this->sub_->Unsubscribe(
                    this->sub_->Subscribe("ch." + std::to_string(i), r.Handler()));
            }
        }
        this->traits_.Sync();
        for (int i = 0; i < kChannels; ++i) {
            this->pub_->Publish("ch." + std::to_string(i), std::to_string(round));
        }
        ASSERT_TRUE(r.WaitCount(static_cast<size_t>(kChannels) * (round + 1)))
            << "round " << round << ": " << r.Count();
        for (uint64_t id : ids) {
            this->sub_->Unsubscribe(id);
        }
        this->traits_.Sync();
        for (int i = 0; i < kChannels; ++i) {
            this->pub_->Publish("ch." + std::to_string(i), "after unsubscribe");
        }
        this->Fence();
        EXPECT_EQ(r.Count(), static_cast<size_t>(kChannels) * (round + 1));
    }
}

TYPED_TEST_P(BackplaneContract, HandlerMayUseTheBackplane) {
    Recorder pong;
    this->sub_->Subscribe("pong", pong.Handler());
    std::atomic<uint64_t> self{0};
    std::atomic<bool> subscribed{false};
    Backplane* pub = this->pub_;
    Backplane* sub = this->sub_;
    self = sub->Subscribe("ping", [&, sub, pub](std::string_view, std::string_view payload) {
        conduit::testing::WaitFor([&] { return subscribed.load(); });
        sub->Unsubscribe(self.load());  // no deadlock: handlers run outside locks
        pub->Publish("pong", std::string(payload));
    });
    subscribed = true;
    this->traits_.Sync();
    this->pub_->Publish("ping", "x");
    ASSERT_TRUE(pong.WaitCount(1));
    this->traits_.Sync();
    this->pub_->Publish("ping", "y");  // unsubscribed by now
    this->Fence();
    this->Fence();  // the pong a second ping would cause comes after the first fence
    EXPECT_EQ(pong.Payloads(), (std::vector<std::string>{"x"}));
}

REGISTER_TYPED_TEST_SUITE_P(BackplaneContract,
                            DeliversToExactAndPrefixSubscribers,
                            PrefixPatternIsLiteralNotGlob,
                            EachHandlerGetsAMessageOnce,
                            UnsubscribeStopsDelivery,
                            PublishOrderPreservedPerChannel,
                            LargePayloads,
                            BinarySafePayloadsAndChannels,
                            ManyChannelsSubscribeUnsubscribeChurn,
                            HandlerMayUseTheBackplane);

}  // namespace conduit::bus::contract
