#include "json/json_peek.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>

namespace conduit::json {
namespace {

namespace bj = boost::json;

PeekedRequest PeekOk(std::string body) {
    auto peek = PeekRequest(body);
    EXPECT_TRUE(peek.has_value()) << body << " -> " << (peek ? "" : peek.error().message);
    return peek.value_or(PeekedRequest{});
}

core::Error PeekError(std::string body) {
    auto peek = PeekRequest(body);
    EXPECT_FALSE(peek.has_value()) << body;
    return peek ? core::Error{} : peek.error();
}

std::string_view ModelToken(std::string_view body, const PeekedRequest& p) {
    return body.substr(p.model_offset, p.model_length);
}

bj::value ParseJson(std::string_view text) {
    boost::system::error_code ec;
    bj::value v = bj::parse(bj::string_view(text.data(), text.size()), ec);
    EXPECT_FALSE(ec) << "not valid JSON: " << text;
    return v;
}

/// Both texts parse to objects that are equal member by member, except for `ignored` members.
void ExpectSameExcept(std::string_view before,
                      std::string_view after,
                      std::initializer_list<std::string_view> ignored) {
    bj::value a = ParseJson(before);
    bj::value b = ParseJson(after);
    ASSERT_TRUE(a.is_object() && b.is_object()) << after;
    for (std::string_view key : ignored) {
        a.get_object().erase(bj::string_view(key.data(), key.size()));
        b.get_object().erase(bj::string_view(key.data(), key.size()));
    }
    EXPECT_EQ(a, b) << before << "\n" << after;
}

constexpr std::string_view kChat =
    R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi \"there\""}],)"
    R"("stream":true,"max_tokens":100,"n":2,"temperature":0.7,"stop":["a","b"],)"
    R"("tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]})";

// ---------------------------------------------------------------------------------------------
// PeekRequest: values and spans

TEST(PeekRequest, ReadsATypicalChatBody) {
    std::string body(kChat);
    auto peek = PeekRequest(body);
    ASSERT_TRUE(peek) << peek.error().message;
    EXPECT_EQ(peek->model, "gpt-4o");
    EXPECT_EQ(ModelToken(body, *peek), R"("gpt-4o")");
    EXPECT_EQ(peek->stream, true);
    EXPECT_FALSE(peek->has_stream_options);
    EXPECT_FALSE(peek->include_usage);
    EXPECT_EQ(peek->max_tokens, 100);
    EXPECT_EQ(peek->n, 2);
    EXPECT_TRUE(peek->has_messages);
    EXPECT_FALSE(peek->has_prompt);
    EXPECT_FALSE(peek->has_input);
    EXPECT_FALSE(peek->encoding_format);
    EXPECT_FALSE(peek->size);
    EXPECT_FALSE(peek->response_format_str);
    EXPECT_EQ(peek->object_offset, 0u);
    EXPECT_FALSE(peek->object_empty);
}

TEST(PeekRequest, LeavesTheBodyUnchangedButPadded) {
    std::string body(kChat);
    body.shrink_to_fit();
    ASSERT_TRUE(PeekRequest(body));
    EXPECT_EQ(body, kChat);
    EXPECT_GE(body.capacity(), body.size() + 64);
}

TEST(PeekRequest, ModelSpanIsExactInPrettyPrintedBodies) {
    std::string body =
        "\n  {\n    \"messages\" : [ ] ,\n    \"model\"  :\t\"my-\\\"alias\\\\\\u00e9\"  \n ,"
        " \"stream\" : false }  \n";
    PeekedRequest p = PeekOk(body);
    EXPECT_EQ(p.model, "my-\"alias\\\xC3\xA9");
    EXPECT_EQ(ModelToken(body, p), "\"my-\\\"alias\\\\\\u00e9\"");
    EXPECT_EQ(p.object_offset, 3u);
    EXPECT_EQ(p.stream, false);
}

TEST(PeekRequest, ReadsEmbeddingsBodies) {
    PeekedRequest p = PeekOk(
        R"({"input":["a","b"],"model":"text-embedding-3-small","encoding_format":"base64"})");
    EXPECT_EQ(p.model, "text-embedding-3-small");
    EXPECT_TRUE(p.has_input);
    EXPECT_FALSE(p.has_messages);
    EXPECT_EQ(p.encoding_format, "base64");
    EXPECT_FALSE(p.stream);
}

