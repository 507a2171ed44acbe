// The mock provider's Anthropic Messages endpoint (POST /v1/messages), and a round trip through
// the gateway's Anthropic translation (gateway/anthropic.hpp) against it.

#include "gateway/anthropic.hpp"
#include "mock-provider/mock_content.hpp"
#include "mock-provider/mock_provider.hpp"
#include "mock_test_fixture.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace conduit::mock {
namespace {

namespace bj = boost::json;
using test::Obj;
using test::Reply;

constexpr std::string_view kAsk =
    R"({"model":"claude-test","max_tokens":1024,"system":"Be brief please",)"
    R"("messages":[{"role":"user","content":"Hello there friend"}]})";

constexpr std::string_view kWeatherTools =
    R"("tools":[{"name":"get_weather","description":"Weather now","input_schema":{"type":"object",)"
    R"("properties":{"city":{"type":"string"},"days":{"type":"integer"},"metric":{"type":"boolean"}},)"
    R"("required":["city"]}},{"name":"get_time","input_schema":{"type":"object","properties":{}}}])";

/// One SSE event of a response body.
struct Event {
    std::string name;
    std::string data;
};

std::vector<Event> Events(std::string_view body) {
    json::SseScanner scanner;
    std::vector<Event> out;
    scanner.Feed(body, [&](const json::SseScanner::Event& e) {
        if (e.has_data) {
            out.push_back({std::string(e.event_name), e.data});
        }
    });
    return out;
}

std::vector<std::string> Names(const std::vector<Event>& events) {
    std::vector<std::string> out;
    for (const auto& e : events) {
        out.push_back(e.name);
    }
    return out;
}

class MockAnthropicTest : public test::MockProviderFixture {
protected:
    /// POST /v1/messages with anthropic-version (and x-api-key when given).
    std::shared_ptr<Reply> Messages(std::string body,
                                    std::string_view api_key = {},
                                    bool with_version = true) {
        net::Headers h;
        if (with_version) {
            h.Add("anthropic-version", "2023-06-01");
        }
        if (!api_key.empty()) {
            h.Add("x-api-key", std::string(api_key));
        }
        return Do("POST", "/v1/messages", std::move(body), std::move(h));
    }

    /// Posts an OpenAI chat request translated for Anthropic; returns the reply.
    std::shared_ptr<Reply> ViaTranslation(std::string_view openai_body,
                                          gateway::anthropic::AnthropicRequest* out = nullptr) {
        auto req = gateway::anthropic::TranslateChatRequest(openai_body, "claude-test");
        EXPECT_TRUE(req.has_value()) << (req ? "" : req.error().message);
        if (!req) {
            return std::make_shared<Reply>();
        }
        if (out != nullptr) {
            *out = *req;
        }
        net::Headers h = gateway::anthropic::UpstreamHeaders("sk-ant-test", req->stream);
        return Do("POST", std::string("/v1") + std::string(gateway::anthropic::kMessagesPath),
                  req->body, std::move(h));
    }
};

// ---------------------------------------------------------------------------------------------
// Pure helpers

TEST(MockAnthropicContent, ToolRule) {
    auto scan = [](const std::string& body) {
        static std::deque<std::string> keep;  // BodyScan holds views; a deque never moves them
        keep.push_back(body);
        BodyScan s;
        EXPECT_TRUE(ScanBody(keep.back(), s)) << body;
        return s;
    };
    std::string user = R"("messages":[{"role":"user","content":"Weather in Paris?"}])";
    auto use = PlanToolUse(scan("{" + user + "," + std::string(kWeatherTools) + "}"));
    ASSERT_TRUE(use);
    EXPECT_EQ(use->name, "get_weather");
    bj::object input = Obj(use->input_json);
    EXPECT_TRUE(input["city"].is_string());
    EXPECT_FALSE(input["city"].as_string().empty());
    EXPECT_EQ(input["days"].as_int64(), 42);
    EXPECT_EQ(input["metric"].as_bool(), true);
    // Deterministic.
    EXPECT_EQ(PlanToolUse(scan("{" + user + "," + std::string(kWeatherTools) + "}"))->input_json,
              use->input_json);

    auto named = PlanToolUse(scan("{" + user + "," + std::string(kWeatherTools) +
                                  R"(,"tool_choice":{"type":"tool","name":"get_time"}})"));
    ASSERT_TRUE(named);
    EXPECT_EQ(named->name, "get_time");
    EXPECT_EQ(named->input_json, "{}");

    EXPECT_FALSE(PlanToolUse(
        scan("{" + user + "," + std::string(kWeatherTools) + R"(,"tool_choice":{"type":"none"}})")))
        << "tool_choice none";
    EXPECT_FALSE(PlanToolUse(scan("{" + user + "}"))) << "no tools";
    EXPECT_FALSE(PlanToolUse(
        scan(R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":)"
             R"("tool_use","id":"t1","name":"get_weather","input":{}}]},{"role":"user","content":[)"
             R"({"type":"tool_result","tool_use_id":"t1","content":"18C"}]}],)" +
             std::string(kWeatherTools) + "}")))
        << "the last turn answers a tool call";
}

TEST(MockAnthropicContent, ErrorJsonTypes) {
    EXPECT_EQ(AnthropicErrorJson(529, "Overloaded"),
              R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})");
    EXPECT_EQ(Obj(AnthropicErrorJson(429, "x"))["error"].at("type").as_string(),
              "rate_limit_error");
    EXPECT_EQ(Obj(AnthropicErrorJson(401, "x"))["error"].at("type").as_string(),
              "authentication_error");
    EXPECT_EQ(Obj(AnthropicErrorJson(500, "x"))["error"].at("type").as_string(), "api_error");
    EXPECT_EQ(Obj(AnthropicErrorJson(404, "x"))["error"].at("type").as_string(), "not_found_error");
    EXPECT_EQ(Obj(AnthropicErrorJson(422, "x"))["error"].at("type").as_string(),
              "invalid_request_error");
}

