// The async task engine wired as src/app/app.cpp InitTasks() wires it, with real parts only: a
// SQLite store in a temp directory, the embedded work queue over a temp file, the in-process
// backplane, a local media store in the temp directory, net::Runtime loops, and ProviderJobs
// over the real HTTP client to the mock provider running in process (tools/mock-provider).
//
// A "node" is one gateway process: its own store connection, executor, runtime, clients, queue
// adapter and engine. Stopping a node and starting another on the same files is a crash and
// restart (the queue makes deliveries that were never settled ready again).

#include "bus/backplane.hpp"
#include "bus/embedded_queue.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/secret_box.hpp"
#include "fakes/test_support.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/config_state.hpp"
#include "gateway/spend_recorder.hpp"
#include "http_client/client.hpp"
#include "json/helpers.hpp"
#include "media/media_store.hpp"
#include "mock-provider/mock_jobs.hpp"
#include "mock-provider/mock_provider.hpp"
#include "net/runtime.hpp"
#include "store/executor.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tasks/provider_jobs.hpp"
#include "tasks/task_engine.hpp"
#include "tasks/task_events.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace conduit::tasks {
namespace {

using conduit::testing::TempDir;
using conduit::testing::WaitFor;
using domain::AsyncTask;
using domain::TaskState;
using namespace std::chrono_literals;
namespace bj = boost::json;

constexpr int64_t kVideoPerSecond = 1000;  // micro-units per second of video
constexpr int64_t kImagePerImage = 500;    // micro-units per image
constexpr int64_t kVideoBytes = 200'000;

bj::object Obj(std::string_view text) {
    auto o = json::ParseObject(text);
    EXPECT_TRUE(o.has_value()) << text;
    return o ? *o : bj::object();
}

/// The system clock moved by a settable offset (to pass a task's timeout without waiting).
class OffsetClock final : public core::Clock {
public:
    int64_t NowUnixMs() const override {
        return core::SystemClock::Instance().NowUnixMs() + offset_ms.load();
    }
    int64_t SteadyNs() const override {
        return core::SystemClock::SteadyNowNs() + offset_ms.load() * 1'000'000;
    }
    std::atomic<int64_t> offset_ms{0};
};

/// A client that accepts calls and never answers: what a dead process's calls look like.
class BlackHoleClient final : public http_client::Client {
public:
    struct NoCall final : http_client::Call {
        void Cancel() override {}
        void Resume() override {}
        http_client::Outcome Timing() const override { return {}; }
    };
    http_client::CallPtr Start(http_client::Request, http_client::Callbacks) override {
        return std::make_shared<NoCall>();
    }
    size_t Active() const override { return 0; }
};

/// One delivery of a task step as the engine saw it, and how it was settled.
struct StepRecord {
    std::string op;
    std::string task_id;
    int attempt = 0;
    std::string settled;  // "", "ack", "retry", "dead"
    bool swallowed = false;
};

std::string Field(std::string_view body, std::string_view name) {
    auto o = json::ParseObject(body);
    if (!o) {
        return {};
    }
    auto it = o->find(name);
    return it != o->end() && it->value().is_string() ? std::string(it->value().as_string())
                                                     : std::string();
}

/// Task steps in the queue, counted across nodes: + when a step is published (at the call, so
/// a step that queues its successor and then settles never looks like an empty queue), − when
/// a publish fails or a delivery is acknowledged or dead-lettered. Not Stats(): polling it keeps
/// the embedded queue's dispatcher awake, which (see the report) delays delayed messages.
struct QueueLedger {
    std::atomic<int64_t> outstanding{0};
};

/// Wraps the node's WorkQueue: records every task step delivered and how the engine settled
/// it, counts completed publishes per op, and can "lose" the settlement of `start` steps (the
/// process died right after the step's work, before settling it).
class RecordingQueue final : public bus::WorkQueue {
public:
    RecordingQueue(bus::WorkQueue& inner, QueueLedger& ledger) : inner_(inner), ledger_(ledger) {}

    std::atomic<bool> swallow_start_settlements{false};
    /// Every Publish fails (the broker is down).
    std::atomic<bool> fail_publishes{false};
    /// Every Publish is held, neither sent nor answered, until FailHeld() (the broker went away
    /// with the publish unconfirmed; the adapter gives up at its publish timeout).
    std::atomic<bool> hold_publishes{false};

    size_t Held() {
        std::lock_guard lock(mu_);
        return held_.size();
    }
    void FailHeld() {
        std::vector<std::function<void(core::Result<void>)>> held;
        {
            std::lock_guard lock(mu_);
            held.swap(held_);
        }
        for (auto& done : held) {
            done(core::Fail(core::ErrorCode::kUnavailable, "publish not confirmed in time"));
        }
    }

    void Publish(std::vector<bus::OutgoingMessage> messages,
                 std::function<void(core::Result<void>)> done) override {
        std::vector<std::string> ops;
        for (const auto& m : messages) {
            ops.push_back(Field(m.body, "op"));
        }
        if (hold_publishes.load()) {
            std::lock_guard lock(mu_);
            held_.push_back(done ? std::move(done) : [](core::Result<void>) {});
            return;
        }
        if (fail_publishes.load()) {
            if (done) {
                done(core::Fail(core::ErrorCode::kUnavailable, "work queue unavailable"));
            }
            return;
        }
        const auto count = static_cast<int64_t>(messages.size());
        ledger_.outstanding += count;
        inner_.Publish(std::move(messages),
                       [this, ops, count, done = std::move(done)](core::Result<void> r) {
                           if (r) {
                               std::lock_guard lock(mu_);
                               for (const auto& op : ops) {
                                   published_[op] += 1;
                               }
                           } else {
                               ledger_.outstanding -= count;
                           }
                           if (done) {
                               done(std::move(r));
                           }
                       });
    }

    void Consume(std::string topic, bus::ConsumerFn fn) override {
        inner_.Consume(std::move(topic), [this, fn = std::move(fn)](bus::Delivery d,
                                                                    bus::SettlementPtr s) {
            StepRecord rec;
            rec.op = Field(d.body, "op");
            rec.task_id = Field(d.body, "task_id");
            rec.attempt = d.attempt;
            rec.swallowed = rec.op == "start" && swallow_start_settlements.load();
            size_t index;
            {
                std::lock_guard lock(mu_);
                index = steps_.size();
                steps_.push_back(rec);
            }
            fn(std::move(d), std::make_shared<Recorder>(this, index, std::move(s), rec.swallowed));
        });
    }
    core::Result<void> Start() override { return inner_.Start(); }
    void Stop() override { inner_.Stop(); }
    core::Result<bus::TopicStats> Stats(std::string_view topic) override {
        return inner_.Stats(topic);
    }
    core::Result<std::vector<bus::DeadMessage>> ListDead(std::string_view topic,
                                                         int limit) override {
        return inner_.ListDead(topic, limit);
    }
    core::Result<bool> Requeue(std::string_view topic, std::string_view id) override {
        return inner_.Requeue(topic, id);
    }
    std::string_view Engine() const override { return inner_.Engine(); }

    std::vector<StepRecord> Steps() const {
        std::lock_guard lock(mu_);
        return steps_;
    }
    std::vector<StepRecord> StepsOf(const std::string& task_id) const {
        std::vector<StepRecord> out;
        for (auto& s : Steps()) {
            if (s.task_id == task_id) {
                out.push_back(s);
            }
        }
        return out;
    }
    int Published(const std::string& op) const {
        std::lock_guard lock(mu_);
        auto it = published_.find(op);
        return it == published_.end() ? 0 : it->second;
    }

private:
    class Recorder final : public bus::Settlement {
    public:
        Recorder(RecordingQueue* q, size_t index, bus::SettlementPtr inner, bool swallow)
            : q_(q), index_(index), inner_(std::move(inner)), swallow_(swallow) {}
        void Ack() override {
            if (Note("ack") && !swallow_) {
                q_->ledger_.outstanding -= 1;
                inner_->Ack();
            }
        }
        void Retry(std::chrono::milliseconds delay, std::string reason) override {
            if (Note("retry") && !swallow_) {
                inner_->Retry(delay, std::move(reason));
            }
        }
        void DeadLetter(std::string reason) override {
            if (Note("dead") && !swallow_) {
                q_->ledger_.outstanding -= 1;
                inner_->DeadLetter(std::move(reason));
            }
        }

