#include "mock-provider/mock_provider.hpp"

#include "core/crypto.hpp"
#include "mock-provider/mock_content.hpp"
#include "mock_test_fixture.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>

namespace conduit::mock {
namespace {

using conduit::testing::WaitFor;
using namespace std::chrono_literals;
namespace bj = boost::json;
using test::Obj;
using test::Reply;
using test::SseData;
using MockProviderTest = test::MockProviderFixture;

constexpr std::string_view kHello =
    R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there friend"}]})";

int64_t CountWordsIn(std::string_view s) { return CountWords(s); }

// ---------------------------------------------------------------------------------------------
// Pure helpers

TEST(MockContentTest, ScanBodyFindsSpansAndControls) {
    BodyScan s;
    ASSERT_TRUE(ScanBody(
        R"( {"model":"m","messages":[{"role":"user","content":"a \"}] b"}],"mock_latency_ms":12.6,)"
        R"("mock_hang":true,"mock_hold":"tok-1","mock_chunks":"3","dimensions":null,)"
        R"("nested":{"mock_error_status":500}} )",
        s));
    EXPECT_EQ(s.messages, R"([{"role":"user","content":"a \"}] b"}])");
    EXPECT_EQ(s.mock_latency_ms, 13);
    EXPECT_TRUE(s.mock_hang);
    EXPECT_EQ(s.mock_hold, "tok-1");
    EXPECT_EQ(s.mock_chunks, 3);
    EXPECT_FALSE(s.dimensions);
    EXPECT_FALSE(s.mock_error_status) << "only top-level members count";
    BodyScan bad;
    EXPECT_FALSE(ScanBody(R"({"a":1)", bad));
    EXPECT_FALSE(ScanBody(R"([1])", bad));
}

TEST(MockContentTest, PromptTokenRule) {
    EXPECT_EQ(
        CountPromptTokens(R"([{"role":"system","content":"Be brief."},{"role":"user","content":[)"
                          R"({"type":"text","text":"two\nwords"}]}])",
                          CountMode::kContentStrings),
        4);
    EXPECT_EQ(CountPromptTokens(R"("one two  three")", CountMode::kAllStrings), 3);
    EXPECT_EQ(CountPromptTokens(R"([1, 2, 3, 4])", CountMode::kAllStrings), 4);
    EXPECT_EQ(CountPromptTokens(R"([])", CountMode::kContentStrings), 1) << "at least 1";
}

