#include "realtime/hub_protocol.hpp"

#include <gtest/gtest.h>

namespace conduit::realtime {
namespace {

std::string R(std::string_view s) { return std::string(s) + '\x1e'; }

TEST(RealtimeFrameReader, SplitsRecordsAndBuffersPartial) {
    FrameReader reader(1024);
    std::vector<std::string> out;
    ASSERT_TRUE(reader.Feed("{\"type\":6}\x1e{\"ty", out));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0], "{\"type\":6}");
    EXPECT_EQ(reader.pending(), 4u);
    ASSERT_TRUE(reader.Feed("pe\":7}\x1e\x1e", out));
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[1], "{\"type\":7}");
    EXPECT_EQ(out[2], "");
    EXPECT_EQ(reader.pending(), 0u);
}

TEST(RealtimeFrameReader, EnforcesMaximum) {
    FrameReader reader(8);
    std::vector<std::string> out;
    EXPECT_TRUE(reader.Feed("12345678\x1e", out));
    EXPECT_FALSE(reader.Feed("123456789\x1e", out));
    FrameReader partial(8);
    EXPECT_TRUE(partial.Feed("12345", out));
    EXPECT_FALSE(partial.Feed("6789", out));
}

TEST(RealtimeHandshake, ParsesAndValidates) {
    std::string err;
    auto hs = ParseHandshake("{\"protocol\":\"json\",\"version\":1}", err);
    ASSERT_TRUE(hs);
    EXPECT_EQ(hs->protocol, "json");
    EXPECT_EQ(hs->version, 1);
    EXPECT_EQ(ValidateHandshake(*hs, false), "");
    hs->version = 2;
    EXPECT_EQ(ValidateHandshake(*hs, true), "");
    EXPECT_EQ(ValidateHandshake(*hs, false),
              "The server does not support version 2 of the 'json' protocol.");
    hs->version = 3;
    EXPECT_EQ(ValidateHandshake(*hs, true),
              "The server does not support version 3 of the 'json' protocol.");
    HandshakeRequest xyz{"xyz", 1};
    EXPECT_EQ(ValidateHandshake(xyz, true), "The protocol 'xyz' is not supported.");
    EXPECT_FALSE(ParseHandshake("not json", err));
    EXPECT_FALSE(ParseHandshake("{\"protocol\":\"json\"}", err));
    EXPECT_FALSE(ParseHandshake("{\"protocol\":1,\"version\":1}", err));
    EXPECT_EQ(HandshakeResponse(), R("{}"));
    EXPECT_EQ(HandshakeErrorResponse("Handshake was canceled."),
              R("{\"error\":\"Handshake was canceled.\"}"));
}

