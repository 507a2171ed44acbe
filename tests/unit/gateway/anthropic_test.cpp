#include "gateway/anthropic.hpp"

#include "gateway/errors.hpp"
#include "json/helpers.hpp"
#include "json/sse.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace conduit::gateway::anthropic {
namespace {

namespace bj = boost::json;
using core::ErrorCode;

bj::object Parse(std::string_view text) {
    boost::system::error_code ec;
    bj::value v = bj::parse(bj::string_view(text.data(), text.size()), ec);
    EXPECT_FALSE(ec) << text;
    EXPECT_TRUE(v.is_object()) << text;
    return v.is_object() ? v.get_object() : bj::object();
}

bj::object Translate(std::string_view body, const RequestOptions& options = {}) {
    auto r = TranslateChatRequest(body, "claude-sonnet-4-5", options);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    return r ? Parse(r->body) : bj::object();
}

core::Error TranslateError(std::string_view body) {
    auto r = TranslateChatRequest(body, "claude-sonnet-4-5");
    EXPECT_FALSE(r.has_value()) << body;
    return r ? core::Error{} : r.error();
}

// ---------------------------------------------------------------------------------------------
// Requests

TEST(AnthropicRequest, SystemMessagesJoinAndTurnsMerge) {
    auto r = TranslateChatRequest(
        R"({"model":"alias","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"developer","content":[{"type":"text","text":"Use"},{"type":"text","text":"French."}]},
            {"role":"user","content":"Hi"},
            {"role":"user","content":[{"type":"text","text":"there"}]},
            {"role":"assistant","content":"Bonjour"},
            {"role":"user","content":"Again"}],
           "frequency_penalty":0.5,"logprobs":true})",
        "claude-sonnet-4-5");
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_FALSE(r->stream);
    EXPECT_EQ(r->max_tokens, kDefaultMaxTokens);
    bj::object o = Parse(r->body);
    EXPECT_EQ(o["model"].as_string(), "claude-sonnet-4-5");
    EXPECT_EQ(o["max_tokens"].as_int64(), 4096) << "Anthropic requires max_tokens";
    EXPECT_EQ(o["system"].as_string(), "Be brief.\n\nUse\nFrench.");
    EXPECT_FALSE(o.contains("frequency_penalty")) << "unknown members are dropped";
    EXPECT_FALSE(o.contains("logprobs"));
    EXPECT_FALSE(o.contains("stream"));
    const bj::array& m = o["messages"].as_array();
    ASSERT_EQ(m.size(), 3U);
    EXPECT_EQ(m[0].at("role").as_string(), "user");
    EXPECT_EQ(bj::serialize(m[0].at("content")),
              R"([{"type":"text","text":"Hi"},{"type":"text","text":"there"}])");
    EXPECT_EQ(m[1].at("role").as_string(), "assistant");
    EXPECT_EQ(bj::serialize(m[1].at("content")), R"([{"type":"text","text":"Bonjour"}])");
    EXPECT_EQ(m[2].at("role").as_string(), "user");
}

TEST(AnthropicRequest, ParametersMaxTokensStopAndStream) {
    bj::object o = Translate(
        R"({"model":"a","messages":[{"role":"user","content":"x"}],"max_tokens":100,
            "max_completion_tokens":50,"temperature":0.2,"top_p":1,"stop":"END",
            "stream":true,"stream_options":{"include_usage":true},"user":"u-42","n":1})");
    EXPECT_EQ(o["max_tokens"].as_int64(), 50) << "max_completion_tokens wins";
    EXPECT_DOUBLE_EQ(o["temperature"].as_double(), 0.2);
    EXPECT_EQ(o["top_p"].as_int64(), 1);
    EXPECT_EQ(bj::serialize(o["stop_sequences"]), R"(["END"])");
    EXPECT_EQ(o["stream"].as_bool(), true);
    EXPECT_EQ(o["metadata"].at("user_id").as_string(), "u-42");

    auto r = TranslateChatRequest(
        R"({"messages":[{"role":"user","content":"x"}],"max_tokens":7,"stop":["a","b"],)"
        R"("stream":true})",
        "m");
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(r->stream);
    EXPECT_FALSE(r->include_usage);
    EXPECT_EQ(r->max_tokens, 7);
    bj::object o2 = Parse(r->body);
    EXPECT_EQ(o2["max_tokens"].as_int64(), 7);
    EXPECT_EQ(bj::serialize(o2["stop_sequences"]), R"(["a","b"])");

    RequestOptions opts;
    opts.default_max_tokens = 1234;
    bj::object o3 = Translate(R"({"messages":[{"role":"user","content":"x"}],"stop":null})", opts);
    EXPECT_EQ(o3["max_tokens"].as_int64(), 1234);
    EXPECT_FALSE(o3.contains("stop_sequences"));
}

