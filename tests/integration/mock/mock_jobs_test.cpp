#include "mock-provider/mock_jobs.hpp"

#include "core/crypto.hpp"
#include "mock-provider/mock_content.hpp"
#include "mock-provider/mock_provider.hpp"
#include "mock_test_fixture.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <netinet/in.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace conduit::mock {
namespace {

using conduit::testing::WaitFor;
using namespace std::chrono_literals;
namespace bj = boost::json;
using test::Obj;
using test::Reply;

constexpr int64_t kMs = 1000000;  // ns

std::shared_ptr<JobSpec> MakeSpec(std::string id, int64_t duration_ms, bool fails = false) {
    auto s = std::make_shared<JobSpec>();
    s->id = std::move(id);
    s->kind = JobKind::kVideo;
    s->model_json = R"("sora-2")";
    s->prompt_json = R"("a fox")";
    s->seconds = "4";
    s->size = "1280x720";
    s->duration_ms = duration_ms;
    s->fails = fails;
    s->error_code = "video_generation_failed";
    s->created_ns = 1000 * kMs;
    s->created_unix_ms = 1700000000000;
    return s;
}

// ---------------------------------------------------------------------------------------------
// Pure job logic

TEST(MockJobsPureTest, LifecycleFollowsElapsedTime) {
    auto spec = MakeSpec("video_1", 1000);
    const int64_t t0 = spec->created_ns;
    int progress = -1;
    EXPECT_EQ(JobStatusAt(*spec, t0, progress), JobStatus::kQueued);
    EXPECT_EQ(progress, 0);
    EXPECT_EQ(JobStatusAt(*spec, t0 + 9 * kMs, progress), JobStatus::kQueued);
    EXPECT_EQ(JobStatusAt(*spec, t0 + 10 * kMs, progress), JobStatus::kInProgress);
    EXPECT_EQ(progress, 1);
    EXPECT_EQ(JobStatusAt(*spec, t0 + 505 * kMs, progress), JobStatus::kInProgress);
    EXPECT_EQ(progress, 50);
    EXPECT_EQ(JobStatusAt(*spec, t0 + 999 * kMs, progress), JobStatus::kInProgress);
    EXPECT_EQ(progress, 99);
    EXPECT_EQ(JobStatusAt(*spec, t0 + 1000 * kMs, progress), JobStatus::kCompleted);
    EXPECT_EQ(progress, 100);
    EXPECT_EQ(JobStatusAt(*spec, t0 - 5 * kMs, progress), JobStatus::kQueued) << "clock skew";

    auto failing = MakeSpec("video_2", 1000, true);
    EXPECT_EQ(JobStatusAt(*failing, t0 + 500 * kMs, progress), JobStatus::kInProgress);
    EXPECT_EQ(JobStatusAt(*failing, t0 + 1000 * kMs, progress), JobStatus::kFailed);
    EXPECT_EQ(progress, 99);

    auto instant = MakeSpec("video_3", 0);
    EXPECT_EQ(JobStatusAt(*instant, t0, progress), JobStatus::kCompleted);
}

TEST(MockJobsPureTest, StoreCancelFreezesTheJob) {
    JobStore store;
    auto spec = MakeSpec("video_a", 1000);
    const int64_t t0 = spec->created_ns;
    auto submitted = store.Submit(spec, t0);
    EXPECT_FALSE(submitted.replay);
    EXPECT_EQ(submitted.job.status, JobStatus::kQueued);

    auto polled = store.Get("video_a", JobKind::kVideo, t0 + 300 * kMs, JobStore::Access::kPoll);
    ASSERT_TRUE(polled);
    EXPECT_EQ(polled->progress, 30);
    EXPECT_EQ(polled->poll_count, 1);
    EXPECT_FALSE(store.Get("video_a", JobKind::kImage, t0)) << "kind must match";
    EXPECT_FALSE(store.Get("video_zz", std::nullopt, t0));

    auto c = store.Cancel("video_a", JobKind::kVideo, t0 + 400 * kMs, 1700000000400);
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->cancelled_now);
    EXPECT_EQ(c->job.status, JobStatus::kCancelled);
    EXPECT_EQ(c->job.progress, 40);
    EXPECT_EQ(c->job.cancelled_unix_ms, 1700000000400);

