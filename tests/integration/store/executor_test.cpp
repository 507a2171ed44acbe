#include "store/executor.hpp"

#include "core/error.hpp"
#include "core/loop.hpp"
#include "fakes/test_support.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace conduit::store {
namespace {

using namespace std::chrono_literals;

/// A Loop whose "thread" is whichever thread calls RunUntil(): Post() queues, RunUntil() drains.
class FakeLoop final : public core::Loop {
public:
    std::size_t Index() const override { return 0; }

    void Post(std::function<void()> fn) override {
        {
            std::lock_guard lock(mu_);
            queue_.push_back(std::move(fn));
        }
        cv_.notify_all();
    }

    core::TimerPtr StartTimer(std::chrono::nanoseconds, std::function<void()>) override {
        ADD_FAILURE() << "the executor never needs timers";
        return nullptr;
    }

    bool InLoopThread() const override { return running_on_ == std::this_thread::get_id(); }

    /// Runs posted callbacks on the calling thread until `done()` holds; false on timeout.
    bool RunUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
        running_on_ = std::this_thread::get_id();
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!done()) {
            std::function<void()> fn;
            {
                std::unique_lock lock(mu_);
                if (!cv_.wait_until(lock, deadline, [this] { return !queue_.empty(); })) {
                    return done();
                }
                fn = std::move(queue_.front());
                queue_.pop_front();
            }
            fn();
        }
        return true;
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    std::thread::id running_on_;
};

TEST(StoreExecutor, RunsJobsInSubmissionOrderOnOneThread) {
    Executor ex("order");
    std::mutex mu;
    std::vector<int> order;
    std::set<std::thread::id> threads;
    constexpr int kJobs = 500;
    for (int i = 0; i < kJobs; ++i) {
        ex.Submit([&, i] {
            std::lock_guard lock(mu);
            order.push_back(i);
            threads.insert(std::this_thread::get_id());
        });
    }
    ex.Stop();
    ASSERT_EQ(order.size(), static_cast<size_t>(kJobs));
    for (int i = 0; i < kJobs; ++i) {
        ASSERT_EQ(order[static_cast<size_t>(i)], i);
    }
    ASSERT_EQ(threads.size(), 1u);
    EXPECT_NE(*threads.begin(), std::this_thread::get_id());
}

TEST(StoreExecutor, StopDrainsQueuedJobs) {
    Executor ex("drain");
    std::promise<void> gate;
    std::promise<void> holding;
    std::shared_future<void> gate_open = gate.get_future().share();
    ex.Submit([gate_open, &holding] {  // holds the thread while we queue
        holding.set_value();
        gate_open.wait();
    });
    holding.get_future().wait();

    std::mutex mu;
    std::vector<int> ran;
    for (int i = 0; i < 10; ++i) {
        ex.Submit([&, i] {
            std::lock_guard lock(mu);
            ran.push_back(i);
        });
    }
    EXPECT_EQ(ex.QueueDepth(), 10u);

    std::thread stopper([&] { ex.Stop(); });
    // Stop() has taken effect once a new job is refused (the queue does not grow). Jobs the
    // executor accepted before that point must run too.
    std::atomic<int> probes_run{0};
    int probes_accepted = 0;
    ASSERT_TRUE(conduit::testing::WaitFor([&] {
        size_t before = ex.QueueDepth();
        ex.Submit([&] { ++probes_run; });
        if (ex.QueueDepth() > before) {
            ++probes_accepted;
            return false;
        }
        return true;
    }));
    gate.set_value();
    stopper.join();

    EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    EXPECT_EQ(probes_run.load(), probes_accepted);
    EXPECT_EQ(ex.QueueDepth(), 0u);
}

TEST(StoreExecutor, JobsAfterStopAreDroppedAndStopIsIdempotent) {
    Executor ex("dropped");
    std::atomic<int> ran{0};
    ex.Submit([&] { ++ran; });
    ex.Stop();
    EXPECT_EQ(ran.load(), 1);
    ex.Submit([&] { ++ran; });
    EXPECT_EQ(ex.QueueDepth(), 0u);
    ex.Stop();
    EXPECT_EQ(ran.load(), 1);
}

TEST(StoreExecutor, DestructorDrainsQueue) {
    std::atomic<int> ran{0};
    {
        Executor ex("dtor");
        for (int i = 0; i < 50; ++i) {
            ex.Submit([&] { ++ran; });
        }
    }
    EXPECT_EQ(ran.load(), 50);
}

TEST(StoreExecutor, ThrowingJobDoesNotStopTheThread) {
    Executor ex("throws");
    std::atomic<int> ran{0};
    ex.Submit([] { throw std::runtime_error("boom"); });
    ex.Submit([] { throw 42; });  // not a std::exception
    ex.Submit([&] { ++ran; });
    ex.Stop();
    EXPECT_EQ(ran.load(), 1);
}

TEST(StoreExecutor, CallDeliversResultOnTheLoopThread) {
    Executor ex("call");
    FakeLoop loop;
    std::thread::id fn_thread;
    std::thread::id done_thread;
    bool done_in_loop = false;
    std::unique_ptr<int> got;
    // A move-only result type travels through.
    ex.Call(
        loop,
        [&]() -> core::Result<std::unique_ptr<int>> {
            fn_thread = std::this_thread::get_id();
            return std::make_unique<int>(42);
        },
        [&](core::Result<std::unique_ptr<int>> r) {
            done_thread = std::this_thread::get_id();
            done_in_loop = loop.InLoopThread();
            ASSERT_TRUE(r.has_value());
            got = std::move(*r);
        });
    ASSERT_TRUE(loop.RunUntil([&] { return got != nullptr; }));
    EXPECT_EQ(*got, 42);
    EXPECT_NE(fn_thread, std::this_thread::get_id());
    EXPECT_EQ(done_thread, std::this_thread::get_id());
    EXPECT_TRUE(done_in_loop);
}

TEST(StoreExecutor, CallDeliversErrorsAndPreservesOrder) {
    Executor ex("call-order");
    FakeLoop loop;
    std::vector<int> delivered;
    std::string error_message;
    for (int i = 0; i < 20; ++i) {
        ex.Call(
            loop,
            [i]() -> core::Result<int> {
                if (i == 7) {
                    return core::Fail(core::ErrorCode::kUnavailable, "db down");
                }
                return i;
            },
            [&, i](core::Result<int> r) {
                if (r) {
                    delivered.push_back(*r);
                } else {
                    delivered.push_back(-i);
                    error_message = r.error().message;
                }
            });
    }
    ASSERT_TRUE(loop.RunUntil([&] { return delivered.size() == 20; }));
    for (int i = 0; i < 20; ++i) {
        EXPECT_EQ(delivered[static_cast<size_t>(i)], i == 7 ? -7 : i);
    }
    EXPECT_EQ(error_message, "db down");
}

}  // namespace
}  // namespace conduit::store