TEST(MockContentTest, CorpusSizing) {
    const Corpus& c = Corpus::Instance();
    for (size_t start : {size_t{0}, size_t{12345}, c.size() - 3}) {
        for (size_t chars : {size_t{1}, size_t{50}, size_t{1000}, size_t{20000}}) {
            size_t words = c.WordsForChars(start, chars);
            EXPECT_GE(c.Chars(start, words), chars);
            if (words > 1) {
                EXPECT_LT(c.Chars(start, words - 1), chars);
            }
            std::string s;
            c.Append(s, start, words);
            EXPECT_EQ(s.size(), c.Chars(start, words));
            EXPECT_EQ(CountWordsIn(s), static_cast<int64_t>(words));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chat

TEST_F(MockProviderTest, ChatNonStreamShapeAndDeterminism) {
    auto r1 = Post("/v1/chat/completions", kHello);
    ASSERT_EQ(r1->status, 200) << r1->Body();
    EXPECT_EQ(r1->headers.Get("content-type"), "application/json");
    bj::object o = Obj(r1->Body());
    EXPECT_TRUE(o["id"].as_string().starts_with("chatcmpl-"));
    EXPECT_EQ(o["object"].as_string(), "chat.completion");
    EXPECT_GT(o["created"].as_int64(), 0);
    EXPECT_EQ(o["model"].as_string(), "gpt-4o-mini");
    const bj::object& choice = o["choices"].as_array().at(0).as_object();
    EXPECT_EQ(choice.at("index").as_int64(), 0);
    EXPECT_EQ(choice.at("message").at("role").as_string(), "assistant");
    std::string content(choice.at("message").at("content").as_string());
    EXPECT_FALSE(content.empty());
    EXPECT_EQ(choice.at("finish_reason").as_string(), "stop");
    const bj::object& usage = o["usage"].as_object();
    EXPECT_EQ(usage.at("prompt_tokens").as_int64(), 3);
    EXPECT_EQ(usage.at("completion_tokens").as_int64(), CountWordsIn(content));
    EXPECT_EQ(usage.at("total_tokens").as_int64(), 3 + CountWordsIn(content));
    // Sized to about response_bytes (1024 by default).
    EXPECT_NEAR(static_cast<double>(r1->Body().size()), 1024.0, 64.0);

    // Same messages → same content, whatever else the body carries.
    auto r2 = Post("/v1/chat/completions",
                   R"({"model":"gpt-4o-mini","stream":false,"mock_latency_ms":0,)"
                   R"("messages":[{"role":"user","content":"Hello there friend"}]})");
    bj::object o2 = Obj(r2->Body());
    EXPECT_EQ(o2["choices"].as_array()[0].at("message").at("content").as_string(), content);
    EXPECT_NE(o2["id"].as_string(), o["id"].as_string());

    // Different messages → different content.
    auto r3 = Post("/v1/chat/completions",
                   R"({"model":"other-model","messages":[{"role":"user","content":"Bye"}]})");
    bj::object o3 = Obj(r3->Body());
    EXPECT_NE(o3["choices"].as_array()[0].at("message").at("content").as_string(), content);
    EXPECT_EQ(o3["model"].as_string(), "other-model");
    EXPECT_EQ(o3["usage"].at("prompt_tokens").as_int64(), 1);
}

TEST_F(MockProviderTest, ChatNChoicesAndMaxTokens) {
    auto r = Post("/v1/chat/completions",
                  R"({"model":"gpt-4o-mini","n":2,"max_tokens":5,"messages":[{"role":"user",)"
                  R"("content":"x"}]})");
    ASSERT_EQ(r->status, 200);
    bj::object o = Obj(r->Body());
    const bj::array& choices = o["choices"].as_array();
    ASSERT_EQ(choices.size(), 2U);
    for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(choices[i].at("index").as_int64(), static_cast<int64_t>(i));
        EXPECT_EQ(CountWordsIn(choices[i].at("message").at("content").as_string()), 5);
        EXPECT_EQ(choices[i].at("finish_reason").as_string(), "length");
    }
    EXPECT_EQ(o["usage"].at("completion_tokens").as_int64(), 10);
}

TEST_F(MockProviderTest, ResponseBytesControlsSize) {
    MockConfig c = mock_->Config();
    c.response_bytes = 10240;
    mock_->UpdateOptions(c);
    auto r = Post("/v1/chat/completions", kHello);
    EXPECT_NEAR(static_cast<double>(r->Body().size()), 10240.0, 64.0);
}

TEST_F(MockProviderTest, ChatStreamFraming) {
    auto plain = Post("/v1/chat/completions", kHello);
    std::string full(
        Obj(plain->Body())["choices"].as_array()[0].at("message").at("content").as_string());

    auto r = Post("/v1/chat/completions",
                  R"({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user",)"
                  R"("content":"Hello there friend"}]})");
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(r->headers.Get("content-type"), "text/event-stream");
    Parsed p = ParseChatStream(r->Body());
    EXPECT_TRUE(p.role_first);
    EXPECT_EQ(p.contents.size(), 16U);
    EXPECT_EQ(p.finish_reasons, std::vector<std::string>{"stop"});
    EXPECT_FALSE(p.usage_chunk) << "usage only when include_usage";
    EXPECT_TRUE(p.done_last);
    EXPECT_EQ(Join(p.contents), full) << "stream carries the same text";

    auto u = Post("/v1/chat/completions",
                  R"({"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},)"
                  R"("messages":[{"role":"user","content":"Hello there friend"}]})");
    Parsed pu = ParseChatStream(u->Body());
    ASSERT_TRUE(pu.usage_chunk);
    const bj::object& usage = pu.usage_chunk->at("usage").as_object();
    EXPECT_EQ(usage.at("prompt_tokens").as_int64(), 3);
    EXPECT_EQ(usage.at("completion_tokens").as_int64(), CountWordsIn(full));
    EXPECT_EQ(usage.at("total_tokens").as_int64(), 3 + CountWordsIn(full));
    EXPECT_TRUE(pu.done_last);

    auto stats = mock_->Stats();
    EXPECT_EQ(stats.streams_started, 2);
    EXPECT_EQ(stats.streams_completed, 2);
    EXPECT_EQ(stats.active_streams, 0);
}