// ---------------------------------------------------------------------------------------------
// The endpoint

TEST_F(MockAnthropicTest, NonStreamShapeUsageAndDeterminism) {
    auto r = Messages(std::string(kAsk));
    ASSERT_EQ(r->status, 200) << r->Body();
    bj::object o = Obj(r->Body());
    EXPECT_TRUE(o["id"].as_string().starts_with("msg_mock_"));
    EXPECT_EQ(o["type"].as_string(), "message");
    EXPECT_EQ(o["role"].as_string(), "assistant");
    EXPECT_EQ(o["model"].as_string(), "claude-test");
    const bj::array& content = o["content"].as_array();
    ASSERT_EQ(content.size(), 1U);
    EXPECT_EQ(content[0].at("type").as_string(), "text");
    std::string text(content[0].at("text").as_string());
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(o["stop_reason"].as_string(), "end_turn");
    EXPECT_TRUE(o["stop_sequence"].is_null());
    EXPECT_EQ(o["usage"].at("input_tokens").as_int64(), 3 + 3) << "messages + system words";
    EXPECT_EQ(o["usage"].at("output_tokens").as_int64(), CountWords(text));

    auto again = Messages(std::string(kAsk));
    bj::object o2 = Obj(again->Body());
    EXPECT_EQ(o2["content"].as_array()[0].at("text").as_string(), text);
    EXPECT_NE(o2["id"].as_string(), o["id"].as_string());

    auto capped = Messages(
        R"({"model":"claude-test","max_tokens":3,"messages":[{"role":"user","content":"Hello there friend"}]})");
    bj::object oc = Obj(capped->Body());
    EXPECT_EQ(oc["stop_reason"].as_string(), "max_tokens");
    EXPECT_EQ(oc["usage"].at("output_tokens").as_int64(), 3);
    EXPECT_EQ(CountWords(std::string(oc["content"].as_array()[0].at("text").as_string())), 3);

    auto stats = mock_->Stats();
    EXPECT_EQ(stats.per_path["/v1/messages"], 3);
    EXPECT_EQ(stats.last_anthropic_version, "2023-06-01");
}

