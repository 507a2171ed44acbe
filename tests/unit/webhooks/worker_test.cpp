#include "core/strings.hpp"
#include "webhook_fixture.hpp"

namespace conduit::webhooks::testing {
namespace {

using std::chrono::milliseconds;
using State = http_client::CircuitBreaker::State;

class DeliveryWorkerTest : public WebhookTest {};

TEST_F(DeliveryWorkerTest, SendsStandardWebhooksHeadersWithAVerifiableSignature) {
    std::string secret = RotateSecret();
    auto key = signing::SecretKeyBytes(secret);
    ASSERT_TRUE(key.has_value());

    WebhookEvent e = Event("msg_headers");
    e.headers = {{"X-Custom", "custom-value"},
                 {"Authorization", "Bearer caller-token"},
                 {"webhook-id", "msg_forged"},
                 {"Webhook-Signature", "v1,forged"},
                 {"Content-Type", "text/plain"},
                 {"Host", "evil.example"},
                 {"User-Agent", "spoofed"},
                 {"X-Injected", "a\r\nX-Evil: 1"},
                 {"Bad Name", "v"}};
    const std::string payload = e.payload;
    Enqueue({e});

    auto s = Deliver();
    ASSERT_TRUE(s);
    auto call = LastCall();
    ASSERT_TRUE(call);
    const auto& req = call->request;
    EXPECT_EQ(req.method, "POST");
    EXPECT_EQ(req.url, kUrl);
    EXPECT_EQ(req.body, payload);
    EXPECT_EQ(req.timeouts.total, milliseconds(10000));
    EXPECT_EQ(req.headers.Get("content-type"), "application/json");
    EXPECT_EQ(req.headers.Get("webhook-id"), "msg_headers");
    EXPECT_EQ(req.headers.Get("webhook-timestamp"), std::to_string(clock_.NowUnixMs() / 1000));
    EXPECT_EQ(req.headers.Get("user-agent"), options_.user_agent);
    EXPECT_EQ(req.headers.Get("X-Custom"), "custom-value");
    EXPECT_EQ(req.headers.Get("Authorization"), "Bearer caller-token");
    EXPECT_FALSE(req.headers.Has("Host"));
    EXPECT_FALSE(req.headers.Has("X-Injected"));
    EXPECT_FALSE(req.headers.Has("Bad Name"));
    int webhook_ids = 0;
    int signatures = 0;
    int content_types = 0;
    int agents = 0;
    for (const auto& [name, value] : req.headers.entries()) {
        webhook_ids += core::IEquals(name, "webhook-id") ? 1 : 0;
        signatures += core::IEquals(name, "webhook-signature") ? 1 : 0;
        content_types += core::IEquals(name, "content-type") ? 1 : 0;
        agents += core::IEquals(name, "user-agent") ? 1 : 0;
    }
    EXPECT_EQ(webhook_ids, 1);
    EXPECT_EQ(signatures, 1);
    EXPECT_EQ(content_types, 1);
    EXPECT_EQ(agents, 1);
    EXPECT_TRUE(signing::VerifyHeaders(*key, req.headers.Get("webhook-id"),
                                       req.headers.Get("webhook-timestamp"), req.body,
                                       req.headers.Get("webhook-signature")));

    Respond(call, 204);
    EXPECT_EQ(s->kind(), Kind::kAck);
    EXPECT_EQ(Outcome("delivered"), 1u);
    auto row = Stored("msg_headers");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "delivered");
    EXPECT_EQ(row->attempts, 1);
    EXPECT_EQ(row->last_status_code, 204);
    EXPECT_EQ(row->delivered_at_ms, clock_.NowUnixMs());
    EXPECT_EQ(row->task_id, "task-1");
    EXPECT_EQ(row->virtual_key_id, key_id_);
    EXPECT_EQ(row->payload, payload);
}

TEST_F(DeliveryWorkerTest, WithoutASecretTheDeliveryIsUnsigned) {
    Enqueue({Event("msg_unsigned")});
    auto s = Deliver();
    ASSERT_TRUE(s);
    auto call = LastCall();
    ASSERT_TRUE(call);
    EXPECT_FALSE(call->request.headers.Has("webhook-signature"));
    EXPECT_TRUE(call->request.headers.Has("webhook-id"));
    Respond(call, 200);
    EXPECT_EQ(s->kind(), Kind::kAck);
}

TEST_F(DeliveryWorkerTest, RotationSignsWithBothSecretsDuringTheGracePeriod) {
    std::string old_secret = RotateSecret();
    std::string new_secret = RotateSecret(std::chrono::hours(1));
    auto old_key = *signing::SecretKeyBytes(old_secret);
    auto new_key = *signing::SecretKeyBytes(new_secret);

    Enqueue({Event("msg_rot_1")});
    ASSERT_TRUE(Deliver());
    auto call = LastCall();
    const auto& h = call->request.headers;
    std::string_view sig = h.Get("webhook-signature");
    EXPECT_NE(sig.find(' '), std::string_view::npos) << sig;
    EXPECT_TRUE(signing::VerifyHeaders(new_key, h.Get("webhook-id"), h.Get("webhook-timestamp"),
                                       call->request.body, sig));
    EXPECT_TRUE(signing::VerifyHeaders(old_key, h.Get("webhook-id"), h.Get("webhook-timestamp"),
                                       call->request.body, sig));
    Respond(call, 200);

    // After the grace period only the new secret signs.
    clock_.Advance(std::chrono::hours(1) + milliseconds(1));
    Enqueue({Event("msg_rot_2")});
    ASSERT_TRUE(Deliver());
    call = LastCall();
    const auto& h2 = call->request.headers;
    EXPECT_EQ(h2.Get("webhook-signature").find(' '), std::string_view::npos);
    EXPECT_TRUE(signing::VerifyHeaders(new_key, h2.Get("webhook-id"), h2.Get("webhook-timestamp"),
                                       call->request.body, h2.Get("webhook-signature")));
    EXPECT_FALSE(signing::VerifyHeaders(old_key, h2.Get("webhook-id"), h2.Get("webhook-timestamp"),
                                        call->request.body, h2.Get("webhook-signature")));
    Respond(call, 200);
}

TEST_F(DeliveryWorkerTest, TransientFailuresRetryWithGrowingBackoffThenDie) {
    Enqueue({Event("msg_retry")});

    // Attempt 1: 500.
    auto s1 = Deliver();
    ASSERT_TRUE(s1);
    std::string first_ts(LastCall()->request.headers.Get("webhook-timestamp"));
    Respond(LastCall(), 500);
    ASSERT_EQ(s1->kind(), Kind::kRetry);
    EXPECT_GE(s1->delay(), milliseconds(1000));
    EXPECT_LE(s1->delay(), milliseconds(2000));
    auto row = Stored("msg_retry");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "failed");
    EXPECT_EQ(row->attempts, 1);
    EXPECT_EQ(row->last_status_code, 500);

