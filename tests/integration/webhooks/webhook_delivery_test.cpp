// End-to-end webhook delivery over real sockets: real event loops (net::Runtime), the real
// native HTTP client per loop, a real net::HttpServer receiver on port 0 that verifies Standard
// Webhooks signatures with signing::Verify, a real SQLite store and store executor.
// Each test runs against the in-memory FakeWorkQueue (pumped by a thread in real time, delays
// honoured) and, when the bus component is built, against the embedded SQLite queue.

#include "bus/work_queue.hpp"
#include "core/clock.hpp"
#include "core/secret_box.hpp"
#include "fakes/fake_work_queue.hpp"
#include "fakes/test_support.hpp"
#include "http_client/client.hpp"
#include "net/http_server.hpp"
#include "net/runtime.hpp"
#include "obs/metrics.hpp"
#include "store/executor.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "webhooks/publisher.hpp"
#include "webhooks/recorder.hpp"
#include "webhooks/secrets.hpp"
#include "webhooks/signing.hpp"
#include "webhooks/worker.hpp"

#ifdef CONDUIT_WEBHOOKS_HAVE_BUS
#include "bus/embedded_queue.hpp"
#endif

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace conduit::webhooks {
namespace {

using conduit::testing::WaitFor;
using namespace std::chrono_literals;

/// What the receiver saw.
struct Received {
    std::string path;
    std::string id;
    std::string timestamp;
    std::string signature;
    std::string body;
    std::string custom;
    bool verified = false;
};

class WebhookDeliveryTest : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        auto opened = store::OpenSqliteStore(":memory:");
        ASSERT_TRUE(opened.has_value());
        store_ = std::move(*opened);
        ASSERT_TRUE(store_->Migrate().has_value());
        domain::VirtualKeyGroup g;
        g.group_name = "hooks";
        auto group = store_->CreateGroup(g, "test");
        ASSERT_TRUE(group.has_value());
        domain::VirtualKey k;
        k.key_name = "hook key";
        k.key_hash = std::string(64, 'c');
        k.key_prefix = "condt_hook";
        k.group_id = group->id;
        auto key = store_->CreateKey(k);
        ASSERT_TRUE(key.has_value());
        key_id_ = key->id;

        // Receiver: /flaky fails the first `flaky_failures_` requests with 503, /dead always
        // answers 503, /old and /new accept only signatures of their own key (else 401).
        net::ServerOptions opt;
        opt.host = "127.0.0.1";
        opt.port = 0;
        server_ = std::make_unique<net::HttpServer>(
            receiver_rt_, opt, [this](const net::ExchangePtr& ex) { Receive(ex); });
        auto port = server_->Start();
        ASSERT_TRUE(port.has_value());
        port_ = *port;
        receiver_rt_.Start();
        worker_rt_.Start();

        options_.retry_base = 20ms;
        options_.retry_max = 200ms;
        options_.request_timeout = 3s;
        options_.record_interval = 20ms;
        std::vector<core::Loop*> loops;
        for (size_t i = 0; i < worker_rt_.size(); ++i) {
            loops.push_back(&worker_rt_.loop(i));
        }
        if (GetParam() == "fake") {
            fake_ = std::make_unique<conduit::testing::FakeWorkQueue>();
            fake_->SetMaxAttempts(options_.topic, WebhookQueueOptions(options_).max_attempts);
            queue_ = fake_.get();
        } else {
#ifdef CONDUIT_WEBHOOKS_HAVE_BUS
            bus::EmbeddedQueueOptions q;
            q.path = (dir_.path() / "queue.db").string();
            q.loops = loops;
            q.topics[options_.topic] = WebhookQueueOptions(options_);
            embedded_ = bus::MakeEmbeddedQueue(std::move(q));
            queue_ = embedded_.get();
#else
            GTEST_SKIP() << "the bus component is not built";
#endif
        }

        executor_ = std::make_unique<store::Executor>("webhooks-it");
        clients_.resize(worker_rt_.size());
        for (size_t i = 0; i < worker_rt_.size(); ++i) {
            RunOn(i, [this, i] {
                clients_[i] =
                    http_client::MakeNativeClient(worker_rt_.loop(i), WebhookPoolOptions());
            });
        }
        recorder_ = std::make_unique<DeliveryRecorder>(*store_, *executor_, worker_rt_.loop(0),
                                                       options_, registry_);
        secrets_ = std::make_unique<SecretService>(*store_, *executor_, box_,
                                                   core::SystemClock::Instance(), options_);
        publisher_ = std::make_unique<WebhookPublisher>(*queue_, *recorder_,
                                                        core::SystemClock::Instance(), options_);
        worker_ = std::make_unique<DeliveryWorker>(
            WorkerDeps{
                .queue = *queue_,
                .loops = loops,
                .client_for = [this](size_t i) -> http_client::Client& { return *clients_[i]; },
                .secrets = *secrets_,
                .recorder = *recorder_,
                .store = *store_,
                .executor = *executor_,
                .clock = core::SystemClock::Instance(),
                .registry = &registry_,
                .random01 = {}},
            options_);
        worker_->Register();
        ASSERT_TRUE(queue_->Start().has_value());

        if (fake_) {
            // The pump delivers due messages from its own thread (the worker posts them to
            // loops); the embedded queue calls the consumer on the loops itself.
            pump_ = std::thread([this] {
                while (!stop_pump_.load()) {
                    fake_->DeliverDue();
                    std::this_thread::sleep_for(2ms);
                }
            });
        }
    }

    void TearDown() override {
        stop_pump_ = true;
        if (pump_.joinable()) {
            pump_.join();
        }
        if (queue_ != nullptr) {
            queue_->Stop();
        }
        for (size_t i = 0; i < clients_.size(); ++i) {
            RunOn(i, [this, i] { clients_[i].reset(); });
        }
        worker_rt_.Stop();
        receiver_rt_.Stop();
        if (recorder_) {
            recorder_->Flush();
        }
        if (executor_) {
            executor_->Stop();
        }
    }

    void RunOn(size_t loop, std::function<void()> fn) {
        std::atomic<bool> done{false};
        worker_rt_.loop(loop).Post([&] {
            fn();
            done = true;
        });
        ASSERT_TRUE(WaitFor([&] { return done.load(); }));
    }

    void Receive(const net::ExchangePtr& ex) {
        const net::Request& req = ex->request();
        Received r;
        r.path = std::string(req.path());
        r.id = std::string(req.headers.Get("webhook-id"));
        r.timestamp = std::string(req.headers.Get("webhook-timestamp"));
        r.signature = std::string(req.headers.Get("webhook-signature"));
        r.body = req.body;
        r.custom = std::string(req.headers.Get("X-Custom"));
        std::string key;
        {
            std::lock_guard lock(mu_);
            key = r.path == "/old" ? old_key_ : new_key_;
        }
        r.verified = signing::VerifyHeaders(key, r.id, r.timestamp, r.body, r.signature);
        int status = 200;
        {
            std::lock_guard lock(mu_);
            int seen = static_cast<int>(
                std::count_if(received_.begin(), received_.end(),
                              [&](const Received& x) { return x.path == r.path && x.id == r.id; }));
            if (r.path == "/dead") {
                status = 503;
            } else if (r.path == "/flaky" && seen < flaky_failures_) {
                status = 503;
            } else if (!r.verified) {
                status = 401;
            }
            received_.push_back(r);
        }
        ex->Respond(net::Response::Json(status, R"({"ok":true})"));
    }

    std::string Url(std::string_view path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
    }

    WebhookEvent Event(std::string id, std::string_view path) const {
        WebhookEvent e;
        e.delivery_id = std::move(id);
        e.event_type = "task.completed";
        e.task_id = "task-" + e.delivery_id;
        e.virtual_key_id = key_id_;
        e.url = Url(path);
        e.headers = {{"X-Custom", "hello"}};
        e.payload = R"({"type":"task.completed","task_id":")" + e.task_id +
                    R"(","task_type":"image_generation","status":"completed","progress":100})";
        e.timestamp_s = core::SystemClock::Instance().NowUnixMs() / 1000;
        return e;
    }

    void Enqueue(std::vector<WebhookEvent> events) {
        std::atomic<int> result{0};  // 1 ok, 2 failed
        publisher_->Enqueue(std::move(events), [&](core::Result<void> r) { result = r ? 1 : 2; });
        ASSERT_TRUE(WaitFor([&] { return result.load() != 0; }));
        ASSERT_EQ(result.load(), 1);
    }

    /// Waits until the stored delivery has `status` (flushing the recorder as it goes).
    std::optional<store::WebhookDelivery> WaitStatus(const std::string& id,
                                                     std::string_view status) {
        std::optional<store::WebhookDelivery> last;
        WaitFor(
            [&] {
                recorder_->Flush();
                auto row = store_->GetWebhookDelivery(id);
                if (row && *row) {
                    last = **row;
                }
                return last && last->status == status;
            },
            15s);
        return last;
    }

    /// The topic is drained: nothing ready, delayed or in flight.
    bool Drained() {
        auto st = queue_->Stats(options_.topic);
        return st && st->ready == 0 && st->delayed == 0 && st->in_flight == 0;
    }
    int64_t DeadCount() {
        auto st = queue_->Stats(options_.topic);
        return st ? st->dead : -1;
    }

    std::vector<Received> ReceivedAt(std::string_view path) {
        std::lock_guard lock(mu_);
        std::vector<Received> out;
        for (const auto& r : received_) {
            if (r.path == path) {
                out.push_back(r);
            }
        }
        return out;
    }

    void UseSecret(const std::string& whsec, std::string* slot) {
        auto key = signing::SecretKeyBytes(whsec);
        ASSERT_TRUE(key.has_value());
        std::lock_guard lock(mu_);
        *slot = *key;
    }

    std::string Rotate(std::optional<std::chrono::milliseconds> grace = std::nullopt) {
        std::optional<core::Result<std::optional<Rotation>>> r;
        std::atomic<bool> done{false};
        executor_->Submit([&] {
            r = secrets_->RotateOnExecutor(key_id_, grace);
            done = true;
        });
        EXPECT_TRUE(WaitFor([&] { return done.load(); }));
        EXPECT_TRUE(r && *r && **r);
        return (r && *r && **r) ? (**r)->secret : std::string();
    }

    net::Runtime receiver_rt_{1};
    net::Runtime worker_rt_{2};
    std::unique_ptr<net::HttpServer> server_;
    uint16_t port_ = 0;

    std::unique_ptr<store::Store> store_;
    std::unique_ptr<store::Executor> executor_;
    core::SecretBox box_{core::SecretBox::DeriveKey("webhooks-it-key")};
    obs::Registry registry_;
    WebhookOptions options_;
    conduit::testing::TempDir dir_;
    std::unique_ptr<conduit::testing::FakeWorkQueue> fake_;
    std::unique_ptr<bus::WorkQueue> embedded_;
    bus::WorkQueue* queue_ = nullptr;
    std::vector<std::unique_ptr<http_client::Client>> clients_;
    std::unique_ptr<DeliveryRecorder> recorder_;
    std::unique_ptr<SecretService> secrets_;
    std::unique_ptr<WebhookPublisher> publisher_;
    std::unique_ptr<DeliveryWorker> worker_;
    int64_t key_id_ = 0;

    std::thread pump_;
    std::atomic<bool> stop_pump_{false};

    std::mutex mu_;  // guards received_, old_key_, new_key_, flaky_failures_
    std::vector<Received> received_;
    std::string old_key_;
    std::string new_key_;
    int flaky_failures_ = 2;
};