    private:
        bool Note(const char* how) {
            std::lock_guard lock(q_->mu_);
            auto& rec = q_->steps_[index_];
            if (!rec.settled.empty()) {
                return false;
            }
            rec.settled = how;
            return true;
        }
        RecordingQueue* q_;
        size_t index_;
        bus::SettlementPtr inner_;
        bool swallow_;
    };

    bus::WorkQueue& inner_;
    QueueLedger& ledger_;
    mutable std::mutex mu_;
    std::vector<StepRecord> steps_;
    std::map<std::string, int> published_;
    std::vector<std::function<void(core::Result<void>)>> held_;
};

/// What the engine asked the webhooks component to queue.
struct WebhookCall {
    std::string task_id;
    std::string type;
    std::string id;
    std::string payload;
    bool failed = false;  // the callback reported a failure for this one
};

class TaskEngineIT;

/// One gateway process.
struct Node {
    Node(TaskEngineIT& env, bool swallow_start);
    ~Node() { Shutdown(); }
    /// Stops everything, in the app's order, without letting the engine finish what it was
    /// doing (a crash as far as the store and the queue can tell).
    void Shutdown();
    core::Loop& loop() { return rt->loop(0); }

    std::unique_ptr<store::Store> store;
    core::SecretBox box{core::SecretBox::DeriveKey("task-it")};
    gateway::BalanceBook book;
    std::unique_ptr<gateway::ConfigState> config;
    std::unique_ptr<store::Executor> executor;
    std::unique_ptr<gateway::SpendRecorder> spend;
    std::unique_ptr<net::Runtime> rt;
    std::vector<std::unique_ptr<http_client::Client>> clients;
    BlackHoleClient black_hole;
    std::atomic<bool> dead{false};
    std::unique_ptr<ProviderJobs> jobs;
    std::unique_ptr<bus::WorkQueue> embedded;
    std::unique_ptr<RecordingQueue> queue;
    std::unique_ptr<bus::Backplane> backplane;
    std::unique_ptr<media::MediaStore> media;
    std::shared_ptr<TaskEngine> engine;
    bool stopped = false;
};

class TaskEngineIT : public ::testing::Test {
protected:
    void SetUp() override {
        db_path_ = (dir_.path() / "conduit.db").string();
        queue_path_ = (dir_.path() / "queue.db").string();
        media_dir_ = (dir_.path() / "media").string();

        // The mock provider, on its own runtime.
        mock::MockOptions mo;
        mo.host = "127.0.0.1";
        mo.port = 0;
        mo.config.job_duration_ms = 300;
        mo.config.video_bytes = kVideoBytes;
        mock_ = std::make_unique<mock::MockProvider>(mo);
        auto port = mock_->Start(mock_rt_);
        ASSERT_TRUE(port.has_value()) << port.error().message;
        mock_rt_.Start();
        base_url_ = "http://127.0.0.1:" + std::to_string(*port) + "/v1";

        // Configuration: a group, two keys, one provider (with a key), a video and an image
        // mapping with prices.
        auto opened = store::OpenSqliteStore(db_path_);
        ASSERT_TRUE(opened.has_value()) << opened.error().message;
        db_ = std::move(*opened);
        ASSERT_TRUE(db_->Migrate().has_value());
        domain::VirtualKeyGroup g;
        g.group_name = "tasks";
        g.balance = 100'000'000;
        auto group = db_->CreateGroup(g, "test");
        ASSERT_TRUE(group.has_value());
        group_id_ = group->id;
        key_a_ = AddKey("owner");
        key_b_ = AddKey("stranger");
        domain::Provider p;
        p.name = "mock";
        p.type = domain::ProviderType::kOpenAICompatible;
        p.base_url = base_url_;
        auto prov = db_->CreateProvider(p);
        ASSERT_TRUE(prov.has_value());
        domain::ProviderKey pk;
        pk.provider_id = prov->id;
        pk.api_key_sealed = core::SecretBox(core::SecretBox::DeriveKey("task-it")).Seal("sk-mock");
        pk.is_primary = true;
        ASSERT_TRUE(db_->CreateProviderKey(pk).has_value());
        domain::ModelMapping video;
        video.model_alias = "video-alias";
        video.provider_model_id = "sora-2";
        video.provider_id = prov->id;
        video.supports_video_generation = true;
        auto vm = db_->CreateMapping(video);
        ASSERT_TRUE(vm.has_value());
        video_mapping_ = vm->id;
        domain::ModelMapping image;
        image.model_alias = "image-alias";
        image.provider_model_id = "gpt-image-1";
        image.provider_id = prov->id;
        image.supports_image_generation = true;
        auto im = db_->CreateMapping(image);
        ASSERT_TRUE(im.has_value());
        image_mapping_ = im->id;
        domain::ModelCost c;
        c.cost_name = "media";
        c.mapping_ids = {video_mapping_, image_mapping_};
        c.video_per_second = kVideoPerSecond;
        c.image_per_image = kImagePerImage;
        ASSERT_TRUE(db_->CreateCost(c).has_value());

        options_.poll_interval = 40ms;
        options_.retry_base = 100ms;
        options_.retry_max = 200ms;
        options_.max_retries = 1;
        options_.sweep_interval = 100ms;
        options_.poll_wait_interval = 20ms;
    }

    void TearDown() override {
        nodes_.clear();
        if (mock_) {
            EXPECT_TRUE(mock_->StopAndWait(2000ms));
            mock_.reset();
        }
        mock_rt_.Stop();
    }

    domain::Id AddKey(const std::string& name) {
        domain::VirtualKey k;
        k.key_name = name;
        k.key_hash = core::Sha256Hex(name);
        k.key_prefix = "condt_" + name.substr(0, 4);
        k.group_id = group_id_;
        auto key = db_->CreateKey(k);
        EXPECT_TRUE(key.has_value());
        return key ? key->id : 0;
    }

    Node& StartNode(bool swallow_start = false) {
        nodes_.push_back(std::make_unique<Node>(*this, swallow_start));
        return *nodes_.back();
    }
    /// Crashes (stops) the newest node and forgets it.
    void CrashNode() {
        ASSERT_FALSE(nodes_.empty());
        nodes_.back()->Shutdown();
        nodes_.pop_back();
    }

    /// A video submission of key A; `extra` is added to the request body.
    SubmitRequest Video(const std::string& extra = {}) const {
        SubmitRequest r;
        r.type = std::string(domain::kVideoTask);
        r.virtual_key_id = key_a_;
        r.group_id = group_id_;
        r.mapping_id = video_mapping_;
        r.model_alias = "video-alias";
        r.request_json =
            R"({"model":"video-alias","prompt":"a fox on a skateboard","seconds":"4","mock_video_bytes":)" +
            std::to_string(kVideoBytes) + (extra.empty() ? "" : "," + extra) + "}";
        r.request_hash = core::Sha256Hex(r.request_json);
        return r;
    }
    SubmitRequest Image(int n) const {
        SubmitRequest r;
        r.type = std::string(domain::kImageTask);
        r.virtual_key_id = key_a_;
        r.group_id = group_id_;
        r.mapping_id = image_mapping_;
        r.model_alias = "image-alias";
        r.request_json = R"({"model":"image-alias","prompt":"a red square","n":)" +
                         std::to_string(n) + R"(,"mock_job_duration_ms":150})";
        r.request_hash = core::Sha256Hex(r.request_json);
        return r;
    }