TEST(AnthropicRequest, Images) {
    bj::object o = Translate(R"({"messages":[{"role":"user","content":[
        {"type":"text","text":"What is this?"},
        {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}},
        {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}},
        {"type":"image_url","image_url":"data:IMAGE/JPG;base64,/9j/4AAQ"}]}]})");
    const bj::array& blocks = o["messages"].as_array()[0].at("content").as_array();
    ASSERT_EQ(blocks.size(), 4U);
    EXPECT_EQ(bj::serialize(blocks[1]),
              R"({"type":"image","source":{"type":"base64","media_type":"image/png",)"
              R"("data":"iVBORw0KGgo="}})");
    EXPECT_EQ(bj::serialize(blocks[2]),
              R"({"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}})");
    EXPECT_EQ(blocks[3].at("source").at("media_type").as_string(), "image/jpeg");

    auto e = TranslateError(
        R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,AAAA"}}]}]})");
    EXPECT_EQ(e.code, ErrorCode::kInvalidRequest);
    EXPECT_NE(e.message.find("image/bmp"), std::string::npos) << e.message;
    EXPECT_EQ(e.param, "messages[0].content[0].image_url.url");
    e = TranslateError(
        R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,raw"}}]}]})");
    EXPECT_EQ(e.param, "messages[0].content[0].image_url.url");
    e = TranslateError(
        R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]})");
    EXPECT_EQ(e.param, "messages[0].content[0].image_url.url");
    e = TranslateError(
        R"({"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]})");
    EXPECT_EQ(e.param, "messages[0].content[0].type");
    EXPECT_NE(e.message.find("input_audio"), std::string::npos);
    e = TranslateError(
        R"({"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://a/b.png"}}]},{"role":"user","content":"x"}]})");
    EXPECT_EQ(e.param, "messages[0].content[0]");
}

TEST(AnthropicRequest, ToolsToolChoiceAndToolMessages) {
    bj::object o = Translate(R"({"messages":[
        {"role":"user","content":"Weather in Paris and Rome?"},
        {"role":"assistant","content":null,"tool_calls":[
            {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
            {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":""}}]},
        {"role":"tool","tool_call_id":"call_1","content":"18C"},
        {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"21C"}]},
        {"role":"user","content":"Thanks"}],
      "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
               {"type":"function","function":{"name":"noop"}}],
      "tool_choice":"required","parallel_tool_calls":false})");
    const bj::array& m = o["messages"].as_array();
    ASSERT_EQ(m.size(), 3U);
    EXPECT_EQ(bj::serialize(m[1]),
              R"({"role":"assistant","content":[)"
              R"({"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},)"
              R"({"type":"tool_use","id":"call_2","name":"get_weather","input":{}}]})");
    EXPECT_EQ(bj::serialize(m[2]),
              R"({"role":"user","content":[)"
              R"({"type":"tool_result","tool_use_id":"call_1","content":"18C"},)"
              R"({"type":"tool_result","tool_use_id":"call_2","content":"21C"},)"
              R"({"type":"text","text":"Thanks"}]})")
        << "tool results and the next user text share one user turn, results first";
    const bj::array& tools = o["tools"].as_array();
    ASSERT_EQ(tools.size(), 2U);
    EXPECT_EQ(bj::serialize(tools[0]),
              R"({"name":"get_weather","description":"Weather now","input_schema":)"
              R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}})");
    EXPECT_EQ(bj::serialize(tools[1]),
              R"({"name":"noop","input_schema":{"type":"object","properties":{}}})");
    EXPECT_EQ(bj::serialize(o["tool_choice"]),
              R"({"type":"any","disable_parallel_tool_use":true})");

    auto choice = [](std::string_view tc) {
        bj::object out = Translate(
            std::string(R"({"messages":[{"role":"user","content":"x"}],)"
                        R"("tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":)") +
            std::string(tc) + "}");
        return out.contains("tool_choice") ? bj::serialize(out["tool_choice"]) : std::string();
    };
    EXPECT_EQ(choice(R"("auto")"), R"({"type":"auto"})");
    EXPECT_EQ(choice(R"("none")"), R"({"type":"none"})");
    EXPECT_EQ(choice(R"({"type":"function","function":{"name":"f"}})"),
              R"({"type":"tool","name":"f"})");
    EXPECT_EQ(choice("null"), "");

    // No tools: tool_choice is meaningless and dropped.
    bj::object none =
        Translate(R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"auto"})");
    EXPECT_FALSE(none.contains("tool_choice"));
    EXPECT_FALSE(none.contains("tools"));
}

