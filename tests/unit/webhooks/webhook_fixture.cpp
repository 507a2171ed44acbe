#include "webhook_fixture.hpp"

namespace conduit::webhooks::testing {

WebhookOptions WebhookTest::TestOptions() {
    WebhookOptions o;
    o.record_interval = std::chrono::milliseconds(200);
    return o;
}

WebhookTest::WebhookTest() {
    auto opened = store::OpenSqliteStore(":memory:");
    EXPECT_TRUE(opened.has_value());
    store_ = std::move(*opened);
    EXPECT_TRUE(store_->Migrate().has_value());

    domain::VirtualKeyGroup g;
    g.group_name = "hooks";
    g.created_at_ms = g.updated_at_ms = clock_.NowUnixMs();
    auto group = store_->CreateGroup(g, "test");
    EXPECT_TRUE(group.has_value());
    domain::VirtualKey k;
    k.key_name = "hook key";
    k.key_hash = std::string(64, 'a');
    k.key_prefix = "condt_test";
    k.group_id = group ? group->id : 0;
    k.created_at_ms = k.updated_at_ms = clock_.NowUnixMs();
    auto key = store_->CreateKey(k);
    EXPECT_TRUE(key.has_value());
    key_id_ = key ? key->id : 0;

    executor_ = std::make_unique<store::Executor>("webhooks-test");
    queue_.SetMaxAttempts(options_.topic, 1 + options_.max_retries);
    recorder_ = std::make_unique<DeliveryRecorder>(*store_, *executor_, loop_, options_, registry_);
    secrets_ = std::make_unique<SecretService>(*store_, *executor_, box_, clock_, options_);
    publisher_ = std::make_unique<WebhookPublisher>(queue_, *recorder_, clock_, options_);
    worker_ = std::make_unique<DeliveryWorker>(
        WorkerDeps{.queue = queue_,
                   .loops = {&loop_},
                   .client_for = [this](size_t) -> http_client::Client& { return client_; },
                   .secrets = *secrets_,
                   .recorder = *recorder_,
                   .store = *store_,
                   .executor = *executor_,
                   .clock = clock_,
                   .registry = &registry_,
                   .random01 = [this] { return random_; }},
        options_);
    worker_->Register();
}

WebhookTest::~WebhookTest() {
    executor_->Stop();
    loop_.RunPending();
}

WebhookEvent WebhookTest::Event(std::string id, std::string task) const {
    WebhookEvent e;
    e.delivery_id = std::move(id);
    e.event_type = "task.completed";
    e.task_id = std::move(task);
    e.virtual_key_id = key_id_;
    e.url = std::string(kUrl);
    e.payload = R"({"type":"task.completed","task_id":")" + e.task_id +
                R"(","task_type":"image_generation","status":"completed","progress":100})";
    e.timestamp_s = clock_.NowUnixMs() / 1000;
    return e;
}

void WebhookTest::Enqueue(std::vector<WebhookEvent> events) {
    std::optional<core::Result<void>> result;
    publisher_->Enqueue(std::move(events), [&](core::Result<void> r) { result = r; });
    ASSERT_TRUE(result.has_value()) << "the fake queue completes publishes synchronously";
    ASSERT_TRUE(result->has_value()) << result->error().message;
}

bool WebhookTest::Pump(const std::function<bool()>& pred) {
    return conduit::testing::WaitFor([&] {
        loop_.RunPending();
        return pred();
    });
}

SettlementPtr WebhookTest::Deliver() {
    size_t calls = client_.calls.size();
    auto s = queue_.DeliverNext();
    if (!s) {
        return nullptr;
    }
    EXPECT_TRUE(Pump([&] { return s->settled() || client_.calls.size() > calls; }));
    return s;
}

std::shared_ptr<FakeCall> WebhookTest::LastCall() const {
    return client_.calls.empty() ? nullptr : client_.calls.back();
}

void WebhookTest::Respond(const std::shared_ptr<FakeCall>& call, int status, net::Headers headers) {
    call->Headers(status, std::move(headers));
    call->Done();
    loop_.RunPending();
}

void WebhookTest::Fail(const std::shared_ptr<FakeCall>& call, http_client::Failure failure) {
    call->Done(failure, "connection refused");
    loop_.RunPending();
}

std::optional<store::WebhookDelivery> WebhookTest::Stored(const std::string& id) {
    recorder_->Flush();
    std::optional<core::Result<std::optional<store::WebhookDelivery>>> result;
    executor_->Call(
        loop_, [&] { return store_->GetWebhookDelivery(id); },
        [&](core::Result<std::optional<store::WebhookDelivery>> r) { result = std::move(r); });
    EXPECT_TRUE(Pump([&] { return result.has_value(); }));
    if (!result || !*result) {
        ADD_FAILURE() << "GetWebhookDelivery failed: "
                      << (result ? result->error().message : std::string("no result"));
        return std::nullopt;
    }
    return **result;
}

std::string WebhookTest::RotateSecret(std::optional<std::chrono::milliseconds> grace) {
    auto r = secrets_->RotateOnExecutor(key_id_, grace);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    if (!r || !*r) {
        return {};
    }
    return (*r)->secret;
}

uint64_t WebhookTest::Outcome(std::string_view outcome) {
    return registry_
        .Counter("conduit_webhook_requests_total", "Webhook deliveries handled, by outcome",
                 {"outcome"})
        .With({outcome})
        .Value();
}

}  // namespace conduit::webhooks::testing