    // Long after its duration it is still cancelled, with the progress it had.
    auto later = store.Get("video_a", JobKind::kVideo, t0 + 5000 * kMs, JobStore::Access::kPoll);
    ASSERT_TRUE(later);
    EXPECT_EQ(later->status, JobStatus::kCancelled);
    EXPECT_EQ(later->progress, 40);
    EXPECT_EQ(later->poll_count, 2);
    EXPECT_EQ(later->polls_after_cancel, 1);
    EXPECT_FALSE(store.Cancel("video_a", JobKind::kVideo, t0 + 5000 * kMs, 1)->cancelled_now);

    // A finished job cannot be cancelled.
    store.Submit(MakeSpec("video_b", 100), t0);
    auto done = store.Cancel("video_b", JobKind::kVideo, t0 + 100 * kMs, 1);
    ASSERT_TRUE(done);
    EXPECT_FALSE(done->cancelled_now);
    EXPECT_EQ(done->job.status, JobStatus::kCompleted);

    JobTally t = store.Tally(t0 + 5000 * kMs);
    EXPECT_EQ(t.cancelled, 1);
    EXPECT_EQ(t.completed, 1);
    EXPECT_EQ(store.All(t0).size(), 2U);
    store.Clear();
    EXPECT_TRUE(store.All(t0).empty());
}

TEST(MockJobsPureTest, ConcurrentSubmitsWithOneKeyStartOneJob) {
    JobStore store;
    constexpr int kThreads = 8;
    constexpr int kKeys = 200;
    std::vector<std::vector<std::string>> ids(kThreads);
    std::vector<std::thread> threads;
    std::atomic<int> replays{0};
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int k = 0; k < kKeys; ++k) {
                auto spec = MakeSpec("video_t" + std::to_string(t) + "_" + std::to_string(k), 10);
                spec->idempotency_key = "key-" + std::to_string(k);
                auto r = store.Submit(std::move(spec), 0);
                replays += r.replay ? 1 : 0;
                ids[static_cast<size_t>(t)].push_back(r.job.spec->id);
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    for (int k = 0; k < kKeys; ++k) {
        for (int t = 1; t < kThreads; ++t) {
            EXPECT_EQ(ids[static_cast<size_t>(t)][static_cast<size_t>(k)],
                      ids[0][static_cast<size_t>(k)]);
        }
    }
    EXPECT_EQ(store.All(0).size(), static_cast<size_t>(kKeys));
    EXPECT_EQ(replays.load(), (kThreads - 1) * kKeys);

    // Keys are per kind: an image job with the same key is a job of its own.
    auto image = MakeSpec("imgjob_1", 10);
    image->kind = JobKind::kImage;
    image->idempotency_key = "key-0";
    EXPECT_FALSE(store.Submit(std::move(image), 0).replay);
}

TEST(MockJobsPureTest, FailureRateIsDeterministicPerId) {
    int failed = 0;
    for (int i = 0; i < 10000; ++i) {
        std::string id = "video_" + std::to_string(i);
        bool f = ChosenToFail(id, 0.3);
        EXPECT_EQ(f, ChosenToFail(id, 0.3));
        failed += f ? 1 : 0;
    }
    EXPECT_NEAR(failed, 3000, 300);
    EXPECT_FALSE(ChosenToFail("video_x", 0));
    EXPECT_TRUE(ChosenToFail("video_x", 1));
}

TEST(MockJobsPureTest, VideoBytesAreDeterministicBoxesAndRangeable) {
    std::string a = VideoContent("video_abc", 4096);
    ASSERT_EQ(a.size(), 4096U);
    EXPECT_EQ(a, VideoContent("video_abc", 4096));
    EXPECT_NE(a.substr(32), VideoContent("video_abd", 4096).substr(32));
    EXPECT_EQ(a.substr(4, 4), "ftyp");
    EXPECT_EQ(a.substr(28, 4), "mdat");
    EXPECT_EQ(static_cast<unsigned char>(a[26]) * 256 + static_cast<unsigned char>(a[27]),
              4096 - 24);
    for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 5}, {3, 40}, {31, 33}, {1000, 4096}}) {
        std::string piece;
        AppendVideoBytes(piece, "video_abc", 4096, b, e);
        EXPECT_EQ(piece, a.substr(static_cast<size_t>(b), static_cast<size_t>(e - b)));
    }
    EXPECT_EQ(VideoContent("video_abc", 10).size(), 10U) << "too small for boxes: all noise";
    EXPECT_TRUE(VideoContent("video_abc", 0).empty());
}