TEST_F(MockProviderTest, StreamChunkCountControls) {
    auto r = Post("/v1/chat/completions", R"({"model":"gpt-4o-mini","stream":true,"mock_chunks":4,)"
                                          R"("messages":[{"role":"user","content":"hi"}]})");
    EXPECT_EQ(ParseChatStream(r->Body()).contents.size(), 4U);

    auto m = Post("/v1/chat/completions", R"({"model":"gpt-4o-mini","stream":true,"max_tokens":3,)"
                                          R"("stream_options":{"include_usage":true},)"
                                          R"("messages":[{"role":"user","content":"hi"}]})");
    Parsed p = ParseChatStream(m->Body());
    EXPECT_EQ(p.contents.size(), 3U);
    EXPECT_EQ(p.finish_reasons, std::vector<std::string>{"length"});
    ASSERT_TRUE(p.usage_chunk);
    EXPECT_EQ(p.usage_chunk->at("usage").at("completion_tokens").as_int64(), 3);
}

TEST_F(MockProviderTest, PacedStreamDeliversChunksSeparately) {
    auto r = Post("/v1/chat/completions",
                  R"({"model":"gpt-4o-mini","stream":true,"mock_chunks":5,)"
                  R"("mock_chunk_delay_ms":30,"messages":[{"role":"user","content":"hi"}]})");
    Parsed p = ParseChatStream(r->Body());
    EXPECT_EQ(p.contents.size(), 5U);
    EXPECT_GE(r->data_calls.load(), 5);
    EXPECT_GE(r->finished - r->started, 120ms);  // 4 gaps of 30 ms
}

TEST_F(MockProviderTest, TokensPerSecondPacesTheStream) {
    MockConfig c = mock_->Config();
    c.tokens_per_second = 200;
    c.response_bytes = 150;  // about 20 words
    c.stream_chunks = 4;
    mock_->UpdateOptions(c);
    auto r = Post("/v1/chat/completions", R"({"model":"gpt-4o-mini","stream":true,)"
                                          R"("stream_options":{"include_usage":true},)"
                                          R"("messages":[{"role":"user","content":"hi"}]})");
    Parsed p = ParseChatStream(r->Body());
    ASSERT_TRUE(p.usage_chunk);
    int64_t words = p.usage_chunk->at("usage").at("completion_tokens").as_int64();
    // The last chunk is due when the words before it are generated.
    int64_t before_last = (3 * words / 4);
    EXPECT_GE(r->finished - r->started, std::chrono::milliseconds(before_last * 1000 / 200 - 2));
}

// ---------------------------------------------------------------------------------------------
// Other endpoints

TEST_F(MockProviderTest, LegacyCompletions) {
    auto r = Post("/v1/completions", R"({"model":"gpt-3.5-turbo-instruct","prompt":"Say this"})");
    ASSERT_EQ(r->status, 200);
    bj::object o = Obj(r->Body());
    EXPECT_EQ(o["object"].as_string(), "text_completion");
    EXPECT_TRUE(o["id"].as_string().starts_with("cmpl-"));
    std::string text(o["choices"].as_array()[0].at("text").as_string());
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(o["usage"].at("prompt_tokens").as_int64(), 2);
    EXPECT_EQ(o["usage"].at("completion_tokens").as_int64(), CountWordsIn(text));

    auto s = Post("/v1/completions",
                  R"({"model":"gpt-3.5-turbo-instruct","prompt":"Say this","stream":true,)"
                  R"("mock_chunks":3,"stream_options":{"include_usage":true}})");
    auto data = SseData(s->Body());
    ASSERT_EQ(data.size(), 6U);  // 3 content, finish, usage, [DONE]
    std::string joined;
    for (size_t i = 0; i < 3; ++i) {
        bj::object c = Obj(data[i]);
        EXPECT_EQ(c["object"].as_string(), "text_completion");
        EXPECT_TRUE(c["choices"].as_array()[0].at("finish_reason").is_null());
        joined += c["choices"].as_array()[0].at("text").as_string();
    }
    EXPECT_EQ(joined, text);
    EXPECT_EQ(Obj(data[3])["choices"].as_array()[0].at("finish_reason").as_string(), "stop");
    EXPECT_TRUE(Obj(data[4])["choices"].as_array().empty());
    EXPECT_EQ(data[5], "[DONE]");
}