    // Attempt 2: network error. Same id; the timestamp is the attempt's.
    clock_.Advance(milliseconds(2000));
    auto s2 = Deliver();
    ASSERT_TRUE(s2);
    EXPECT_EQ(s2->delivery().attempt, 2);
    EXPECT_EQ(LastCall()->request.headers.Get("webhook-id"), "msg_retry");
    EXPECT_EQ(LastCall()->request.headers.Get("webhook-timestamp"),
              std::to_string(clock_.NowUnixMs() / 1000));
    EXPECT_NE(LastCall()->request.headers.Get("webhook-timestamp"), first_ts);
    Fail(LastCall());
    ASSERT_EQ(s2->kind(), Kind::kRetry);
    EXPECT_GT(s2->delay(), s1->delay());
    EXPECT_LE(s2->delay(), milliseconds(4000));

    // Attempt 3: 408.
    auto s3 = Deliver();
    ASSERT_TRUE(s3);
    Respond(LastCall(), 408);
    ASSERT_EQ(s3->kind(), Kind::kRetry);
    EXPECT_GT(s3->delay(), s2->delay());
    EXPECT_LE(s3->delay(), milliseconds(8000));

    // Attempt 4 (the last: 1 + 3 retries): 502 → dead.
    auto s4 = Deliver();
    ASSERT_TRUE(s4);
    Respond(LastCall(), 502);
    EXPECT_EQ(s4->kind(), Kind::kDeadLetter);
    EXPECT_EQ(client_.calls.size(), 4u);
    EXPECT_EQ(queue_.ready_count(), 0u);

    row = Stored("msg_retry");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "dead");
    EXPECT_EQ(row->attempts, 4);
    EXPECT_EQ(row->last_status_code, 502);
    EXPECT_EQ(Outcome("retry"), 3u);
    EXPECT_EQ(Outcome("dead"), 1u);
}