TEST(MockJobsPureTest, ParseByteRange) {
    auto r = ParseByteRange("bytes=0-99", 1000);
    EXPECT_EQ(r.kind, ByteRange::kPartial);
    EXPECT_EQ(r.begin, 0);
    EXPECT_EQ(r.end, 100);
    r = ParseByteRange("bytes=900-", 1000);
    EXPECT_EQ(r.kind, ByteRange::kPartial);
    EXPECT_EQ(r.begin, 900);
    EXPECT_EQ(r.end, 1000);
    r = ParseByteRange("bytes=-10", 1000);
    EXPECT_EQ(r.begin, 990);
    EXPECT_EQ(r.end, 1000);
    r = ParseByteRange("bytes=-5000", 1000);
    EXPECT_EQ(r.begin, 0);
    r = ParseByteRange("bytes=500-99999", 1000);
    EXPECT_EQ(r.end, 1000) << "clamped to the size";
    EXPECT_EQ(ParseByteRange("bytes=1000-", 1000).kind, ByteRange::kUnsatisfiable);
    EXPECT_EQ(ParseByteRange("bytes=-0", 1000).kind, ByteRange::kUnsatisfiable);
    EXPECT_EQ(ParseByteRange("", 1000).kind, ByteRange::kWhole);
    EXPECT_EQ(ParseByteRange("bytes=0-1,5-6", 1000).kind, ByteRange::kWhole);
    EXPECT_EQ(ParseByteRange("bytes=9-3", 1000).kind, ByteRange::kWhole);
    EXPECT_EQ(ParseByteRange("items=0-1", 1000).kind, ByteRange::kWhole);
    EXPECT_EQ(ParseByteRange("bytes=x-1", 1000).kind, ByteRange::kWhole);
}

// ---------------------------------------------------------------------------------------------
// Over HTTP

class MockJobsTest : public test::MockProviderFixture {
protected:
    /// POSTs a job; expects 200 and returns the job object.
    bj::object Submit(std::string_view path, std::string_view body, net::Headers headers = {}) {
        auto r = Do("POST", path, std::string(body), std::move(headers));
        EXPECT_EQ(r->status, 200) << r->Body();
        return Obj(r->Body());
    }
    bj::object Get(std::string_view path) {
        auto r = Do("GET", path);
        EXPECT_EQ(r->status, 200) << path << ": " << r->Body();
        return Obj(r->Body());
    }
    bj::object Record(std::string_view id) { return Get("/mock/jobs/" + std::string(id)); }
    static std::string Id(const bj::object& o) { return std::string(o.at("id").as_string()); }
    static std::string Status(const bj::object& o) {
        return std::string(o.at("status").as_string());
    }
    static net::Headers With(std::string_view name, std::string value) {
        net::Headers h;
        h.Add(std::string(name), std::move(value));
        return h;
    }
    /// Sends `request` (with `Connection: close` added) on a plain socket and returns everything
    /// the server sent until it closed.
    std::string RawExchange(std::string request) const {
        request.insert(request.size() - 2, "Connection: close\r\n");
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        EXPECT_GE(fd, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port_);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        timeval tv{5, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        std::string out;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
            ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(request.size())) {
            char buf[4096];
            for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) {
                out.append(buf, static_cast<size_t>(n));
            }
        }
        ::close(fd);
        return out;
    }
    /// A completed video of `bytes` bytes.
    std::string CompletedVideo(int64_t bytes) {
        bj::object v = Submit("/v1/videos", R"({"prompt":"p","mock_job_duration_ms":0,)"
                                            R"("mock_video_bytes":)" +
                                                std::to_string(bytes) + "}");
        EXPECT_EQ(Status(v), "completed");
        return Id(v);
    }
};