TEST_F(MockProviderTest, EmbeddingsFloatAndBase64Agree) {
    auto f = Post("/v1/embeddings",
                  R"({"model":"text-embedding-3-small","input":["hello world","other"]})");
    ASSERT_EQ(f->status, 200) << f->Body();
    bj::object fo = Obj(f->Body());
    EXPECT_EQ(fo["object"].as_string(), "list");
    EXPECT_EQ(fo["model"].as_string(), "text-embedding-3-small");
    EXPECT_EQ(fo["usage"].at("prompt_tokens").as_int64(), 3);
    EXPECT_EQ(fo["usage"].at("total_tokens").as_int64(), 3);
    const bj::array& data = fo["data"].as_array();
    ASSERT_EQ(data.size(), 2U);

    auto b = Post("/v1/embeddings", R"({"model":"text-embedding-3-small","input":["hello world",)"
                                    R"("other"],"encoding_format":"base64"})");
    bj::object bo = Obj(b->Body());
    const bj::array& bdata = bo["data"].as_array();
    ASSERT_EQ(bdata.size(), 2U);

    std::vector<std::vector<float>> vectors;
    for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(data[i].at("object").as_string(), "embedding");
        EXPECT_EQ(data[i].at("index").as_int64(), static_cast<int64_t>(i));
        const bj::array& v = data[i].at("embedding").as_array();
        ASSERT_EQ(v.size(), 16U);
        std::string raw;
        ASSERT_TRUE(core::Base64Decode(bdata[i].at("embedding").as_string(), raw));
        ASSERT_EQ(raw.size(), 16 * sizeof(float));
        std::vector<float> decoded(16);
        std::memcpy(decoded.data(), raw.data(), raw.size());
        double norm = 0;
        for (size_t d = 0; d < 16; ++d) {
            auto x = static_cast<float>(v[d].to_number<double>());
            EXPECT_EQ(x, decoded[d]) << "dim " << d;
            norm += static_cast<double>(x) * x;
        }
        EXPECT_NEAR(norm, 1.0, 1e-5);
        vectors.push_back(decoded);
    }
    EXPECT_NE(vectors[0], vectors[1]);

    // Deterministic per input, whatever else is in the request.
    auto single = Post("/v1/embeddings", R"({"model":"m","input":"hello world"})");
    bj::object so = Obj(single->Body());
    const bj::array& sv = so["data"].as_array()[0].at("embedding").as_array();
    for (size_t d = 0; d < 16; ++d) {
        EXPECT_EQ(static_cast<float>(sv[d].to_number<double>()), vectors[0][d]);
    }
}

TEST_F(MockProviderTest, EmbeddingsDimensionsAndTokenArrays) {
    auto r = Post("/v1/embeddings", R"({"model":"m","input":[[1,2,3],[4,5]],"dimensions":8})");
    ASSERT_EQ(r->status, 200) << r->Body();
    bj::object o = Obj(r->Body());
    ASSERT_EQ(o["data"].as_array().size(), 2U);
    EXPECT_EQ(o["data"].as_array()[0].at("embedding").as_array().size(), 8U);
    EXPECT_EQ(o["usage"].at("prompt_tokens").as_int64(), 5);

    auto bad = Post("/v1/embeddings", R"({"model":"m","input":[]})");
    EXPECT_EQ(bad->status, 400);
    auto missing = Post("/v1/embeddings", R"({"model":"m"})");
    EXPECT_EQ(missing->status, 400);
    EXPECT_EQ(Obj(missing->Body())["error"].at("param").as_string(), "input");
}

TEST_F(MockProviderTest, ModelsList) {
    auto r = Do("GET", "/v1/models");
    ASSERT_EQ(r->status, 200);
    bj::object o = Obj(r->Body());
    EXPECT_EQ(o["object"].as_string(), "list");
    const bj::array& data = o["data"].as_array();
    ASSERT_GE(data.size(), 3U);
    EXPECT_EQ(data[0].at("object").as_string(), "model");
    EXPECT_FALSE(data[0].at("id").as_string().empty());

    auto one = Do("GET", "/v1/models/my-model");
    EXPECT_EQ(one->status, 200);
    EXPECT_EQ(Obj(one->Body())["id"].as_string(), "my-model");
}