TEST_F(MockAnthropicTest, VersionHeaderAndValidation) {
    auto r = Messages(std::string(kAsk), {}, false);
    EXPECT_EQ(r->status, 400);
    bj::object e = Obj(r->Body());
    EXPECT_EQ(e["type"].as_string(), "error");
    EXPECT_EQ(e["error"].at("type").as_string(), "invalid_request_error");
    EXPECT_NE(e["error"].at("message").as_string().find("anthropic-version"), bj::string::npos);

    auto no_max = Messages(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
    EXPECT_EQ(no_max->status, 400);
    EXPECT_NE(Obj(no_max->Body())["error"].at("message").as_string().find("max_tokens"),
              bj::string::npos);
    EXPECT_EQ(Messages(R"({"model":"m","max_tokens":1})")->status, 400);
    EXPECT_EQ(Messages(R"({"max_tokens":1,"messages":[]})")->status, 400);
    EXPECT_EQ(Messages(R"({"model":"m","max_tokens":1,"messages":[)")->status, 400);
    net::Headers version;
    version.Add("anthropic-version", "2023-06-01");
    EXPECT_EQ(Do("GET", "/v1/messages", {}, version)->status, 405);
}

TEST_F(MockAnthropicTest, RequireKeyReadsXApiKey) {
    MockConfig c = mock_->Config();
    c.require_key = "sk-ant-123";
    mock_->UpdateOptions(c);

    auto none = Messages(std::string(kAsk));
    EXPECT_EQ(none->status, 401);
    EXPECT_EQ(Obj(none->Body())["error"].at("type").as_string(), "authentication_error");
    net::Headers bearer;
    bearer.Add("anthropic-version", "2023-06-01");
    bearer.Add("Authorization", "Bearer sk-ant-123");
    EXPECT_EQ(Do("POST", "/v1/messages", std::string(kAsk), bearer)->status, 401)
        << "Anthropic takes the key from x-api-key only";
    EXPECT_EQ(Messages(std::string(kAsk), "sk-wrong")->status, 401);
    EXPECT_EQ(Messages(std::string(kAsk), "sk-ant-123")->status, 200);
    auto stats = mock_->Stats();
    EXPECT_EQ(stats.auth_failures, 3);
    EXPECT_EQ(stats.last_api_key, "sk-ant-123");
}

TEST_F(MockAnthropicTest, StreamEventSequence) {
    std::string full(
        Obj(Messages(std::string(kAsk))->Body())["content"].as_array()[0].at("text").as_string());
    std::string body(kAsk);
    body.insert(1, R"("stream":true,"mock_chunks":5,)");
    auto r = Messages(body);
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(r->headers.Get("content-type"), "text/event-stream");
    auto events = Events(r->Body());
    std::vector<std::string> want = {
        "message_start",       "content_block_start", "ping",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta",       "message_stop"};
    ASSERT_EQ(Names(events), want) << r->Body();
    bj::object start = Obj(events[0].data);
    EXPECT_EQ(start["type"].as_string(), "message_start");
    EXPECT_TRUE(start["message"].at("id").as_string().starts_with("msg_mock_"));
    EXPECT_EQ(start["message"].at("model").as_string(), "claude-test");
    EXPECT_EQ(start["message"].at("usage").at("input_tokens").as_int64(), 6);
    EXPECT_EQ(json::Serialize(Obj(events[1].data)["content_block"]),
              R"({"type":"text","text":""})");
    std::string joined;
    for (size_t i = 3; i < 8; ++i) {
        bj::object d = Obj(events[i].data);
        EXPECT_EQ(d["index"].as_int64(), 0);
        EXPECT_EQ(d["delta"].at("type").as_string(), "text_delta");
        joined += d["delta"].at("text").as_string();
    }
    EXPECT_EQ(joined, full) << "the stream carries the non-stream text";
    bj::object delta = Obj(events[9].data);
    EXPECT_EQ(delta["delta"].at("stop_reason").as_string(), "end_turn");
    EXPECT_EQ(delta["usage"].at("output_tokens").as_int64(), CountWords(full));
    auto stats = mock_->Stats();
    EXPECT_EQ(stats.streams_started, 1);
    EXPECT_EQ(stats.streams_completed, 1);
    EXPECT_EQ(stats.active_streams, 0);
}

TEST_F(MockAnthropicTest, ToolUseReplies) {
    std::string ask = R"({"model":"claude-test","max_tokens":100,"messages":[{"role":"user",)"
                      R"("content":"Weather in Paris?"}],)" +
                      std::string(kWeatherTools) + "}";
    auto r = Messages(ask);
    ASSERT_EQ(r->status, 200) << r->Body();
    bj::object o = Obj(r->Body());
    EXPECT_EQ(o["stop_reason"].as_string(), "tool_use");
    const bj::object& block = o["content"].as_array().at(0).as_object();
    EXPECT_EQ(block.at("type").as_string(), "tool_use");
    EXPECT_TRUE(block.at("id").as_string().starts_with("toolu_"));
    EXPECT_EQ(block.at("name").as_string(), "get_weather");
    std::string input = json::Serialize(block.at("input"));
    EXPECT_EQ(block.at("input").at("days").as_int64(), 42);
    EXPECT_GE(o["usage"].at("output_tokens").as_int64(), 1);

    // The tool's result comes back: a text answer.
    std::string answer =
        R"({"model":"claude-test","max_tokens":4096,"messages":[{"role":"user","content":"Weather?"},)"
        R"({"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get_weather","input":{}}]},)"
        R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"18C"}]}],)" +
        std::string(kWeatherTools) + "}";
    bj::object a = Obj(Messages(answer)->Body());
    EXPECT_EQ(a["stop_reason"].as_string(), "end_turn");
    EXPECT_EQ(a["content"].as_array()[0].at("type").as_string(), "text");

    // Streamed: the input JSON arrives in input_json_delta pieces.
    std::string streamed = ask;
    streamed.insert(1, R"("stream":true,"mock_chunks":3,)");
    auto s = Messages(streamed);
    auto events = Events(s->Body());
    ASSERT_EQ(Names(events),
              (std::vector<std::string>{"message_start", "content_block_start", "ping",
                                        "content_block_delta", "content_block_delta",
                                        "content_block_delta", "content_block_stop",
                                        "message_delta", "message_stop"}))
        << s->Body();
    bj::object cb = Obj(events[1].data)["content_block"].as_object();
    EXPECT_EQ(cb["type"].as_string(), "tool_use");
    EXPECT_EQ(cb["name"].as_string(), "get_weather");
    std::string pieces;
    for (size_t i = 3; i < 6; ++i) {
        bj::object d = Obj(events[i].data);
        EXPECT_EQ(d["delta"].at("type").as_string(), "input_json_delta");
        pieces += d["delta"].at("partial_json").as_string();
    }
    EXPECT_EQ(pieces, input);
    EXPECT_EQ(Obj(events[7].data)["delta"].at("stop_reason").as_string(), "tool_use");
}