TEST(RealtimeHubProtocol, ParsesCapturedClientMessages) {
    auto r = ParseMessage(
        "{\"target\":\"Echo\",\"arguments\":[\"hello\"],\"invocationId\":\"0\",\"type\":1}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk) << r.error;
    EXPECT_EQ(r.message.type, MessageType::kInvocation);
    EXPECT_EQ(r.message.target, "Echo");
    EXPECT_EQ(*r.message.invocation_id, "0");
    ASSERT_EQ(r.message.arguments.size(), 1u);
    EXPECT_EQ(r.message.arguments[0].as_string(), "hello");

    r = ParseMessage("{\"target\":\"Echo\",\"arguments\":[\"fire-and-forget\"],\"type\":1}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_FALSE(r.message.invocation_id);

    r = ParseMessage(
        "{\"target\":\"UploadSum\",\"arguments\":[],\"invocationId\":\"4\",\"streamIds\":[\"3\"],"
        "\"type\":1}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    ASSERT_EQ(r.message.stream_ids.size(), 1u);
    EXPECT_EQ(r.message.stream_ids[0], "3");

    r = ParseMessage(
        "{\"target\":\"Counter\",\"arguments\":[3],\"invocationId\":\"2\",\"type\":4}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(r.message.type, MessageType::kStreamInvocation);

    r = ParseMessage("{\"invocationId\":\"3\",\"item\":1,\"type\":2}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(r.message.item.as_int64(), 1);

    r = ParseMessage("{\"invocationId\":\"3\",\"type\":3}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_FALSE(r.message.result);
    EXPECT_FALSE(r.message.error);

    r = ParseMessage("{\"invocationId\":\"soCXwQv\",\"result\":42,\"type\":3}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(r.message.result->as_int64(), 42);

    r = ParseMessage(
        "{\"type\":3,\"invocationId\":\"x\",\"error\":\"Client didn't provide a result.\"}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(*r.message.error, "Client didn't provide a result.");

    r = ParseMessage("{\"type\":5,\"invocationId\":\"2\"}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(r.message.type, MessageType::kCancelInvocation);

    EXPECT_EQ(ParseMessage("{\"type\":6}").status, ParseResult::Status::kOk);
    r = ParseMessage("{\"type\":7,\"error\":\"Bye\",\"allowReconnect\":true}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(*r.message.error, "Bye");
    EXPECT_TRUE(r.message.allow_reconnect);

    r = ParseMessage("{\"type\":8,\"sequenceId\":2}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(r.message.sequence_id, 2);
    r = ParseMessage("{\"type\":9,\"sequenceId\":1}");
    ASSERT_EQ(r.status, ParseResult::Status::kOk);
    EXPECT_EQ(r.message.type, MessageType::kSequence);

    // headers and unknown fields are ignored.
    r = ParseMessage(
        "{\"type\":1,\"target\":\"A\",\"arguments\":[],\"headers\":{\"a\":\"b\"},\"zzz\":1}");
    EXPECT_EQ(r.status, ParseResult::Status::kOk);
}

TEST(RealtimeHubProtocol, RejectsMalformed) {
    const char* bad[] = {
        "",
        "[]",
        "{",
        "{\"type\":\"1\"}",
        "{\"target\":\"A\",\"arguments\":[]}",
        "{\"type\":1,\"arguments\":[]}",
        "{\"type\":1,\"target\":\"A\"}",
        "{\"type\":1,\"target\":\"A\",\"arguments\":{}}",
        "{\"type\":1,\"target\":5,\"arguments\":[]}",
        "{\"type\":1,\"target\":\"A\",\"arguments\":[],\"streamIds\":[1]}",
        "{\"type\":4,\"target\":\"A\",\"arguments\":[]}",
        "{\"type\":2,\"invocationId\":\"1\"}",
        "{\"type\":3}",
        "{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"x\"}",
        "{\"type\":8}",
        "{\"type\":9,\"sequenceId\":\"1\"}",
        "{\"type\":7,\"allowReconnect\":\"yes\"}",
    };
    for (const char* b : bad) {
        auto r = ParseMessage(b);
        EXPECT_EQ(r.status, ParseResult::Status::kError) << b;
        EXPECT_FALSE(r.error.empty()) << b;
    }
    EXPECT_EQ(ParseMessage("{\"type\":42}").status, ParseResult::Status::kUnknownType);
    std::string deep(200, '[');
    EXPECT_EQ(ParseMessage("{\"type\":1,\"target\":\"A\",\"arguments\":" + deep).status,
              ParseResult::Status::kError);
}

TEST(RealtimeHubProtocol, SerializesCapturedServerMessages) {
    std::string out;
    WriteCompletion(out, "0", std::string_view("\"hello\""), std::nullopt);
    EXPECT_EQ(out, R("{\"type\":3,\"invocationId\":\"0\",\"result\":\"hello\"}"));
    out.clear();
    WriteInvocation(out, std::nullopt, "ReceiveMessage", "[\"server\",\"hi all\"]");
    EXPECT_EQ(
        out, R("{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"server\",\"hi all\"]}"));
    out.clear();
    WriteCompletion(out, "1", std::string_view("null"), std::nullopt);
    EXPECT_EQ(out, R("{\"type\":3,\"invocationId\":\"1\",\"result\":null}"));
    out.clear();
    WriteStreamItem(out, "2", "0");
    EXPECT_EQ(out, R("{\"type\":2,\"invocationId\":\"2\",\"item\":0}"));
    out.clear();
    WriteCompletion(out, "2", std::nullopt, std::nullopt);
    EXPECT_EQ(out, R("{\"type\":3,\"invocationId\":\"2\"}"));
    out.clear();
    WriteCompletion(out, "4", std::string_view("6"), std::nullopt);
    EXPECT_EQ(out, R("{\"type\":3,\"invocationId\":\"4\",\"result\":6}"));
    out.clear();
    WriteInvocation(out, std::string_view("soCXwQv"), "GetClientValue", "[21]");
    EXPECT_EQ(out, R("{\"type\":1,\"invocationId\":\"soCXwQv\",\"target\":\"GetClientValue\","
                     "\"arguments\":[21]}"));
    out.clear();
    WriteCompletion(
        out, "6", std::nullopt,
        std::string_view("An unexpected error occurred invoking 'Fail' on the server."));
    EXPECT_EQ(out, R("{\"type\":3,\"invocationId\":\"6\",\"error\":\"An unexpected error occurred "
                     "invoking 'Fail' on the server.\"}"));
    out.clear();
    WritePing(out);
    EXPECT_EQ(out, R("{\"type\":6}"));
    out.clear();
    WriteClose(out, std::nullopt, false);
    EXPECT_EQ(out, R("{\"type\":7}"));
    out.clear();
    WriteClose(out, std::string_view("Bye"), true);
    EXPECT_EQ(out, R("{\"type\":7,\"error\":\"Bye\",\"allowReconnect\":true}"));
    out.clear();
    WriteAck(out, 2);
    EXPECT_EQ(out, R("{\"type\":8,\"sequenceId\":2}"));
    out.clear();
    WriteSequence(out, 1);
    EXPECT_EQ(out, R("{\"type\":9,\"sequenceId\":1}"));
    out.clear();
    WriteInvocation(out, std::string_view("4"), "UploadSum", "[]", {"3"});
    EXPECT_EQ(out, R("{\"type\":1,\"invocationId\":\"4\",\"target\":\"UploadSum\",\"arguments\":[],"
                     "\"streamIds\":[\"3\"]}"));
    out.clear();
    WriteCancelInvocation(out, "2");
    EXPECT_EQ(out, R("{\"type\":5,\"invocationId\":\"2\"}"));
    out.clear();
    WriteStreamInvocation(out, "2", "Counter", "[3]");
    EXPECT_EQ(out,
              R("{\"type\":4,\"invocationId\":\"2\",\"target\":\"Counter\",\"arguments\":[3]}"));
}

TEST(RealtimeHubProtocol, EscapesStringsAndRoundTrips) {
    std::string out;
    WriteInvocation(out, std::nullopt, "Say\"\n", "[\"a\\u001eb\"]");
    std::vector<std::string> records;
    FrameReader reader(1024);
    ASSERT_TRUE(reader.Feed(out, records));
    ASSERT_EQ(records.size(), 1u);
    auto r = ParseMessage(records[0]);
    ASSERT_EQ(r.status, ParseResult::Status::kOk) << r.error;
    EXPECT_EQ(r.message.target, "Say\"\n");
    EXPECT_EQ(r.message.arguments[0].as_string(),
              "a\x1e"
              "b");
    EXPECT_EQ(ToJson(r.message.arguments), "[\"a\\u001eb\"]");
}

}  // namespace
}  // namespace conduit::realtime