TEST_F(MockProviderTest, ImagesUrlAndBase64) {
    auto r = Post("/v1/images/generations", R"({"model":"dall-e-3","prompt":"a red fox","n":2})");
    ASSERT_EQ(r->status, 200) << r->Body();
    bj::object o = Obj(r->Body());
    EXPECT_GT(o["created"].as_int64(), 0);
    const bj::array& data = o["data"].as_array();
    ASSERT_EQ(data.size(), 2U);
    EXPECT_EQ(data[0].at("revised_prompt").as_string(), "a red fox");
    std::string url(data[0].at("url").as_string());
    std::string prefix = Url("/mock/files/");
    ASSERT_TRUE(url.starts_with(prefix)) << url;
    auto png = Do("GET", url.substr(prefix.size() - std::string_view("/mock/files/").size()));
    EXPECT_EQ(png->status, 200);
    EXPECT_EQ(png->headers.Get("content-type"), "image/png");
    EXPECT_EQ(png->Body(), TinyPng());
    EXPECT_TRUE(png->Body().starts_with("\x89PNG\r\n\x1a\n"));

    auto b =
        Post("/v1/images/generations", R"({"prompt":"a red fox","response_format":"b64_json"})");
    ASSERT_EQ(b->status, 200);
    bj::object bo = Obj(b->Body());
    ASSERT_EQ(bo["data"].as_array().size(), 1U);
    std::string decoded;
    ASSERT_TRUE(core::Base64Decode(bo["data"].as_array()[0].at("b64_json").as_string(), decoded));
    EXPECT_EQ(decoded, TinyPng());

    auto bad = Post("/v1/images/generations", R"({"prompt":"x","response_format":"gif"})");
    EXPECT_EQ(bad->status, 400);
}

// ---------------------------------------------------------------------------------------------
// Failures

TEST_F(MockProviderTest, RequireKey) {
    MockConfig c = mock_->Config();
    c.require_key = "sk-test-123";
    mock_->UpdateOptions(c);

    auto none = Post("/v1/chat/completions", kHello);
    EXPECT_EQ(none->status, 401);
    bj::object e = Obj(none->Body());
    EXPECT_EQ(e["error"].at("code").as_string(), "invalid_api_key");
    EXPECT_FALSE(e["error"].at("message").as_string().empty());

    net::Headers wrong;
    wrong.Add("Authorization", "Bearer sk-wrong");
    EXPECT_EQ(Do("POST", "/v1/chat/completions", std::string(kHello), wrong)->status, 401);

    net::Headers right;
    right.Add("Authorization", "Bearer sk-test-123");
    EXPECT_EQ(Do("POST", "/v1/chat/completions", std::string(kHello), right)->status, 200);

    auto stats = mock_->Stats();
    EXPECT_EQ(stats.auth_failures, 2);
    EXPECT_EQ(stats.last_authorization, "Bearer sk-test-123");
}

TEST_F(MockProviderTest, ErrorRateOneFailsEveryRequest) {
    ASSERT_EQ(Post("/mock/config", R"({"error_rate":1,"error_status":503})")->status, 200);
    for (int i = 0; i < 3; ++i) {
        auto r = Post("/v1/chat/completions", kHello);
        EXPECT_EQ(r->status, 503);
        bj::object e = Obj(r->Body());
        EXPECT_EQ(e["error"].at("type").as_string(), "api_error");
    }
    auto s = Post(
        "/v1/chat/completions",
        R"({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]})");
    EXPECT_EQ(s->status, 503);
    EXPECT_EQ(mock_->Stats().errors_injected, 4);
    EXPECT_EQ(mock_->Stats().streams_started, 0);
}

TEST_F(MockProviderTest, PerRequestErrorStatus) {
    auto r = Post("/v1/chat/completions",
                  R"({"model":"gpt-4o-mini","mock_error_status":400,"messages":[]})");
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(Obj(r->Body())["error"].at("type").as_string(), "invalid_request_error");
    auto t = Post("/v1/embeddings", R"({"model":"m","input":"x","mock_error_status":429})");
    EXPECT_EQ(t->status, 429);
    EXPECT_EQ(t->headers.Get("retry-after"), "1");
}