TEST_F(MockJobsTest, VideoLifecycleProgressesToCompleted) {
    bj::object v = Submit("/v1/videos", R"({"model":"sora-2","prompt":"a fox in the snow",)"
                                        R"("seconds":"8","size":"720x1280",)"
                                        R"("mock_job_duration_ms":300})");
    const std::string id = Id(v);
    EXPECT_TRUE(id.starts_with("video_")) << id;
    EXPECT_EQ(v["object"].as_string(), "video");
    EXPECT_EQ(v["model"].as_string(), "sora-2");
    EXPECT_EQ(Status(v), "queued");
    EXPECT_EQ(v["progress"].as_int64(), 0);
    EXPECT_GT(v["created_at"].as_int64(), 1700000000);
    EXPECT_EQ(v["seconds"].as_string(), "8");
    EXPECT_EQ(v["size"].as_string(), "720x1280");
    EXPECT_EQ(v["prompt"].as_string(), "a fox in the snow");
    EXPECT_TRUE(v["completed_at"].is_null());
    EXPECT_TRUE(v["error"].is_null());

    std::vector<int64_t> progress;
    std::set<std::string> statuses;
    int polls = 0;
    bj::object last;
    ASSERT_TRUE(WaitFor([&] {
        last = Get("/v1/videos/" + id);
        ++polls;
        progress.push_back(last["progress"].as_int64());
        statuses.insert(Status(last));
        return Status(last) == "completed";
    }));
    EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end())) << "progress is monotonic";
    EXPECT_TRUE(statuses.contains("in_progress"));
    EXPECT_TRUE(
        std::any_of(progress.begin(), progress.end(), [](int64_t p) { return p > 0 && p < 100; }));
    EXPECT_EQ(last["progress"].as_int64(), 100);
    EXPECT_GE(last["completed_at"].as_int64(), v["created_at"].as_int64());
    EXPECT_TRUE(last["error"].is_null());

    MockStats s = mock_->Stats();
    EXPECT_EQ(s.video_jobs_started, 1);
    EXPECT_EQ(s.jobs_started, 1);
    EXPECT_EQ(s.jobs_completed, 1);
    EXPECT_EQ(s.jobs_active, 0);
    EXPECT_EQ(s.job_polls, polls);
    EXPECT_EQ(s.per_path["/v1/videos"], 1);
    EXPECT_EQ(s.per_path["/v1/videos/{id}"], polls);
    EXPECT_EQ(Record(id)["poll_count"].as_int64(), polls);

    // Defaults; `seconds` may be a number.
    bj::object d = Submit("/v1/videos", R"({"prompt":"x","seconds":12})");
    EXPECT_EQ(d["seconds"].as_string(), "12");
    EXPECT_EQ(d["size"].as_string(), "1280x720");
    EXPECT_EQ(d["model"].as_string(), "sora-2");
    EXPECT_EQ(Record(Id(d))["duration_ms"].as_int64(), 2000) << "--job-duration-ms default";
}

TEST_F(MockJobsTest, VideoContentMatchesShaAndSupportsRanges) {
    const std::string id = CompletedVideo(100000);
    const std::string path = "/v1/videos/" + id + "/content";
    auto full = Do("GET", path);
    ASSERT_EQ(full->status, 200) << full->Body();
    EXPECT_EQ(full->headers.Get("content-type"), "video/mp4");
    EXPECT_EQ(full->headers.Get("accept-ranges"), "bytes");
    const std::string body = full->Body();
    ASSERT_EQ(body.size(), 100000U);
    EXPECT_EQ(full->headers.Get("x-content-sha256"), core::Sha256Hex(body));
    EXPECT_EQ(body, VideoContent(id, 100000));
    EXPECT_EQ(body.substr(4, 4), "ftyp");
    EXPECT_EQ(Record(id)["content_sha256"].as_string(), core::Sha256Hex(body));

    auto part = Do("GET", path, {}, With("Range", "bytes=1000-1999"));
    EXPECT_EQ(part->status, 206);
    EXPECT_EQ(part->headers.Get("content-range"), "bytes 1000-1999/100000");
    EXPECT_EQ(part->Body(), body.substr(1000, 1000));
    EXPECT_EQ(part->headers.Get("x-content-sha256"), core::Sha256Hex(body)) << "of the whole";

    auto tail = Do("GET", path, {}, With("Range", "bytes=99990-"));
    EXPECT_EQ(tail->status, 206);
    EXPECT_EQ(tail->Body(), body.substr(99990));

    auto beyond = Do("GET", path, {}, With("Range", "bytes=100000-"));
    EXPECT_EQ(beyond->status, 416);
    EXPECT_EQ(beyond->headers.Get("content-range"), "bytes */100000");

    // HEAD over a raw socket (the curl client turns HEAD into GET): the GET's length, no body.
    std::string head = RawExchange("HEAD " + path + " HTTP/1.1\r\nHost: t\r\n\r\n");
    EXPECT_TRUE(head.starts_with("HTTP/1.1 200")) << head;
    EXPECT_NE(head.find("\r\nContent-Length: 100000\r\n"), std::string::npos) << head;
    EXPECT_TRUE(head.ends_with("\r\n\r\n")) << "no body after the head";

    EXPECT_EQ(mock_->Stats().content_downloads, 3) << "200 + two 206; not 416 or HEAD";
    EXPECT_EQ(Record(id)["content_downloads"].as_int64(), 3);

    // Default size; not before completion; not for unknown ids.
    const std::string dflt = Id(Submit("/v1/videos", R"({"prompt":"p","mock_job_duration_ms":0})"));
    auto d = Do("GET", "/v1/videos/" + dflt + "/content");
    EXPECT_EQ(d->Body().size(), 256U * 1024);
    EXPECT_EQ(d->headers.Get("x-content-sha256"), core::Sha256Hex(d->Body()));
    const std::string slow =
        Id(Submit("/v1/videos", R"({"prompt":"p","mock_job_duration_ms":60000})"));
    EXPECT_EQ(Do("GET", "/v1/videos/" + slow + "/content")->status, 404);
    EXPECT_EQ(Do("GET", "/v1/videos/video_nope/content")->status, 404);
}