TEST_F(MockAnthropicTest, InjectedErrorsUseAnthropicShape) {
    ASSERT_EQ(Post("/mock/config", R"({"error_rate":1,"error_status":529})")->status, 200);
    auto r = Messages(std::string(kAsk));
    EXPECT_EQ(r->status, 529);
    EXPECT_EQ(Obj(r->Body())["error"].at("type").as_string(), "overloaded_error");
    std::string body(kAsk);
    body.insert(1, R"("stream":true,)");
    EXPECT_EQ(Messages(body)->status, 529) << "streams fail before they start";
    ASSERT_EQ(Post("/mock/config", R"({"error_rate":0})")->status, 200);

    std::string limited(kAsk);
    limited.insert(1, R"("mock_error_status":429,)");
    auto l = Messages(limited);
    EXPECT_EQ(l->status, 429);
    EXPECT_EQ(l->headers.Get("retry-after"), "1");
    EXPECT_EQ(Obj(l->Body())["error"].at("type").as_string(), "rate_limit_error");

    // An error event in the middle of a stream.
    std::string mid(kAsk);
    mid.insert(1, R"("stream":true,"mock_chunks":5,"mock_stream_error_after":2,)");
    auto m = Messages(mid);
    ASSERT_EQ(m->status, 200);
    auto events = Events(m->Body());
    ASSERT_EQ(Names(events),
              (std::vector<std::string>{"message_start", "content_block_start", "ping",
                                        "content_block_delta", "content_block_delta", "error"}))
        << m->Body();
    EXPECT_EQ(Obj(events[5].data)["error"].at("type").as_string(), "overloaded_error");
    EXPECT_EQ(mock_->Stats().errors_injected, 4);
}

// ---------------------------------------------------------------------------------------------
// Round trip through the gateway's translation