TEST_F(MockProviderTest, RateLimitReturns429WithRetryAfter) {
    MockConfig c = mock_->Config();
    c.rate_limit = 3;
    mock_->UpdateOptions(c);
    int limited = 0;
    int ok = 0;
    for (int i = 0; i < 10; ++i) {
        auto r = Post("/v1/chat/completions", kHello);
        if (r->status == 429) {
            ++limited;
            EXPECT_EQ(r->headers.Get("retry-after"), "1");
            EXPECT_EQ(Obj(r->Body())["error"].at("code").as_string(), "rate_limit_exceeded");
        } else {
            EXPECT_EQ(r->status, 200);
            ++ok;
        }
    }
    // At most 3 per one-second window; 10 quick requests span at most a few windows.
    EXPECT_GE(limited, 1);
    EXPECT_LE(ok, 9);
    EXPECT_EQ(mock_->Stats().rate_limited, limited);
}

TEST_F(MockProviderTest, InvalidRequests) {
    auto bad = Post("/v1/chat/completions", "{not json");
    EXPECT_EQ(bad->status, 400);
    EXPECT_EQ(Obj(bad->Body())["error"].at("type").as_string(), "invalid_request_error");
    auto no_messages = Post("/v1/chat/completions", R"({"model":"m"})");
    EXPECT_EQ(no_messages->status, 400);
    EXPECT_EQ(Obj(no_messages->Body())["error"].at("param").as_string(), "messages");
    auto no_model = Post("/v1/chat/completions", R"({"messages":[]})");
    EXPECT_EQ(no_model->status, 400);
    EXPECT_EQ(Post("/v1/unknown", "{}")->status, 404);
    EXPECT_EQ(Do("GET", "/v1/chat/completions")->status, 405);
    EXPECT_EQ(Do("GET", "/nowhere")->status, 404);
    EXPECT_EQ(Do("GET", "/health")->status, 200);
}

// ---------------------------------------------------------------------------------------------
// Stream controls

TEST_F(MockProviderTest, HoldBlocksUntilRelease) {
    auto r = Start("POST", "/v1/chat/completions",
                   R"({"model":"gpt-4o-mini","stream":true,"mock_chunks":4,"mock_hold":"h-1",)"
                   R"("messages":[{"role":"user","content":"hi"}]})");
    ASSERT_TRUE(WaitFor([&] {
        auto held = mock_->Stats().held;
        return held.size() == 1 && held[0] == "h-1";
    }));
    // Everything before the hold point reaches the client while the stream is held.
    ASSERT_TRUE(WaitFor([&] { return ParseChatStream(r->Body()).contents.size() == 3; }));
    Parsed before = ParseChatStream(r->Body());
    EXPECT_FALSE(before.done_last);
    EXPECT_TRUE(before.finish_reasons.empty());
    EXPECT_FALSE(r->done.load());
    EXPECT_EQ(mock_->Stats().active_streams, 1);

    auto rel = Post("/mock/release/h-1", "");
    EXPECT_EQ(rel->status, 200);
    ASSERT_TRUE(WaitFor([&] { return r->done.load(); }));
    Parsed after = ParseChatStream(r->Body());
    EXPECT_EQ(after.contents.size(), 4U);
    EXPECT_TRUE(after.done_last);
    EXPECT_TRUE(mock_->Stats().held.empty());
    EXPECT_EQ(Post("/mock/release/h-1", "")->status, 404) << "nothing held any more";
}

TEST_F(MockProviderTest, EarlyReleaseIsRemembered) {
    EXPECT_EQ(Post("/mock/release/early", "")->status, 404);
    auto r = Post("/v1/chat/completions",
                  R"({"model":"gpt-4o-mini","stream":true,"mock_chunks":3,"mock_hold":"early",)"
                  R"("messages":[{"role":"user","content":"hi"}]})");
    Parsed p = ParseChatStream(r->Body());
    EXPECT_EQ(p.contents.size(), 3U);
    EXPECT_TRUE(p.done_last);

    // Released while the stream is in flight but before its hold point: 200, and no wait.
    auto s = Start("POST", "/v1/chat/completions",
                   R"({"model":"gpt-4o-mini","stream":true,"mock_chunks":3,"mock_hold":"mid",)"
                   R"("mock_latency_ms":300,"messages":[{"role":"user","content":"hi"}]})");
    ASSERT_TRUE(WaitFor([&] { return mock_->Stats().per_path["/v1/chat/completions"] == 2; }));
    EXPECT_TRUE(mock_->Release("mid"));
    ASSERT_TRUE(WaitFor([&] { return s->done.load(); }));
    EXPECT_TRUE(ParseChatStream(s->Body()).done_last);
}

