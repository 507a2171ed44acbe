#include "net/runtime.hpp"

#include "net/asio_loop.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

namespace conduit::net {

namespace asio = boost::asio;

namespace {
class AsioTimer final : public core::Timer {
public:
    explicit AsioTimer(asio::io_context& ctx) : timer_(ctx) {}
    void Cancel() override {
        cancelled_ = true;
        timer_.cancel();
    }
    asio::steady_timer timer_;
    bool cancelled_ = false;
};
}  // namespace

void AsioLoop::Post(std::function<void()> fn) { asio::post(context_, std::move(fn)); }

core::TimerPtr AsioLoop::StartTimer(std::chrono::nanoseconds delay, std::function<void()> fn) {
    auto t = std::make_shared<AsioTimer>(context_);
    t->timer_.expires_after(delay);
    // The handler keeps the timer alive until it runs; Cancel() makes it a no-op.
    t->timer_.async_wait([t, fn = std::move(fn)](const boost::system::error_code& ec) {
        if (!ec && !t->cancelled_) {
            fn();
        }
    });
    return t;
}

struct Runtime::Impl {
    std::vector<std::unique_ptr<AsioLoop>> loops;
    std::vector<std::optional<asio::executor_work_guard<asio::io_context::executor_type>>> guards;
    std::vector<std::thread> threads;
    std::unique_ptr<asio::signal_set> signals;
    std::atomic<size_t> next{0};
    std::atomic<bool> stopped{false};

    std::function<void(int)> signal_fn;

    // Re-armed after each signal so a second SIGTERM is still seen (e.g. to force exit).
    void ArmSignal() {
        signals->async_wait([this](const boost::system::error_code& ec, int sig) {
            if (ec) {
                return;
            }
            signal_fn(sig);
            ArmSignal();
        });
    }

    void RunLoop(size_t i) {
        loops[i]->SetThread(std::this_thread::get_id());
        core::SetCurrentLoop(loops[i].get());
        loops[i]->context().run();
    }
};

Runtime::Runtime(size_t threads) : impl_(std::make_unique<Impl>()) {
    if (threads == 0) {
        threads = std::max(1U, std::thread::hardware_concurrency());
    }
    for (size_t i = 0; i < threads; ++i) {
        impl_->loops.push_back(std::make_unique<AsioLoop>(i));
        impl_->guards.emplace_back(asio::make_work_guard(impl_->loops.back()->context()));
    }
}

Runtime::~Runtime() {
    Stop();
    for (auto& t : impl_->threads) {
        if (t.joinable()) {
            t.join();
        }
    }
    impl_->signals.reset();
    // Destroy every loop's pending handlers first, then the loops: a handler of one loop may own
    // I/O objects of another, which must die while that loop still exists.
    for (auto& l : impl_->loops) {
        l->ShutdownServices();
    }
    impl_->loops.clear();
}

size_t Runtime::size() const { return impl_->loops.size(); }
core::Loop& Runtime::loop(size_t index) { return *impl_->loops.at(index); }
core::Loop& Runtime::NextLoop() {
    return *impl_->loops[impl_->next.fetch_add(1, std::memory_order_relaxed) % impl_->loops.size()];
}

void Runtime::Run() {
    for (size_t i = 1; i < impl_->loops.size(); ++i) {
        impl_->threads.emplace_back([this, i] { impl_->RunLoop(i); });
    }
    impl_->RunLoop(0);
    for (auto& t : impl_->threads) {
        if (t.joinable()) {
            t.join();
        }
    }
    impl_->threads.clear();
}

void Runtime::Start() {
    for (size_t i = 0; i < impl_->loops.size(); ++i) {
        impl_->threads.emplace_back([this, i] { impl_->RunLoop(i); });
    }
    // Wait until every loop runs, so InLoopThread() is reliable as soon as Start() returns.
    for (auto& l : impl_->loops) {
        std::atomic<bool> ran{false};
        asio::post(l->context(), [&ran] { ran = true; });
        while (!ran.load()) {
            std::this_thread::yield();
        }
    }
}

void Runtime::Stop() {
    if (impl_->stopped.exchange(true)) {
        return;
    }
    for (auto& g : impl_->guards) {
        g.reset();
    }
    for (auto& l : impl_->loops) {
        l->context().stop();
    }
}

void Runtime::OnSignal(std::function<void(int)> fn) {
    impl_->signal_fn = std::move(fn);
    impl_->signals =
        std::make_unique<asio::signal_set>(impl_->loops[0]->context(), SIGINT, SIGTERM);
    impl_->ArmSignal();
}

}  // namespace conduit::net