TEST(PeekRequest, ReadsImageBodies) {
    PeekedRequest p = PeekOk(R"({"prompt":"a cat","model":"dall-e-3","n":1,"size":"1024x1024",)"
                             R"("response_format":"b64_json","quality":"hd"})");
    EXPECT_EQ(p.model, "dall-e-3");
    EXPECT_TRUE(p.has_prompt);
    EXPECT_EQ(p.n, 1);
    EXPECT_EQ(p.size, "1024x1024");
    EXPECT_EQ(p.response_format_str, "b64_json");
}

TEST(PeekRequest, ObjectResponseFormatIsLeftToTheUpstream) {
    PeekedRequest p =
        PeekOk(R"({"model":"m","messages":[],"response_format":{"type":"json_object"}})");
    EXPECT_FALSE(p.response_format_str);
}

TEST(PeekRequest, ReadsStreamOptions) {
    PeekedRequest p = PeekOk(
        R"({"model":"m","stream":true,"stream_options":{"x":[1,{"y":2}],"include_usage":true}})");
    EXPECT_TRUE(p.has_stream_options);
    EXPECT_EQ(p.include_usage, true);
    EXPECT_FALSE(p.stream_options_empty);

    p = PeekOk(R"({"model":"m","stream":true,"stream_options":{}})");
    EXPECT_TRUE(p.has_stream_options);
    EXPECT_FALSE(p.include_usage);
    EXPECT_TRUE(p.stream_options_empty);
}

TEST(PeekRequest, MaxCompletionTokensWinsOverMaxTokens) {
    EXPECT_EQ(PeekOk(R"({"max_completion_tokens":7,"max_tokens":9})").max_tokens, 7);
    EXPECT_EQ(PeekOk(R"({"max_tokens":9,"max_completion_tokens":7})").max_tokens, 7);
    EXPECT_EQ(PeekOk(R"({"max_tokens":9})").max_tokens, 9);
    EXPECT_EQ(PeekOk(R"({"max_tokens":-3})").max_tokens, -3);  // range checks are not ours
}

TEST(PeekRequest, NullMeansAbsent) {
    std::string body =
        R"({"model":null,"stream":null,"stream_options":null,"max_tokens":null,"n":null,)"
        R"("messages":null,"prompt":null,"input":null,"size":null,"encoding_format":null,)"
        R"("response_format":null})";
    PeekedRequest p = PeekOk(body);
    EXPECT_FALSE(p.model);
    EXPECT_EQ(ModelToken(body, p), "null");  // kept so a rewrite replaces it
    EXPECT_FALSE(p.stream);
    EXPECT_FALSE(p.has_stream_options);
    EXPECT_EQ(p.stream_options_length, 4u);
    EXPECT_FALSE(p.max_tokens);
    EXPECT_FALSE(p.n);
    EXPECT_FALSE(p.has_messages);
    EXPECT_FALSE(p.has_prompt);
    EXPECT_FALSE(p.has_input);
    EXPECT_FALSE(p.size);
    EXPECT_FALSE(p.encoding_format);
    EXPECT_FALSE(p.response_format_str);
}

TEST(PeekRequest, MissingModelHasNoSpan) {
    PeekedRequest p = PeekOk(R"({"messages":[]})");
    EXPECT_FALSE(p.model);
    EXPECT_EQ(p.model_length, 0u);
}

TEST(PeekRequest, DuplicateKeysLastWins) {
    std::string body = R"({"model":"first","stream":true,"model":"second","stream":false})";
    PeekedRequest p = PeekOk(body);
    EXPECT_EQ(p.model, "second");
    EXPECT_EQ(ModelToken(body, p), R"("second")");
    EXPECT_EQ(p.stream, false);
}

TEST(PeekRequest, SkipsUnknownMembersOfEveryShape) {
    PeekedRequest p = PeekOk(
        R"({"a":{"b":[1,2,{"c":"}]\"{["}]},"d":-1.5e10,"e":true,"f":null,"g":"\ud83d\ude00",)"
        R"("mode":"x","modelx":1,"":0,"model":"m"})");
    EXPECT_EQ(p.model, "m");
}

TEST(PeekRequest, EmptyObject) {
    PeekedRequest p = PeekOk(" {} ");
    EXPECT_TRUE(p.object_empty);
    EXPECT_EQ(p.object_offset, 1u);
    EXPECT_FALSE(p.model);
}

// ---------------------------------------------------------------------------------------------
// PeekRequest: malformed and wrongly typed bodies