TEST_F(DeliveryWorkerTest, RetryAfterIsHonouredAndCapped) {
    Enqueue({Event("msg_ra_1"), Event("msg_ra_2", "task-2"), Event("msg_ra_3", "task-3")});

    auto s1 = Deliver();
    net::Headers h1;
    h1.Add("Retry-After", "7");
    Respond(LastCall(), 429, h1);
    ASSERT_EQ(s1->kind(), Kind::kRetry);
    EXPECT_EQ(s1->delay(), milliseconds(7000));

    auto s2 = Deliver();
    net::Headers h2;
    h2.Add("Retry-After", "86400");
    Respond(LastCall(), 503, h2);
    ASSERT_EQ(s2->kind(), Kind::kRetry);
    EXPECT_EQ(s2->delay(), options_.retry_after_max);

    // A malformed Retry-After falls back to the backoff.
    auto s3 = Deliver();
    net::Headers h3;
    h3.Add("Retry-After", "soon");
    Respond(LastCall(), 429, h3);
    ASSERT_EQ(s3->kind(), Kind::kRetry);
    EXPECT_LE(s3->delay(), milliseconds(2000));
}

TEST_F(DeliveryWorkerTest, PermanentStatusesAreDeadAtOnce) {
    Enqueue({Event("msg_400"), Event("msg_410", "task-2"), Event("msg_301", "task-3")});
    for (int status : {400, 410, 301}) {
        auto s = Deliver();
        ASSERT_TRUE(s);
        Respond(LastCall(), status);
        EXPECT_EQ(s->kind(), Kind::kDeadLetter) << status;
    }
    EXPECT_EQ(client_.calls.size(), 3u);
    EXPECT_EQ(queue_.ready_count(), 0u);
    auto row = Stored("msg_400");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "dead");
    EXPECT_EQ(row->attempts, 1);
    EXPECT_EQ(row->last_status_code, 400);
    // A 4xx proves the host is up: the breaker stays closed.
    EXPECT_EQ(worker_->breakers().StateOf(kHost, clock_.SteadyNs() / 1'000'000), State::kClosed);
}

TEST_F(DeliveryWorkerTest, ErrorBodyPrefixIsKeptInLastError) {
    Enqueue({Event("msg_body")});
    auto s = Deliver();
    auto call = LastCall();
    call->Headers(422);
    call->Data(std::string(1000, 'x'));
    call->Done();
    loop_.RunPending();
    ASSERT_EQ(s->kind(), Kind::kDeadLetter);
    auto row = Stored("msg_body");
    ASSERT_TRUE(row);
    EXPECT_TRUE(row->last_error.starts_with("HTTP 422: xxx")) << row->last_error;
    EXPECT_LE(row->last_error.size(), 10 + options_.max_error_body_bytes);
}

TEST_F(DeliveryWorkerTest, BreakerOpensDefersWithoutSpendingAttemptsProbesAndCloses) {
    std::vector<WebhookEvent> events;
    for (int i = 0; i < 7; ++i) {
        events.push_back(Event("msg_b" + std::to_string(i), "task-b" + std::to_string(i)));
    }
    Enqueue(events);
    auto now_ms = [&] { return clock_.SteadyNs() / 1'000'000; };

    // Five consecutive failures open the breaker.
    for (int i = 0; i < 5; ++i) {
        auto s = Deliver();
        ASSERT_TRUE(s);
        Respond(LastCall(), 503);
        EXPECT_EQ(s->kind(), Kind::kRetry);
    }
    EXPECT_EQ(worker_->breakers().StateOf(kHost, now_ms()), State::kOpen);
    EXPECT_EQ(client_.calls.size(), 5u);

    // While open: no request; the delivery is republished with the remaining open time and
    // Acked (it spends no attempt).
    clock_.Advance(milliseconds(10000));
    size_t published_before = queue_.published().size();
    auto deferred = Deliver();
    ASSERT_TRUE(deferred);
    EXPECT_EQ(deferred->kind(), Kind::kAck);
    EXPECT_EQ(client_.calls.size(), 5u);
    EXPECT_EQ(Outcome("breaker_open"), 1u);
    auto published = queue_.published();
    ASSERT_EQ(published.size(), published_before + 1);
    EXPECT_EQ(published.back().delay, milliseconds(50000));
    EXPECT_EQ(published.back().partition_key, "task-b5");
    auto republished = DecodeDelivery(published.back().body);
    ASSERT_TRUE(republished);
    EXPECT_EQ(republished->id, "msg_b5");
    EXPECT_EQ(republished->deferrals, 1);
    EXPECT_EQ(republished->prior_attempts, 0);

    // After the open period one probe goes through; a concurrent delivery is deferred again.
    clock_.Advance(milliseconds(50000));
    EXPECT_EQ(worker_->breakers().StateOf(kHost, now_ms()), State::kHalfOpen);
    auto probe = Deliver();  // msg_b6 (the oldest ready message)
    ASSERT_TRUE(probe);
    ASSERT_EQ(client_.calls.size(), 6u);
    auto probe_call = LastCall();
    auto second = Deliver();
    ASSERT_TRUE(second);
    EXPECT_EQ(second->kind(), Kind::kAck);  // deferred
    EXPECT_EQ(client_.calls.size(), 6u);
    EXPECT_EQ(queue_.published().back().delay, options_.request_timeout);

    // The probe succeeds: closed, and deliveries flow again.
    Respond(probe_call, 200);
    EXPECT_EQ(probe->kind(), Kind::kAck);
    EXPECT_EQ(worker_->breakers().StateOf(kHost, now_ms()), State::kClosed);
    auto next = Deliver();
    ASSERT_TRUE(next);
    EXPECT_EQ(client_.calls.size(), 7u);
    Respond(LastCall(), 200);
    EXPECT_EQ(next->kind(), Kind::kAck);
}

