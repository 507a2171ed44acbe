#include "json/sse.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::json {
namespace {

/// An owned copy of SseScanner::Event, for comparing.
struct Seen {
    std::string raw;
    std::string data;
    std::string event_name;
    bool is_comment_only = false;
    bool has_data = false;

    bool operator==(const Seen&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Seen& s) {
    return os << "{raw=" << ::testing::PrintToString(s.raw)
              << " data=" << ::testing::PrintToString(s.data) << " event=" << s.event_name
              << " comment_only=" << s.is_comment_only << " has_data=" << s.has_data << "}";
}

Seen Copy(const SseScanner::Event& e) {
    return Seen{std::string(e.raw), e.data, std::string(e.event_name), e.is_comment_only,
                e.has_data};
}

/// Feeds `chunks` in order; returns the events and puts the remainder in `rest`.
std::vector<Seen> Scan(const std::vector<std::string_view>& chunks,
                       std::string* rest = nullptr,
                       size_t max = SseScanner::kDefaultMaxEventBytes) {
    SseScanner scanner(max);
    std::vector<Seen> seen;
    for (std::string_view chunk : chunks) {
        EXPECT_TRUE(
            scanner.Feed(chunk, [&seen](const SseScanner::Event& e) { seen.push_back(Copy(e)); }));
    }
    std::string remainder = scanner.TakeRemainder();
    if (rest != nullptr) {
        *rest = remainder;
    }
    return seen;
}

std::string Concat(const std::vector<Seen>& events, std::string_view rest) {
    std::string all;
    for (const Seen& e : events) {
        all += e.raw;
    }
    all += rest;
    return all;
}

constexpr std::string_view kOpenAiStream =
    "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
    "\"total_tokens\":5}}\n\n"
    "data: [DONE]\n\n";

TEST(SseScanner, SplitsAnOpenAiStream) {
    std::string rest;
    std::vector<Seen> events = Scan({kOpenAiStream}, &rest);
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[0].data, R"({"id":"1","choices":[{"delta":{"content":"Hel"}}]})");
    EXPECT_FALSE(events[0].is_comment_only);
    EXPECT_TRUE(events[1].is_comment_only);
    EXPECT_EQ(events[1].raw, ": keep-alive\n\n");
    EXPECT_EQ(events[1].data, "");
    EXPECT_TRUE(MayContainUsage(events[2].data));
    EXPECT_FALSE(MayContainUsage(events[0].data));
    EXPECT_EQ(events[3].data, "[DONE]");
    EXPECT_EQ(rest, "");
    EXPECT_EQ(Concat(events, rest), kOpenAiStream);
}

TEST(SseScanner, ParsesFields) {
    std::vector<Seen> events = Scan({
        "event: message_start\ndata: {\"a\":1}\n\n"
        "data:no-space\n\n"
        "data:  two spaces\n\n"
        "data: line1\ndata: line2\ndata\ndata:\n\n"
        "id: 7\nretry: 1000\n\n"
        ": comment\ndata: after comment\n: another\n\n"
        "event: a\nevent: b\nunknown: x\n\n"
        "event\n\n",
    });
    ASSERT_EQ(events.size(), 8u);
    EXPECT_EQ(events[0].event_name, "message_start");
    EXPECT_EQ(events[0].data, "{\"a\":1}");
    EXPECT_EQ(events[1].data, "no-space");
    EXPECT_EQ(events[2].data, " two spaces");
    EXPECT_EQ(events[3].data, "line1\nline2\n\n");
    EXPECT_TRUE(events[3].has_data);
    EXPECT_EQ(events[4].raw, "id: 7\nretry: 1000\n\n");
    EXPECT_FALSE(events[4].has_data);
    EXPECT_FALSE(events[4].is_comment_only);
    EXPECT_EQ(events[5].data, "after comment");
    EXPECT_FALSE(events[5].is_comment_only);
    EXPECT_EQ(events[6].event_name, "b");
    EXPECT_FALSE(events[6].has_data);
    EXPECT_EQ(events[7].event_name, "");
}

TEST(SseScanner, HandlesEveryLineEnding) {
    std::string rest;
    std::vector<Seen> events = Scan(
        {
            "data: crlf\r\n\r\n"
            "data: cr\r\r"
            "data: lf\n\n"
            "event: mixed\r\ndata: a\rdata: b\n\r\n",
        },
        &rest);
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[0].raw, "data: crlf\r\n\r\n");
    EXPECT_EQ(events[0].data, "crlf");
    EXPECT_EQ(events[1].raw, "data: cr\r\r");
    EXPECT_EQ(events[1].data, "cr");
    EXPECT_EQ(events[2].data, "lf");
    EXPECT_EQ(events[3].raw, "event: mixed\r\ndata: a\rdata: b\n\r\n");
    EXPECT_EQ(events[3].data, "a\nb");
    EXPECT_EQ(events[3].event_name, "mixed");
    EXPECT_EQ(rest, "");
}