TEST(PeekRequest, RejectsMalformedJson) {
    for (const char* body : {
             "",
             "   ",
             "not json",
             R"({"model":"x","messages":[)",
             R"({"model":"x")",
             R"({"model":"x",)",
             R"({"model":"x",})",
             R"({"model":"x"} garbage)",
             R"({"model":"x"}})",
             R"({"model":"x"}{})",
             R"({"model" "x"})",
             R"({"model":"x" "stream":true})",
             R"({"model":"unterminated})",
             R"({"model":"bad \q escape"})",
             R"({"stream":tru})",
             R"({"stream":nul})",
             R"({"messages":[{"role":"user"})",
             R"({model:"x"})",
             "{\"model\":\"\xff\"}",
         }) {
        SCOPED_TRACE(body);
        core::Error e = PeekError(body);
        EXPECT_EQ(e.code, core::ErrorCode::kInvalidRequest);
        EXPECT_EQ(e.message, "We could not parse the JSON body of your request.");
        EXPECT_EQ(e.param, "");
    }
}

TEST(PeekRequest, SkippedValuesAreOnlyCheckedForBalance) {
    // Documented On-Demand limitation: the contents of members PeekRequest does not read are
    // skipped by bracket depth, so mismatched bracket kinds inside them go unnoticed (strings
    // and UTF-8 are still validated). The upstream rejects such a body.
    std::string body = R"({"messages":[},"model":"m"})";
    EXPECT_TRUE(PeekRequest(body));
}

TEST(PeekRequest, RejectsEveryTruncationOfAValidBody) {
    const std::string full(kChat);
    for (size_t len = 0; len < full.size(); ++len) {
        std::string body = full.substr(0, len);
        auto peek = PeekRequest(body);
        EXPECT_FALSE(peek) << "accepted truncated body: " << body;
    }
}

TEST(PeekRequest, RejectsNonObjectTopLevel) {
    for (const char* body : {"[1,2]", R"("model")", "42", "null", "true", "[]"}) {
        SCOPED_TRACE(body);
        core::Error e = PeekError(body);
        EXPECT_EQ(e.code, core::ErrorCode::kInvalidRequest);
        EXPECT_EQ(e.message, "The request body must be a JSON object.");
    }
}

TEST(PeekRequest, TypeChecksTheFieldsItReads) {
    struct Case {
        const char* body;
        const char* param;
    };
    for (const Case& c : {
             Case{R"({"model":42})", "model"},
             Case{R"({"model":["a"]})", "model"},
             Case{R"({"model":{"id":"a"}})", "model"},
             Case{R"({"model":true})", "model"},
             Case{R"({"stream":"yes"})", "stream"},
             Case{R"({"stream":1})", "stream"},
             Case{R"({"n":1.5})", "n"},
             Case{R"({"n":"2"})", "n"},
             Case{R"({"n":1e2})", "n"},
             Case{R"({"n":99999999999999999999})", "n"},
             Case{R"({"max_tokens":"100"})", "max_tokens"},
             Case{R"({"max_completion_tokens":[1]})", "max_completion_tokens"},
             Case{R"({"stream_options":true})", "stream_options"},
             Case{R"({"stream_options":[]})", "stream_options"},
             Case{R"({"stream_options":{"include_usage":"yes"}})", "stream_options.include_usage"},
             Case{R"({"encoding_format":1})", "encoding_format"},
             Case{R"({"size":1024})", "size"},
         }) {
        SCOPED_TRACE(c.body);
        core::Error e = PeekError(c.body);
        EXPECT_EQ(e.code, core::ErrorCode::kInvalidRequest);
        EXPECT_EQ(e.param, c.param);
        EXPECT_NE(e.message.find(std::string("'") + c.param + "'"), std::string::npos) << e.message;
    }
}

TEST(PeekRequest, HandlesLargeBodiesWithAOneOffParser) {
    std::string body = R"({"model":"big","messages":[{"role":"user","content":")";
    body.append(3u << 20, 'x');
    body.append(R"("}],"stream":true})");
    PeekedRequest p = PeekOk(body);
    EXPECT_EQ(p.model, "big");
    EXPECT_EQ(p.stream, true);
    // The thread's parser still works for small bodies afterwards.
    EXPECT_EQ(PeekOk(R"({"model":"small"})").model, "small");
}

// ---------------------------------------------------------------------------------------------
// ReplaceModel

std::string Replace(std::string body, std::string_view new_model) {
    auto peek = PeekRequest(body);
    EXPECT_TRUE(peek) << body;
    return peek ? ReplaceModel(body, *peek, new_model) : std::string();
}