TEST(AnthropicRequest, ToolErrors) {
    auto e = TranslateError(
        R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[)"
        R"({"id":"c","type":"function","function":{"name":"f","arguments":"[1,2]"}}]}]})");
    EXPECT_EQ(e.code, ErrorCode::kInvalidRequest);
    EXPECT_EQ(e.param, "messages[1].tool_calls[0].function.arguments");
    e = TranslateError(
        R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[)"
        R"({"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}]})");
    EXPECT_EQ(e.param, "messages[1].tool_calls[0].function.arguments");
    e = TranslateError(R"({"messages":[{"role":"tool","content":"x"}]})");
    EXPECT_EQ(e.param, "messages[0].tool_call_id");
    e = TranslateError(
        R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search"}]})");
    EXPECT_EQ(e.param, "tools[0].type");
    e = TranslateError(
        R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]})");
    EXPECT_EQ(e.param, "tools[0].function.name");
    e = TranslateError(
        R"({"messages":[{"role":"user","content":"x"}],)"
        R"("tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"any"})");
    EXPECT_EQ(e.param, "tool_choice");
}

TEST(AnthropicRequest, RejectsWhatCannotBeTranslated) {
    auto e = TranslateError(R"({"messages":[{"role":"user","content":"x"}],"n":2})");
    EXPECT_EQ(e.code, ErrorCode::kInvalidRequest);
    EXPECT_EQ(e.param, "n");
    EXPECT_NE(e.message.find("'n' must be 1"), std::string::npos) << e.message;

    e = TranslateError(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})");
    EXPECT_EQ(e.param, "max_tokens");
    e = TranslateError(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":"many"})");
    EXPECT_EQ(e.param, "max_tokens");
    e = TranslateError(R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})");
    EXPECT_EQ(e.param, "temperature");
    e = TranslateError(R"({"messages":[{"role":"user","content":"x"}],"stop":[1]})");
    EXPECT_EQ(e.param, "stop");
    e = TranslateError(R"({"messages":[{"role":"user","content":"x"}],"stream":"yes"})");
    EXPECT_EQ(e.param, "stream");
    e = TranslateError(R"({"messages":[{"role":"function","name":"f","content":"x"}]})");
    EXPECT_EQ(e.param, "messages[0].role");
    e = TranslateError(R"({"messages":[{"role":"user","content":"x"}],"functions":[]})");
    EXPECT_EQ(e.param, "functions");
    e = TranslateError(R"({"messages":[{"content":"x"}]})");
    EXPECT_EQ(e.param, "messages[0].role");
    e = TranslateError(R"({"messages":[{"role":"user","content":42}]})");
    EXPECT_EQ(e.param, "messages[0].content");
    e = TranslateError(R"({"messages":[{"role":"system","content":"only a system prompt"}]})");
    EXPECT_EQ(e.param, "messages");
    e = TranslateError(R"({"messages":"hi"})");
    EXPECT_EQ(e.param, "messages");
    e = TranslateError(R"({"model":"m"})");
    EXPECT_EQ(e.param, "messages");

    // Malformed input.
    e = TranslateError(R"({"messages":[)");
    EXPECT_EQ(e.code, ErrorCode::kInvalidRequest);
    EXPECT_EQ(e.message, "We could not parse the JSON body of your request.");
    e = TranslateError("[1,2]");
    EXPECT_EQ(e.message, "The request body must be a JSON object.");
}

TEST(AnthropicRequest, EmptyTextsDroppedAndMockFieldsOnRequest) {
    bj::object o =
        Translate(R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":""},)"
                  R"({"role":"user","content":"r"}],"mock_chunks":3})");
    const bj::array& m = o["messages"].as_array();
    ASSERT_EQ(m.size(), 1U) << "an empty assistant turn vanishes and the user turns merge";
    EXPECT_EQ(m[0].at("content").as_array().size(), 2U);
    EXPECT_FALSE(o.contains("mock_chunks"));

    RequestOptions opts;
    opts.forward_mock_fields = true;
    bj::object o2 =
        Translate(R"({"messages":[{"role":"user","content":"q"}],"mock_chunks":3})", opts);
    EXPECT_EQ(o2["mock_chunks"].as_int64(), 3);
}