    /// Runs an engine API call on the node's loop and waits for its answer.
    template <class T, class Fn>
    core::Result<T> OnLoop(Node& n, Fn fn) {
        struct Box {
            std::mutex mu;
            std::optional<core::Result<T>> value;
        };
        auto box = std::make_shared<Box>();
        n.loop().Post([&n, fn, box]() mutable {
            fn(n.loop(), [box](core::Result<T> r) {
                std::lock_guard lock(box->mu);
                box->value.emplace(std::move(r));
            });
        });
        bool done = WaitFor(
            [&] {
                std::lock_guard lock(box->mu);
                return box->value.has_value();
            },
            15s);
        EXPECT_TRUE(done) << "engine call did not answer";
        std::lock_guard lock(box->mu);
        if (!box->value) {
            return core::Fail(core::ErrorCode::kInternal, "no answer");
        }
        return std::move(*box->value);
    }

    SubmitOutcome Submit(Node& n, SubmitRequest req) {
        auto r = OnLoop<SubmitOutcome>(n, [&n, req](core::Loop& loop, auto done) mutable {
            n.engine->Submit(loop, std::move(req), std::move(done));
        });
        EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
        return r ? *r : SubmitOutcome{};
    }
    core::Result<AsyncTask> Get(Node& n, const std::string& id, domain::Id key) {
        return OnLoop<AsyncTask>(n, [&n, id, key](core::Loop& loop, auto done) {
            n.engine->Get(loop, id, key, std::move(done));
        });
    }
    core::Result<AsyncTask> Cancel(Node& n, const std::string& id, domain::Id key) {
        return OnLoop<AsyncTask>(n, [&n, id, key](core::Loop& loop, auto done) {
            n.engine->Cancel(loop, id, key, std::move(done));
        });
    }
    core::Result<AsyncTask> Retry(Node& n, const std::string& id, domain::Id key) {
        return OnLoop<AsyncTask>(n, [&n, id, key](core::Loop& loop, auto done) {
            n.engine->Retry(loop, id, key, std::move(done));
        });
    }
    core::Result<AsyncTask> Wait(Node& n,
                                 const std::string& id,
                                 domain::Id key,
                                 std::chrono::milliseconds timeout) {
        return OnLoop<AsyncTask>(n, [&n, id, key, timeout](core::Loop& loop, auto done) {
            n.engine->WaitTerminal(loop, id, key, timeout, 1000ms, std::move(done));
        });
    }
    /// Waits (through WaitTerminal) until the task is terminal.
    AsyncTask Terminal(Node& n, const std::string& id) {
        auto r = Wait(n, id, key_a_, 12s);
        EXPECT_TRUE(r.has_value());
        if (!r) {
            return {};
        }
        EXPECT_TRUE(domain::IsTerminal(r->state))
            << id << " still " << domain::ToString(r->state) << ": " << r->message;
        return *r;
    }
    /// The task as stored (read on the test's own connection).
    AsyncTask Stored(const std::string& id) {
        auto r = db_->GetTask(id);
        EXPECT_TRUE(r.has_value() && r->has_value()) << id;
        return r && *r ? **r : AsyncTask{};
    }
    /// True once no task step is left in the queue (ready, delayed or in flight).
    bool Drained() const { return ledger_.outstanding.load() == 0; }

    /// The queue's counts and the steps of `task_id` (for failure messages).
    static std::string Describe(Node& n, const std::string& task_id) {
        std::string out;
        if (auto st = n.queue->Stats(kTasksTopic)) {
            out += "queue: ready " + std::to_string(st->ready) + ", delayed " +
                   std::to_string(st->delayed) + ", in flight " + std::to_string(st->in_flight) +
                   "; steps:";
        }
        for (const auto& s : n.queue->StepsOf(task_id)) {
            out += " " + s.op + "#" + std::to_string(s.attempt) + "=" +
                   (s.settled.empty() ? std::string("unsettled") : s.settled);
        }
        return out;
    }

    /// The provider jobs of a task, by attempt (their Idempotency-Key is "<task id>-<attempt>").
    std::vector<mock::MockJob> JobsOf(const std::string& task_id) {
        std::vector<mock::MockJob> out;
        for (auto& j : mock_->Jobs()) {
            if (j.spec->idempotency_key.rfind(task_id + "-", 0) == 0) {
                out.push_back(j);
            }
        }
        std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
            return a.spec->idempotency_key < b.spec->idempotency_key;
        });
        return out;
    }

    std::vector<TaskEvent> EventsOf(const std::string& task_id) {
        std::lock_guard lock(mu_);
        std::vector<TaskEvent> out;
        for (const auto& e : events_) {
            if (e.task_id == task_id) {
                out.push_back(e);
            }
        }
        return out;
    }
    static std::vector<std::string> Names(const std::vector<TaskEvent>& events) {
        std::vector<std::string> out;
        for (const auto& e : events) {
            out.push_back(e.event);
        }
        return out;
    }
    static int Count(const std::vector<TaskEvent>& events, std::string_view name) {
        return static_cast<int>(std::count_if(events.begin(), events.end(),
                                              [&](const TaskEvent& e) { return e.event == name; }));
    }
    std::vector<WebhookCall> WebhooksOf(const std::string& task_id) {
        std::lock_guard lock(mu_);
        std::vector<WebhookCall> out;
        for (const auto& w : webhooks_) {
            if (w.task_id == task_id) {
                out.push_back(w);
            }
        }
        return out;
    }
    std::vector<WebhookCall> TerminalWebhooksOf(const std::string& task_id) {
        auto all = WebhooksOf(task_id);
        std::erase_if(all, [](const WebhookCall& w) { return w.type == "task.progress"; });
        return all;
    }

    /// Reads a whole media object.
    static std::string ReadMedia(media::MediaStore& m, const std::string& key) {
        auto r = m.Open(key, 0, UINT64_MAX);
        EXPECT_TRUE(r.has_value()) << key;
        std::string out;
        if (!r) {
            return out;
        }
        for (;;) {
            auto p = (*r)->Next(64 * 1024);
            if (!p || p->empty()) {
                break;
            }
            out += *p;
        }
        return out;
    }

    TempDir dir_;
    std::string db_path_;
    std::string queue_path_;
    std::string media_dir_;
    std::string base_url_;
    net::Runtime mock_rt_{1};
    std::unique_ptr<mock::MockProvider> mock_;
    std::unique_ptr<store::Store> db_;  // the test's own connection
    domain::Id group_id_ = 0;
    domain::Id key_a_ = 0;
    domain::Id key_b_ = 0;
    domain::Id video_mapping_ = 0;
    domain::Id image_mapping_ = 0;
    OffsetClock clock_;
    TaskOptions options_;
    QueueLedger ledger_;

    // Filled by the nodes.
    std::mutex mu_;
    std::vector<TaskEvent> events_;
    std::vector<WebhookCall> webhooks_;
    int fail_terminal_webhooks_ = 0;  // the next N terminal webhooks fail to be queued

    std::vector<std::unique_ptr<Node>> nodes_;

    friend struct Node;
};