TEST(ReplaceModel, ChangesOnlyTheModelBytes) {
    std::string out = Replace(std::string(kChat), "gpt-4o-2024-08-06");
    std::string expected(kChat);
    expected.replace(expected.find("\"gpt-4o\""), 8, "\"gpt-4o-2024-08-06\"");
    EXPECT_EQ(out, expected);
    ExpectSameExcept(kChat, out, {"model"});
    EXPECT_EQ(ParseJson(out).at("model"), "gpt-4o-2024-08-06");
}

TEST(ReplaceModel, EscapesTheNewModel) {
    const std::string nasty = "a\"b\\c\nd\x01\xC3\xA9/";
    std::string out = Replace(std::string(kChat), nasty);
    ExpectSameExcept(kChat, out, {"model"});
    EXPECT_EQ(ParseJson(out).at("model"), bj::string_view(nasty.data(), nasty.size()));
}

TEST(ReplaceModel, WorksWhereverTheModelIs) {
    for (const char* body : {
             R"({"messages":[],"model":"x"})",
             R"({ "messages" : [ ] , "model" : "x" , "n" : 1 })",
             "{\n\t\"model\"\n:\n\"x\"\n}\n",
             R"({"model":"x\"y"})",
             R"({"model":null,"stream":false})",
         }) {
        SCOPED_TRACE(body);
        std::string out = Replace(body, "new");
        ExpectSameExcept(body, out, {"model"});
        EXPECT_EQ(ParseJson(out).at("model"), "new");
    }
}

TEST(ReplaceModel, AddsAModelWhenThereIsNone) {
    EXPECT_EQ(Replace(R"({"messages":[]})", "m"), R"({"model":"m","messages":[]})");
    EXPECT_EQ(Replace("{}", "m"), R"({"model":"m"})");
    EXPECT_EQ(Replace(" { } ", "m"), R"( {"model":"m" } )");
}

// ---------------------------------------------------------------------------------------------
// ForceIncludeUsage / RewriteForUpstream

std::string ForceUsage(std::string body) {
    auto peek = PeekRequest(body);
    EXPECT_TRUE(peek) << body;
    return peek ? ForceIncludeUsage(body, *peek) : std::string();
}

void ExpectUsageForced(std::string_view before, std::string_view after) {
    ExpectSameExcept(before, after, {"stream_options"});
    bj::value v = ParseJson(after);
    ASSERT_TRUE(v.is_object());
    const bj::value* options = v.get_object().if_contains("stream_options");
    ASSERT_TRUE(options != nullptr && options->is_object()) << after;
    const bj::value* include = options->get_object().if_contains("include_usage");
    ASSERT_NE(include, nullptr) << after;
    EXPECT_EQ(*include, true) << after;
}

TEST(ForceIncludeUsage, AddsStreamOptionsWhenAbsent) {
    const std::string body = R"({"model":"m","stream":true,"messages":[]})";
    std::string out = ForceUsage(body);
    EXPECT_EQ(
        out,
        R"({"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]})");
    ExpectUsageForced(body, out);
}

TEST(ForceIncludeUsage, AddsIncludeUsageToExistingOptions) {
    std::string body = R"({"model":"m","stream":true,"stream_options":{}})";
    std::string out = ForceUsage(body);
    EXPECT_EQ(out, R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})");
    ExpectUsageForced(body, out);

    body = R"({"model":"m","stream":true,"stream_options":{ "other" : [1] }})";
    out = ForceUsage(body);
    EXPECT_EQ(
        out,
        R"({"model":"m","stream":true,"stream_options":{"include_usage":true, "other" : [1] }})");
    ExpectUsageForced(body, out);
    EXPECT_EQ(ParseJson(out).at("stream_options").at("other"), ParseJson("[1]"));
}

TEST(ForceIncludeUsage, TurnsFalseOrNullIntoTrue) {
    struct Case {
        const char* body;
        const char* expected;
    };
    for (const Case& c : {
             Case{R"({"stream":true,"stream_options":{"include_usage":false},"model":"m"})",
                  R"({"stream":true,"stream_options":{"include_usage":true},"model":"m"})"},
             Case{R"({"stream":true,"stream_options":{"a":1,"include_usage" : null ,"b":2}})",
                  R"({"stream":true,"stream_options":{"a":1,"include_usage" : true ,"b":2}})"},
         }) {
        SCOPED_TRACE(c.body);
        std::string out = ForceUsage(c.body);
        EXPECT_EQ(out, c.expected);
        ExpectUsageForced(c.body, out);
    }
}