TEST(AnthropicRequest, UpstreamHeaders) {
    net::Headers h = UpstreamHeaders("sk-ant-123", true);
    EXPECT_EQ(h.Get("x-api-key"), "sk-ant-123");
    EXPECT_EQ(h.Get("anthropic-version"), "2023-06-01");
    EXPECT_EQ(h.Get("content-type"), "application/json");
    EXPECT_EQ(h.Get("accept"), "text/event-stream");
    EXPECT_FALSE(h.Has("authorization"));
    net::Headers h2 = UpstreamHeaders("", false);
    EXPECT_FALSE(h2.Has("x-api-key"));
    EXPECT_EQ(h2.Get("accept"), "application/json");
    EXPECT_EQ(kMessagesPath, "/messages");
}

// ---------------------------------------------------------------------------------------------
// Responses

TEST(AnthropicResponse, TextUsageAndFinishReason) {
    auto r = TranslateChatResponse(
        R"({"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"thinking","thinking":"hmm","signature":"s"},
                       {"type":"text","text":"Hello"},{"type":"text","text":", world"}],
            "stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":3,
                     "cache_read_input_tokens":7}})",
        "my-alias", 1700000000);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    bj::object o = Parse(r->body);
    EXPECT_EQ(o["id"].as_string(), "msg_01");
    EXPECT_EQ(o["object"].as_string(), "chat.completion");
    EXPECT_EQ(o["created"].as_int64(), 1700000000);
    EXPECT_EQ(o["model"].as_string(), "my-alias");
    const bj::object& choice = o["choices"].as_array().at(0).as_object();
    EXPECT_EQ(choice.at("index").as_int64(), 0);
    EXPECT_EQ(choice.at("message").at("role").as_string(), "assistant");
    EXPECT_EQ(choice.at("message").at("content").as_string(), "Hello, world");
    EXPECT_FALSE(choice.at("message").as_object().contains("tool_calls"));
    EXPECT_EQ(choice.at("finish_reason").as_string(), "stop");
    EXPECT_EQ(o["usage"].at("prompt_tokens").as_int64(), 20);
    EXPECT_EQ(o["usage"].at("completion_tokens").as_int64(), 5);
    EXPECT_EQ(o["usage"].at("total_tokens").as_int64(), 25);
    EXPECT_EQ(o["usage"].at("prompt_tokens_details").at("cached_tokens").as_int64(), 7);
    EXPECT_TRUE(r->usage.present);
    json::Usage u = r->usage.ToOpenAI();
    EXPECT_EQ(u.prompt_tokens, 20);
    EXPECT_EQ(u.completion_tokens, 5);
    EXPECT_EQ(u.total_tokens, 25);
    // The proxy's generic usage reader sees the same numbers in the translated body.
    json::Usage seen = json::ExtractUsage(r->body);
    EXPECT_EQ(seen.prompt_tokens, 20);
    EXPECT_EQ(seen.completion_tokens, 5);
}

TEST(AnthropicResponse, ToolUseBecomesToolCalls) {
    auto r = TranslateChatResponse(
        R"({"id":"msg_02","type":"message","role":"assistant","content":[
              {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],
            "stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}})",
        "a", 1);
    ASSERT_TRUE(r.has_value());
    bj::object o = Parse(r->body);
    const bj::object& msg = o["choices"].as_array()[0].at("message").as_object();
    EXPECT_TRUE(msg.at("content").is_null()) << "no text, only tool calls";
    const bj::array& calls = msg.at("tool_calls").as_array();
    ASSERT_EQ(calls.size(), 1U);
    EXPECT_EQ(calls[0].at("id").as_string(), "toolu_1");
    EXPECT_EQ(calls[0].at("type").as_string(), "function");
    EXPECT_EQ(calls[0].at("function").at("name").as_string(), "get_weather");
    EXPECT_EQ(calls[0].at("function").at("arguments").as_string(), R"({"city":"Paris"})");
    EXPECT_EQ(o["choices"].as_array()[0].at("finish_reason").as_string(), "tool_calls");
    EXPECT_EQ(o["usage"].at("total_tokens").as_int64(), 3);

    // Round trip: the tool call goes back as a tool_use block with the same input.
    std::string next = R"({"messages":[{"role":"user","content":"q"},{"role":"assistant",)"
                       R"("content":null,"tool_calls":)" +
                       bj::serialize(calls) +
                       R"(},{"role":"tool","tool_call_id":"toolu_1","content":"18C"}]})";
    bj::object req = Translate(next);
    EXPECT_EQ(
        bj::serialize(req["messages"].as_array()[1].at("content").as_array()[0]),
        R"({"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}})");
}