TEST_F(MockProviderTest, ClientDisconnectMidStreamCountsAsAborted) {
    auto r = Start("POST", "/v1/chat/completions",
                   R"({"model":"gpt-4o-mini","stream":true,"mock_chunks":50,)"
                   R"("mock_chunk_delay_ms":40,"messages":[{"role":"user","content":"hi"}]})");
    ASSERT_TRUE(WaitFor([&] { return ParseChatStream(r->Body()).contents.size() >= 2; }));
    EXPECT_EQ(mock_->Stats().active_streams, 1);
    RunOnClient([this] {
        for (auto& c : calls_) {
            c->Cancel();
        }
        calls_.clear();
    });
    ASSERT_TRUE(WaitFor([&] { return mock_->Stats().streams_aborted == 1; }));
    auto s = mock_->Stats();
    EXPECT_EQ(s.active_streams, 0);
    EXPECT_EQ(s.streams_completed, 0);
}

TEST_F(MockProviderTest, ClientDisconnectWhileHeld) {
    auto r = Start("POST", "/v1/chat/completions",
                   R"({"model":"gpt-4o-mini","stream":true,"mock_hold":"gone",)"
                   R"("messages":[{"role":"user","content":"hi"}]})");
    ASSERT_TRUE(WaitFor([&] { return mock_->Stats().held.size() == 1; }));
    ASSERT_TRUE(WaitFor([&] { return !ParseChatStream(r->Body()).contents.empty(); }));
    RunOnClient([this] {
        for (auto& c : calls_) {
            c->Cancel();
        }
        calls_.clear();
    });
    ASSERT_TRUE(WaitFor([&] { return mock_->Stats().streams_aborted == 1; }));
    auto s = mock_->Stats();
    EXPECT_TRUE(s.held.empty());
    EXPECT_EQ(s.active_streams, 0);
    EXPECT_FALSE(mock_->Release("gone")) << "the aborted stream no longer counts";
}

TEST_F(MockProviderTest, DisconnectAfterCutsTheStream) {
    // The mock drops the connection after two content chunks: the client gets those bytes,
    // then a transfer error (not a clean end of stream).
    auto r = Start("POST", "/v1/chat/completions",
                   R"({"model":"gpt-4o-mini","stream":true,"mock_chunks":6,)"
                   R"("mock_disconnect_after":2,"messages":[{"role":"user","content":"hi"}]})");
    ASSERT_TRUE(WaitFor([&] { return r->done.load(); }));
    EXPECT_EQ(r->outcome.failure, http_client::Failure::kOther);
    Parsed p = ParseChatStream(r->Body());
    EXPECT_EQ(p.contents.size(), 2U);
    EXPECT_TRUE(p.finish_reasons.empty());
    EXPECT_FALSE(p.done_last);
    auto s = mock_->Stats();
    EXPECT_EQ(s.streams_disconnected, 1);
    EXPECT_EQ(s.streams_completed, 0);
    EXPECT_EQ(s.active_streams, 0);
}

TEST_F(MockProviderTest, HangParksUntilTheClientLeaves) {
    auto r = Start("POST", "/v1/chat/completions",
                   R"({"model":"gpt-4o-mini","mock_hang":true,"messages":[]})");
    ASSERT_TRUE(WaitFor([&] { return mock_->Stats().hanging == 1; }));
    EXPECT_FALSE(r->done.load());
    RunOnClient([this] {
        for (auto& c : calls_) {
            c->Cancel();
        }
        calls_.clear();
    });
    ASSERT_TRUE(WaitFor([&] { return mock_->Stats().hanging == 0; }));
}

// ---------------------------------------------------------------------------------------------
// Latency, config, stats

TEST_F(MockProviderTest, LatencyDelaysTheResponse) {
    auto per_request =
        Post("/v1/chat/completions", R"({"model":"gpt-4o-mini","mock_latency_ms":150,)"
                                     R"("messages":[{"role":"user","content":"hi"}]})");
    EXPECT_EQ(per_request->status, 200);
    EXPECT_GE(per_request->finished - per_request->started, 150ms);

    ASSERT_EQ(Post("/mock/config", R"({"latency_ms":120})")->status, 200);
    auto configured = Post("/v1/chat/completions", kHello);
    EXPECT_EQ(configured->status, 200);
    EXPECT_GE(configured->finished - configured->started, 120ms);

    auto stream = Post("/v1/chat/completions", R"({"model":"gpt-4o-mini","stream":true,)"
                                               R"("messages":[{"role":"user","content":"hi"}]})");
    EXPECT_GE(stream->finished - stream->started, 120ms);
    EXPECT_TRUE(ParseChatStream(stream->Body()).done_last);
}