TEST(ForceIncludeUsage, EditsTheLastOfDuplicateKeys) {
    EXPECT_EQ(
        ForceUsage(
            R"({"stream":true,"stream_options":{"include_usage":false,"include_usage":false}})"),
        R"({"stream":true,"stream_options":{"include_usage":false,"include_usage":true}})");
    EXPECT_EQ(ForceUsage(
                  R"({"stream":true,"stream_options":{"include_usage":true},"stream_options":{}})"),
              R"({"stream":true,"stream_options":{"include_usage":true},)"
              R"("stream_options":{"include_usage":true}})");
}

TEST(ForceIncludeUsage, ReplacesNullStreamOptions) {
    const std::string body = R"({"model":"m","stream":true,"stream_options":null})";
    std::string out = ForceUsage(body);
    EXPECT_EQ(out, R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})");
}

TEST(ForceIncludeUsage, LeavesOtherBodiesAlone) {
    for (const char* body : {
             R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})",
             R"({"model":"m","stream":false})",
             R"({"model":"m"})",
             R"({"model":"m","stream":null})",
             "{}",
         }) {
        EXPECT_EQ(ForceUsage(body), body);
    }
}

TEST(RewriteForUpstream, CombinesBothEditsInOneCopy) {
    std::string body =
        R"({"stream":true,"model":"alias","messages":[{"role":"user","content":"x"}]})";
    auto peek = PeekRequest(body);
    ASSERT_TRUE(peek);
    EXPECT_TRUE(NeedsIncludeUsage(*peek));
    std::string out = RewriteForUpstream(body, *peek, "provider-model", true);
    EXPECT_EQ(out,
              R"({"stream_options":{"include_usage":true},"stream":true,"model":"provider-model",)"
              R"("messages":[{"role":"user","content":"x"}]})");

    body = R"({"model":"a","stream":true,"stream_options":{"include_usage":false},"n":1})";
    peek = PeekRequest(body);
    ASSERT_TRUE(peek);
    out = RewriteForUpstream(body, *peek, "b", true);
    EXPECT_EQ(out, R"({"model":"b","stream":true,"stream_options":{"include_usage":true},"n":1})");

    // Usage before model in the body: edits are applied in body order.
    body = R"({"stream_options":{},"stream":true,"model":"a"})";
    peek = PeekRequest(body);
    ASSERT_TRUE(peek);
    out = RewriteForUpstream(body, *peek, "bb", true);
    EXPECT_EQ(out, R"({"stream_options":{"include_usage":true},"stream":true,"model":"bb"})");
}

TEST(RewriteForUpstream, InsertsModelAndUsageTogether) {
    std::string body = R"({"stream":true})";
    auto peek = PeekRequest(body);
    ASSERT_TRUE(peek);
    std::string out = RewriteForUpstream(body, *peek, "m", true);
    EXPECT_EQ(out, R"({"model":"m","stream_options":{"include_usage":true},"stream":true})");
}

TEST(RewriteForUpstream, NoEditsIsAPlainCopy) {
    std::string body(kChat);
    auto peek = PeekRequest(body);
    ASSERT_TRUE(peek);
    EXPECT_EQ(RewriteForUpstream(body, *peek, std::nullopt, false), kChat);
    EXPECT_FALSE(NeedsIncludeUsage(PeekedRequest{}));
}

TEST(RewriteForUpstream, AlwaysProducesValidJson) {
    for (const char* body : {
             "{}",
             R"({"stream":true})",
             R"( { "stream" : true , "stream_options" : { } } )",
             R"({"stream":true,"stream_options":{"include_usage":null}})",
             R"({"stream":true,"stream_options":null,"model":null})",
             "{\r\n  \"model\": \"x\",\r\n  \"stream\": true\r\n}\r\n",
         }) {
        SCOPED_TRACE(body);
        std::string copy = body;
        auto peek = PeekRequest(copy);
        ASSERT_TRUE(peek);
        for (bool usage : {false, true}) {
            std::string out = RewriteForUpstream(copy, *peek, "z\"z", usage);
            bj::value v = ParseJson(out);
            EXPECT_EQ(v.at("model"), "z\"z");
            std::string again = out;
            EXPECT_TRUE(PeekRequest(again)) << out;
        }
    }
}

}  // namespace
}  // namespace conduit::json
