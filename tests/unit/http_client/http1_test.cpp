#include "http_client/http1.hpp"

#include <gtest/gtest.h>

namespace conduit::http_client {
namespace {

struct Collector : ResponseParser::Sink {
    int status = 0;
    net::Headers headers;
    std::string body;
    int refuse_next = 0;  // refuse this many deliveries
    int refusals = 0;
    void OnHeaders(int s, net::Headers h) override {
        status = s;
        headers = std::move(h);
    }
    bool OnBody(std::string_view d) override {
        if (refuse_next > 0) {
            --refuse_next;
            ++refusals;
            return false;
        }
        body.append(d);
        return true;
    }
};

/// Feeds `input` in pieces of `piece` bytes (keeping unconsumed bytes, like a connection).
ResponseParser::Status FeedInPieces(ResponseParser& p,
                                    Collector& c,
                                    std::string_view input,
                                    size_t piece) {
    std::string pending;
    ResponseParser::Status st = ResponseParser::Status::kNeedMore;
    for (size_t i = 0; i < input.size(); i += piece) {
        pending.append(input.substr(i, piece));
        for (;;) {
            size_t consumed = 0;
            st = p.Feed(pending, consumed, c);
            pending.erase(0, consumed);
            if (st != ResponseParser::Status::kPaused) {
                break;
            }
        }
        if (st == ResponseParser::Status::kDone || st == ResponseParser::Status::kError) {
            return st;
        }
    }
    return st;
}

TEST(ParseHttpUrl, SplitsSchemeHostPortAndTarget) {
    ParsedUrl u;
    ASSERT_TRUE(ParseHttpUrl("http://127.0.0.1:8090/v1/chat/completions?x=1", u));
    EXPECT_FALSE(u.tls);
    EXPECT_EQ(u.host, "127.0.0.1");
    EXPECT_EQ(u.port, 8090);
    EXPECT_EQ(u.target, "/v1/chat/completions?x=1");
    EXPECT_EQ(u.host_header, "127.0.0.1:8090");
    EXPECT_EQ(u.pool_key, "http://127.0.0.1:8090");
    ASSERT_TRUE(ParseHttpUrl("HTTPS://API.OpenAI.com/v1", u));
    EXPECT_TRUE(u.tls);
    EXPECT_EQ(u.host, "api.openai.com");
    EXPECT_EQ(u.port, 443);
    EXPECT_EQ(u.host_header, "api.openai.com");
    ASSERT_TRUE(ParseHttpUrl("http://[::1]:9000", u));
    EXPECT_EQ(u.host, "::1");
    EXPECT_EQ(u.target, "/");
    EXPECT_EQ(u.host_header, "[::1]:9000");
    EXPECT_FALSE(ParseHttpUrl("ftp://x/", u));
    EXPECT_FALSE(ParseHttpUrl("http://user:pw@host/", u));
    EXPECT_FALSE(ParseHttpUrl("http://host:99999/", u));
    EXPECT_FALSE(ParseHttpUrl("http:///path", u));
}

TEST(ResponseParser, ContentLengthAtEverySplit) {
    const std::string input =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
        "hello world";
    for (size_t piece = 1; piece <= input.size(); ++piece) {
        ResponseParser p;
        Collector c;
        EXPECT_EQ(FeedInPieces(p, c, input, piece), ResponseParser::Status::kDone) << piece;
        EXPECT_EQ(c.status, 200);
        EXPECT_EQ(c.headers.Get("content-type"), "application/json");
        EXPECT_EQ(c.body, "hello world");
        EXPECT_TRUE(p.keep_alive());
    }
}

TEST(ResponseParser, ChunkedWithExtensionsAndTrailersAtEverySplit) {
    const std::string input =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
    for (size_t piece = 1; piece <= input.size(); ++piece) {
        ResponseParser p;
        Collector c;
        EXPECT_EQ(FeedInPieces(p, c, input, piece), ResponseParser::Status::kDone) << piece;
        EXPECT_EQ(c.body, "hello 0123456789") << piece;
    }
}

TEST(ResponseParser, InterimResponsesAreSkipped) {
    ResponseParser p;
    Collector c;
    EXPECT_EQ(FeedInPieces(p, c,
                           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                           "Content-Length: 2\r\n\r\nok",
                           7),
              ResponseParser::Status::kDone);
    EXPECT_EQ(c.status, 201);
    EXPECT_EQ(c.body, "ok");
}

TEST(ResponseParser, CloseDelimitedBodyEndsAtEof) {
    ResponseParser p;
    Collector c;
    EXPECT_EQ(FeedInPieces(p, c, "HTTP/1.0 200 OK\r\n\r\nsome body", 4),
              ResponseParser::Status::kNeedMore);
    EXPECT_EQ(p.OnEof(c), ResponseParser::Status::kDone);
    EXPECT_EQ(c.body, "some body");
    EXPECT_FALSE(p.keep_alive());
}

TEST(ResponseParser, EofBeforeTheEndIsAnError) {
    ResponseParser p;
    Collector c;
    FeedInPieces(p, c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100);
    EXPECT_EQ(p.OnEof(c), ResponseParser::Status::kError);
}

TEST(ResponseParser, ConnectionCloseAndNoBodyStatuses) {
    {
        ResponseParser p;
        Collector c;
        EXPECT_EQ(FeedInPieces(p, c, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", 100),
                  ResponseParser::Status::kDone);
        EXPECT_FALSE(p.keep_alive());
    }
    {
        ResponseParser p(/*head_request=*/true);
        Collector c;
        EXPECT_EQ(FeedInPieces(p, c, "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", 100),
                  ResponseParser::Status::kDone);
        EXPECT_TRUE(c.body.empty());
    }
}

TEST(ResponseParser, RefusedChunksAreOfferedAgain) {
    ResponseParser p;
    Collector c;
    c.refuse_next = 3;
    EXPECT_EQ(FeedInPieces(p, c,
                           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
                           5),
              ResponseParser::Status::kDone);
    EXPECT_EQ(c.refusals, 3);
    EXPECT_EQ(c.body, "abcdef");
}

TEST(ResponseParser, MalformedInputIsAnError) {
    for (std::string bad : {"SMTP/1.0 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n",
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
        ResponseParser p;
        Collector c;
        EXPECT_EQ(FeedInPieces(p, c, bad, bad.size()), ResponseParser::Status::kError) << bad;
    }
    ResponseParser p(false, 64);
    Collector c;
    EXPECT_EQ(FeedInPieces(p, c, "HTTP/1.1 200 OK\r\nX: " + std::string(100, 'a') + "\r\n\r\n", 10),
              ResponseParser::Status::kError);
}

}  // namespace
}  // namespace conduit::http_client