TEST(AnthropicResponse, FinishReasons) {
    EXPECT_EQ(FinishReason("end_turn"), "stop");
    EXPECT_EQ(FinishReason("stop_sequence"), "stop");
    EXPECT_EQ(FinishReason("max_tokens"), "length");
    EXPECT_EQ(FinishReason("tool_use"), "tool_calls");
    EXPECT_EQ(FinishReason("refusal"), "content_filter");
    EXPECT_EQ(FinishReason("pause_turn"), "stop");
    EXPECT_EQ(FinishReason(""), "stop");
    auto r = TranslateChatResponse(
        R"({"id":"m","type":"message","content":[{"type":"text","text":"cut"}],"stop_reason":"max_tokens"})",
        "a", 1);
    ASSERT_TRUE(r.has_value());
    bj::object o = Parse(r->body);
    EXPECT_EQ(o["choices"].as_array()[0].at("finish_reason").as_string(), "length");
    EXPECT_FALSE(r->usage.present);
}

TEST(AnthropicResponse, MalformedBodiesAreUpstreamErrors) {
    for (std::string_view body : {R"(not json)", R"([1])", R"({"type":"message"})",
                                  R"({"type":"error","error":{"type":"api_error","message":"x"}})",
                                  R"({"type":"message","content":[1]})"}) {
        auto r = TranslateChatResponse(body, "a", 1);
        ASSERT_FALSE(r.has_value()) << body;
        EXPECT_EQ(r.error().code, ErrorCode::kUpstreamError);
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(AnthropicErrors, MapByTypeThenStatus) {
    auto body = [](std::string_view type, std::string_view message) {
        return std::string(R"({"type":"error","error":{"type":")") + std::string(type) +
               R"(","message":")" + std::string(message) + R"("}})";
    };
    struct Row {
        int status;
        const char* type;
        int want_status;
        ErrorCode code;
        bool keeps_message;
    };
    const Row rows[] = {
        {400, "invalid_request_error", 400, ErrorCode::kInvalidRequest, true},
        {401, "authentication_error", 401, ErrorCode::kUnauthorized, false},
        {403, "permission_error", 403, ErrorCode::kForbidden, true},
        {404, "not_found_error", 404, ErrorCode::kNotFound, true},
        {413, "request_too_large", 413, ErrorCode::kRequestTooLarge, true},
        {429, "rate_limit_error", 429, ErrorCode::kRateLimited, true},
        {529, "overloaded_error", 503, ErrorCode::kUnavailable, false},
        {500, "api_error", 502, ErrorCode::kUpstreamError, false},
        {402, "billing_error", 502, ErrorCode::kUpstreamError, false},
        {504, "timeout_error", 504, ErrorCode::kUpstreamTimeout, false},
    };
    for (const auto& row : rows) {
        MappedError m = MapError(row.status, body(row.type, "Detail ABC"));
        EXPECT_EQ(m.status, row.want_status) << row.type;
        EXPECT_EQ(m.error.code, row.code) << row.type;
        EXPECT_EQ(m.anthropic_type, row.type);
        EXPECT_EQ(m.error.message == "Detail ABC", row.keeps_message)
            << row.type << ": " << m.error.message;
        EXPECT_FALSE(m.error.message.empty());
    }
    // The OpenAI body the gateway sends.
    MappedError rl = MapError(429, body("rate_limit_error", "Slow down"));
    bj::object o = Parse(ErrorBody(rl.error));
    EXPECT_EQ(o["error"].at("message").as_string(), "Slow down");
    EXPECT_EQ(o["error"].at("type").as_string(), "rate_limit_error");
    EXPECT_EQ(o["error"].at("code").as_string(), "rate_limit_exceeded");

    // Unparseable or unknown: the status decides.
    EXPECT_EQ(MapError(529, "<html>").status, 503);
    EXPECT_EQ(MapError(503, "").status, 502);
    EXPECT_EQ(MapError(429, "").error.code, ErrorCode::kRateLimited);
    EXPECT_EQ(MapError(404, "{}").error.code, ErrorCode::kNotFound);
    MappedError unknown = MapError(418, body("teapot_error", "short and stout"));
    EXPECT_EQ(unknown.status, 400);
    EXPECT_EQ(unknown.error.message, "short and stout");
    MappedError internal = MapError(500, body("mystery_error", "stack trace at 0xdead"));
    EXPECT_EQ(internal.status, 502);
    EXPECT_EQ(internal.error.message.find("0xdead"), std::string::npos)
        << "provider internals are not shown";
}