Node::Node(TaskEngineIT& env, bool swallow_start) {
    auto opened = store::OpenSqliteStore(env.db_path_);
    EXPECT_TRUE(opened.has_value());
    store = std::move(*opened);
    config = std::make_unique<gateway::ConfigState>(*store, book, box);
    auto loaded = config->ReloadOnExecutor();  // executor not started yet
    EXPECT_TRUE(loaded.has_value()) << (loaded ? "" : loaded.error().message);
    EXPECT_EQ(config->warnings().size(), 0u);
    executor = std::make_unique<store::Executor>("task-it");
    spend =
        std::make_unique<gateway::SpendRecorder>(*store, *executor, book, std::chrono::hours(1));

    rt = std::make_unique<net::Runtime>(2);
    rt->Start();
    clients.resize(rt->size());
    for (size_t i = 0; i < rt->size(); ++i) {
        std::atomic<bool> made{false};
        rt->loop(i).Post([&, i] {
            clients[i] = http_client::MakeClient(rt->loop(i), http_client::PoolOptions{},
                                                 http_client::ClientKind::kAuto);
            made = true;
        });
        EXPECT_TRUE(WaitFor([&] { return made.load(); }));
    }
    http_client::Timeouts timeouts;
    timeouts.connect = 2000ms;
    timeouts.first_byte = 5000ms;
    timeouts.idle = 5000ms;
    timeouts.total = 10000ms;
    jobs = std::make_unique<ProviderJobs>(
        [this](size_t i) -> http_client::Client& {
            if (dead.load()) {
                return black_hole;
            }
            return *clients[i];
        },
        timeouts);

    std::vector<core::Loop*> loops;
    for (size_t i = 0; i < rt->size(); ++i) {
        loops.push_back(&rt->loop(i));
    }
    bus::EmbeddedQueueOptions q;
    q.path = env.queue_path_;
    q.loops = loops;
    bus::QueueOptions topic;
    topic.partitions = 4;
    q.topics[std::string(kTasksTopic)] = topic;
    embedded = bus::MakeEmbeddedQueue(std::move(q));
    queue = std::make_unique<RecordingQueue>(*embedded, env.ledger_);
    queue->swallow_start_settlements = swallow_start;

    backplane = bus::MakeInProcessBackplane();
    backplane->Subscribe(std::string(kTaskEventsChannel),
                         [&env](std::string_view, std::string_view payload) {
                             auto ev = ParseTaskEvent(payload);
                             EXPECT_TRUE(ev.has_value()) << payload;
                             if (ev) {
                                 std::lock_guard lock(env.mu_);
                                 env.events_.push_back(std::move(*ev));
                             }
                         });
    auto m = media::OpenLocalMediaStore(env.media_dir_, "http://gw.test:8080");
    EXPECT_TRUE(m.has_value());
    media = std::move(*m);

    engine = std::make_shared<TaskEngine>(TaskEngineDeps{
        *store, *executor, *config, *spend, *queue, *backplane, *media, *jobs, env.clock_,
        env.options_,
        [&env](const AsyncTask& task, std::string_view event_type, std::string delivery_id,
               std::string payload, std::function<void(core::Result<void>)> done) {
            WebhookCall call{task.id, std::string(event_type), std::move(delivery_id),
                             std::move(payload)};
            {
                std::lock_guard lock(env.mu_);
                if (event_type != "task.progress" && env.fail_terminal_webhooks_ > 0) {
                    env.fail_terminal_webhooks_ -= 1;
                    call.failed = true;
                }
                env.webhooks_.push_back(call);
            }
            if (call.failed) {
                done(core::Fail(core::ErrorCode::kUnavailable, "webhook queue unavailable"));
            } else {
                done({});
            }
        }});
    engine->SubscribeEvents();
    auto next = std::make_shared<std::atomic<size_t>>(0);
    auto* runtime = rt.get();
    engine->StartWorker([runtime, next]() -> core::Loop& {
        return runtime->loop(next->fetch_add(1) % runtime->size());
    });
    auto started = queue->Start();
    EXPECT_TRUE(started.has_value()) << (started ? "" : started.error().message);
}

void Node::Shutdown() {
    if (stopped) {
        return;
    }
    stopped = true;
    engine->StopWorker();
    queue->Stop();  // unsettled deliveries stay in flight in the file: redelivered on reopen
    dead = true;    // calls from here on go nowhere (as if the process were gone)
    for (size_t i = 0; i < clients.size(); ++i) {
        std::atomic<bool> gone{false};
        rt->loop(i).Post([&, i] {
            clients[i].reset();  // cancels in-flight calls without callbacks
            gone = true;
        });
        EXPECT_TRUE(WaitFor([&] { return gone.load(); }));
    }
    rt->Stop();
    spend->Stop();
    executor->Stop();
    // The engine goes before the loops (it may own a timer of theirs); work still queued on
    // the loops may hold it a little longer and is dropped with them.
    engine.reset();
    rt.reset();  // joins the loops
}

// ---------------------------------------------------------------------------------------------