TEST_F(MockJobsTest, ImageJobLifecycleWithDownloadableUrls) {
    bj::object j = Submit("/v1/images/jobs", R"({"model":"gpt-image-1","prompt":"a red fox",)"
                                             R"("n":2,"mock_job_duration_ms":100})");
    const std::string id = Id(j);
    EXPECT_TRUE(id.starts_with("imgjob_")) << id;
    EXPECT_EQ(j["object"].as_string(), "image.job");
    EXPECT_EQ(Status(j), "queued");
    EXPECT_EQ(j["progress"].as_int64(), 0);
    EXPECT_GT(j["created_at"].as_int64(), 0);
    EXPECT_FALSE(j.contains("data")) << "data only once completed";

    std::vector<int64_t> progress;
    bj::object last;
    ASSERT_TRUE(WaitFor([&] {
        last = Get("/v1/images/jobs/" + id);
        progress.push_back(last["progress"].as_int64());
        return Status(last) == "completed";
    }));
    EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
    const bj::array& data = last["data"].as_array();
    ASSERT_EQ(data.size(), 2U);
    const std::string prefix = Url("/mock/files/");
    for (const auto& item : data) {
        std::string url(item.at("url").as_string());
        ASSERT_TRUE(url.starts_with(prefix)) << url;
        auto png = Do("GET", url.substr(prefix.size() - std::string_view("/mock/files/").size()));
        EXPECT_EQ(png->status, 200);
        EXPECT_EQ(png->headers.Get("content-type"), "image/png");
        EXPECT_EQ(png->Body(), TinyPng());
    }

    bj::object b = Submit("/v1/images/jobs", R"({"prompt":"x","response_format":"b64_json",)"
                                             R"("mock_job_duration_ms":0})");
    ASSERT_EQ(Status(b), "completed");
    std::string decoded;
    ASSERT_TRUE(core::Base64Decode(b["data"].as_array()[0].at("b64_json").as_string(), decoded));
    EXPECT_EQ(decoded, TinyPng());

    MockStats s = mock_->Stats();
    EXPECT_EQ(s.image_jobs_started, 2);
    EXPECT_EQ(s.video_jobs_started, 0);
    EXPECT_EQ(s.jobs_completed, 2);
    EXPECT_EQ(Do("GET", "/v1/videos/" + id)->status, 404) << "an image job is not a video";
}

TEST_F(MockJobsTest, CancelStopsTheJobAndCountsLaterPolls) {
    const std::string id =
        Id(Submit("/v1/videos", R"({"prompt":"p","mock_job_duration_ms":60000})"));
    EXPECT_EQ(Status(Get("/v1/videos/" + id)), "queued");

    auto del = Do("DELETE", "/v1/videos/" + id);
    ASSERT_EQ(del->status, 200) << del->Body();
    bj::object c = Obj(del->Body());
    EXPECT_EQ(Id(c), id);
    EXPECT_EQ(Status(c), "cancelled");
    EXPECT_GT(c["cancelled_at"].as_int64(), 0);

    MockStats s = mock_->Stats();
    EXPECT_EQ(s.jobs_cancelled, 1);
    EXPECT_EQ(s.polls_after_cancel, 0);
    bj::object rec = Record(id);
    EXPECT_EQ(rec["poll_count"].as_int64(), 1);
    EXPECT_EQ(rec["polls_after_cancel"].as_int64(), 0);
    EXPECT_GT(rec["cancelled_at_ms"].as_int64(), 0);

    // A poll after the cancel is counted as such; the job stays cancelled.
    EXPECT_EQ(Status(Get("/v1/videos/" + id)), "cancelled");
    s = mock_->Stats();
    EXPECT_EQ(s.polls_after_cancel, 1);
    EXPECT_EQ(s.job_polls, 2);
    rec = Record(id);
    EXPECT_EQ(rec["poll_count"].as_int64(), 2);
    EXPECT_EQ(rec["polls_after_cancel"].as_int64(), 1);
    EXPECT_EQ(mock_->Job(id)->status, JobStatus::kCancelled);

    // Cancelling again, or a finished job, changes nothing and counts nothing.
    EXPECT_EQ(Status(Obj(Do("DELETE", "/v1/videos/" + id)->Body())), "cancelled");
    const std::string done = CompletedVideo(64);
    auto del_done = Do("DELETE", "/v1/videos/" + done);
    EXPECT_EQ(del_done->status, 200);
    EXPECT_EQ(Status(Obj(del_done->Body())), "completed");
    EXPECT_EQ(Do("DELETE", "/v1/videos/video_unknown")->status, 404);
    EXPECT_EQ(Do("GET", "/v1/videos/" + id + "/content")->status, 404);

    // Image jobs cancel the same way.
    const std::string img =
        Id(Submit("/v1/images/jobs", R"({"prompt":"p","mock_job_duration_ms":60000})"));
    EXPECT_EQ(Status(Obj(Do("DELETE", "/v1/images/jobs/" + img)->Body())), "cancelled");

    s = mock_->Stats();
    EXPECT_EQ(s.jobs_cancelled, 2);
    EXPECT_EQ(s.jobs_active, 0);
    EXPECT_EQ(s.jobs_completed, 1);
}

