#include "webhook_fixture.hpp"

namespace conduit::webhooks::testing {
namespace {

using std::chrono::milliseconds;

class RecorderTest : public WebhookTest {
protected:
    store::WebhookDelivery Row(const std::string& id, std::string status, int attempts) {
        store::WebhookDelivery r;
        r.id = id;
        r.task_id = "task-r";
        r.virtual_key_id = key_id_;
        r.event_type = "task.completed";
        r.url = std::string(kUrl);
        r.headers_json = "[]";
        r.payload = "{}";
        r.status = std::move(status);
        r.attempts = attempts;
        r.created_at_ms = clock_.NowUnixMs();
        r.updated_at_ms = clock_.NowUnixMs() + attempts;
        return r;
    }
    /// Arms pending timers (posted work) at the current fake time, then advances it.
    void Tick(milliseconds d) {
        loop_.RunPending();
        loop_.AdvanceBy(d);
    }
    bool WaitBatches(uint64_t n) {
        return Pump([&] { return recorder_->BatchesWritten() >= n; });
    }
};

TEST_F(RecorderTest, ManyUpdatesAreCoalescedIntoOneTransaction) {
    for (int i = 0; i < 50; ++i) {
        std::string id = "msg_r" + std::to_string(i);
        recorder_->Record(Row(id, "pending", 0));
        recorder_->Record(Row(id, "failed", 1));
        recorder_->Record(Row(id, i % 2 == 0 ? "delivered" : "dead", 2));
    }
    EXPECT_EQ(recorder_->Pending(), 50u);
    EXPECT_EQ(recorder_->BatchesWritten(), 0u);
    auto peek = recorder_->Peek("msg_r3");
    ASSERT_TRUE(peek);
    EXPECT_EQ(peek->status, "dead");

    // Nothing is written before the interval; then one batch.
    Tick(milliseconds(199));
    EXPECT_EQ(recorder_->Pending(), 50u);
    Tick(milliseconds(1));
    EXPECT_EQ(recorder_->Pending(), 0u);
    ASSERT_TRUE(WaitBatches(1));
    EXPECT_EQ(recorder_->BatchesWritten(), 1u);

    auto r0 = store_->GetWebhookDelivery("msg_r0");
    ASSERT_TRUE(r0 && *r0) << (r0 ? "missing" : r0.error().message);
    EXPECT_EQ((*r0)->status, "delivered");
    EXPECT_EQ((*r0)->attempts, 2);
    auto r1 = store_->GetWebhookDelivery("msg_r1");
    ASSERT_TRUE(r1 && *r1);
    EXPECT_EQ((*r1)->status, "dead");
    store::WebhookDeliveryQuery q;
    q.limit = 1000;
    auto all = store_->ListWebhookDeliveries(q);
    ASSERT_TRUE(all);
    EXPECT_EQ(all->size(), 50u);
}

TEST_F(RecorderTest, AFullBatchIsWrittenWithoutWaitingForTheTimer) {
    options_.record_max_pending = 10;
    DeliveryRecorder small(*store_, *executor_, loop_, options_, registry_);
    for (int i = 0; i < 25; ++i) {
        small.Record(Row("msg_f" + std::to_string(i), "pending", 0));
    }
    ASSERT_TRUE(Pump([&] { return small.BatchesWritten() >= 2; }));
    EXPECT_EQ(small.Pending(), 5u);
    Tick(milliseconds(200));
    ASSERT_TRUE(Pump([&] { return small.BatchesWritten() >= 3; }));
    EXPECT_EQ(small.Pending(), 0u);
}

TEST_F(RecorderTest, TheTimerIsArmedAgainForLaterRows) {
    recorder_->Record(Row("msg_t1", "pending", 0));
    Tick(milliseconds(200));
    ASSERT_TRUE(WaitBatches(1));
    recorder_->Record(Row("msg_t2", "pending", 0));
    Tick(milliseconds(200));
    ASSERT_TRUE(WaitBatches(2));
    auto r = store_->GetWebhookDelivery("msg_t2");
    ASSERT_TRUE(r && *r);
}

TEST_F(RecorderTest, CreatedAtOfTheFirstVersionIsKept) {
    auto first = Row("msg_c", "pending", 0);
    first.created_at_ms = 1000;
    recorder_->Record(first);
    auto later = Row("msg_c", "failed", 1);
    later.created_at_ms = 5000;
    recorder_->Record(later);
    EXPECT_EQ(recorder_->Peek("msg_c")->created_at_ms, 1000);
    EXPECT_EQ(recorder_->Peek("msg_c")->status, "failed");
}

class PublisherTest : public WebhookTest {};

TEST_F(PublisherTest, PublishesInBatchesPartitionedByTaskAndRecordsPending) {
    std::vector<WebhookEvent> events;
    for (int i = 0; i < 250; ++i) {
        events.push_back(Event("msg_p" + std::to_string(i), "task-" + std::to_string(i % 7)));
    }
    events[3].headers = {{"X-Secret", "s3cr3t"}};
    Enqueue(std::move(events));

    EXPECT_EQ(queue_.publish_batches(), (std::vector<size_t>{100, 100, 50}));
    auto published = queue_.published();
    ASSERT_EQ(published.size(), 250u);
    for (size_t i = 0; i < published.size(); ++i) {
        EXPECT_EQ(published[i].topic, "webhooks");
        EXPECT_EQ(published[i].partition_key, "task-" + std::to_string(i % 7));
        auto m = DecodeDelivery(published[i].body);
        ASSERT_TRUE(m);
        EXPECT_EQ(m->id, "msg_p" + std::to_string(i));
        EXPECT_EQ(m->virtual_key_id, key_id_);
        EXPECT_EQ(m->published_at_ms, clock_.NowUnixMs());
        EXPECT_FALSE(m->redelivery);
    }
    auto m3 = DecodeDelivery(published[3].body);
    ASSERT_EQ(m3->headers.size(), 1u);
    EXPECT_EQ(m3->headers[0].second, "s3cr3t");

    auto pending = recorder_->Peek("msg_p42");
    ASSERT_TRUE(pending);
    EXPECT_EQ(pending->status, "pending");
    EXPECT_EQ(pending->attempts, 0);
    EXPECT_EQ(pending->created_at_ms, (clock_.NowUnixMs() / 1000) * 1000);
    // One store write for all 250 rows.
    recorder_->Flush();
    ASSERT_TRUE(Pump([&] { return recorder_->BatchesWritten() >= 1; }));
    EXPECT_EQ(recorder_->BatchesWritten(), 1u);
}

TEST_F(PublisherTest, GeneratesIdsWhenMissing) {
    WebhookEvent e = Event("");
    Enqueue({e});
    auto m = DecodeDelivery(queue_.published().at(0).body);
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->id.starts_with("msg_")) << m->id;
    EXPECT_EQ(m->id.size(), 4u + 36u);
}

TEST_F(PublisherTest, EmptyEnqueueCompletesAtOnce) {
    bool called = false;
    publisher_->Enqueue({}, [&](core::Result<void> r) {
        called = true;
        EXPECT_TRUE(r.has_value());
    });
    EXPECT_TRUE(called);
    EXPECT_TRUE(queue_.publish_batches().empty());
}

TEST_F(PublisherTest, AFailedPublishReportsTheErrorAndRecordsDead) {
    queue_.FailPublishes(core::Error::Make(core::ErrorCode::kUnavailable, "queue down"));
    std::optional<core::Result<void>> result;
    publisher_->Enqueue({Event("msg_lost")}, [&](core::Result<void> r) { result = r; });
    ASSERT_TRUE(result);
    ASSERT_FALSE(result->has_value());
    EXPECT_EQ(result->error().code, core::ErrorCode::kUnavailable);
    auto row = recorder_->Peek("msg_lost");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, "dead");
    EXPECT_NE(row->last_error.find("queue down"), std::string::npos);
}