TEST(SseScanner, ReportsEventsEndingInABareCrImmediately) {
    SseScanner scanner;
    std::vector<Seen> seen;
    auto collect = [&seen](const SseScanner::Event& e) { seen.push_back(Copy(e)); };
    ASSERT_TRUE(scanner.Feed("data: a\r\r", collect));
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].data, "a");
    EXPECT_EQ(scanner.BufferedBytes(), 0u);
}

TEST(SseScanner, WaitsForTheLfOfACrlfBlankLine) {
    SseScanner scanner;
    std::vector<Seen> seen;
    auto collect = [&seen](const SseScanner::Event& e) { seen.push_back(Copy(e)); };
    ASSERT_TRUE(scanner.Feed("data: a\r\n\r", collect));
    EXPECT_TRUE(seen.empty());
    ASSERT_TRUE(scanner.Feed("\ndata: b\r\n\r\n", collect));
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].raw, "data: a\r\n\r\n");
    EXPECT_EQ(seen[1].raw, "data: b\r\n\r\n");
}

/// Inputs whose events do not depend on how they are split.
const std::vector<std::string>& SplitInvariantInputs() {
    static const std::vector<std::string> inputs = {
        std::string(kOpenAiStream),
        "event: e1\r\ndata: {\"x\":1}\r\n\r\n: ping\r\n\r\ndata: a\r\ndata: b\r\n\r\n"
        "id: 9\r\nretry: 5\r\ndata: [DONE]\r\n\r\n",
        "data: cr1\r\rdata: cr2\revent: z\r\r: c\r\rdata: [DONE]\r\r",
        "data: lf\n\ndata: crlf\r\n\r\n\ndata: mixed\r\ndata: x\n\n: tail\n\npartial: ev",
        "\xEF\xBB\xBF"
        "data: bom\n\n",
    };
    return inputs;
}

TEST(SseScanner, SameEventsAtEverySplitPoint) {
    for (const std::string& input : SplitInvariantInputs()) {
        SCOPED_TRACE(::testing::PrintToString(input));
        std::string whole_rest;
        const std::vector<Seen> whole = Scan({input}, &whole_rest);
        EXPECT_EQ(Concat(whole, whole_rest), input);
        for (size_t cut = 0; cut <= input.size(); ++cut) {
            std::string_view in(input);
            std::string rest;
            std::vector<Seen> split = Scan({in.substr(0, cut), in.substr(cut)}, &rest);
            EXPECT_EQ(split, whole) << "cut at " << cut;
            EXPECT_EQ(rest, whole_rest) << "cut at " << cut;
        }
        // Two cuts, and one byte at a time.
        for (size_t a = 0; a <= input.size(); a += 3) {
            for (size_t b = a; b <= input.size(); b += 5) {
                std::string_view in(input);
                std::string rest;
                std::vector<Seen> split =
                    Scan({in.substr(0, a), in.substr(a, b - a), in.substr(b)}, &rest);
                EXPECT_EQ(split, whole) << "cuts at " << a << ", " << b;
            }
        }
        std::vector<std::string_view> bytes;
        for (size_t i = 0; i < input.size(); ++i) {
            bytes.push_back(std::string_view(input).substr(i, 1));
        }
        std::string rest;
        EXPECT_EQ(Scan(bytes, &rest), whole);
        EXPECT_EQ(rest, whole_rest);
    }
}