TEST_F(MockJobsTest, IdempotencyKeyReturnsTheSameJob) {
    const std::string body = R"({"prompt":"p","mock_job_duration_ms":60000})";
    bj::object a = Submit("/v1/videos", body, With("Idempotency-Key", "attempt-1"));
    bj::object b = Submit("/v1/videos", body, With("Idempotency-Key", "attempt-1"));
    EXPECT_EQ(Id(a), Id(b));
    bj::object other = Submit("/v1/videos", body, With("Idempotency-Key", "attempt-2"));
    EXPECT_NE(Id(other), Id(a));
    bj::object image = Submit("/v1/images/jobs", body, With("Idempotency-Key", "attempt-1"));
    EXPECT_TRUE(Id(image).starts_with("imgjob_")) << "keys are per kind";

    MockStats s = mock_->Stats();
    EXPECT_EQ(s.video_jobs_started, 2);
    EXPECT_EQ(s.image_jobs_started, 1);
    EXPECT_EQ(s.idempotent_replays, 1);
    bj::object rec = Record(Id(a));
    EXPECT_EQ(rec["idempotency_key"].as_string(), "attempt-1");
    EXPECT_EQ(rec["idempotent_replays"].as_int64(), 1);
    EXPECT_TRUE(Record(Id(Submit("/v1/videos", body)))["idempotency_key"].is_null());

    // A crash-restarted worker re-submitting many times at once still starts one job (the
    // submits may land on either shard of the mock).
    std::vector<std::shared_ptr<Reply>> replies;
    for (int i = 0; i < 16; ++i) {
        replies.push_back(Start("POST", "/v1/videos", body, With("Idempotency-Key", "burst")));
    }
    std::set<std::string> ids;
    for (auto& r : replies) {
        ASSERT_TRUE(WaitFor([&] { return r->done.load(); }));
        ASSERT_EQ(r->status, 200);
        ids.insert(Id(Obj(r->Body())));
    }
    EXPECT_EQ(ids.size(), 1U);
    s = mock_->Stats();
    EXPECT_EQ(s.video_jobs_started, 4);
    EXPECT_EQ(s.idempotent_replays, 16);
}

TEST_F(MockJobsTest, FailingJobsEndFailedWithAnError) {
    const std::string id =
        Id(Submit("/v1/videos", R"({"prompt":"p","mock_job_duration_ms":50,"mock_job_fail":true,)"
                                R"("mock_job_error_code":"content_policy_violation"})"));
    bj::object last;
    ASSERT_TRUE(WaitFor([&] {
        last = Get("/v1/videos/" + id);
        return Status(last) != "queued" && Status(last) != "in_progress";
    }));
    EXPECT_EQ(Status(last), "failed");
    EXPECT_EQ(last["error"].at("code").as_string(), "content_policy_violation");
    EXPECT_FALSE(last["error"].at("message").as_string().empty());
    EXPECT_TRUE(last["completed_at"].is_null());
    EXPECT_EQ(Do("GET", "/v1/videos/" + id + "/content")->status, 404);
    EXPECT_EQ(mock_->Stats().jobs_failed, 1);

    // --job-failure-rate 1 fails every job (default error code); mock_job_fail:false overrides.
    ASSERT_EQ(Post("/mock/config", R"({"job_failure_rate":1,"job_duration_ms":0})")->status, 200);
    bj::object f = Submit("/v1/images/jobs", R"({"prompt":"p"})");
    EXPECT_EQ(Status(f), "failed");
    EXPECT_EQ(f["error"].at("code").as_string(), "image_generation_failed");
    EXPECT_FALSE(f.contains("data"));
    EXPECT_EQ(Status(Submit("/v1/videos", R"({"prompt":"p","mock_job_fail":false})")), "completed");
    MockStats s = mock_->Stats();
    EXPECT_EQ(s.jobs_failed, 2);
    EXPECT_EQ(s.jobs_completed, 1);
}