TEST_F(TaskEngineIT, VideoTaskRunsToCompletionWithMediaBillingEventsAndOneWebhook) {
    Node& n = StartNode();
    SubmitRequest req = Video(R"("mock_job_duration_ms":300)");
    req.webhook_url = "https://hooks.example.com/conduit";
    req.timeout_seconds = 600;
    SubmitOutcome sub = Submit(n, req);
    ASSERT_TRUE(sub.created);
    const std::string id = sub.task.id;
    EXPECT_EQ(sub.task.state, TaskState::kPending);
    EXPECT_EQ(id.rfind("task_", 0), 0u);

    AsyncTask t = Terminal(n, id);
    ASSERT_EQ(t.state, TaskState::kCompleted) << t.error_message;
    EXPECT_EQ(t.progress, 100);
    EXPECT_EQ(t.attempt, 1);
    EXPECT_EQ(t.retry_count, 0);
    EXPECT_GT(t.completed_at_ms, 0);
    EXPECT_TRUE(t.error_message.empty());

    // The provider saw one job: the provider model, the provider key, an idempotency key.
    auto jobs = JobsOf(id);
    ASSERT_EQ(jobs.size(), 1u);
    const auto& job = jobs[0];
    EXPECT_EQ(job.spec->idempotency_key, id + "-1");
    EXPECT_EQ(job.spec->model_json, "\"sora-2\"") << "the alias is rewritten to the provider model";
    EXPECT_EQ(job.status, mock::JobStatus::kCompleted);
    EXPECT_EQ(job.content_downloads, 1);
    EXPECT_EQ(t.upstream_job_id, job.spec->id);
    EXPECT_EQ(mock_->Stats().last_authorization, "Bearer sk-mock");

    // Result and media: the exact provider bytes, under the attempt's key.
    const std::string key = "tasks/" + id + "-1-0.mp4";
    bj::object result = Obj(t.result_json);
    const auto& data = result.at("data").as_array();
    ASSERT_EQ(data.size(), 1u);
    EXPECT_EQ(data[0].as_object().at("url").as_string(), n.media->PublicUrl(key));
    EXPECT_EQ(result.at("model").as_string(), "video-alias");
    EXPECT_DOUBLE_EQ(result.at("usage").as_object().at("seconds").to_number<double>(), 4.0);
    auto info = n.media->Stat(key);
    ASSERT_TRUE(info.has_value() && info->has_value());
    EXPECT_EQ((*info)->size, static_cast<uint64_t>(kVideoBytes));
    EXPECT_EQ((*info)->content_type, "video/mp4");
    EXPECT_TRUE(ReadMedia(*n.media, key) == mock::VideoContent(job.spec->id, kVideoBytes));

    // Billed once: 4 s of video.
    ASSERT_TRUE(n.spend->FlushAndWait());
    auto logs = db_->ListRequestLogs({});
    ASSERT_TRUE(logs.has_value());
    int rows = 0;
    for (const auto& row : *logs) {
        if (row.request_id == id) {
            ++rows;
            EXPECT_EQ(row.request_type, "video");
            EXPECT_EQ(row.cost, 4 * kVideoPerSecond);
            EXPECT_EQ(row.provider_model, "sora-2");
            EXPECT_EQ(row.virtual_key_id, key_a_);
        }
    }
    EXPECT_EQ(rows, 1);

    // Nothing is left to do; then look at every event and webhook of the task.
    ASSERT_TRUE(WaitFor([&] { return Drained(); })) << Describe(n, id);
    auto events = EventsOf(id);
    ASSERT_GE(events.size(), 3u) << ::testing::PrintToString(Names(events));
    EXPECT_EQ(Count(events, "task.created"), 1);
    std::vector<TaskEvent> changes;
    for (const auto& e : events) {
        EXPECT_EQ(e.task_type, "video_generation");
        EXPECT_EQ(e.virtual_key_id, key_a_);
        EXPECT_EQ(e.model, "video-alias");
        EXPECT_EQ(e.prompt, "a fox on a skateboard");
        EXPECT_EQ(e.timeout_seconds, 600);
        if (e.event != "task.created") {
            changes.push_back(e);
        }
    }
    ASSERT_GE(changes.size(), 3u) << ::testing::PrintToString(Names(events));
    EXPECT_EQ(changes.front().event, "task.started");
    EXPECT_EQ(changes.front().state, "running");
    EXPECT_EQ(changes.front().attempt, 1);
    EXPECT_EQ(changes.back().event, "task.completed");
    EXPECT_EQ(changes.back().state, "completed");
    EXPECT_EQ(changes.back().progress, 100);
    {
        bj::object ev = Obj(changes.back().result_json);  // numbers may change form, not value
        EXPECT_EQ(ev.at("data"), result.at("data"));
        EXPECT_EQ(ev.at("model"), result.at("model"));
        EXPECT_DOUBLE_EQ(ev.at("usage").as_object().at("seconds").to_number<double>(), 4.0);
    }
    int progress_events = 0;
    int last = changes.front().progress;
    for (size_t i = 1; i + 1 < changes.size(); ++i) {
        EXPECT_EQ(changes[i].event, "task.progress") << ::testing::PrintToString(Names(events));
        EXPECT_EQ(changes[i].state, "running");
        EXPECT_GT(changes[i].progress, last) << "a progress event is a change of progress";
        EXPECT_LT(changes[i].progress, 100);
        last = changes[i].progress;
        ++progress_events;
    }
    EXPECT_GE(progress_events, 1);
    for (size_t i = 1; i < changes.size(); ++i) {
        EXPECT_GE(changes[i].timestamp_ms, changes[i - 1].timestamp_ms);
    }

    auto terminal = TerminalWebhooksOf(id);
    ASSERT_EQ(terminal.size(), 1u) << "one webhook per terminal event";
    EXPECT_EQ(terminal[0].type, "task.completed");
    EXPECT_EQ(terminal[0].id, "msg_" + id + "_0_completed");
    EXPECT_EQ(terminal[0].id, WebhookIdFor(t, "task.completed"));
    bj::object payload = Obj(terminal[0].payload);
    EXPECT_EQ(payload.at("type").as_string(), "task.completed");
    EXPECT_EQ(payload.at("task_id").as_string(), id);
    EXPECT_EQ(payload.at("task_type").as_string(), "video_generation");
    EXPECT_EQ(payload.at("status").as_string(), "completed");
    EXPECT_EQ(payload.at("progress").as_int64(), 100);
    EXPECT_TRUE(payload.at("result").is_object());
    EXPECT_FALSE(payload.at("timestamp").as_string().empty());
    std::set<std::string> progress_ids;
    for (const auto& w : WebhooksOf(id)) {
        if (w.type == "task.progress") {
            EXPECT_TRUE(progress_ids.insert(w.id).second) << "duplicate progress webhook " << w.id;
            EXPECT_EQ(w.id.rfind("msg_" + id + "_0_progress_", 0), 0u) << w.id;
        }
    }

    // A finished task cannot be cancelled or retried.
    auto cancel = Cancel(n, id, key_a_);
    ASSERT_FALSE(cancel.has_value());
    EXPECT_EQ(cancel.error().code, core::ErrorCode::kConflict);
    auto retry = Retry(n, id, key_a_);
    ASSERT_FALSE(retry.has_value());
    EXPECT_EQ(retry.error().code, core::ErrorCode::kConflict);
}

TEST_F(TaskEngineIT, ImageTaskStoresEveryImage) {
    Node& n = StartNode();
    SubmitOutcome sub = Submit(n, Image(2));
    AsyncTask t = Terminal(n, sub.task.id);
    ASSERT_EQ(t.state, TaskState::kCompleted) << t.error_message;
    bj::object result = Obj(t.result_json);
    const auto& data = result.at("data").as_array();
    ASSERT_EQ(data.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
        const std::string key = "tasks/" + t.id + "-1-" + std::to_string(i) + ".png";
        EXPECT_EQ(data[i].as_object().at("url").as_string(), n.media->PublicUrl(key));
        auto info = n.media->Stat(key);
        ASSERT_TRUE(info.has_value() && info->has_value()) << key;
        EXPECT_EQ((*info)->content_type, "image/png");
        EXPECT_EQ(ReadMedia(*n.media, key).substr(0, 8), "\x89PNG\r\n\x1a\n") << key;
    }
    EXPECT_FALSE(result.contains("usage")) << "image results have no usage";
    auto jobs = JobsOf(t.id);
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].spec->kind, mock::JobKind::kImage);
    EXPECT_EQ(jobs[0].spec->n, 2);
    ASSERT_TRUE(n.spend->FlushAndWait());
    auto logs = db_->ListRequestLogs({});
    ASSERT_TRUE(logs.has_value());
    auto row = std::find_if(logs->begin(), logs->end(),
                            [&](const auto& r) { return r.request_id == t.id; });
    ASSERT_NE(row, logs->end());
    EXPECT_EQ(row->request_type, "image");
    EXPECT_EQ(row->cost, 2 * kImagePerImage);
}

TEST_F(TaskEngineIT, CancelMidRunStopsTheProviderJobAndItsPolling) {
    Node& n = StartNode();
    SubmitRequest req = Video(R"("mock_job_duration_ms":20000)");
    req.webhook_url = "https://hooks.example.com/conduit";
    SubmitOutcome sub = Submit(n, req);
    const std::string id = sub.task.id;
    ASSERT_TRUE(WaitFor([&] {
        AsyncTask t = Stored(id);
        return t.state == TaskState::kRunning && !t.upstream_job_id.empty() && t.progress > 0;
    }));

    // A wait that times out answers with the task as it is, unchanged.
    auto waited = Wait(n, id, key_a_, 50ms);
    ASSERT_TRUE(waited.has_value());
    EXPECT_EQ(waited->state, TaskState::kRunning);

    auto foreign = Cancel(n, id, key_b_);
    ASSERT_FALSE(foreign.has_value());
    EXPECT_EQ(foreign.error().code, core::ErrorCode::kNotFound);
    EXPECT_EQ(Stored(id).state, TaskState::kRunning) << "another key's cancel changes nothing";

    auto cancelled = Cancel(n, id, key_a_);
    ASSERT_TRUE(cancelled.has_value()) << cancelled.error().message;
    EXPECT_EQ(cancelled->state, TaskState::kCancelled);
    EXPECT_EQ(cancelled->error_code, "cancelled");
    EXPECT_FALSE(cancelled->retryable);

    auto jobs = JobsOf(id);
    ASSERT_EQ(jobs.size(), 1u);
    const std::string job_id = jobs[0].spec->id;
    ASSERT_TRUE(WaitFor([&] {
        auto j = mock_->Job(job_id);
        return j && j->status == mock::JobStatus::kCancelled;
    })) << "the upstream job is cancelled";
    // Once the queue holds nothing for the task, nothing can poll it any more.
    ASSERT_TRUE(WaitFor([&] { return Drained(); })) << Describe(n, id);
    auto j = mock_->Job(job_id);
    ASSERT_TRUE(j.has_value());
    EXPECT_EQ(j->polls_after_cancel, 0);
    EXPECT_GE(j->poll_count, 1);
    EXPECT_EQ(mock_->Stats().jobs_cancelled, 1);

    AsyncTask t = Stored(id);
    EXPECT_EQ(t.state, TaskState::kCancelled);
    EXPECT_TRUE(t.result_json.empty());
    auto events = EventsOf(id);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().event, "task.cancelled");
    EXPECT_EQ(events.back().state, "cancelled");
    EXPECT_EQ(Count(events, "task.cancelled"), 1);
    auto terminal = TerminalWebhooksOf(id);
    ASSERT_EQ(terminal.size(), 1u);
    EXPECT_EQ(terminal[0].type, "task.cancelled");
    EXPECT_EQ(terminal[0].id, "msg_" + id + "_0_cancelled");
    EXPECT_EQ(Obj(terminal[0].payload).at("status").as_string(), "cancelled");

    auto again = Cancel(n, id, key_a_);
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code, core::ErrorCode::kConflict);
    EXPECT_FALSE(n.media->Stat("tasks/" + id + "-1-0.mp4")->has_value()) << "no media stored";
}

