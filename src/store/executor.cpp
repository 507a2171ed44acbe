#include "store/executor.hpp"

#include <spdlog/spdlog.h>

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

namespace conduit::store {

Executor::Executor(std::string name) {
    thread_ = std::thread([this, name = std::move(name)] {
        pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
        // Background work (spend flushes, admin writes) yields to the event loops when they
        // share a core: a flush must never stall request handling.
        setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
        Run();
    });
}

Executor::~Executor() { Stop(); }

void Executor::Submit(std::function<void()> job) {
    {
        std::lock_guard lock(mu_);
        if (stopping_) {
            return;
        }
        queue_.push_back(std::move(job));
    }
    cv_.notify_one();
}

void Executor::Stop() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
        thread_.join();
    }
}

size_t Executor::QueueDepth() const {
    std::lock_guard lock(mu_);
    return queue_.size();
}

void Executor::Run() {
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) {
                return;  // stopping and drained
            }
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        try {
            job();
        } catch (const std::exception& e) {
            spdlog::error("store job failed: {}", e.what());
        } catch (...) {
            // A job may throw anything; letting it escape would std::terminate the process.
            spdlog::error("store job failed with a non-standard exception");
        }
    }
}

}  // namespace conduit::store
