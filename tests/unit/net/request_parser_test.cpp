#include "net/request_parser.hpp"

#include <gtest/gtest.h>

namespace conduit::net {
namespace {

struct Parsed {
    RequestParser::Status status;
    Request req;
    int error_status = 0;
    size_t leftover = 0;
};

/// Feeds `input` in pieces, like a connection reading `piece` bytes at a time.
Parsed FeedInPieces(std::string_view input,
                    size_t piece,
                    size_t max_header = 8192,
                    uint64_t max_body = 1 << 20) {
    RequestParser p(max_header, max_body);
    std::string pending;
    Parsed out{RequestParser::Status::kNeedMore, {}, 0, 0};
    for (size_t i = 0; i < input.size(); i += piece) {
        pending.append(input.substr(i, piece));
        size_t consumed = 0;
        out.status = p.Feed(pending, consumed);
        pending.erase(0, consumed);
        if (out.status != RequestParser::Status::kNeedMore) {
            break;
        }
    }
    out.error_status = p.error_status();
    out.leftover = pending.size() + (input.size() > 0 ? 0 : 0);
    if (out.status == RequestParser::Status::kDone) {
        out.req = std::move(p.request());
    }
    return out;
}

TEST(RequestParser, ContentLengthRequestAtEverySplit) {
    const std::string input =
        "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        "Content-Length: 13\r\nAuthorization: Bearer k\r\n\r\n{\"model\":\"m\"}";
    for (size_t piece = 1; piece <= input.size(); ++piece) {
        auto r = FeedInPieces(input, piece);
        ASSERT_EQ(r.status, RequestParser::Status::kDone) << piece;
        EXPECT_EQ(r.req.method, "POST");
        EXPECT_EQ(r.req.path(), "/v1/chat/completions");
        EXPECT_EQ(r.req.query(), "x=1");
        EXPECT_EQ(r.req.headers.Get("authorization"), "Bearer k");
        EXPECT_EQ(r.req.body, "{\"model\":\"m\"}");
        EXPECT_GE(r.req.body.capacity(), r.req.body.size() + 64) << "padding for simdjson";
    }
}

TEST(RequestParser, ChunkedBodyIsDechunked) {
    const std::string input =
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext\r\nabcd\r\n2\r\nef\r\n"
        "0\r\nTrailer: t\r\n\r\n";
    for (size_t piece = 1; piece <= input.size(); ++piece) {
        auto r = FeedInPieces(input, piece);
        ASSERT_EQ(r.status, RequestParser::Status::kDone) << piece;
        EXPECT_EQ(r.req.body, "abcdef");
    }
}

TEST(RequestParser, PipelinedRequestsStopAtTheBoundary) {
    RequestParser p(8192, 1024);
    std::string two = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    size_t consumed = 0;
    ASSERT_EQ(p.Feed(two, consumed), RequestParser::Status::kDone);
    EXPECT_EQ(p.request().target, "/a");
    EXPECT_EQ(two.substr(consumed), "GET /b HTTP/1.1\r\n\r\n");
}

TEST(RequestParser, KeepAliveRules) {
    RequestParser a(8192, 0);
    size_t c = 0;
    a.Feed("GET / HTTP/1.0\r\n\r\n", c);
    EXPECT_FALSE(a.keep_alive());
    RequestParser b(8192, 0);
    b.Feed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", c);
    EXPECT_TRUE(b.keep_alive());
    RequestParser d(8192, 0);
    d.Feed("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", c);
    EXPECT_FALSE(d.keep_alive());
}

TEST(RequestParser, ExpectContinueIsReportedUntilTheBodyArrives) {
    RequestParser p(8192, 1024);
    size_t c = 0;
    EXPECT_EQ(p.Feed("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", c),
              RequestParser::Status::kNeedMore);
    EXPECT_TRUE(p.expects_continue());
    EXPECT_EQ(p.Feed("ok", c), RequestParser::Status::kDone);
    EXPECT_FALSE(p.expects_continue());
}

TEST(RequestParser, LimitsAndMalformedInput) {
    struct Case {
        std::string input;
        int status;
    };
    const Case cases[] = {
        {"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n", 413},
        {"GET / HTTP/1.1\r\nX-Big: " + std::string(9000, 'x') + "\r\n\r\n", 431},
        {"GET / HTTP/2.0\r\n\r\n", 400},
        {"GET nopath HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX", 400},
    };
    for (const auto& c : cases) {
        auto r = FeedInPieces(c.input, c.input.size(), 8192, 1024);
        EXPECT_EQ(r.status, RequestParser::Status::kError) << c.input.substr(0, 60);
        EXPECT_EQ(r.error_status, c.status) << c.input.substr(0, 60);
    }
}

TEST(RequestParser, LeadingEmptyLinesAreIgnored) {
    auto r = FeedInPieces("\r\n\r\nGET /x HTTP/1.1\r\n\r\n", 3);
    ASSERT_EQ(r.status, RequestParser::Status::kDone);
    EXPECT_EQ(r.req.target, "/x");
}

}  // namespace
}  // namespace conduit::net