TEST_F(TaskEngineIT, FailedAttemptIsRetriedAutomaticallyOnANewJob) {
    Node& n = StartNode();
    auto cfg = mock_->Config();
    cfg.job_failure_rate = 1;  // the first job fails...
    mock_->UpdateOptions(cfg);
    SubmitOutcome sub = Submit(n, Video(R"("mock_job_duration_ms":200)"));
    const std::string id = sub.task.id;
    ASSERT_TRUE(WaitFor([&] { return JobsOf(id).size() == 1; }));
    cfg.job_failure_rate = 0;   // ...the provider recovers before the retry (its fate is fixed
    mock_->UpdateOptions(cfg);  // at submit)

    AsyncTask t = Terminal(n, id);
    ASSERT_EQ(t.state, TaskState::kCompleted) << t.error_message;
    EXPECT_EQ(t.attempt, 2);
    EXPECT_EQ(t.retry_count, 1);
    auto jobs = JobsOf(id);
    ASSERT_EQ(jobs.size(), 2u);
    EXPECT_EQ(jobs[0].spec->idempotency_key, id + "-1");
    EXPECT_EQ(jobs[0].status, mock::JobStatus::kFailed);
    EXPECT_EQ(jobs[1].spec->idempotency_key, id + "-2");
    EXPECT_EQ(jobs[1].status, mock::JobStatus::kCompleted);
    EXPECT_EQ(t.upstream_job_id, jobs[1].spec->id);
    const std::string key = "tasks/" + id + "-2-0.mp4";
    EXPECT_EQ(Obj(t.result_json).at("data").as_array()[0].as_object().at("url").as_string(),
              n.media->PublicUrl(key));
    EXPECT_TRUE(ReadMedia(*n.media, key) == mock::VideoContent(jobs[1].spec->id, kVideoBytes));

    // Events: started (attempt 1) … retry scheduled (pending) … started (attempt 2) … completed.
    auto events = EventsOf(id);
    std::vector<std::string> milestones;
    for (const auto& e : events) {
        if (e.event == "task.started") {
            milestones.push_back("started#" + std::to_string(e.attempt));
        } else if (e.state == "pending" && e.event == "task.progress") {
            milestones.push_back("retry");
            EXPECT_NE(e.message.find("Retry 1/1"), std::string::npos) << e.message;
        } else if (e.event == "task.completed" || e.event == "task.failed") {
            milestones.push_back(e.event);
        }
    }
    EXPECT_EQ(milestones,
              (std::vector<std::string>{"started#1", "retry", "started#2", "task.completed"}));
}

TEST_F(TaskEngineIT, ExhaustedRetriesFailTheTaskAndAManualRetryRunsItAgain) {
    Node& n = StartNode();
    SubmitRequest req = Video(R"("mock_job_duration_ms":100,"mock_job_fail":true)");
    req.webhook_url = "https://hooks.example.com/conduit";
    SubmitOutcome sub = Submit(n, req);
    const std::string id = sub.task.id;
    AsyncTask t = Terminal(n, id);
    ASSERT_EQ(t.state, TaskState::kFailed);
    EXPECT_TRUE(t.retryable);
    EXPECT_EQ(t.attempt, 2) << "max_retries = 1 automatic retry";
    EXPECT_EQ(t.retry_count, 1);
    EXPECT_EQ(t.error_code, "generation_failed");
    EXPECT_FALSE(t.error_message.empty());
    EXPECT_EQ(JobsOf(id).size(), 2u);
    ASSERT_TRUE(WaitFor([&] { return Drained(); }));
    auto failed_hooks = TerminalWebhooksOf(id);
    ASSERT_EQ(failed_hooks.size(), 1u);
    EXPECT_EQ(failed_hooks[0].type, "task.failed");
    EXPECT_EQ(failed_hooks[0].id, "msg_" + id + "_1_failed");
    EXPECT_EQ(Count(EventsOf(id), "task.failed"), 1);

    auto foreign = Retry(n, id, key_b_);
    ASSERT_FALSE(foreign.has_value());
    EXPECT_EQ(foreign.error().code, core::ErrorCode::kNotFound);

    auto retried = Retry(n, id, key_a_);
    ASSERT_TRUE(retried.has_value()) << retried.error().message;
    EXPECT_EQ(retried->state, TaskState::kPending);
    EXPECT_TRUE(retried->error_message.empty());
    t = Terminal(n, id);
    ASSERT_EQ(t.state, TaskState::kFailed);
    EXPECT_EQ(t.attempt, 3) << "a manual retry does not refill the automatic ones";
    EXPECT_EQ(t.retry_count, 2);
    EXPECT_EQ(JobsOf(id).size(), 3u);
    ASSERT_TRUE(WaitFor([&] { return Drained(); }));
    failed_hooks = TerminalWebhooksOf(id);
    ASSERT_EQ(failed_hooks.size(), 2u);
    EXPECT_EQ(failed_hooks[1].id, "msg_" + id + "_2_failed") << "a new attempt, a new id";
}

TEST_F(TaskEngineIT, ProviderRefusingTheSubmitFailsTheTaskAtOnce) {
    Node& n = StartNode();
    SubmitOutcome sub = Submit(n, Video(R"("mock_job_fail_status":400)"));
    AsyncTask t = Terminal(n, sub.task.id);
    ASSERT_EQ(t.state, TaskState::kFailed);
    EXPECT_FALSE(t.retryable);
    EXPECT_EQ(t.retry_count, 0);
    EXPECT_EQ(t.attempt, 1);
    EXPECT_NE(t.error_message.find("400"), std::string::npos) << t.error_message;
    EXPECT_TRUE(t.upstream_job_id.empty());
    EXPECT_EQ(mock_->Stats().video_jobs_started, 0);
    auto retry = Retry(n, sub.task.id, key_a_);
    ASSERT_FALSE(retry.has_value());
    EXPECT_EQ(retry.error().code, core::ErrorCode::kConflict);
}

TEST_F(TaskEngineIT, IdempotentSubmitReturnsTheSameTaskAndStartsOneJob) {
    Node& n = StartNode();
    SubmitRequest req = Video(R"("mock_job_duration_ms":150)");
    req.idempotency_key = "idem-1";
    SubmitOutcome first = Submit(n, req);
    ASSERT_TRUE(first.created);
    SubmitOutcome replay = Submit(n, req);
    EXPECT_FALSE(replay.created);
    EXPECT_EQ(replay.task.id, first.task.id);
    EXPECT_EQ(replay.task.request_hash, req.request_hash);

    // Keys are per virtual key: another key's submit with the same header is a new task.
    SubmitRequest other = req;
    other.virtual_key_id = key_b_;
    SubmitOutcome theirs = Submit(n, other);
    EXPECT_TRUE(theirs.created);
    EXPECT_NE(theirs.task.id, first.task.id);

    EXPECT_EQ(Terminal(n, first.task.id).state, TaskState::kCompleted);
    auto r = Wait(n, theirs.task.id, key_b_, 12s);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->state, TaskState::kCompleted);
    SubmitOutcome late = Submit(n, req);
    EXPECT_FALSE(late.created);
    EXPECT_EQ(late.task.id, first.task.id);
    EXPECT_EQ(late.task.state, TaskState::kCompleted) << "a replay after the end sees the end";
    ASSERT_TRUE(WaitFor([&] { return Drained(); }));
    EXPECT_EQ(JobsOf(first.task.id).size(), 1u);
    EXPECT_EQ(mock_->Stats().video_jobs_started, 2) << "one job per task, none for replays";
    EXPECT_EQ(Count(EventsOf(first.task.id), "task.created"), 1);
}