TEST_P(WebhookDeliveryTest, FlakyReceiverEndsDeliveredAfterRetries) {
    UseSecret(Rotate(), &new_key_);
    Enqueue({Event("msg_flaky", "/flaky")});

    auto row = WaitStatus("msg_flaky", "delivered");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "delivered");
    EXPECT_EQ(row->attempts, 3);
    EXPECT_EQ(row->last_status_code, 200);

    auto seen = ReceivedAt("/flaky");
    ASSERT_EQ(seen.size(), 3u);
    for (const auto& r : seen) {
        EXPECT_EQ(r.id, "msg_flaky");
        EXPECT_TRUE(r.verified) << r.signature;
        EXPECT_EQ(r.custom, "hello");
        EXPECT_TRUE(signing::VerifyTimestamp(std::stoll(r.timestamp),
                                             core::SystemClock::Instance().NowUnixMs() / 1000));
    }
    EXPECT_TRUE(WaitFor([&] { return Drained(); }));
    EXPECT_EQ(DeadCount(), 0);
}

TEST_P(WebhookDeliveryTest, DeadReceiverEndsDeadAfterMaxAttempts) {
    UseSecret(Rotate(), &new_key_);
    Enqueue({Event("msg_dead", "/dead")});

    auto row = WaitStatus("msg_dead", "dead");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "dead");
    EXPECT_EQ(row->attempts, 1 + options_.max_retries);
    EXPECT_EQ(row->last_status_code, 503);
    EXPECT_TRUE(WaitFor([&] { return DeadCount() == 1; }));
    EXPECT_EQ(ReceivedAt("/dead").size(), static_cast<size_t>(1 + options_.max_retries));
    EXPECT_TRUE(WaitFor([&] { return Drained(); }));
}

