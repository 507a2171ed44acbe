// GET|HEAD /v1/media/{key} (media::ServeMedia) against the real local store in a temp directory,
// driven through FakeExchange (and a backpressure-simulating exchange for streaming), plus the
// Range header parser.

#include "media/media_http.hpp"

#include "fakes/fake_exchange.hpp"
#include "fakes/fake_loop.hpp"
#include "fakes/test_support.hpp"
#include "json/helpers.hpp"
#include "media/media_store.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace conduit::media {
namespace {

using conduit::testing::FakeExchange;
using conduit::testing::FakeLoop;
using conduit::testing::TempDir;

constexpr size_t kPiece = 64 * 1024;       // media_http.cpp's write size
constexpr size_t kHighWater = 256 * 1024;  // and its pause threshold

std::string Bytes(size_t n) {
    std::string s(n, '\0');
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s[i] = static_cast<char>(x & 0xff);
    }
    return s;
}

/// An exchange whose client reads only when told to: every Write() adds to BufferedBytes()
/// until Drain(). Records the size of every write.
class SlowClientExchange final : public net::Exchange {
public:
    SlowClientExchange(core::Loop& loop, net::Request req) : loop_(loop), req_(std::move(req)) {}

    net::Request& request() override { return req_; }
    core::Loop& loop() override { return loop_; }
    void Respond(net::Response r) override {
        started_ = responded_ = true;
        status_ = r.status;
    }
    void BeginStream(int status, net::Headers) override {
        started_ = true;
        status_ = status;
    }
    void BeginFixedLength(int status, net::Headers h, uint64_t length) override {
        length_ = length;
        BeginStream(status, std::move(h));
    }
    void Write(std::string chunk) override {
        if (closed_ || responded_) {
            ++writes_after_end_;
            return;
        }
        writes_.push_back(chunk.size());
        buffered_ += chunk.size();
        max_buffered_ = std::max(max_buffered_, buffered_);
        body_ += chunk;
    }
    void EndStream() override {
        ++ends_;
        responded_ = true;
    }
    void Abort() override {
        aborted_ = true;
        closed_ = true;
    }
    size_t BufferedBytes() const override { return buffered_; }
    void SetOnDrain(std::function<void()> fn) override {
        ++drain_waits_;
        on_drain_ = std::move(fn);
    }
    void SetOnClose(std::function<void()> fn) override { on_close_ = std::move(fn); }
    void SetOnComplete(std::function<void(int, size_t)>) override {}
    bool closed() const override { return closed_; }
    bool responded() const override { return responded_; }
    bool started() const override { return started_; }

    /// The client catches up: the buffer empties and the drain callback (if any) runs.
    void Drain() {
        buffered_ = 0;
        if (on_drain_) {
            auto fn = std::move(on_drain_);
            on_drain_ = nullptr;
            fn();
        }
    }
    /// The client goes away; the drain callback is dropped as a real connection does.
    void Disconnect() {
        closed_ = true;
        on_drain_ = nullptr;
        if (on_close_) {
            auto fn = std::move(on_close_);
            fn();
        }
    }
    bool waiting_for_drain() const { return static_cast<bool>(on_drain_); }

    int status_ = 0;
    uint64_t length_ = 0;
    std::vector<size_t> writes_;
    size_t buffered_ = 0;
    size_t max_buffered_ = 0;
    int drain_waits_ = 0;
    int ends_ = 0;
    int writes_after_end_ = 0;
    bool aborted_ = false;
    std::string body_;

private:
    core::Loop& loop_;
    net::Request req_;
    bool started_ = false;
    bool responded_ = false;
    bool closed_ = false;
    std::function<void()> on_drain_;
    std::function<void()> on_close_;
};

class MediaHttpTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto opened = OpenLocalMediaStore((dir_.path() / "media").string(), "http://gw.test");
        ASSERT_TRUE(opened.has_value());
        store_ = std::move(*opened);
        content_ = Bytes(1000);
        Put("tasks/t1/1-0.mp4", content_, "video/mp4");
    }

    void Put(const std::string& key, const std::string& bytes, const std::string& type) {
        auto w = store_->Create(key, type);
        ASSERT_TRUE(w.has_value());
        for (size_t i = 0; i < bytes.size(); i += 100'000) {
            ASSERT_TRUE((*w)->Append(std::string_view(bytes).substr(i, 100'000)).has_value());
        }
        ASSERT_TRUE((*w)->Commit().has_value());
    }

    std::string EtagOf(const std::string& key) {
        auto st = store_->Stat(key);
        EXPECT_TRUE(st.has_value() && st->has_value());
        return st && *st ? (*st)->etag : std::string();
    }

    /// Serves `key` to a FakeExchange with the given method and headers.
    std::shared_ptr<FakeExchange> Serve(const std::string& key,
                                        net::Headers h = {},
                                        const std::string& method = "GET") {
        auto ex = FakeExchange::Make(loop_, method, "/v1/media/" + key, {}, std::move(h));
        ServeMedia(ex, *store_, key);
        loop_.RunPending();
        return ex;
    }
    std::shared_ptr<FakeExchange> ServeRange(const std::string& key, const std::string& range) {
        net::Headers h;
        h.Add("Range", range);
        return Serve(key, std::move(h));
    }

    static std::string ErrorCode(const FakeExchange& ex) {
        auto o = json::ParseObject(ex.body());
        if (!o || !o->contains("error") || !o->at("error").is_object()) {
            return "<not an OpenAI error body: " + ex.body() + ">";
        }
        const auto& e = o->at("error").as_object();
        return e.contains("code") && e.at("code").is_string()
                   ? std::string(e.at("code").as_string())
                   : std::string();
    }

    TempDir dir_;
    FakeLoop loop_;
    std::unique_ptr<MediaStore> store_;
    std::string content_;
};

TEST_F(MediaHttpTest, GetServesTheWholeObjectWithValidators) {
    auto ex = Serve("tasks/t1/1-0.mp4");
    EXPECT_EQ(ex->status(), 200);
    EXPECT_TRUE(ex->responded());
    EXPECT_FALSE(ex->aborted());
    EXPECT_EQ(ex->body(), content_);
    EXPECT_EQ(ex->fixed_length(), content_.size()) << "Content-Length framing of the whole size";
    EXPECT_EQ(ex->headers().Get("content-type"), "video/mp4");
    EXPECT_EQ(ex->headers().Get("etag"), EtagOf("tasks/t1/1-0.mp4"));
    EXPECT_EQ(ex->headers().Get("accept-ranges"), "bytes");
    EXPECT_FALSE(ex->headers().Get("cache-control").empty());
    EXPECT_FALSE(ex->headers().Has("content-range"));
}

TEST_F(MediaHttpTest, ClosedRangeIsPartialContent) {
    auto ex = ServeRange("tasks/t1/1-0.mp4", "bytes=10-19");
    EXPECT_EQ(ex->status(), 206);
    EXPECT_EQ(ex->headers().Get("content-range"), "bytes 10-19/1000");
    EXPECT_EQ(ex->fixed_length(), 10u);
    EXPECT_EQ(ex->body(), content_.substr(10, 10));
    EXPECT_EQ(ex->headers().Get("etag"), EtagOf("tasks/t1/1-0.mp4"));
    EXPECT_TRUE(ex->responded());

    auto one = ServeRange("tasks/t1/1-0.mp4", "bytes=0-0");
    EXPECT_EQ(one->status(), 206);
    EXPECT_EQ(one->headers().Get("content-range"), "bytes 0-0/1000");
    EXPECT_EQ(one->body(), content_.substr(0, 1));
}

TEST_F(MediaHttpTest, OpenEndedRangeRunsToTheEnd) {
    auto ex = ServeRange("tasks/t1/1-0.mp4", "bytes=990-");
    EXPECT_EQ(ex->status(), 206);
    EXPECT_EQ(ex->headers().Get("content-range"), "bytes 990-999/1000");
    EXPECT_EQ(ex->body(), content_.substr(990));

    auto clipped = ServeRange("tasks/t1/1-0.mp4", "bytes=900-5000");
    EXPECT_EQ(clipped->status(), 206);
    EXPECT_EQ(clipped->headers().Get("content-range"), "bytes 900-999/1000");
    EXPECT_EQ(clipped->fixed_length(), 100u);
    EXPECT_EQ(clipped->body(), content_.substr(900));
}

TEST_F(MediaHttpTest, SuffixRangeServesTheLastBytes) {
    auto ex = ServeRange("tasks/t1/1-0.mp4", "bytes=-10");
    EXPECT_EQ(ex->status(), 206);
    EXPECT_EQ(ex->headers().Get("content-range"), "bytes 990-999/1000");
    EXPECT_EQ(ex->body(), content_.substr(990));

    auto longer = ServeRange("tasks/t1/1-0.mp4", "bytes=-5000");
    EXPECT_EQ(longer->status(), 206);
    EXPECT_EQ(longer->headers().Get("content-range"), "bytes 0-999/1000");
    EXPECT_EQ(longer->body(), content_);
}

TEST_F(MediaHttpTest, RangePastTheEndIs416) {
    for (const char* r : {"bytes=1000-", "bytes=1000-1001", "bytes=5000-6000"}) {
        auto ex = ServeRange("tasks/t1/1-0.mp4", r);
        EXPECT_EQ(ex->status(), 416) << r;
        EXPECT_EQ(ex->headers().Get("content-range"), "bytes */1000") << r;
        EXPECT_EQ(ErrorCode(*ex), "range_not_satisfiable") << r;
    }
}

TEST_F(MediaHttpTest, RangesItDoesNotHandleServeTheWholeObject) {
    // RFC 9110 lets a server ignore a Range header it does not support (or one that is invalid).
    for (const char* r :
         {"bytes=19-10", "items=0-5", "bytes=0-1,5-6", "bytes=abc", "bytes=", "bytes=--5", "0-5"}) {
        auto ex = ServeRange("tasks/t1/1-0.mp4", r);
        EXPECT_EQ(ex->status(), 200) << r;
        EXPECT_EQ(ex->body(), content_) << r;
        EXPECT_FALSE(ex->headers().Has("content-range")) << r;
    }
}

TEST_F(MediaHttpTest, HeadSendsHeadersAndLengthButNoBody) {
    auto ex = Serve("tasks/t1/1-0.mp4", {}, "HEAD");
    EXPECT_EQ(ex->status(), 200);
    EXPECT_TRUE(ex->responded());
    EXPECT_EQ(ex->fixed_length(), content_.size());
    EXPECT_EQ(ex->writes(), 0);
    EXPECT_TRUE(ex->body().empty());
    EXPECT_EQ(ex->headers().Get("content-type"), "video/mp4");
    EXPECT_EQ(ex->headers().Get("accept-ranges"), "bytes");

    net::Headers h;
    h.Add("Range", "bytes=100-199");
    auto ranged = Serve("tasks/t1/1-0.mp4", std::move(h), "HEAD");
    EXPECT_EQ(ranged->status(), 206);
    EXPECT_EQ(ranged->fixed_length(), 100u);
    EXPECT_EQ(ranged->headers().Get("content-range"), "bytes 100-199/1000");
    EXPECT_EQ(ranged->writes(), 0);
}

TEST_F(MediaHttpTest, UnknownOrInvalidKeysAre404) {
    for (const char* k :
         {"tasks/t1/2-0.mp4", "nope", "../media/tasks/t1/1-0.mp4", "tasks/t1/1-0.mp4.type",
          "/etc/passwd", "tasks//t1/1-0.mp4", "tasks", "tasks/t1", ""}) {
        auto ex = Serve(k);
        EXPECT_EQ(ex->status(), 404) << k;
        EXPECT_EQ(ErrorCode(*ex), "not_found") << k;
        EXPECT_EQ(ex->headers().Get("content-type"), "application/json") << k;
    }
}

TEST_F(MediaHttpTest, IfNoneMatchWithTheCurrentEtagIs304) {
    net::Headers h;
    h.Add("If-None-Match", EtagOf("tasks/t1/1-0.mp4"));
    auto ex = Serve("tasks/t1/1-0.mp4", std::move(h));
    EXPECT_EQ(ex->status(), 304);
    EXPECT_TRUE(ex->body().empty());
    EXPECT_EQ(ex->headers().Get("etag"), EtagOf("tasks/t1/1-0.mp4"));

    net::Headers stale;
    stale.Add("If-None-Match", "\"1000-1\"");
    auto full = Serve("tasks/t1/1-0.mp4", std::move(stale));
    EXPECT_EQ(full->status(), 200);
    EXPECT_EQ(full->body(), content_);
}

TEST_F(MediaHttpTest, EmptyObject) {
    Put("e/empty.png", "", "image/png");
    auto ex = Serve("e/empty.png");
    EXPECT_EQ(ex->status(), 200);
    EXPECT_TRUE(ex->responded());
    EXPECT_EQ(ex->fixed_length(), 0u);
    EXPECT_TRUE(ex->body().empty());
    EXPECT_EQ(ex->headers().Get("content-type"), "image/png");

    auto ranged = ServeRange("e/empty.png", "bytes=0-");
    EXPECT_EQ(ranged->status(), 416);
    EXPECT_EQ(ranged->headers().Get("content-range"), "bytes */0");
}

TEST_F(MediaHttpTest, LargeObjectIsWrittenInBoundedPieces) {
    const std::string big = Bytes(8u << 20);
    Put("big/video.mp4", big, "video/mp4");
    auto ex = Serve("big/video.mp4");
    EXPECT_EQ(ex->status(), 200);
    EXPECT_TRUE(ex->responded());
    EXPECT_EQ(ex->fixed_length(), big.size());
    EXPECT_EQ(ex->body().size(), big.size());
    EXPECT_TRUE(ex->body() == big);
    EXPECT_EQ(ex->writes(), static_cast<int>(big.size() / kPiece)) << "64 KiB writes, not one";
}

TEST_F(MediaHttpTest, LargeObjectFollowsTheClientsPace) {
    const std::string big = Bytes(8u << 20);
    Put("big/video.mp4", big, "video/mp4");
    net::Request req;
    req.method = "GET";
    req.target = "/v1/media/big/video.mp4";
    auto ex = std::make_shared<SlowClientExchange>(loop_, std::move(req));
    ServeMedia(ex, *store_, "big/video.mp4");
    loop_.RunPending();
    EXPECT_EQ(ex->status_, 200);
    EXPECT_EQ(ex->length_, big.size());
    ASSERT_TRUE(ex->waiting_for_drain()) << "the pump pauses while the client is behind";
    EXPECT_LT(ex->body_.size(), big.size());
    EXPECT_LE(ex->body_.size(), kHighWater + kPiece);

    for (int rounds = 0; rounds < 10'000 && ex->ends_ == 0; ++rounds) {
        ASSERT_TRUE(ex->waiting_for_drain()) << "stalled at " << ex->body_.size();
        ex->Drain();
        loop_.RunPending();  // the drain callback resumes the pump through the loop
    }
    EXPECT_EQ(ex->ends_, 1);
    EXPECT_FALSE(ex->aborted_);
    EXPECT_TRUE(ex->body_ == big);
    EXPECT_GT(ex->drain_waits_, 10);
    EXPECT_LE(ex->max_buffered_, kHighWater + kPiece) << "never more than one piece over the mark";
    ASSERT_FALSE(ex->writes_.empty());
    EXPECT_LE(*std::max_element(ex->writes_.begin(), ex->writes_.end()), kPiece);
    EXPECT_EQ(ex->writes_.size(), big.size() / kPiece);
}

TEST_F(MediaHttpTest, ClientLeavingMidStreamStopsThePump) {
    const std::string big = Bytes(2u << 20);
    Put("big/gone.mp4", big, "video/mp4");
    net::Request req;
    req.method = "GET";
    req.target = "/v1/media/big/gone.mp4";
    auto ex = std::make_shared<SlowClientExchange>(loop_, std::move(req));
    ServeMedia(ex, *store_, "big/gone.mp4");
    loop_.RunPending();
    ASSERT_TRUE(ex->waiting_for_drain());
    ex->Drain();
    loop_.RunPending();
    size_t sent = ex->body_.size();
    ex->Disconnect();
    loop_.RunPending();
    EXPECT_EQ(ex->body_.size(), sent);
    EXPECT_EQ(ex->writes_after_end_, 0);
    EXPECT_EQ(ex->ends_, 0);
    EXPECT_LT(sent, big.size());
}

/// A store whose behaviour is scripted, for the failure paths.
class ScriptedStore final : public MediaStore {
public:
    bool stat_fails = false;
    bool open_fails = false;
    size_t good_bytes = 0;  // the reader fails after this many bytes
    uint64_t size = 200'000;

    core::Result<std::unique_ptr<MediaWriter>> Create(std::string, std::string) override {
        return core::Fail(core::ErrorCode::kInternal, "read-only");
    }
    core::Result<std::optional<MediaInfo>> Stat(std::string_view key) override {
        if (stat_fails) {
            return core::Fail(core::ErrorCode::kInternal, "disk on fire");
        }
        MediaInfo m;
        m.key = std::string(key);
        m.content_type = "video/mp4";
        m.size = size;
        m.etag = "\"e\"";
        return std::optional<MediaInfo>(m);
    }
    core::Result<std::unique_ptr<MediaReader>> Open(std::string_view, uint64_t, uint64_t) override {
        if (open_fails) {
            return core::Fail(core::ErrorCode::kNotFound, "vanished");
        }
        struct Reader final : MediaReader {
            size_t left;
            explicit Reader(size_t n) : left(n) {}
            core::Result<std::string> Next(size_t max) override {
                if (left == 0) {
                    return core::Fail(core::ErrorCode::kInternal, "EIO");
                }
                size_t n = std::min(max, left);
                left -= n;
                return std::string(n, 'x');
            }
        };
        return std::unique_ptr<MediaReader>(std::make_unique<Reader>(good_bytes));
    }
    core::Result<bool> Delete(std::string_view) override { return false; }
    std::string PublicUrl(std::string_view key) const override { return std::string(key); }
};

TEST_F(MediaHttpTest, StoreFailuresMapToStatusesOrADroppedConnection) {
    ScriptedStore s;
    s.stat_fails = true;
    auto ex = FakeExchange::Make(loop_, "GET", "/v1/media/x");
    ServeMedia(ex, s, "x");
    EXPECT_EQ(ex->status(), 500);

    s.stat_fails = false;
    s.open_fails = true;  // deleted between Stat and Open
    auto vanished = FakeExchange::Make(loop_, "GET", "/v1/media/x");
    ServeMedia(vanished, s, "x");
    EXPECT_EQ(vanished->status(), 404);

    s.open_fails = false;
    s.good_bytes = 70'000;  // a read error mid-body cannot be reported in-band
    auto broken = FakeExchange::Make(loop_, "GET", "/v1/media/x");
    ServeMedia(broken, s, "x");
    loop_.RunPending();
    EXPECT_EQ(broken->status(), 200);
    EXPECT_TRUE(broken->aborted());
    EXPECT_FALSE(broken->responded()) << "the response is never completed short";
    EXPECT_EQ(broken->body().size(), 70'000u);
}

// --- ParseRange ---------------------------------------------------------------------------------

TEST(ParseRangeTest, Forms) {
    bool ok = false;
    auto r = ParseRange("bytes=0-99", 1000, ok);
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(ok);
    EXPECT_EQ(r->start, 0u);
    EXPECT_EQ(r->length, 100u);

    r = ParseRange("  BYTES=5 - 9 ", 1000, ok);
    ASSERT_TRUE(r.has_value()) << "case-insensitive unit, spaces tolerated";
    EXPECT_EQ(r->start, 5u);
    EXPECT_EQ(r->length, 5u);

    r = ParseRange("bytes=500-", 1000, ok);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->start, 500u);
    EXPECT_EQ(r->length, 500u);

    r = ParseRange("bytes=-1", 1000, ok);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->start, 999u);
    EXPECT_EQ(r->length, 1u);

    r = ParseRange("bytes=0-18446744073709551615", 1000, ok);
    EXPECT_FALSE(r.has_value() && r->length > 1000) << "never longer than the object";
}

TEST(ParseRangeTest, AbsentOrUnsupportedMeansWhole) {
    bool ok = false;
    for (const char* h : {"", "bytes=1-0", "bytes=0-1,3-4", "lines=1-2", "bytes=x-y", "bytes=-",
                          "bytes=-0", "bytes=-1-2"}) {
        ok = false;
        EXPECT_FALSE(ParseRange(h, 1000, ok).has_value()) << h;
        EXPECT_TRUE(ok) << h;
    }
}

TEST(ParseRangeTest, Unsatisfiable) {
    bool ok = true;
    EXPECT_TRUE(ParseRange("bytes=1000-", 1000, ok).has_value());
    EXPECT_FALSE(ok);
    ok = true;
    ParseRange("bytes=0-", 0, ok);
    EXPECT_FALSE(ok);
    ok = true;
    ParseRange("bytes=-5", 0, ok);
    EXPECT_FALSE(ok);
    ok = true;
    auto r = ParseRange("bytes=999-", 1000, ok);
    EXPECT_TRUE(ok);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->length, 1u);
}

}  // namespace
}  // namespace conduit::media