// ---------------------------------------------------------------------------------------------
// Streams

std::string Sse(std::string_view event, std::string_view data) {
    return "event: " + std::string(event) + "\ndata: " + std::string(data) + "\n\n";
}

const std::string kMessageStart =
    Sse("message_start",
        R"({"type":"message_start","message":{"id":"msg_s1","type":"message","role":"assistant",)"
        R"("content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,)"
        R"("usage":{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":5}}})");

std::string TextStream() {
    return kMessageStart +
           Sse("content_block_start",
               R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})") +
           Sse("ping", R"({"type": "ping"})") +
           Sse("content_block_delta",
               R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}})") +
           Sse("content_block_delta",
               R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" \"world\"\n"}})") +
           Sse("content_block_stop", R"({"type":"content_block_stop","index":0})") +
           Sse("message_delta",
               R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}})") +
           Sse("message_stop", R"({"type":"message_stop"})");
}

/// The data fields of an SSE text.
std::vector<std::string> DataOf(std::string_view sse) {
    json::SseScanner scanner;
    std::vector<std::string> out;
    scanner.Feed(sse, [&](const json::SseScanner::Event& e) {
        if (e.has_data) {
            out.push_back(e.data);
        }
    });
    EXPECT_EQ(scanner.TakeRemainder(), "") << "every event is complete";
    return out;
}

AnthropicStreamTranslator::Options StreamOptions(bool include_usage) {
    AnthropicStreamTranslator::Options o;
    o.alias = "my-alias";
    o.created_s = 1700000001;
    o.include_usage = include_usage;
    return o;
}

TEST(AnthropicStream, TextEventSequence) {
    AnthropicStreamTranslator t(StreamOptions(false));
    std::string out;
    ASSERT_TRUE(t.Feed(TextStream(), out));
    auto data = DataOf(out);
    ASSERT_EQ(data.size(), 5U) << out;
    bj::object first = Parse(data[0]);
    EXPECT_EQ(first["id"].as_string(), "msg_s1");
    EXPECT_EQ(first["object"].as_string(), "chat.completion.chunk");
    EXPECT_EQ(first["created"].as_int64(), 1700000001);
    EXPECT_EQ(first["model"].as_string(), "my-alias");
    EXPECT_EQ(bj::serialize(first["choices"]),
              R"([{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,)"
              R"("finish_reason":null}])");
    EXPECT_EQ(Parse(data[1])["choices"].as_array()[0].at("delta").at("content").as_string(),
              "Hello");
    EXPECT_EQ(Parse(data[2])["choices"].as_array()[0].at("delta").at("content").as_string(),
              " \"world\"\n");
    bj::object fin = Parse(data[3]);
    EXPECT_EQ(bj::serialize(fin["choices"]),
              R"([{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}])");
    EXPECT_EQ(data[4], "[DONE]");
    EXPECT_TRUE(t.Finished());
    EXPECT_FALSE(t.Failed());
    EXPECT_EQ(t.usage().input_tokens, 25);
    EXPECT_EQ(t.usage().output_tokens, 15);
    EXPECT_EQ(t.usage().ToOpenAI().prompt_tokens, 30);
    EXPECT_EQ(t.content_chunks(), 2);
    EXPECT_EQ(t.stop_reason(), "end_turn");

    // Events after the end are ignored.
    std::string more;
    t.OnEvent("message_stop", R"({"type":"message_stop"})", more);
    EXPECT_EQ(more, "");
}