TEST_F(MockJobsTest, SubmitFailureStatusStartsNothing) {
    auto r = Post("/v1/videos", R"({"prompt":"p","mock_job_fail_status":500})");
    EXPECT_EQ(r->status, 500);
    EXPECT_EQ(Obj(r->Body())["error"].at("type").as_string(), "api_error");
    auto i = Post("/v1/images/jobs", R"({"prompt":"p","mock_job_fail_status":503})");
    EXPECT_EQ(i->status, 503);
    MockStats s = mock_->Stats();
    EXPECT_EQ(s.jobs_started, 0);
    EXPECT_EQ(s.errors_injected, 2);
    EXPECT_TRUE(mock_->Jobs().empty());

    // The failed submit did not claim its Idempotency-Key: the retry starts the job.
    auto failed = Do("POST", "/v1/videos", R"({"prompt":"p","mock_job_fail_status":502})",
                     With("Idempotency-Key", "k"));
    EXPECT_EQ(failed->status, 502);
    Submit("/v1/videos", R"({"prompt":"p"})", With("Idempotency-Key", "k"));
    s = mock_->Stats();
    EXPECT_EQ(s.jobs_started, 1);
    EXPECT_EQ(s.idempotent_replays, 0);
}

TEST_F(MockJobsTest, RequireKeyGuardsEveryJobRoute) {
    ASSERT_EQ(Post("/mock/config", R"({"require_key":"sk-jobs"})")->status, 200);
    EXPECT_EQ(Post("/v1/videos", R"({"prompt":"p"})")->status, 401);
    EXPECT_EQ(Post("/v1/images/jobs", R"({"prompt":"p"})")->status, 401);
    EXPECT_EQ(mock_->Stats().jobs_started, 0);

    const std::string body = R"({"prompt":"p","mock_job_duration_ms":60000})";
    const std::string id = Id(Submit("/v1/videos", body, With("Authorization", "Bearer sk-jobs")));
    EXPECT_EQ(Do("GET", "/v1/videos/" + id)->status, 401);
    EXPECT_EQ(Do("DELETE", "/v1/videos/" + id)->status, 401);
    EXPECT_EQ(Do("GET", "/v1/videos/" + id + "/content")->status, 401);
    EXPECT_EQ(mock_->Job(id)->status, JobStatus::kQueued)
        << "an unauthorised DELETE cancels nothing";

    auto poll = Do("GET", "/v1/videos/" + id, {}, With("Authorization", "Bearer sk-jobs"));
    EXPECT_EQ(poll->status, 200);
    MockStats s = mock_->Stats();
    EXPECT_EQ(s.auth_failures, 5);
    EXPECT_EQ(s.job_polls, 1);
    EXPECT_EQ(s.jobs_cancelled, 0);
}