TEST_F(DeliveryWorkerTest, FailedProbeReopensTheBreaker) {
    std::vector<WebhookEvent> events;
    for (int i = 0; i < 6; ++i) {
        events.push_back(Event("msg_p" + std::to_string(i), "task-p" + std::to_string(i)));
    }
    Enqueue(events);
    for (int i = 0; i < 5; ++i) {
        Deliver();
        Fail(LastCall(), http_client::Failure::kTimeout);
    }
    auto now_ms = [&] { return clock_.SteadyNs() / 1'000'000; };
    clock_.Advance(options_.breaker_open);
    auto probe = Deliver();
    ASSERT_TRUE(probe);
    ASSERT_EQ(client_.calls.size(), 6u);
    Respond(LastCall(), 500);
    EXPECT_EQ(worker_->breakers().StateOf(kHost, now_ms()), State::kOpen);
}

TEST_F(DeliveryWorkerTest, TooManyBreakerDeferralsMakeTheDeliveryDead) {
    QueuedDelivery m;
    m.id = "msg_deferred";
    m.task_id = "task-d";
    m.virtual_key_id = key_id_;
    m.url = std::string(kUrl);
    m.payload = "{}";
    m.deferrals = options_.max_breaker_deferrals;
    // Open the breaker first.
    std::vector<WebhookEvent> events;
    for (int i = 0; i < 5; ++i) {
        events.push_back(Event("msg_o" + std::to_string(i), "task-o" + std::to_string(i)));
    }
    Enqueue(events);
    for (int i = 0; i < 5; ++i) {
        Deliver();
        Respond(LastCall(), 500);
    }
    bus::OutgoingMessage out;
    out.topic = options_.topic;
    out.partition_key = "task-d";
    out.body = EncodeDelivery(m);
    queue_.Publish({out}, nullptr);
    // Skip the five retries queued before it.
    SettlementPtr s;
    for (int i = 0; i < 6; ++i) {
        s = Deliver();
    }
    ASSERT_TRUE(s);
    EXPECT_EQ(s->delivery().body, out.body);
    EXPECT_EQ(s->kind(), Kind::kDeadLetter);
    auto row = Stored("msg_deferred");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "dead");
    EXPECT_NE(row->last_error.find("circuit breaker"), std::string::npos);
}