TEST(SseScanner, NeverLosesOrReordersBytes) {
    // A bare CR that is followed by an LF only in a later chunk makes the split visible (an
    // extra blank-line event), but the bytes forwarded and the data seen stay the same.
    const std::string input = "data: a\r\r\ndata: b\r\n\r\ndata: c\n\r\rdata: d\r\r\n\r\n: x\r";
    for (size_t cut = 0; cut <= input.size(); ++cut) {
        std::string_view in(input);
        std::string rest;
        std::vector<Seen> events = Scan({in.substr(0, cut), in.substr(cut)}, &rest);
        EXPECT_EQ(Concat(events, rest), input) << "cut at " << cut;
        std::vector<std::string> data;
        for (const Seen& e : events) {
            if (e.has_data) {
                data.push_back(e.data);
            }
        }
        EXPECT_EQ(data, (std::vector<std::string>{"a", "b", "c", "d"})) << "cut at " << cut;
    }
}

TEST(SseScanner, KeepsAPartialEventUntilTheEnd) {
    SseScanner scanner;
    int calls = 0;
    auto count = [&calls](const SseScanner::Event&) { ++calls; };
    ASSERT_TRUE(scanner.Feed("data: one\n\ndata: par", count));
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(scanner.BufferedBytes(), 9u);
    ASSERT_TRUE(scanner.Feed("tial\n", count));
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(scanner.TakeRemainder(), "data: partial\n");
    EXPECT_EQ(scanner.BufferedBytes(), 0u);
    // Usable again for a new stream.
    ASSERT_TRUE(scanner.Feed("data: x\n\n", count));
    EXPECT_EQ(calls, 2);
}

TEST(SseScanner, ReportsFromTheCallersBufferWhenNothingIsPending) {
    const std::string chunk = "data: a\n\ndata: b\n\n";
    SseScanner scanner;
    std::vector<const char*> where;
    ASSERT_TRUE(scanner.Feed(
        chunk, [&where](const SseScanner::Event& e) { where.push_back(e.raw.data()); }));
    ASSERT_EQ(where.size(), 2u);
    EXPECT_EQ(where[0], chunk.data());
    EXPECT_EQ(where[1], chunk.data() + 9);
}

TEST(SseScanner, WorksWithStdFunction) {
    SseScanner scanner;
    std::string data;
    const std::function<void(const SseScanner::Event&)> fn = [&data](const SseScanner::Event& e) {
        data += e.data;
    };
    ASSERT_TRUE(scanner.Feed("data: a\n\n", fn));
    ASSERT_TRUE(scanner.Feed("data: b\n\n", fn));
    EXPECT_EQ(data, "ab");
}

TEST(SseScanner, EnforcesTheEventSizeLimit) {
    {
        SseScanner scanner(16);
        int calls = 0;
        auto count = [&calls](const SseScanner::Event&) { ++calls; };
        ASSERT_TRUE(scanner.Feed("data: 12345678\n\n", count));  // exactly 16 bytes
        EXPECT_EQ(calls, 1);
        ASSERT_TRUE(scanner.Feed("data: 1234", count));
        EXPECT_FALSE(scanner.Feed("5678901", count));  // 17 bytes pending
        EXPECT_TRUE(scanner.Failed());
        EXPECT_FALSE(scanner.Feed("\n\ndata: ok\n\n", count));
        EXPECT_EQ(calls, 1);
    }
    {
        SseScanner scanner(16);
        int calls = 0;
        auto count = [&calls](const SseScanner::Event&) { ++calls; };
        // A complete event over the limit fails too, after the events before it.
        EXPECT_FALSE(scanner.Feed("data: a\n\ndata: 0123456789abcdef\n\ndata: b\n\n", count));
        EXPECT_EQ(calls, 1);
        EXPECT_TRUE(scanner.Failed());
    }
    {
        // A never-ending line fails once it passes the limit, without waiting for a newline.
        SseScanner scanner(1024);
        auto ignore = [](const SseScanner::Event&) {};
        bool ok = true;
        for (int i = 0; i < 100 && ok; ++i) {
            ok = scanner.Feed(std::string(100, 'x'), ignore);
        }
        EXPECT_FALSE(ok);
        EXPECT_LE(scanner.BufferedBytes(), 1124u);
    }
}