TEST_F(MockProviderTest, ConfigEndpoint) {
    auto set = Post("/mock/config", R"({"stream_chunks":3,"embedding_dims":4,"require_key":null})");
    ASSERT_EQ(set->status, 200) << set->Body();
    EXPECT_EQ(Obj(set->Body())["stream_chunks"].as_int64(), 3);
    EXPECT_EQ(mock_->Config().stream_chunks, 3);

    auto s = Post(
        "/v1/chat/completions",
        R"({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]})");
    EXPECT_EQ(ParseChatStream(s->Body()).contents.size(), 3U);
    auto e = Post("/v1/embeddings", R"({"model":"m","input":"x"})");
    EXPECT_EQ(Obj(e->Body())["data"].as_array()[0].at("embedding").as_array().size(), 4U);

    auto get = Do("GET", "/mock/config");
    EXPECT_EQ(Obj(get->Body())["embedding_dims"].as_int64(), 4);

    EXPECT_EQ(Post("/mock/config", R"({"error_rate":2})")->status, 400);
    EXPECT_EQ(Post("/mock/config", R"({"latency":5})")->status, 400);
    EXPECT_EQ(Post("/mock/config", R"({"stream_chunks":"x"})")->status, 400);
    EXPECT_EQ(mock_->Config().stream_chunks, 3) << "rejected updates change nothing";
}

TEST_F(MockProviderTest, StatsAndReset) {
    net::Headers auth;
    auth.Add("Authorization", "Bearer sk-fake");
    Do("POST", "/v1/chat/completions", std::string(kHello), auth);
    Do("GET", "/v1/models");
    Post("/v1/embeddings", R"({"model":"emb-model","input":"x"})");

    auto stats = Do("GET", "/mock/stats");
    ASSERT_EQ(stats->status, 200);
    bj::object o = Obj(stats->Body());
    EXPECT_EQ(o["requests_total"].as_int64(), 3);
    EXPECT_EQ(o["per_path"].at("/v1/chat/completions").as_int64(), 1);
    EXPECT_EQ(o["per_path"].at("/v1/models").as_int64(), 1);
    EXPECT_EQ(o["per_path"].at("/v1/embeddings").as_int64(), 1);
    EXPECT_EQ(o["last_model"].as_string(), "emb-model");
    EXPECT_EQ(o["last_body"].as_string(), R"({"model":"emb-model","input":"x"})");
    EXPECT_EQ(o["last_authorization"].as_string(), "");
    for (const char* key : {"streams_started", "streams_completed", "streams_aborted",
                            "active_streams", "auth_failures", "held"}) {
        EXPECT_TRUE(o.contains(key)) << key;
    }

    EXPECT_EQ(Post("/mock/reset", "")->status, 200);
    MockStats s = mock_->Stats();
    EXPECT_EQ(s.requests_total, 0);
    EXPECT_TRUE(s.per_path.empty());
    EXPECT_TRUE(s.last_body.empty());

    Do("POST", "/v1/chat/completions", std::string(kHello), auth);
    s = mock_->Stats();
    EXPECT_EQ(s.requests_total, 1);
    EXPECT_EQ(s.last_authorization, "Bearer sk-fake");
    EXPECT_EQ(s.last_model, "gpt-4o-mini");
}

TEST_F(MockProviderTest, ManyConcurrentRequestsAcrossShards) {
    std::vector<std::shared_ptr<Reply>> replies;
    for (int i = 0; i < 64; ++i) {
        replies.push_back(Start("POST", "/v1/chat/completions",
                                i % 2 == 0 ? std::string(kHello)
                                           : R"({"model":"gpt-4o-mini","stream":true,)"
                                             R"("messages":[{"role":"user","content":"hi"}]})"));
    }
    for (auto& r : replies) {
        ASSERT_TRUE(WaitFor([&] { return r->done.load(); }));
        EXPECT_EQ(r->status, 200);
    }
    auto s = mock_->Stats();
    EXPECT_EQ(s.requests_total, 64);
    EXPECT_EQ(s.streams_completed, 32);
}

}  // namespace
}  // namespace conduit::mock
