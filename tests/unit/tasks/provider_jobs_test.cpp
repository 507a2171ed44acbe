// ProviderJobs against a scripted HTTP client (FakeHttpClient): the calls it makes, how it reads
// provider job objects (ParseJobState) and how it classifies failures.

#include "tasks/provider_jobs.hpp"

#include "fakes/fake_http_client.hpp"
#include "fakes/fake_loop.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

namespace conduit::tasks {
namespace {

using conduit::testing::FakeHttpClient;
using conduit::testing::FakeLoop;
using Phase = JobState::Phase;

// --- ParseJobState ----------------------------------------------------------------------------

TEST(ParseJobStateTest, VideoObjectStatuses) {
    const std::pair<const char*, Phase> cases[] = {
        {"queued", Phase::kQueued},       {"pending", Phase::kQueued},
        {"in_progress", Phase::kRunning}, {"processing", Phase::kRunning},
        {"completed", Phase::kSucceeded}, {"succeeded", Phase::kSucceeded},
        {"failed", Phase::kFailed},       {"error", Phase::kFailed},
        {"cancelled", Phase::kCancelled}, {"canceled", Phase::kCancelled}};
    for (const auto& [status, phase] : cases) {
        auto s = ParseJobState(std::string(R"({"id":"video_1","object":"video","status":")") +
                               status + R"(","progress":37})");
        ASSERT_TRUE(s.has_value()) << status;
        EXPECT_EQ(s->phase, phase) << status;
        EXPECT_EQ(s->id, "video_1");
        EXPECT_EQ(s->progress, 37);
    }
}

TEST(ParseJobStateTest, FieldsOfAFinishedVideoAndAFailedJob) {
    auto done = ParseJobState(
        R"({"id":"video_9","status":"completed","progress":100,"seconds":"8","size":"1280x720"})");
    ASSERT_TRUE(done.has_value());
    EXPECT_EQ(done->phase, Phase::kSucceeded);
    EXPECT_DOUBLE_EQ(done->seconds, 8.0);
    auto numeric = ParseJobState(R"({"id":"v","status":"completed","seconds":2.5})");
    ASSERT_TRUE(numeric.has_value());
    EXPECT_DOUBLE_EQ(numeric->seconds, 2.5);

    auto failed = ParseJobState(
        R"({"id":"v","status":"failed","progress":99,"error":{"code":"video_generation_failed","message":"it broke"}})");
    ASSERT_TRUE(failed.has_value());
    EXPECT_EQ(failed->phase, Phase::kFailed);
    EXPECT_EQ(failed->error_code, "video_generation_failed");
    EXPECT_EQ(failed->error_message, "it broke");
}

TEST(ParseJobStateTest, ImageOutputsAndSynchronousResponses) {
    auto job = ParseJobState(
        R"({"id":"imgjob_1","object":"image.job","status":"completed","data":[{"url":"http://p/a.png"},{"b64_json":"aGk="},{"revised_prompt":"x"},7]})");
    ASSERT_TRUE(job.has_value());
    EXPECT_EQ(job->phase, Phase::kSucceeded);
    ASSERT_EQ(job->outputs.size(), 2u) << "items without url or b64_json are skipped";
    EXPECT_EQ(job->outputs[0].url, "http://p/a.png");
    EXPECT_EQ(job->outputs[1].b64, "aGk=");

    auto sync = ParseJobState(R"({"created":1,"data":[{"url":"http://p/b.png"}]})");
    ASSERT_TRUE(sync.has_value()) << "an /images/generations response has no status";
    EXPECT_EQ(sync->phase, Phase::kSucceeded);
    EXPECT_TRUE(sync->id.empty());
    EXPECT_EQ(sync->outputs.size(), 1u);
}

TEST(ParseJobStateTest, ProgressIsClampedAndMayBeFractional) {
    auto hi = ParseJobState(R"({"id":"v","status":"in_progress","progress":250})");
    ASSERT_TRUE(hi.has_value());
    EXPECT_EQ(hi->progress, 100);
    auto lo = ParseJobState(R"({"id":"v","status":"in_progress","progress":-3})");
    ASSERT_TRUE(lo.has_value());
    EXPECT_EQ(lo->progress, 0);
    auto frac = ParseJobState(R"({"id":"v","status":"in_progress","progress":41.7})");
    ASSERT_TRUE(frac.has_value());
    EXPECT_EQ(frac->progress, 41);
}

TEST(ParseJobStateTest, RejectsUnknownStatusesAndNonObjects) {
    EXPECT_FALSE(ParseJobState(R"({"id":"v","status":"dreaming"})").has_value());
    EXPECT_FALSE(ParseJobState(R"({"id":"v"})").has_value());
    EXPECT_FALSE(ParseJobState("[]").has_value());
    EXPECT_FALSE(ParseJobState("<html>").has_value());
}

// --- ProviderJobs over a scripted client ------------------------------------------------------

class ProviderJobsTest : public ::testing::Test {
protected:
    ProviderJobsTest()
        : jobs_([this](size_t) -> http_client::Client& { return client_; },
                http_client::Timeouts{}) {
        dep_.base_url = "http://provider.test:9000/v1";
        dep_.authorization = "Bearer sk-provider";
        dep_.provider.type = domain::ProviderType::kOpenAICompatible;
        dep_.mapping.provider_model_id = "sora-2";
    }

    std::shared_ptr<FakeHttpClient::FakeCall> Last() {
        EXPECT_FALSE(client_.calls.empty());
        return client_.calls.empty() ? nullptr : client_.calls.back();
    }
    static void Reply(const std::shared_ptr<FakeHttpClient::FakeCall>& c,
                      int status,
                      std::string_view body,
                      net::Headers h = {}) {
        c->Headers(status, std::move(h));
        c->Data(body);
        c->Done();
    }

    FakeLoop loop_;
    FakeHttpClient client_;
    ProviderJobs jobs_;
    domain::Deployment dep_;
};

TEST_F(ProviderJobsTest, SubmitPostsTheVideoJobWithKeyAndIdempotencyKey) {
    std::optional<JobResult<JobState>> got;
    jobs_.Submit(loop_, dep_, JobKind::kVideo, R"({"model":"sora-2","prompt":"p"})", "task_x-1",
                 [&](JobResult<JobState> r) { got = std::move(r); });
    auto c = Last();
    ASSERT_TRUE(c);
    EXPECT_EQ(c->request.method, "POST");
    EXPECT_EQ(c->request.url, "http://provider.test:9000/v1/videos");
    EXPECT_EQ(c->request.body, R"({"model":"sora-2","prompt":"p"})");
    EXPECT_EQ(c->request.headers.Get("authorization"), "Bearer sk-provider");
    EXPECT_EQ(c->request.headers.Get("idempotency-key"), "task_x-1");
    EXPECT_EQ(c->request.headers.Get("content-type"), "application/json");
    EXPECT_FALSE(got.has_value()) << "asynchronous";
    Reply(c, 200, R"({"id":"video_7","object":"video","status":"queued","progress":0})");
    ASSERT_TRUE(got.has_value());
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->id, "video_7");
    EXPECT_EQ((*got)->phase, Phase::kQueued);
}

TEST_F(ProviderJobsTest, ImageJobsUseTheJobRouteOrTheSynchronousApi) {
    jobs_.Submit(loop_, dep_, JobKind::kImage, "{}", "k", [](JobResult<JobState>) {});
    EXPECT_EQ(Last()->request.url, "http://provider.test:9000/v1/images/jobs");
    EXPECT_FALSE(ProviderJobs::SyncImages(dep_));

    dep_.provider.type = domain::ProviderType::kOpenAI;
    EXPECT_TRUE(ProviderJobs::SyncImages(dep_));
    std::optional<JobResult<JobState>> got;
    jobs_.Submit(loop_, dep_, JobKind::kImage, "{}", "k",
                 [&](JobResult<JobState> r) { got = std::move(r); });
    auto c = Last();
    EXPECT_EQ(c->request.url, "http://provider.test:9000/v1/images/generations");
    Reply(c, 200, R"({"created":1,"data":[{"b64_json":"aGk="}]})");
    ASSERT_TRUE(got && got->has_value());
    EXPECT_EQ((*got)->phase, Phase::kSucceeded);

    // Nothing to cancel upstream for a synchronous image call.
    std::optional<JobResult<void>> cancelled;
    size_t calls = client_.calls.size();
    jobs_.Cancel(loop_, dep_, JobKind::kImage, "sync",
                 [&](JobResult<void> r) { cancelled = std::move(r); });
    ASSERT_TRUE(cancelled.has_value());
    EXPECT_TRUE(cancelled->has_value());
    EXPECT_EQ(client_.calls.size(), calls);
}

TEST_F(ProviderJobsTest, FailuresAreClassifiedRetryableOrNot) {
    struct Case {
        int status;
        bool retryable;
    };
    for (Case c :
         {Case{400, false}, Case{401, false}, Case{404, false}, Case{408, true}, Case{409, true},
          Case{422, false}, Case{425, true}, Case{429, true}, Case{500, true}, Case{503, true}}) {
        std::optional<JobResult<JobState>> got;
        jobs_.Submit(loop_, dep_, JobKind::kVideo, "{}", "k",
                     [&](JobResult<JobState> r) { got = std::move(r); });
        net::Headers h;
        h.Add("Retry-After", "7");
        Reply(Last(), c.status, R"({"error":{"message":"nope","type":"x"}})", h);
        ASSERT_TRUE(got.has_value());
        ASSERT_FALSE(got->has_value()) << c.status;
        EXPECT_EQ(got->error().retryable, c.retryable) << c.status;
        EXPECT_EQ(got->error().status, c.status);
        EXPECT_NE(got->error().error.message.find(std::to_string(c.status)), std::string::npos);
        EXPECT_NE(got->error().error.message.find("nope"), std::string::npos)
            << "the provider's message is kept";
        EXPECT_EQ(got->error().retry_after, std::chrono::seconds(7));
    }

    // Transport failures may pass.
    std::optional<JobResult<JobState>> got;
    jobs_.Submit(loop_, dep_, JobKind::kVideo, "{}", "k",
                 [&](JobResult<JobState> r) { got = std::move(r); });
    Last()->Done(http_client::Failure::kConnect, "refused");
    ASSERT_TRUE(got && !got->has_value());
    EXPECT_TRUE(got->error().retryable);
    EXPECT_EQ(got->error().status, 0);

    // A 200 with garbage is worth another try too.
    got.reset();
    jobs_.Submit(loop_, dep_, JobKind::kVideo, "{}", "k",
                 [&](JobResult<JobState> r) { got = std::move(r); });
    Reply(Last(), 200, "<html>oops</html>");
    ASSERT_TRUE(got && !got->has_value());
    EXPECT_TRUE(got->error().retryable);
}

TEST_F(ProviderJobsTest, PollAndCancelAddressTheJob) {
    std::optional<JobResult<JobState>> polled;
    jobs_.Poll(loop_, dep_, JobKind::kVideo, "video_7",
               [&](JobResult<JobState> r) { polled = std::move(r); });
    auto c = Last();
    EXPECT_EQ(c->request.method, "GET");
    EXPECT_EQ(c->request.url, "http://provider.test:9000/v1/videos/video_7");
    EXPECT_EQ(c->request.headers.Get("authorization"), "Bearer sk-provider");
    Reply(c, 200, R"({"id":"video_7","status":"in_progress","progress":55})");
    ASSERT_TRUE(polled && polled->has_value());
    EXPECT_EQ((*polled)->progress, 55);

    // A job the provider forgot cannot come back: not retryable.
    polled.reset();
    jobs_.Poll(loop_, dep_, JobKind::kVideo, "video_7",
               [&](JobResult<JobState> r) { polled = std::move(r); });
    Reply(Last(), 404, R"({"error":{"message":"no such video"}})");
    ASSERT_TRUE(polled && !polled->has_value());
    EXPECT_FALSE(polled->error().retryable);

    std::optional<JobResult<void>> cancelled;
    jobs_.Cancel(loop_, dep_, JobKind::kImage, "imgjob_3",
                 [&](JobResult<void> r) { cancelled = std::move(r); });
    c = Last();
    EXPECT_EQ(c->request.method, "DELETE");
    EXPECT_EQ(c->request.url, "http://provider.test:9000/v1/images/jobs/imgjob_3");
    Reply(c, 200, R"({"id":"imgjob_3","status":"cancelled"})");
    ASSERT_TRUE(cancelled && cancelled->has_value());

    cancelled.reset();
    jobs_.Cancel(loop_, dep_, JobKind::kVideo, "video_gone",
                 [&](JobResult<void> r) { cancelled = std::move(r); });
    Reply(Last(), 404, "{}");
    ASSERT_TRUE(cancelled && cancelled->has_value()) << "404: nothing left to stop";

    cancelled.reset();
    jobs_.Cancel(loop_, dep_, JobKind::kVideo, "video_8",
                 [&](JobResult<void> r) { cancelled = std::move(r); });
    Reply(Last(), 503, "{}");
    ASSERT_TRUE(cancelled && !cancelled->has_value());
    EXPECT_TRUE(cancelled->error().retryable);
}

/// Collects what Fetch writes.
class StringWriter final : public media::MediaWriter {
public:
    core::Result<void> Append(std::string_view bytes) override {
        if (fail) {
            return core::Fail(core::ErrorCode::kInternal, "disk full");
        }
        data.append(bytes);
        ++appends;
        return {};
    }
    core::Result<media::MediaInfo> Commit() override { return media::MediaInfo{}; }
    std::string data;
    int appends = 0;
    bool fail = false;
};

TEST_F(ProviderJobsTest, FetchStreamsVideoContentFromTheProvider) {
    JobState job;
    job.id = "video_7";
    auto w = std::make_shared<StringWriter>();
    std::optional<core::Result<void>> done;
    jobs_.Fetch(loop_, dep_, JobKind::kVideo, job, 0, w,
                [&](core::Result<void> r) { done = std::move(r); });
    auto c = Last();
    EXPECT_EQ(c->request.method, "GET");
    EXPECT_EQ(c->request.url, "http://provider.test:9000/v1/videos/video_7/content");
    EXPECT_EQ(c->request.headers.Get("authorization"), "Bearer sk-provider");
    c->Headers(200);
    c->Data("part1-");
    c->Data("part2");
    EXPECT_EQ(w->data, "part1-part2") << "written piece by piece as it arrives";
    EXPECT_EQ(w->appends, 2);
    EXPECT_FALSE(done.has_value());
    c->Done();
    ASSERT_TRUE(done && done->has_value());

    // An error status is a failed download, its body is not stored.
    auto w2 = std::make_shared<StringWriter>();
    done.reset();
    jobs_.Fetch(loop_, dep_, JobKind::kVideo, job, 0, w2,
                [&](core::Result<void> r) { done = std::move(r); });
    Reply(Last(), 404, R"({"error":"not ready"})");
    ASSERT_TRUE(done && !done->has_value());
    EXPECT_TRUE(w2->data.empty());

    // A writer failure fails the fetch.
    auto w3 = std::make_shared<StringWriter>();
    w3->fail = true;
    done.reset();
    jobs_.Fetch(loop_, dep_, JobKind::kVideo, job, 0, w3,
                [&](core::Result<void> r) { done = std::move(r); });
    Reply(Last(), 200, "bytes");
    ASSERT_TRUE(done && !done->has_value());
}

TEST_F(ProviderJobsTest, FetchSendsTheProviderKeyOnlyToTheProvidersHost) {
    JobState job;
    job.outputs.push_back({"http://provider.test:9000/files/a.png", ""});
    job.outputs.push_back({"https://cdn.elsewhere.example/b.png", ""});
    job.outputs.push_back({"", "aGVsbG8="});  // "hello"
    job.outputs.push_back({"", "!!!not base64"});

    auto w0 = std::make_shared<StringWriter>();
    jobs_.Fetch(loop_, dep_, JobKind::kImage, job, 0, w0, [](core::Result<void>) {});
    EXPECT_EQ(Last()->request.url, "http://provider.test:9000/files/a.png");
    EXPECT_EQ(Last()->request.headers.Get("authorization"), "Bearer sk-provider");

    auto w1 = std::make_shared<StringWriter>();
    jobs_.Fetch(loop_, dep_, JobKind::kImage, job, 1, w1, [](core::Result<void>) {});
    EXPECT_EQ(Last()->request.url, "https://cdn.elsewhere.example/b.png");
    EXPECT_FALSE(Last()->request.headers.Has("authorization")) << "never leak the key elsewhere";

    size_t calls = client_.calls.size();
    auto w2 = std::make_shared<StringWriter>();
    std::optional<core::Result<void>> done;
    jobs_.Fetch(loop_, dep_, JobKind::kImage, job, 2, w2,
                [&](core::Result<void> r) { done = std::move(r); });
    ASSERT_TRUE(done && done->has_value());
    EXPECT_EQ(w2->data, "hello") << "base64 outputs are decoded in place";
    EXPECT_EQ(client_.calls.size(), calls);

    done.reset();
    jobs_.Fetch(loop_, dep_, JobKind::kImage, job, 3, std::make_shared<StringWriter>(),
                [&](core::Result<void> r) { done = std::move(r); });
    ASSERT_TRUE(done && !done->has_value());

    done.reset();
    jobs_.Fetch(loop_, dep_, JobKind::kImage, job, 9, std::make_shared<StringWriter>(),
                [&](core::Result<void> r) { done = std::move(r); });
    ASSERT_TRUE(done && !done->has_value()) << "no such output";
}

}  // namespace
}  // namespace conduit::tasks