TEST(SseScanner, IsDoneEvent) {
    std::vector<bool> done;
    SseScanner scanner;
    ASSERT_TRUE(
        scanner.Feed("data: [DONE]\n\ndata:[DONE]\r\n\r\ndata: [DONE] \n\ndata: {}\n\n",
                     [&done](const SseScanner::Event& e) { done.push_back(IsDoneEvent(e)); }));
    EXPECT_EQ(done, (std::vector<bool>{true, true, false, false}));
}

// ---------------------------------------------------------------------------------------------
// Usage

TEST(ExtractUsage, ReadsTheTopLevelUsageObject) {
    Usage u =
        ExtractUsage(R"({"id":"x","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":22,)"
                     R"("total_tokens":33,"prompt_tokens_details":{"cached_tokens":4}}})");
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, 11);
    EXPECT_EQ(u.completion_tokens, 22);
    EXPECT_EQ(u.total_tokens, 33);
}

TEST(ExtractUsage, ComputesAMissingTotal) {
    Usage u = ExtractUsage(R"({"usage":{"completion_tokens":2,"prompt_tokens":5}})");
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.total_tokens, 7);
    u = ExtractUsage(R"({"object":"list","usage":{"prompt_tokens":8,"total_tokens":8}})");
    EXPECT_EQ(u.prompt_tokens, 8);
    EXPECT_EQ(u.completion_tokens, 0);
    EXPECT_EQ(u.total_tokens, 8);
}

TEST(ExtractUsage, AbsentNullOrMalformedIsNotPresent) {
    for (const char* json : {
             R"({"choices":[{"delta":{}}]})",
             R"({"choices":[],"usage":null})",
             R"({"usage":5})",
             R"({"choices":[{"usage":{"prompt_tokens":1}}]})",
             R"({"usage":{"prompt_tokens":1)",
             "not json",
             "",
             "[1]",
         }) {
        SCOPED_TRACE(json);
        Usage u = ExtractUsage(json);
        EXPECT_FALSE(u.present);
        EXPECT_EQ(u.prompt_tokens, 0);
        EXPECT_EQ(u.total_tokens, 0);
    }
}

TEST(ExtractUsage, IgnoresNonIntegerCounts) {
    Usage u = ExtractUsage(R"({"usage":{"prompt_tokens":"3","completion_tokens":2.5}})");
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, 0);
    EXPECT_EQ(u.completion_tokens, 0);
}

TEST(HasEmptyChoices, DetectsTheUsageOnlyChunk) {
    EXPECT_TRUE(HasEmptyChoices(R"({"id":"x","choices":[],"usage":{"prompt_tokens":1}})"));
    EXPECT_TRUE(HasEmptyChoices(R"({"choices":[ ]})"));
    EXPECT_FALSE(HasEmptyChoices(R"({"choices":[{"index":0,"delta":{}}]})"));
    EXPECT_FALSE(HasEmptyChoices(R"({"id":"x"})"));
    EXPECT_FALSE(HasEmptyChoices(R"({"choices":null})"));
    EXPECT_FALSE(HasEmptyChoices("[DONE]"));
    EXPECT_FALSE(HasEmptyChoices(""));
}

