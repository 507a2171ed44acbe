#pragma once

// Shared fixture of the webhooks unit tests: a real in-memory SQLite store and store executor,
// FakeWorkQueue + FakeHttpClient + FakeLoop, a settable clock, and the real webhooks components
// (recorder, secrets, publisher, worker) wired as the app would.

#include "core/clock.hpp"
#include "core/secret_box.hpp"
#include "fakes/fake_http_client.hpp"
#include "fakes/fake_loop.hpp"
#include "fakes/fake_work_queue.hpp"
#include "fakes/test_support.hpp"
#include "obs/metrics.hpp"
#include "store/executor.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "webhooks/message.hpp"
#include "webhooks/publisher.hpp"
#include "webhooks/recorder.hpp"
#include "webhooks/secrets.hpp"
#include "webhooks/signing.hpp"
#include "webhooks/worker.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace conduit::webhooks::testing {

/// A settable wall and steady clock (thread-safe).
class TestClock final : public core::Clock {
public:
    int64_t NowUnixMs() const override { return now_ms.load(); }
    int64_t SteadyNs() const override { return steady_ns.load(); }
    void Advance(std::chrono::milliseconds d) {
        now_ms += d.count();
        steady_ns += d.count() * 1'000'000;
    }
    std::atomic<int64_t> now_ms{1'767'225'600'000};  // 2026-01-01T00:00:00Z
    std::atomic<int64_t> steady_ns{1'000'000'000'000};
};

using Kind = conduit::testing::FakeWorkQueue::Kind;
using SettlementPtr = conduit::testing::FakeWorkQueue::SettlementPtr;
using FakeCall = conduit::testing::FakeHttpClient::FakeCall;

inline constexpr std::string_view kUrl = "http://hooks.example.com:8080/conduit?x=1";
inline constexpr std::string_view kHost = "hooks.example.com:8080";

class WebhookTest : public ::testing::Test {
protected:
    WebhookTest();
    ~WebhookTest() override;

    /// Options used by the fixture (defaults of the spec, breaker threshold 5).
    static WebhookOptions TestOptions();

    /// A minimal event for `kUrl`, task "task-1", the fixture's key.
    WebhookEvent Event(std::string id = "msg_test_1", std::string task = "task-1") const;
    /// Enqueues events through the publisher and asserts success.
    void Enqueue(std::vector<WebhookEvent> events);
    /// Runs the loop until `pred` holds (or fails after a timeout).
    bool Pump(const std::function<bool()>& pred);
    /// Delivers the next ready message and runs the loop until it has either started an HTTP
    /// call or been settled. Returns the settlement (nullptr if nothing was ready).
    SettlementPtr Deliver();
    /// The newest HTTP call.
    std::shared_ptr<FakeCall> LastCall() const;
    /// Completes `call` with `status` (and headers) and runs the loop.
    void Respond(const std::shared_ptr<FakeCall>& call, int status, net::Headers headers = {});
    /// Fails `call` at the network level and runs the loop.
    void Fail(const std::shared_ptr<FakeCall>& call,
              http_client::Failure failure = http_client::Failure::kConnect);
    /// Flushes the recorder and reads the delivery from the store (through the executor).
    std::optional<store::WebhookDelivery> Stored(const std::string& id);
    /// Creates the fixture key's secret (returns the whsec_ string).
    std::string RotateSecret(std::optional<std::chrono::milliseconds> grace = std::nullopt);
    /// Value of conduit_webhook_requests_total{outcome}.
    uint64_t Outcome(std::string_view outcome);

    TestClock clock_;
    core::SecretBox box_{core::SecretBox::DeriveKey("webhooks-test-key")};
    std::unique_ptr<store::Store> store_;
    std::unique_ptr<store::Executor> executor_;
    conduit::testing::FakeLoop loop_;
    conduit::testing::FakeHttpClient client_;
    conduit::testing::FakeWorkQueue queue_;
    obs::Registry registry_;
    WebhookOptions options_ = TestOptions();
    int64_t key_id_ = 0;
    double random_ = 0.999999;

    std::unique_ptr<DeliveryRecorder> recorder_;
    std::unique_ptr<SecretService> secrets_;
    std::unique_ptr<WebhookPublisher> publisher_;
    std::unique_ptr<DeliveryWorker> worker_;
};

}  // namespace conduit::webhooks::testing