TEST_F(DeliveryWorkerTest, AlreadyDeliveredIdsAreSkipped) {
    Enqueue({Event("msg_dup")});
    auto s1 = Deliver();
    Respond(LastCall(), 200);
    ASSERT_EQ(s1->kind(), Kind::kAck);

    auto delivered = Stored("msg_dup");
    ASSERT_TRUE(delivered);
    ASSERT_EQ(delivered->status, "delivered");

    // The same webhook-id published again (e.g. a redelivered step of a finished task re-sent
    // its final event): its publisher, maybe another instance, recorded it as pending again.
    clock_.Advance(milliseconds(5));
    store::WebhookDelivery pending = *delivered;
    pending.status = "pending";
    pending.attempts = 0;
    pending.last_status_code = 0;
    pending.delivered_at_ms = 0;
    pending.updated_at_ms = clock_.NowUnixMs();
    ASSERT_TRUE(store_->UpsertWebhookDeliveries({pending}).has_value());
    clock_.Advance(milliseconds(5));
    Enqueue({Event("msg_dup")});
    auto s2 = Deliver();
    ASSERT_TRUE(s2);
    EXPECT_EQ(s2->kind(), Kind::kAck);
    EXPECT_EQ(client_.calls.size(), 1u);
    EXPECT_EQ(Outcome("skipped_duplicate"), 1u);
    // Not sent again, and the row says delivered again (with the first delivery's facts).
    auto row = Stored("msg_dup");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "delivered");
    EXPECT_EQ(row->attempts, 1);
    EXPECT_EQ(row->last_status_code, 200);
    EXPECT_EQ(row->delivered_at_ms, delivered->delivered_at_ms);
}

TEST_F(DeliveryWorkerTest, RedeliveredMessageIsCheckedAgainstTheStore) {
    // The store says delivered (by another instance, or before a crash); this worker has no
    // memory of it. A queue redelivery (attempt 2) is skipped.
    QueuedDelivery m;
    m.id = "msg_crash";
    m.task_id = "task-c";
    m.virtual_key_id = key_id_;
    m.url = std::string(kUrl);
    m.payload = "{}";
    m.published_at_ms = clock_.NowUnixMs() - 1000;
    store::WebhookDelivery row = RowFor(m);
    row.status = "delivered";
    row.attempts = 1;
    row.created_at_ms = row.updated_at_ms = row.delivered_at_ms = clock_.NowUnixMs();
    ASSERT_TRUE(store_->UpsertWebhookDeliveries({row}).has_value());

    bus::Delivery d;
    d.message_id = "q1";
    d.topic = options_.topic;
    d.partition_key = "task-c";
    d.body = EncodeDelivery(m);
    d.attempt = 2;
    auto s = std::make_shared<conduit::testing::FakeWorkQueue::FakeSettlement>(&queue_, d);
    worker_->Handle(d, s);
    ASSERT_TRUE(Pump([&] { return s->settled(); }));
    EXPECT_EQ(s->kind(), Kind::kAck);
    EXPECT_TRUE(client_.calls.empty());
    EXPECT_EQ(Outcome("skipped_duplicate"), 1u);

    // On attempt 1 the store is not consulted (no read per delivery): it is sent.
    d.attempt = 1;
    auto s1 = std::make_shared<conduit::testing::FakeWorkQueue::FakeSettlement>(&queue_, d);
    worker_->Handle(d, s1);
    ASSERT_TRUE(Pump([&] { return !client_.calls.empty(); }));
    Respond(LastCall(), 200);
    EXPECT_EQ(s1->kind(), Kind::kAck);
}

TEST_F(DeliveryWorkerTest, OperatorRedeliveryOfADeliveredIdIsSent) {
    Enqueue({Event("msg_again")});
    Deliver();
    Respond(LastCall(), 200);
    auto row = Stored("msg_again");
    ASSERT_TRUE(row);
    ASSERT_EQ(row->status, "delivered");

    clock_.Advance(milliseconds(5000));
    std::optional<core::Result<store::WebhookDelivery>> fresh;
    publisher_->Redeliver(*row, [&](core::Result<store::WebhookDelivery> r) { fresh = r; });
    ASSERT_TRUE(fresh && *fresh);
    EXPECT_EQ((*fresh)->status, "pending");
    EXPECT_EQ((*fresh)->attempts, 0);

    auto s = Deliver();
    ASSERT_TRUE(s);
    ASSERT_EQ(client_.calls.size(), 2u);
    EXPECT_EQ(LastCall()->request.headers.Get("webhook-id"), "msg_again");
    Respond(LastCall(), 200);
    EXPECT_EQ(s->kind(), Kind::kAck);
    row = Stored("msg_again");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "delivered");
    EXPECT_EQ(row->attempts, 1);
    EXPECT_EQ(row->delivered_at_ms, clock_.NowUnixMs());
}