TEST_F(PublisherTest, DoneWaitsForEveryBatch) {
    queue_.HoldPublishes(true);
    std::vector<WebhookEvent> events;
    for (int i = 0; i < 150; ++i) {
        events.push_back(Event("msg_h" + std::to_string(i)));
    }
    bool called = false;
    publisher_->Enqueue(std::move(events), [&](core::Result<void>) { called = true; });
    EXPECT_FALSE(called);
    queue_.ReleasePublishes();
    EXPECT_TRUE(called);
}

TEST(WebhookMessage, RoundTrip) {
    QueuedDelivery m;
    m.id = "msg_1";
    m.event_type = "task.failed";
    m.task_id = "t";
    m.virtual_key_id = 42;
    m.url = "https://x.example/h";
    m.headers = {{"A", "1"}, {"A", "2"}, {"B", "\"quoted\""}};
    m.payload = R"({"x":"é\n"})";
    m.created_at_ms = 1;
    m.published_at_ms = 2;
    m.prior_attempts = 3;
    m.deferrals = 4;
    m.redelivery = true;
    auto back = DecodeDelivery(EncodeDelivery(m));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->id, m.id);
    EXPECT_EQ(back->event_type, m.event_type);
    EXPECT_EQ(back->task_id, m.task_id);
    EXPECT_EQ(back->virtual_key_id, 42);
    EXPECT_EQ(back->url, m.url);
    EXPECT_EQ(back->headers, m.headers);
    EXPECT_EQ(back->payload, m.payload);
    EXPECT_EQ(back->created_at_ms, 1);
    EXPECT_EQ(back->published_at_ms, 2);
    EXPECT_EQ(back->prior_attempts, 3);
    EXPECT_EQ(back->deferrals, 4);
    EXPECT_TRUE(back->redelivery);

    EXPECT_FALSE(DecodeDelivery("{}").has_value());
    EXPECT_FALSE(DecodeDelivery("[1]").has_value());
    EXPECT_EQ(DecodeHeaders(EncodeHeaders(m.headers)), m.headers);
    EXPECT_EQ(DecodeHeaders(R"({"X":"y"})"), (HeaderList{{"X", "y"}}));
    EXPECT_TRUE(DecodeHeaders("garbage").empty());
}

TEST(WebhookOptionsTest, QueueAndPoolOptions) {
    WebhookOptions o;
    EXPECT_EQ(WebhookQueueOptions(o).max_attempts, 4);
    o.max_retries = 0;
    bus::QueueOptions base;
    base.partitions = 7;
    auto q = WebhookQueueOptions(o, base);
    EXPECT_EQ(q.max_attempts, 1);
    EXPECT_EQ(q.partitions, 7);
    EXPECT_EQ(WebhookPoolOptions().max_connections_per_host, 50);
}

}  // namespace
}  // namespace conduit::webhooks::testing