TEST(AnthropicStream, UsageChunkWhenAskedAndSplitFeeding) {
    AnthropicStreamTranslator whole(StreamOptions(true));
    std::string expected;
    ASSERT_TRUE(whole.Feed(TextStream(), expected));
    auto data = DataOf(expected);
    ASSERT_EQ(data.size(), 6U);
    bj::object usage = Parse(data[4]);
    EXPECT_TRUE(usage["choices"].as_array().empty());
    EXPECT_EQ(usage["usage"].at("prompt_tokens").as_int64(), 30);
    EXPECT_EQ(usage["usage"].at("completion_tokens").as_int64(), 15);
    EXPECT_EQ(usage["usage"].at("total_tokens").as_int64(), 45);
    EXPECT_EQ(data[5], "[DONE]");
    // The proxy's usage reader recognises the chunk.
    EXPECT_TRUE(json::HasEmptyChoices(data[4]));
    EXPECT_EQ(json::ExtractUsage(data[4]).completion_tokens, 15);

    // Bytes split anywhere (and CRLF line endings) give the same output.
    std::string crlf;
    for (char c : TextStream()) {
        if (c == '\n') {
            crlf += "\r\n";
        } else {
            crlf += c;
        }
    }
    for (size_t step : {size_t{1}, size_t{7}, size_t{64}}) {
        AnthropicStreamTranslator split(StreamOptions(true));
        std::string out;
        for (size_t i = 0; i < crlf.size(); i += step) {
            ASSERT_TRUE(split.Feed(std::string_view(crlf).substr(i, step), out));
        }
        EXPECT_EQ(out, expected) << "step " << step;
    }
}

TEST(AnthropicStream, ToolCallDeltas) {
    std::string events =
        kMessageStart +
        Sse("content_block_start",
            R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})") +
        Sse("content_block_delta",
            R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}})") +
        Sse("content_block_stop", R"({"type":"content_block_stop","index":0})") +
        Sse("content_block_start",
            R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_A","name":"get_weather","input":{}}})") +
        Sse("content_block_delta",
            R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}})") +
        Sse("content_block_delta",
            R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}})") +
        Sse("content_block_delta",
            R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\"}"}})") +
        Sse("content_block_stop", R"({"type":"content_block_stop","index":1})") +
        Sse("content_block_start",
            R"({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_B","name":"get_time","input":{}}})") +
        Sse("content_block_delta",
            R"({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}})") +
        Sse("content_block_stop", R"({"type":"content_block_stop","index":2})") +
        Sse("message_delta",
            R"({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":40}})") +
        Sse("message_stop", R"({"type":"message_stop"})");
    AnthropicStreamTranslator t(StreamOptions(false));
    std::string out;
    ASSERT_TRUE(t.Feed(events, out));
    auto data = DataOf(out);
    ASSERT_EQ(data.size(), 9U) << out;
    auto delta = [&](size_t i) {
        return bj::serialize(Parse(data[i])["choices"].as_array()[0].at("delta"));
    };
    EXPECT_EQ(delta(1), R"({"content":"Checking."})");
    EXPECT_EQ(delta(2), R"({"tool_calls":[{"index":0,"id":"toolu_A","type":"function",)"
                        R"("function":{"name":"get_weather","arguments":""}}]})");
    EXPECT_EQ(delta(3),
              R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Par"}}]})");
    EXPECT_EQ(delta(4), R"({"tool_calls":[{"index":0,"function":{"arguments":"is\"}"}}]})");
    EXPECT_EQ(delta(5), R"({"tool_calls":[{"index":1,"id":"toolu_B","type":"function",)"
                        R"("function":{"name":"get_time","arguments":""}}]})");
    EXPECT_EQ(delta(6), R"({"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]})");
    EXPECT_EQ(Parse(data[7])["choices"].as_array()[0].at("finish_reason").as_string(),
              "tool_calls");
    EXPECT_EQ(data[8], "[DONE]");
    EXPECT_EQ(t.usage().output_tokens, 40);

    // Concatenated argument deltas of each call are its complete JSON arguments.
    std::string args0;
    for (size_t i = 2; i <= 4; ++i) {
        args0 += Parse(data[i])["choices"]
                     .as_array()[0]
                     .at("delta")
                     .at("tool_calls")
                     .as_array()[0]
                     .at("function")
                     .at("arguments")
                     .as_string();
    }
    EXPECT_EQ(bj::serialize(Parse(args0)), R"({"city":"Paris"})");
}