TEST_F(DeliveryWorkerTest, MalformedMessagesAndBadUrlsAreDeadLettered) {
    queue_.Publish({bus::OutgoingMessage{options_.topic, "k", "not json", "", milliseconds(0)}},
                   nullptr);
    auto s = Deliver();
    ASSERT_TRUE(s);
    EXPECT_EQ(s->kind(), Kind::kDeadLetter);

    WebhookEvent e = Event("msg_badurl");
    e.url = "ftp://example.com/x";
    Enqueue({e});
    auto s2 = Deliver();
    ASSERT_TRUE(s2);
    EXPECT_EQ(s2->kind(), Kind::kDeadLetter);
    EXPECT_TRUE(client_.calls.empty());
    auto row = Stored("msg_badurl");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "dead");
}

TEST_F(DeliveryWorkerTest, MetricsTrackActiveRequestsAndDurations) {
    Enqueue({Event("msg_m")});
    Deliver();
    auto& active = registry_.Gauge("conduit_webhook_active_requests", "");
    EXPECT_EQ(active.Value(), 1.0);
    clock_.Advance(milliseconds(250));
    Respond(LastCall(), 200);
    EXPECT_EQ(active.Value(), 0.0);
    auto& hist = registry_.Histogram("conduit_webhook_duration_seconds", "");
    EXPECT_EQ(hist.Count(), 1u);
    EXPECT_NEAR(hist.Sum(), 0.25, 1e-9);
    std::string text = registry_.Render();
    EXPECT_NE(text.find("conduit_webhook_breaker_state{host=\"hooks.example.com:8080\"} 0"),
              std::string::npos)
        << text;
    EXPECT_EQ(worker_->InFlight(), 0u);
}

TEST(WebhookWorkerHelpers, BreakerHostAndCallerHeaders) {
    EXPECT_EQ(BreakerHost("https://Hooks.Example.com/x"), "hooks.example.com:443");
    EXPECT_EQ(BreakerHost("http://h:81"), "h:81");
    EXPECT_EQ(BreakerHost("http://h"), "h:80");
    EXPECT_EQ(BreakerHost("ftp://h"), "");
    EXPECT_EQ(BreakerHost("not a url"), "");

    EXPECT_TRUE(IsAllowedCallerHeader("X-Api-Key", "abc"));
    EXPECT_TRUE(IsAllowedCallerHeader("Authorization", "Bearer x"));
    EXPECT_FALSE(IsAllowedCallerHeader("webhook-timestamp", "1"));
    EXPECT_FALSE(IsAllowedCallerHeader("WEBHOOK-ID", "1"));
    EXPECT_FALSE(IsAllowedCallerHeader("content-length", "1"));
    EXPECT_FALSE(IsAllowedCallerHeader("Transfer-Encoding", "chunked"));
    EXPECT_FALSE(IsAllowedCallerHeader("X-A", "a\nb"));
    EXPECT_FALSE(IsAllowedCallerHeader("X A", "a"));
    EXPECT_FALSE(IsAllowedCallerHeader("", "a"));
}

TEST(WebhookHostBreakers, HostLabelsAreBounded) {
    obs::Registry registry;
    WebhookOptions o;
    o.max_host_labels = 2;
    HostBreakers breakers(o, registry);
    breakers.Acquire("a:80", 0);
    breakers.Acquire("b:80", 0);
    breakers.Acquire("c:80", 0);
    breakers.Acquire("d:80", 0);
    std::string text = registry.Render();
    EXPECT_NE(text.find("host=\"a:80\""), std::string::npos);
    EXPECT_NE(text.find("host=\"b:80\""), std::string::npos);
    EXPECT_EQ(text.find("host=\"c:80\""), std::string::npos);
    EXPECT_NE(text.find("host=\"other\""), std::string::npos);
}

TEST(WebhookHostBreakers, HealthyBreakersAreForgottenBeyondTheCap) {
    obs::Registry registry;
    WebhookOptions o;
    o.max_breakers = 3;
    o.breaker_failures = 2;
    HostBreakers breakers(o, registry);
    breakers.Report("bad:80", true, 0);
    breakers.Report("bad:80", true, 0);
    breakers.Acquire("a:80", 0);
    breakers.Acquire("b:80", 0);
    breakers.Acquire("c:80", 0);  // over the cap: a and b are forgotten, bad is kept
    EXPECT_LE(breakers.Size(), 3u);
    EXPECT_EQ(breakers.StateOf("bad:80", 1), http_client::CircuitBreaker::State::kOpen);
}

}  // namespace
}  // namespace conduit::webhooks::testing