TEST_F(MockAnthropicTest, TranslatedRoundTripNonStream) {
    gateway::anthropic::AnthropicRequest sent;
    auto r = ViaTranslation(
        R"({"model":"alias","messages":[{"role":"system","content":"Be brief please"},)"
        R"({"role":"user","content":"Hello there friend"}],"temperature":0.5})",
        &sent);
    ASSERT_EQ(r->status, 200) << r->Body();
    EXPECT_EQ(mock_->Stats().last_api_key, "sk-ant-test");
    auto out = gateway::anthropic::TranslateChatResponse(r->Body(), "alias", 1700000000);
    ASSERT_TRUE(out.has_value()) << out.error().message;
    bj::object o = Obj(out->body);
    EXPECT_EQ(o["object"].as_string(), "chat.completion");
    EXPECT_EQ(o["model"].as_string(), "alias");
    const bj::object& choice = o["choices"].as_array()[0].as_object();
    std::string text(choice.at("message").at("content").as_string());
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(choice.at("finish_reason").as_string(), "stop");
    EXPECT_EQ(o["usage"].at("prompt_tokens").as_int64(), 6);
    EXPECT_EQ(o["usage"].at("completion_tokens").as_int64(), CountWords(text));
    EXPECT_EQ(out->usage.output_tokens, CountWords(text));

    // Errors map to OpenAI bodies.
    ASSERT_EQ(Post("/mock/config", R"({"error_rate":1,"error_status":529})")->status, 200);
    auto failed = ViaTranslation(R"({"messages":[{"role":"user","content":"x"}]})");
    EXPECT_EQ(failed->status, 529);
    auto mapped = gateway::anthropic::MapError(failed->status, failed->Body());
    EXPECT_EQ(mapped.status, 503);
    EXPECT_EQ(mapped.anthropic_type, "overloaded_error");
}

TEST_F(MockAnthropicTest, TranslatedRoundTripStreamWithTools) {
    std::string ask =
        R"({"model":"alias","stream":true,"stream_options":{"include_usage":true},)"
        R"("messages":[{"role":"user","content":"Weather in Paris?"}],)"
        R"("tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":)"
        R"("object","properties":{"city":{"type":"string"}}}}}]})";
    gateway::anthropic::AnthropicRequest sent;
    auto r = ViaTranslation(ask, &sent);
    ASSERT_EQ(r->status, 200) << r->Body();
    EXPECT_TRUE(sent.stream);
    EXPECT_TRUE(sent.include_usage);
    gateway::anthropic::AnthropicStreamTranslator t({"alias", 1700000000, sent.include_usage});
    std::string out;
    ASSERT_TRUE(t.Feed(r->Body(), out));
    EXPECT_TRUE(t.Finished());
    EXPECT_FALSE(t.Failed());
    auto data = test::SseData(out);
    ASSERT_GE(data.size(), 5U) << out;
    EXPECT_EQ(data.back(), "[DONE]");
    std::string args;
    std::string name;
    std::string finish;
    for (size_t i = 0; i + 1 < data.size(); ++i) {
        bj::object chunk = Obj(data[i]);
        EXPECT_EQ(chunk["model"].as_string(), "alias");
        const bj::array& choices = chunk["choices"].as_array();
        if (choices.empty()) {
            EXPECT_EQ(i + 2, data.size()) << "usage chunk right before [DONE]";
            EXPECT_GE(chunk["usage"].at("completion_tokens").as_int64(), 1);
            EXPECT_EQ(chunk["usage"].at("completion_tokens").as_int64(), t.usage().output_tokens);
            continue;
        }
        const bj::object& delta = choices[0].at("delta").as_object();
        if (const bj::value* calls = delta.if_contains("tool_calls")) {
            const bj::object& fn = calls->as_array()[0].at("function").as_object();
            if (fn.contains("name")) {
                name = fn.at("name").as_string();
            }
            args += fn.at("arguments").as_string();
        }
        if (!choices[0].at("finish_reason").is_null()) {
            finish = choices[0].at("finish_reason").as_string();
        }
    }
    EXPECT_EQ(name, "get_weather");
    EXPECT_TRUE(Obj(args)["city"].is_string()) << args;
    EXPECT_EQ(finish, "tool_calls");
    EXPECT_EQ(t.usage().input_tokens, 3);
}

}  // namespace
}  // namespace conduit::mock