TEST_P(WebhookDeliveryTest, DuringRotationReceiversWithEitherSecretVerify) {
    UseSecret(Rotate(), &old_key_);
    UseSecret(Rotate(1h), &new_key_);
    {
        std::lock_guard lock(mu_);
        ASSERT_NE(old_key_, new_key_);
    }
    Enqueue({Event("msg_to_old", "/old"), Event("msg_to_new", "/new")});

    auto to_old = WaitStatus("msg_to_old", "delivered");
    auto to_new = WaitStatus("msg_to_new", "delivered");
    ASSERT_TRUE(to_old && to_new);
    EXPECT_EQ(to_old->status, "delivered");
    EXPECT_EQ(to_new->status, "delivered");
    auto old_seen = ReceivedAt("/old");
    auto new_seen = ReceivedAt("/new");
    ASSERT_EQ(old_seen.size(), 1u);
    ASSERT_EQ(new_seen.size(), 1u);
    EXPECT_TRUE(old_seen[0].verified);
    EXPECT_TRUE(new_seen[0].verified);
    EXPECT_NE(old_seen[0].signature.find(' '), std::string::npos);  // two signatures

    // A rotation without grace period stops the previous secret at once: the receiver holding
    // it rejects (401 → dead at once).
    Rotate(0ms);
    EXPECT_FALSE(secrets_->Cached(key_id_));  // invalidated by the rotation
    Enqueue({Event("msg_new_again", "/new")});
    auto rejected = WaitStatus("msg_new_again", "dead");
    ASSERT_TRUE(rejected);
    EXPECT_EQ(rejected->status, "dead");
    EXPECT_EQ(rejected->last_status_code, 401);
}

INSTANTIATE_TEST_SUITE_P(Queues,
                         WebhookDeliveryTest,
                         ::testing::Values(std::string("fake"), std::string("embedded")),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace conduit::webhooks