TEST_F(TaskEngineIT, AnotherKeysTaskDoesNotExist) {
    Node& n = StartNode();
    SubmitOutcome sub = Submit(n, Video(R"("mock_job_duration_ms":150)"));
    const std::string id = sub.task.id;
    auto mine = Get(n, id, key_a_);
    ASSERT_TRUE(mine.has_value());
    EXPECT_EQ(mine->id, id);
    auto theirs = Get(n, id, key_b_);
    ASSERT_FALSE(theirs.has_value());
    EXPECT_EQ(theirs.error().code, core::ErrorCode::kNotFound);
    auto unknown = Get(n, "task_00000000000000000000000000000000", key_a_);
    ASSERT_FALSE(unknown.has_value());
    EXPECT_EQ(unknown.error().code, core::ErrorCode::kNotFound);
    auto wait = Wait(n, id, key_b_, 10s);
    ASSERT_FALSE(wait.has_value()) << "a foreign wait ends at once";
    EXPECT_EQ(wait.error().code, core::ErrorCode::kNotFound);
    EXPECT_EQ(Terminal(n, id).state, TaskState::kCompleted) << "and the task is left alone";
}

TEST_F(TaskEngineIT, TimeoutEndsTheTaskAndCancelsTheProviderJob) {
    Node& n = StartNode();
    SubmitRequest req = Video(R"("mock_job_duration_ms":30000)");
    req.timeout_seconds = 1;
    req.webhook_url = "https://hooks.example.com/conduit";
    SubmitOutcome sub = Submit(n, req);
    const std::string id = sub.task.id;
    ASSERT_TRUE(WaitFor([&] { return !Stored(id).upstream_job_id.empty(); }));
    const std::string job_id = Stored(id).upstream_job_id;
    clock_.offset_ms += 1500;  // the task is now past its timeout

    AsyncTask t = Terminal(n, id);
    ASSERT_EQ(t.state, TaskState::kTimedOut);
    EXPECT_EQ(t.error_code, "timeout");
    EXPECT_NE(t.error_message.find("1 s"), std::string::npos) << t.error_message;
    EXPECT_FALSE(t.retryable);
    ASSERT_TRUE(WaitFor([&] {
        auto j = mock_->Job(job_id);
        return j && j->status == mock::JobStatus::kCancelled;
    })) << "the upstream job is cancelled";
    ASSERT_TRUE(WaitFor([&] { return Drained(); })) << Describe(n, id);
    EXPECT_EQ(mock_->Job(job_id)->polls_after_cancel, 0);
    auto events = EventsOf(id);
    EXPECT_EQ(Count(events, "task.timedout"), 1);
    EXPECT_EQ(events.back().event, "task.timedout");
    EXPECT_EQ(events.back().timeout_seconds, 1);
    auto terminal = TerminalWebhooksOf(id);
    ASSERT_EQ(terminal.size(), 1u);
    EXPECT_EQ(terminal[0].type, "task.failed") << "specs/api.md §6 has no timedout type";
    EXPECT_EQ(terminal[0].id, "msg_" + id + "_0_timedout");
    EXPECT_EQ(Obj(terminal[0].payload).at("status").as_string(), "timedout");
}

TEST_F(TaskEngineIT, AWebhookThatCannotBeQueuedRetriesTheStepWithTheSameId) {
    Node& n = StartNode();
    {
        std::lock_guard lock(mu_);
        fail_terminal_webhooks_ = 1;
    }
    SubmitRequest req = Video(R"("mock_job_duration_ms":150)");
    req.webhook_url = "https://hooks.example.com/conduit";
    SubmitOutcome sub = Submit(n, req);
    const std::string id = sub.task.id;
    EXPECT_EQ(Terminal(n, id).state, TaskState::kCompleted);

    // The step whose webhook could not be queued is retried (about 2 s later); its redelivery
    // queues the same webhook again.
    ASSERT_TRUE(WaitFor([&] { return TerminalWebhooksOf(id).size() == 2; }, 10s));
    ASSERT_TRUE(WaitFor([&] { return Drained(); })) << Describe(n, id);
    auto hooks = TerminalWebhooksOf(id);
    ASSERT_EQ(hooks.size(), 2u) << "and then no more";
    EXPECT_TRUE(hooks[0].failed);
    EXPECT_FALSE(hooks[1].failed);
    EXPECT_EQ(hooks[0].type, "task.completed");
    EXPECT_EQ(hooks[1].type, "task.completed");
    EXPECT_EQ(hooks[0].id, "msg_" + id + "_0_completed");
    EXPECT_EQ(hooks[1].id, hooks[0].id) << "a re-sent event keeps its webhook-id";
    EXPECT_EQ(Obj(hooks[1].payload).at("status").as_string(), "completed");

    // The queue side: the step was settled with a retry, then redelivered and acknowledged.
    std::vector<StepRecord> carrying;
    for (const auto& s : n.queue->StepsOf(id)) {
        if (s.settled == "retry" || s.attempt > 1) {
            carrying.push_back(s);
        }
    }
    ASSERT_EQ(carrying.size(), 2u);
    EXPECT_EQ(carrying[0].settled, "retry");
    EXPECT_EQ(carrying[0].attempt, 1);
    EXPECT_EQ(carrying[1].op, carrying[0].op);
    EXPECT_EQ(carrying[1].attempt, 2);
    EXPECT_EQ(carrying[1].settled, "ack");
    EXPECT_EQ(Count(EventsOf(id), "task.completed"), 1) << "the task completed once";
    EXPECT_EQ(JobsOf(id).size(), 1u);
}

TEST_F(TaskEngineIT, ARedeliveredStartAfterACrashDoesNotStartASecondJob) {
    // Node A starts the provider job and records its id, then dies before settling the start
    // step (its settlement is lost), with the first poll already queued.
    Node& a = StartNode(/*swallow_start=*/true);
    SubmitOutcome sub = Submit(a, Video(R"("mock_job_duration_ms":400)"));
    const std::string id = sub.task.id;
    ASSERT_TRUE(WaitFor([&] {
        auto steps = a.queue->StepsOf(id);
        return !steps.empty() && steps[0].op == "start" && steps[0].settled == "ack" &&
               a.queue->Published("poll") >= 1;
    }));
    AsyncTask before = Stored(id);
    ASSERT_EQ(before.state, TaskState::kRunning);
    ASSERT_FALSE(before.upstream_job_id.empty());
    ASSERT_EQ(mock_->Stats().video_jobs_started, 1);
    CrashNode();

    // Node B opens the same store and queue files: the start step comes back (attempt 2).
    Node& b = StartNode();
    AsyncTask t = Terminal(b, id);
    ASSERT_EQ(t.state, TaskState::kCompleted) << t.error_message;
    EXPECT_EQ(t.attempt, 1) << "the same attempt carried on";
    EXPECT_EQ(t.upstream_job_id, before.upstream_job_id);
    auto stats = mock_->Stats();
    EXPECT_EQ(stats.video_jobs_started, 1) << "no second provider job";
    EXPECT_EQ(stats.idempotent_replays, 0) << "not even a re-submit of the same attempt";
    auto steps = b.queue->StepsOf(id);
    auto start = std::find_if(steps.begin(), steps.end(),
                              [](const StepRecord& s) { return s.op == "start"; });
    ASSERT_NE(start, steps.end()) << "the unsettled start was redelivered";
    EXPECT_EQ(start->attempt, 2);
    EXPECT_EQ(start->settled, "ack");
    EXPECT_TRUE(ReadMedia(*b.media, "tasks/" + id + "-1-0.mp4") ==
                mock::VideoContent(before.upstream_job_id, kVideoBytes));
    ASSERT_TRUE(WaitFor([&] { return Drained(); })) << Describe(b, id);
    EXPECT_EQ(Count(EventsOf(id), "task.completed"), 1);
}