TEST_F(MockJobsTest, InvalidSubmitsAndPaths) {
    auto no_prompt = Post("/v1/videos", R"({"model":"sora-2"})");
    EXPECT_EQ(no_prompt->status, 400);
    EXPECT_EQ(Obj(no_prompt->Body())["error"].at("param").as_string(), "prompt");
    EXPECT_EQ(Obj(Post("/v1/videos", R"({"prompt":"p","seconds":"four"})")->Body())["error"]
                  .at("param")
                  .as_string(),
              "seconds");
    EXPECT_EQ(Post("/v1/videos", R"({"prompt":"p","seconds":0})")->status, 400);
    EXPECT_EQ(Post("/v1/videos", R"({"prompt":"p","size":"big"})")->status, 400);
    EXPECT_EQ(Post("/v1/videos", R"({"prompt":"p","mock_video_bytes":-1})")->status, 400);
    EXPECT_EQ(Post("/v1/images/jobs", R"({"prompt":"p","n":11})")->status, 400);
    EXPECT_EQ(Post("/v1/images/jobs", R"({"prompt":"p","response_format":"gif"})")->status, 400);
    EXPECT_EQ(Post("/v1/videos", "{nope")->status, 400);
    EXPECT_EQ(Do("GET", "/v1/videos")->status, 405);
    EXPECT_EQ(Post("/v1/videos/video_1", "{}")->status, 405);
    EXPECT_EQ(Do("GET", "/v1/videos/video_1/other")->status, 404);
    EXPECT_EQ(Do("GET", "/v1/videos/video_missing")->status, 404);
    EXPECT_EQ(Do("GET", "/v1/images/jobs/imgjob_missing")->status, 404);
    EXPECT_EQ(Do("GET", "/mock/jobs/video_missing")->status, 404);
    MockStats s = mock_->Stats();
    EXPECT_EQ(s.jobs_started, 0);
    EXPECT_EQ(s.job_polls, 0) << "unknown ids are not polls";
}

TEST_F(MockJobsTest, LatencyAppliesToPollsAndErrorsCountNoPoll) {
    const std::string id =
        Id(Submit("/v1/videos", R"({"prompt":"p","mock_job_duration_ms":60000})"));
    ASSERT_EQ(Post("/mock/config", R"({"latency_ms":100})")->status, 200);
    auto slow = Do("GET", "/v1/videos/" + id);
    EXPECT_EQ(slow->status, 200);
    EXPECT_GE(slow->finished - slow->started, 100ms);

    ASSERT_EQ(Post("/mock/config", R"({"latency_ms":0,"error_rate":1,"error_status":503})")->status,
              200);
    EXPECT_EQ(Do("GET", "/v1/videos/" + id)->status, 503);
    EXPECT_EQ(Do("DELETE", "/v1/videos/" + id)->status, 503);
    MockStats s = mock_->Stats();
    EXPECT_EQ(s.job_polls, 1);
    EXPECT_EQ(s.jobs_cancelled, 0);
    EXPECT_EQ(mock_->Job(id)->poll_count, 1);
}

TEST_F(MockJobsTest, StatsListingConfigAndReset) {
    const std::string id = Id(Submit("/v1/videos", R"({"prompt":"p"})"));
    bj::object stats = Get("/mock/stats");
    for (const char* key :
         {"video_jobs_started", "image_jobs_started", "jobs_started", "jobs_cancelled",
          "jobs_completed", "jobs_failed", "jobs_active", "job_polls", "polls_after_cancel",
          "content_downloads", "idempotent_replays"}) {
        EXPECT_TRUE(stats.contains(key)) << key;
    }
    EXPECT_EQ(stats["jobs_started"].as_int64(), 1);
    EXPECT_EQ(stats["jobs_active"].as_int64(), 1);

    bj::object list = Get("/mock/jobs");
    ASSERT_EQ(list["data"].as_array().size(), 1U);
    const bj::object& rec = list["data"].as_array()[0].as_object();
    EXPECT_EQ(rec.at("id").as_string(), id);
    EXPECT_EQ(rec.at("kind").as_string(), "video");
    EXPECT_EQ(rec.at("content_bytes").as_int64(), 256 * 1024);
    EXPECT_FALSE(rec.at("fails").as_bool());

    bj::object cfg = Obj(Post("/mock/config", R"({"job_duration_ms":5,"video_bytes":10,)"
                                              R"("job_failure_rate":0.5})")
                             ->Body());
    EXPECT_EQ(cfg["job_duration_ms"].as_int64(), 5);
    EXPECT_EQ(cfg["video_bytes"].as_int64(), 10);
    EXPECT_EQ(mock_->Config().job_failure_rate, 0.5);
    EXPECT_EQ(Post("/mock/config", R"({"job_failure_rate":2})")->status, 400);
    EXPECT_EQ(Post("/mock/config", R"({"job_duration_ms":-1})")->status, 400);

    ASSERT_EQ(Post("/mock/reset", "")->status, 200);
    EXPECT_EQ(Do("GET", "/mock/jobs/" + id)->status, 404);
    EXPECT_EQ(Do("GET", "/v1/videos/" + id)->status, 404);
    MockStats s = mock_->Stats();
    EXPECT_EQ(s.jobs_started, 0);
    EXPECT_EQ(s.jobs_active, 0);
    EXPECT_TRUE(mock_->Jobs().empty());
}

}  // namespace
}  // namespace conduit::mock