TEST(MayContainUsage, IsASubstringCheck) {
    // `"usage": null` is not usage (OpenAI sends it in every chunk once usage is requested).
    EXPECT_FALSE(MayContainUsage(R"({"usage":null})"));
    EXPECT_TRUE(MayContainUsage(R"({"choices":[],"usage":{"total_tokens":1}})"));
    // Content that merely mentions the word does not match unless quoted as a JSON string.
    EXPECT_FALSE(MayContainUsage(R"({"choices":[{"delta":{"content":"my usage"}}]})"));
    EXPECT_FALSE(MayContainUsage(R"({"choices":[{"delta":{"content":"hi"}}]})"));
    EXPECT_FALSE(MayContainUsage("[DONE]"));
}

}  // namespace
}  // namespace conduit::json

namespace conduit::json {
namespace {

TEST(ExtractUsageFastPath, TrailingTopLevelUsageMatchesTheFullParse) {
    std::string body =
        R"({"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 999} trick"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"completion_tokens_details":{"reasoning_tokens":0}}}  )";
    auto u = ExtractUsage(body);
    ASSERT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, 12);
    EXPECT_EQ(u.completion_tokens, 34);
    EXPECT_EQ(u.total_tokens, 46);
}

TEST(ExtractUsageFastPath, NestedTrailingUsageIsNotMistakenForTopLevel) {
    // The last "usage" belongs to a nested object: the top level has none.
    auto u = ExtractUsage(R"({"id":"x","meta":{"usage":{"prompt_tokens":5}}})");
    EXPECT_FALSE(u.present);
    // Top-level usage that is not last still works (full parse).
    auto v = ExtractUsage(
        R"({"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"id":"x"})");
    ASSERT_TRUE(v.present);
    EXPECT_EQ(v.total_tokens, 3);
    EXPECT_FALSE(ExtractUsage(R"({"id":"x","usage":null})").present);
}

}  // namespace
}  // namespace conduit::json

namespace conduit::json {
namespace {

TEST(MayContainUsage, NullUsageDoesNotCount) {
    EXPECT_FALSE(MayContainUsage(R"({"choices":[{"delta":{}}],"usage":null})"));
    EXPECT_FALSE(MayContainUsage(R"({"usage" :  null, "x":1})"));
    EXPECT_TRUE(MayContainUsage(R"({"usage":null,"n":{"usage":{"prompt_tokens":1}}})"));
    EXPECT_TRUE(MayContainUsage(R"({"choices":[],"usage":{"prompt_tokens":3}})"));
    // Conservative: a quoted "usage" that is not a key still counts as "may contain".
    EXPECT_TRUE(MayContainUsage(R"({"choices":[{"delta":{"content":"usage"}}]})"));
}

}  // namespace
}  // namespace conduit::json

namespace conduit::json {
namespace {

TEST(ExtractUsageFastPath, AgreesWithTheFullParserOnVariants) {
    const char* bodies[] = {
        R"({"usage":{"prompt_tokens":7,"completion_tokens":9,"total_tokens":16}})",
        R"({"x":1, "usage" : { "completion_tokens" : 2 , "prompt_tokens":3 } })",
        R"({"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":4,"prompt_tokens":99},"completion_tokens":1}})",
        R"({"usage":{"prompt_tokens":5,"note":"prompt_tokens: 77","completion_tokens":1,"total_tokens":6}})",
    };
    const Usage expected[] = {{7, 9, 16, true}, {3, 2, 5, true}, {5, 1, 6, true}, {5, 1, 6, true}};
    for (size_t i = 0; i < std::size(bodies); ++i) {
        auto u = ExtractUsage(bodies[i]);
        EXPECT_TRUE(u.present) << bodies[i];
        EXPECT_EQ(u.prompt_tokens, expected[i].prompt_tokens) << bodies[i];
        EXPECT_EQ(u.completion_tokens, expected[i].completion_tokens) << bodies[i];
        EXPECT_EQ(u.total_tokens, expected[i].total_tokens) << bodies[i];
    }
}

}  // namespace
}  // namespace conduit::json