TEST_F(TaskEngineIT, ASubmitTheQueueRefusesIsReportedAndTheTaskDoesNotLinger) {
    Node& n = StartNode();
    n.queue->fail_publishes = true;
    auto r = OnLoop<SubmitOutcome>(n, [&n, req = Video()](core::Loop& loop, auto done) mutable {
        n.engine->Submit(loop, std::move(req), std::move(done));
    });
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, core::ErrorCode::kUnavailable);
    store::TaskQuery q;
    q.virtual_key_id = key_a_;
    std::vector<AsyncTask> tasks;
    ASSERT_TRUE(WaitFor([&] {
        auto listed = db_->ListTasks(q);
        if (!listed || listed->size() != 1) {
            return false;
        }
        tasks = *listed;
        return tasks[0].state == TaskState::kFailed;
    })) << "the task that was never queued is failed, not left pending";
    EXPECT_EQ(tasks[0].error_code, "queue_unavailable");
    EXPECT_EQ(mock_->Stats().video_jobs_started, 0);
    EXPECT_TRUE(EventsOf(tasks[0].id).empty()) << "no task.created for a task never queued";
}

TEST_F(TaskEngineIT, ASubmitWhosePublishFailsLateLeavesTheTaskItsReplayAcceptedRunning) {
    // Found by the chaos test (RabbitMQ restarted under load): the first submit's start publish
    // is left unconfirmed by a broker going away; the client times out and retries with its
    // Idempotency-Key; the replay is accepted and queues the start, the task runs; then the first
    // publish times out. Its failure path must not turn that task into "could not be queued".
    Node& n = StartNode();
    SubmitRequest req = Video(R"("mock_job_duration_ms":150)");
    req.idempotency_key = "idem-late-publish-failure";
    n.queue->hold_publishes = true;
    std::mutex mu;
    std::optional<core::Result<SubmitOutcome>> first;
    n.loop().Post([&n, req, &mu, &first]() mutable {
        n.engine->Submit(n.loop(), std::move(req), [&mu, &first](core::Result<SubmitOutcome> r) {
            std::lock_guard lock(mu);
            first.emplace(std::move(r));
        });
    });
    ASSERT_TRUE(WaitFor([&] { return n.queue->Held() == 1; })) << "the first start publish";
    n.queue->hold_publishes = false;
    SubmitOutcome replay = Submit(n, req);
    EXPECT_FALSE(replay.created);
    const std::string id = replay.task.id;
    ASSERT_EQ(Terminal(n, id).state, TaskState::kCompleted);

    n.queue->FailHeld();
    ASSERT_TRUE(WaitFor([&] {
        std::lock_guard lock(mu);
        return first.has_value();
    }));
    {
        std::lock_guard lock(mu);
        ASSERT_FALSE(first->has_value()) << "the first submit reports the queue failure";
        EXPECT_EQ(first->error().code, core::ErrorCode::kUnavailable);
    }
    // The store executor runs calls in order: this read comes after the failure path's write.
    auto after = Get(n, id, key_a_);
    ASSERT_TRUE(after.has_value());
    EXPECT_EQ(after->state, TaskState::kCompleted) << after->error_message;
    EXPECT_EQ(JobsOf(id).size(), 1u);
}

TEST_F(TaskEngineIT, ASubmitWhosePublishFailsLateDoesNotFailAPendingTaskItsReplayQueued) {
    // As above, but the first publish fails while the replay's start is still queued (the task
    // is pending): the task must still run.
    Node& n = StartNode();
    SubmitRequest req = Video(R"("mock_job_duration_ms":150)");
    req.idempotency_key = "idem-late-publish-failure-pending";
    n.queue->hold_publishes = true;
    std::mutex mu;
    std::optional<core::Result<SubmitOutcome>> first;
    n.loop().Post([&n, req, &mu, &first]() mutable {
        n.engine->Submit(n.loop(), std::move(req), [&mu, &first](core::Result<SubmitOutcome> r) {
            std::lock_guard lock(mu);
            first.emplace(std::move(r));
        });
    });
    ASSERT_TRUE(WaitFor([&] { return n.queue->Held() == 1; })) << "the first start publish";
    // The replay's start is held too (queued, not yet delivered), then the first one fails.
    std::optional<core::Result<SubmitOutcome>> second;
    n.loop().Post([&n, req, &mu, &second]() mutable {
        n.engine->Submit(n.loop(), std::move(req), [&mu, &second](core::Result<SubmitOutcome> r) {
            std::lock_guard lock(mu);
            second.emplace(std::move(r));
        });
    });
    ASSERT_TRUE(WaitFor([&] { return n.queue->Held() == 2; })) << "the replay's start publish";
    n.queue->hold_publishes = false;
    n.queue->FailHeld();  // both fail: the first submit's and the replay's
    ASSERT_TRUE(WaitFor([&] {
        std::lock_guard lock(mu);
        return first.has_value() && second.has_value();
    }));
    std::string id;
    {
        std::lock_guard lock(mu);
        ASSERT_FALSE(first->has_value());
        ASSERT_TRUE(second->has_value()) << "the replay answers with the task";
        id = (*second)->task.id;
    }
    auto after = Get(n, id, key_a_);
    ASSERT_TRUE(after.has_value());
    EXPECT_EQ(after->state, TaskState::kPending)
        << "accepted by the replay: left for the sweeper, not failed (" << after->error_message
        << ")";
}

TEST_F(TaskEngineIT, AStartInterruptedBeforeTheJobIdWasRecordedResubmitsTheSameAttempt) {
    // Node A marks the attempt running and sends the submit (slow to answer), then dies before
    // the provider's answer — and so before recording the job id.
    Node& a = StartNode();
    SubmitOutcome sub = Submit(a, Video(R"("mock_job_duration_ms":150,"mock_latency_ms":300)"));
    const std::string id = sub.task.id;
    ASSERT_TRUE(WaitFor([&] {
        AsyncTask t = Stored(id);
        return t.state == TaskState::kRunning && t.attempt == 1;
    }));
    ASSERT_TRUE(Stored(id).upstream_job_id.empty());
    CrashNode();

    // Node B gets the start step again and re-submits attempt 1 with the same Idempotency-Key.
    Node& b = StartNode();
    AsyncTask t = Terminal(b, id);
    ASSERT_EQ(t.state, TaskState::kCompleted) << t.error_message;
    EXPECT_EQ(t.attempt, 1);
    auto jobs = JobsOf(id);
    ASSERT_EQ(jobs.size(), 1u) << "one provider job for the attempt";
    EXPECT_EQ(jobs[0].spec->idempotency_key, id + "-1");
    EXPECT_EQ(t.upstream_job_id, jobs[0].spec->id);
    EXPECT_EQ(mock_->Stats().video_jobs_started, 1);
    auto steps = b.queue->StepsOf(id);
    ASSERT_FALSE(steps.empty());
    EXPECT_EQ(steps[0].op, "start");
    EXPECT_EQ(steps[0].attempt, 2);
    EXPECT_EQ(steps[0].settled, "ack");
}

}  // namespace
}  // namespace conduit::tasks