TEST(AnthropicStream, ErrorEventEndsTheStream) {
    std::string events =
        kMessageStart +
        Sse("content_block_delta",
            R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})") +
        Sse("error",
            R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})") +
        Sse("message_stop", R"({"type":"message_stop"})");
    AnthropicStreamTranslator t(StreamOptions(true));
    std::string out;
    ASSERT_TRUE(t.Feed(events, out));
    auto data = DataOf(out);
    ASSERT_EQ(data.size(), 3U) << out;
    bj::object err = Parse(data[2]);
    EXPECT_EQ(err["error"].at("type").as_string(), "api_error");
    EXPECT_EQ(err["error"].at("code").as_string(), "service_unavailable");
    EXPECT_TRUE(t.Finished());
    ASSERT_TRUE(t.Failed());
    EXPECT_EQ(t.Error()->status, 503);
    EXPECT_EQ(t.Error()->anthropic_type, "overloaded_error");
    EXPECT_EQ(out.find("[DONE]"), std::string::npos) << "no [DONE] after an error";
}

TEST(AnthropicStream, UnreadableEventAndMissingPieces) {
    AnthropicStreamTranslator bad(StreamOptions(false));
    std::string out;
    bad.OnEvent("content_block_delta", "{not json", out);
    EXPECT_TRUE(bad.Failed());
    auto data = DataOf(out);
    ASSERT_EQ(data.size(), 1U);
    EXPECT_EQ(Parse(data[0])["error"].at("code").as_string(), "upstream_error");

    // No message_start, no message_delta: the role and finish chunks are still sent; unknown
    // events and thinking deltas produce nothing; the event name is used when `type` is absent.
    AnthropicStreamTranslator t(StreamOptions(false));
    std::string o2;
    t.OnEvent("future_event", R"({"type":"future_event","x":1})", o2);
    t.OnEvent(
        "content_block_delta",
        R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}})",
        o2);
    EXPECT_EQ(o2, "");
    t.OnEvent("content_block_delta", R"({"index":0,"delta":{"type":"text_delta","text":"x"}})", o2);
    t.OnEvent("message_stop", R"({"type":"message_stop"})", o2);
    auto d2 = DataOf(o2);
    ASSERT_EQ(d2.size(), 4U) << o2;
    EXPECT_TRUE(Parse(d2[0])["choices"].as_array()[0].at("delta").as_object().contains("role"));
    EXPECT_EQ(Parse(d2[2])["choices"].as_array()[0].at("finish_reason").as_string(), "stop");
    EXPECT_EQ(d2[3], "[DONE]");
    EXPECT_FALSE(t.usage().present);
}

TEST(AnthropicRobustness, EveryPrefixOfValidInputIsHandled) {
    const std::string request =
        R"({"model":"a","messages":[{"role":"system","content":"s"},{"role":"user","content":[)"
        R"({"type":"text","text":"q"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},)"
        R"({"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f",)"
        R"("arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}],)"
        R"("tools":[{"type":"function","function":{"name":"f"}}],"stop":["x"],"max_tokens":9})";
    ASSERT_TRUE(TranslateChatRequest(request, "m").has_value());
    for (size_t n = 0; n < request.size(); ++n) {
        auto r = TranslateChatRequest(std::string_view(request).substr(0, n), "m");
        ASSERT_FALSE(r.has_value()) << n;
        EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
    }

    const std::string response =
        R"({"id":"m","type":"message","content":[{"type":"text","text":"hi"},{"type":"tool_use",)"
        R"("id":"t","name":"f","input":{"a":[1,2]}}],"stop_reason":"tool_use",)"
        R"("usage":{"input_tokens":1,"output_tokens":2}})";
    ASSERT_TRUE(TranslateChatResponse(response, "a", 1).has_value());
    for (size_t n = 0; n < response.size(); ++n) {
        auto r = TranslateChatResponse(std::string_view(response).substr(0, n), "a", 1);
        ASSERT_FALSE(r.has_value()) << n;
        EXPECT_EQ(r.error().code, ErrorCode::kUpstreamError);
        EXPECT_EQ(MapError(500, std::string_view(response).substr(0, n)).status, 502);
    }

    // A stream cut anywhere: whatever was emitted is well-formed SSE with JSON chunks.
    const std::string stream = TextStream();
    for (size_t n = 0; n <= stream.size(); n += 3) {
        AnthropicStreamTranslator t(StreamOptions(true));
        std::string out;
        ASSERT_TRUE(t.Feed(std::string_view(stream).substr(0, n), out));
        for (const auto& d : DataOf(out)) {
            if (d != "[DONE]") {
                Parse(d);
            }
        }
        EXPECT_EQ(t.Finished(), out.ends_with("data: [DONE]\n\n")) << n;
    }
}

}  // namespace
}  // namespace conduit::gateway::anthropic
