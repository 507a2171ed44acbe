#include "loadgen/self_test.hpp"

#include "loadgen/histogram.hpp"
#include "loadgen/hub_wire.hpp"
#include "loadgen/loadgen.hpp"
#include "loadgen/response_parser.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace conduit::loadgen {

namespace {

int g_failures = 0;
int g_checks = 0;

void Check(bool ok, const std::string& what) {
    ++g_checks;
    if (!ok) {
        ++g_failures;
        std::fprintf(stderr, "self-test FAILED: %s\n", what.c_str());
    }
}

/// A canned response and what parsing it must yield.
struct Case {
    const char* name;
    std::string text;
    int status;
    uint64_t body_bytes;
    bool keep_alive;
    double recorded;       // NaN = header absent
    bool close_delimited;  // complete only at FinishOnClose()
    size_t first_body;     // offset of the first body byte (npos = no body)
};

/// Feeds `c.text` in the pieces [0, cut) and [cut, n) (or byte by byte when `cut` is npos) and
/// checks the result; `first_body` must flip body_started() exactly when its byte is consumed.
void RunCase(const Case& c, size_t cut) {
    ResponseParser p("x-conduit-overhead-us");
    p.Reset();
    const std::string label =
        std::string(c.name) + (cut == std::string::npos
                                   ? std::string(" (byte by byte)")
                                   : " (split at " + std::to_string(cut) + ")");
    ResponseParser::Result r = ResponseParser::Result::kNeedMore;
    size_t fed = 0;
    auto feed = [&](size_t from, size_t to) {
        size_t used = 0;
        r = p.Feed(c.text.data() + from, to - from, &used);
        fed = from + used;
        if (r == ResponseParser::Result::kNeedMore) {
            Check(used == to - from, label + ": consumed everything while incomplete");
        }
        const bool expect_body = c.first_body != std::string::npos && fed > c.first_body;
        Check(p.body_started() == expect_body,
              label + ": body_started after " + std::to_string(fed) + " bytes");
    };
    if (cut == std::string::npos) {
        for (size_t i = 0; i < c.text.size() && r == ResponseParser::Result::kNeedMore; ++i) {
            feed(i, i + 1);
        }
    } else {
        feed(0, cut);
        if (r == ResponseParser::Result::kNeedMore && cut < c.text.size()) {
            feed(cut, c.text.size());
        }
    }
    if (c.close_delimited) {
        Check(r == ResponseParser::Result::kNeedMore, label + ": waits for close");
        r = p.FinishOnClose();
    }
    Check(r == ResponseParser::Result::kComplete, label + ": complete (" + p.error() + ")");
    Check(c.close_delimited || fed == c.text.size(), label + ": consumed the whole response");
    Check(p.status() == c.status, label + ": status " + std::to_string(p.status()));
    Check(p.body_bytes() == c.body_bytes, label + ": body bytes " + std::to_string(p.body_bytes()));
    Check(p.keep_alive() == c.keep_alive, label + ": keep-alive");
    if (std::isnan(c.recorded)) {
        Check(!p.has_recorded(), label + ": no recorded header");
    } else {
        Check(p.has_recorded() && std::fabs(p.recorded() - c.recorded) < 1e-9,
              label + ": recorded header " + std::to_string(p.recorded()));
    }
}

void ParserTests() {
    const double kNone = std::nan("");
    const std::string cl_head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 11\r\n"
        "X-Conduit-Overhead-Us: 42\r\n\r\n";
    const std::string sse_head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        "X-CONDUIT-OVERHEAD-US:  7.25 \r\n\r\n";
    const std::string chunk1 = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
    const std::string chunk2 = "data: [DONE]\n\n";
    char size1[16];
    char size2[16];
    std::snprintf(size1, sizeof(size1), "%zx", chunk1.size());
    std::snprintf(size2, sizeof(size2), "%zX", chunk2.size());
    const std::string sse = sse_head + size1 + ";ext=1\r\n" + chunk1 + "\r\n" + size2 + "\r\n" +
                            chunk2 + "\r\n0\r\nX-Trailer: t\r\n\r\n";
    const std::string close_head = "HTTP/1.1 503 Unavailable\r\nConnection: close\r\n\r\n";
    const std::string interim =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    const std::string http10 = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc";

    const Case cases[] = {
        {"content-length", cl_head + "hello world", 200, 11, true, 42.0, false, cl_head.size()},
        {"chunked sse", sse, 200, chunk1.size() + chunk2.size(), true, 7.25, false,
         sse_head.size() + std::string(size1).size() + 8},
        {"close-delimited", close_head + "gone", 503, 4, false, kNone, true, close_head.size()},
        {"no content", "HTTP/1.1 204 No Content\r\nX-Conduit-Overhead-Us: abc\r\n\r\n", 204, 0,
         true, kNone, false, std::string::npos},
        {"interim 100", interim, 201, 2, true, kNone, false, interim.size() - 2},
        {"http/1.0", http10, 200, 3, false, kNone, false, http10.size() - 3},
        {"empty length", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 200,
         0, false, kNone, false, std::string::npos},
    };
    for (const Case& c : cases) {
        for (size_t cut = 0; cut <= c.text.size(); ++cut) {
            RunCase(c, cut);
        }
        RunCase(c, std::string::npos);
    }

    // Bytes after a complete response are left unconsumed.
    {
        ResponseParser p;
        p.Reset();
        const std::string two = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1";
        size_t used = 0;
        Check(p.Feed(two.data(), two.size(), &used) == ResponseParser::Result::kComplete &&
                  used == two.size() - 8,
              "stops at the end of a response");
    }
    // Reuse after Reset().
    {
        ResponseParser p;
        for (int i = 0; i < 3; ++i) {
            p.Reset();
            const std::string r = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
            size_t used = 0;
            Check(p.Feed(r.data(), r.size(), &used) == ResponseParser::Result::kComplete &&
                      p.status() == 404,
                  "reuse after Reset");
        }
    }
    // Malformed responses.
    const char* bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    };
    for (const char* text : bad) {
        ResponseParser p;
        p.Reset();
        size_t used = 0;
        const std::string s = text;
        Check(p.Feed(s.data(), s.size(), &used) == ResponseParser::Result::kError,
              std::string("rejects: ") + text);
    }
    // A close before the response completes is an error.
    {
        ResponseParser p;
        p.Reset();
        const std::string s = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        size_t used = 0;
        p.Feed(s.data(), s.size(), &used);
        Check(p.FinishOnClose() == ResponseParser::Result::kError, "truncated body");
    }
}

void HistogramTests() {
    // Bucket arithmetic: every value lies in its bucket, whose midpoint is within 0.4 %.
    for (uint64_t v = 0; v < (uint64_t{1} << 43); v = v < 1000 ? v + 1 : v + v / 997) {
        const size_t i = Histogram::IndexOf(v);
        const uint64_t lo = Histogram::LowestOf(i);
        const uint64_t w = Histogram::WidthOf(i);
        if (!(lo <= v && v < lo + w)) {
            Check(false, "bucket bounds of " + std::to_string(v));
            break;
        }
        const double mid = static_cast<double>(lo) + static_cast<double>(w - 1) / 2.0;
        if (v > 0 && std::fabs(mid - static_cast<double>(v)) / static_cast<double>(v) > 0.004) {
            Check(false, "bucket error of " + std::to_string(v));
            break;
        }
    }
    // Small values are exact.
    {
        Histogram h;
        for (uint64_t v = 0; v < 128; ++v) {
            h.Record(v);
        }
        Check(h.Percentile(0.5) == 63, "exact p50 of 0..127");
        Check(h.Percentile(1.0) == 127 && h.max() == 127 && h.min() == 0, "exact max/min");
    }
    // Uniform 1..1e6 against exact percentiles (1 % tolerance; the bound is 0.4 %).
    {
        Histogram h;
        for (uint64_t v = 1; v <= 1'000'000; ++v) {
            h.Record(v);
        }
        auto near = [](uint64_t got, double want) {
            return std::fabs(static_cast<double>(got) - want) / want <= 0.01;
        };
        Check(near(h.Percentile(0.5), 500000), "uniform p50 " + std::to_string(h.Percentile(0.5)));
        Check(near(h.Percentile(0.9), 900000), "uniform p90");
        Check(near(h.Percentile(0.99), 990000), "uniform p99");
        Check(near(h.Percentile(0.999), 999000), "uniform p999");
        Check(h.max() == 1'000'000 && h.Percentile(1.0) == 1'000'000, "uniform max");
        Check(std::fabs(h.Mean() - 500000.5) < 1e-6, "uniform mean");
        Check(h.count() == 1'000'000, "uniform count");

        Histogram a;
        Histogram b;
        for (uint64_t v = 1; v <= 1'000'000; ++v) {
            (v % 2 == 0 ? a : b).Record(v);
        }
        a.Merge(b);
        Check(a.Percentile(0.99) == h.Percentile(0.99) && a.count() == h.count() &&
                  a.max() == h.max(),
              "merge equals one histogram");
    }
    // A long tail: 99 % at 100 µs, 1 % at 10 ms (in ns).
    {
        Histogram h;
        for (int i = 0; i < 9900; ++i) {
            h.Record(100'000);
        }
        for (int i = 0; i < 100; ++i) {
            h.Record(10'000'000);
        }
        Check(std::llabs(static_cast<long long>(h.Percentile(0.99)) - 100'000) <= 400, "tail p99");
        Check(std::llabs(static_cast<long long>(h.Percentile(0.999)) - 10'000'000) <= 40'000,
              "tail p999");
        Histogram empty;
        Check(empty.Percentile(0.5) == 0 && empty.max() == 0 && empty.Mean() == 0.0, "empty");
    }
}

void UrlTests() {
    Target t;
    std::string err;
    Check(ParseUrl("http://127.0.0.1:8080/v1/chat/completions?x=1", &t, &err) &&
              t.host == "127.0.0.1" && t.port == "8080" && t.path == "/v1/chat/completions?x=1" &&
              t.host_header == "127.0.0.1:8080",
          "url with port and path");
    Check(ParseUrl("http://localhost", &t, &err) && t.port == "80" && t.path == "/",
          "url without port");
    Check(ParseUrl("http://[::1]:9/x", &t, &err) && t.host == "::1" && t.port == "9", "ipv6 url");
    Check(!ParseUrl("https://x/", &t, &err), "https rejected");

    Options o{.method = std::string("POST"),
              .body = std::string("{}"),
              .headers = {std::string("Authorization: Bearer k")}};
    ParseUrl("http://h:1/p", &t, &err);
    Check(BuildRequest(o, t) ==
              "POST /p HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer k\r\n"
              "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
          "serialised request");
    Check(BuildRequest(o, t, "X-Key: k2") ==
              "POST /p HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer k\r\nX-Key: k2\r\n"
              "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
          "serialised request with a per-connection header");
}

/// RFC 6455 client framing, the response-head parser, the chunked decoder, the SSE splitter and
/// the hub-record reader of the SignalR session mode.
void HubWireTests() {
    using namespace wire;
    // Client frames: FIN + opcode, mask bit, the three length forms, the key, a masked payload
    // that decodes (unmasked in place) back to the original.
    for (size_t n :
         {size_t{0}, size_t{5}, size_t{125}, size_t{126}, size_t{65535}, size_t{65536}}) {
        std::string payload(n, 'x');
        for (size_t i = 0; i < n; ++i) {
            payload[i] = static_cast<char>('a' + i % 26);
        }
        std::string frame;
        AppendClientFrame(frame, WsOpcode::kText, payload, 0x11223344u);
        const size_t header = n < 126 ? 2 : n <= 0xFFFF ? 4 : 10;
        const std::string label = "client frame of " + std::to_string(n) + " bytes";
        Check(frame.size() == header + 4 + n, label + ": size");
        Check(static_cast<uint8_t>(frame[0]) == 0x81, label + ": FIN + text");
        Check((static_cast<uint8_t>(frame[1]) & 0x80) != 0, label + ": mask bit");
        Check(frame.substr(header, 4) == std::string("\x11\x22\x33\x44", 4), label + ": key");
        if (n >= 4) {
            Check(frame[header + 4] == static_cast<char>('a' ^ 0x11) &&
                      frame[header + 7] == static_cast<char>('d' ^ 0x44),
                  label + ": payload masked");
        }
        WsFrame f;
        size_t used = 0;
        std::string error;
        Check(DecodeFrame(frame.data(), frame.size() - 1, 1 << 20, &f, &used, &error) ==
                  DecodeResult::kNeedMore,
              label + ": one byte short needs more");
        Check(DecodeFrame(frame.data(), frame.size(), 1 << 20, &f, &used, &error) ==
                      DecodeResult::kFrame &&
                  used == frame.size() && f.fin && f.opcode == 1 && f.payload == payload,
              label + ": round trip");
    }
    {
        // Unmasked server frames back to back: a 16-bit length text frame, then a ping.
        std::string text(300, 'r');
        std::string data = std::string("\x81\x7e\x01\x2c", 4) + text + std::string("\x89\x02hi", 4);
        WsFrame f;
        size_t used = 0;
        std::string error;
        Check(DecodeFrame(data.data(), data.size(), 1 << 20, &f, &used, &error) ==
                      DecodeResult::kFrame &&
                  used == 304 && f.payload.size() == 300,
              "server text frame, 16-bit length");
        Check(DecodeFrame(data.data() + used, data.size() - used, 1 << 20, &f, &used, &error) ==
                      DecodeResult::kFrame &&
                  f.opcode == 9 && f.payload == "hi",
              "server ping");
        std::string frag(
            "\x01\x01"
            "a\x80\x01"
            "b",
            6);  // text without FIN, then continuation
        Check(DecodeFrame(frag.data(), frag.size(), 1 << 20, &f, &used, &error) ==
                      DecodeResult::kFrame &&
                  !f.fin && f.opcode == 1 && used == 3,
              "fragment without FIN");
        Check(DecodeFrame(frag.data() + 3, 3, 1 << 20, &f, &used, &error) == DecodeResult::kFrame &&
                  f.fin && f.opcode == 0 && f.payload == "b",
              "final continuation");
        std::string bad_rsv("\xC1\x00", 2);
        Check(DecodeFrame(bad_rsv.data(), 2, 1 << 20, &f, &used, &error) == DecodeResult::kError,
              "reserved bit rejected");
        std::string long_ping = std::string("\x89\x7e\x00\x80", 4) + std::string(128, 'p');
        Check(DecodeFrame(long_ping.data(), long_ping.size(), 1 << 20, &f, &used, &error) ==
                  DecodeResult::kError,
              "control frame over 125 bytes rejected");
        std::string big = std::string("\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00", 10);
        Check(
            DecodeFrame(big.data(), big.size(), 1 << 20, &f, &used, &error) == DecodeResult::kError,
            "frame over the limit rejected");
        std::string op3("\x83\x00", 2);
        Check(DecodeFrame(op3.data(), 2, 1 << 20, &f, &used, &error) == DecodeResult::kError,
              "unknown opcode rejected");
    }
    // Response heads.
    {
        HttpHead h;
        std::string error;
        const std::string up =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            "\x81\x03{}\x1e";
        Check(ParseHead(up, &h, &error) == HeadResult::kComplete && h.status == 101 &&
                  h.head_bytes == up.size() - 5 && !h.close,
              "101 head");
        Check(ParseHead(up.substr(0, 20), &h, &error) == HeadResult::kNeedMore, "partial head");
        Check(ParseHead("HTTP/1.1 200 OK\r\ncontent-length:  42\r\nConnection: close\r\n\r\n", &h,
                        &error) == HeadResult::kComplete &&
                  h.content_length == 42 && h.close && !h.chunked,
              "Content-Length and Connection: close");
        Check(ParseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", &h, &error) ==
                      HeadResult::kComplete &&
                  h.chunked && h.content_length == -1,
              "chunked head");
        Check(ParseHead("HTTP/1.1 2x0 OK\r\n\r\n", &h, &error) == HeadResult::kError,
              "bad status rejected");
        Check(ParseHead("HTTP/1.1 200 OK\r\nContent-Length: 1a\r\n\r\n", &h, &error) ==
                  HeadResult::kError,
              "bad Content-Length rejected");
    }
    // Chunked bodies, byte by byte and whole; a trailer; errors.
    {
        const std::string body =
            "5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n"
            "X-Trailer: 1\r\n\r\nNEXT";
        ChunkedDecoder d;
        std::string out;
        size_t used = 0;
        Check(d.Feed(body, out, &used) == ChunkedDecoder::Result::kDone &&
                  out == "helloabcdefghijklmnopqrstuvwxyz" && used == body.size() - 4,
              "chunked body whole");
        d.Reset();
        out.clear();
        ChunkedDecoder::Result r = ChunkedDecoder::Result::kNeedMore;
        size_t i = 0;
        for (; i < body.size() && r == ChunkedDecoder::Result::kNeedMore; ++i) {
            r = d.Feed(std::string_view(body).substr(i, 1), out, &used);
        }
        Check(r == ChunkedDecoder::Result::kDone && i == body.size() - 4 &&
                  out == "helloabcdefghijklmnopqrstuvwxyz",
              "chunked body byte by byte");
        d.Reset();
        Check(d.Feed("zz\r\n", out, &used) == ChunkedDecoder::Result::kError, "bad chunk size");
        d.Reset();
        Check(d.Feed("1\r\nab\r\n", out, &used) == ChunkedDecoder::Result::kError,
              "chunk longer than its size");
    }
    // SSE: a comment, two events (CRLF and LF endings), a partial one left in the buffer.
    {
        std::string buf = ":\r\ndata: {}\x1e\r\n\r\ndata: {\"type\":6}\x1e\n\ndata: par";
        std::string data;
        Check(
            TakeSseEvents(buf, data) == 2 && data == "{}\x1e{\"type\":6}\x1e" && buf == "data: par",
            "SSE events: " + data);
        buf += "t\r\ndata: two\r\n\r\n";
        data.clear();
        Check(TakeSseEvents(buf, data) == 1 && data == "part\ntwo" && buf.empty(),
              "SSE multi-line event");
    }
    // Hub records.
    {
        RecordInfo hs = InspectRecord("{}", "bench:");
        Check(hs.type == -1 && !hs.handshake_error && hs.stamp == -1, "handshake response");
        Check(InspectRecord("{\"error\":\"Handshake was canceled.\"}", "bench:").handshake_error,
              "handshake error");
        Check(InspectRecord("{\"type\":6}", "bench:").type == 6, "ping");
        RecordInfo inv = InspectRecord(
            "{\"type\":1,\"target\":\"SystemAnnouncement\",\"arguments\":[\"bench:"
            "1795878759519435500\",\"info\"]}",
            "bench:");
        Check(inv.type == 1 && inv.target == "SystemAnnouncement" &&
                  inv.stamp == 1795878759519435500LL,
              "invocation with a stamp");
        RecordInfo js =
            InspectRecord("{\"target\":\"X\",\"arguments\":[\"no stamp\"],\"type\":1}", "bench:");
        Check(js.type == 1 && js.target == "X" && js.stamp == -1, "JS field order, no stamp");
        Check(JsonStringField("{\"a\":\"x\\\"y\",\"b\":\"z\"}", "a") == "x\\\"y" &&
                  JsonStringField("{\"a\":\"x\\\"y\",\"b\":\"z\"}", "b") == "z" &&
                  JsonStringField("{\"a\":1}", "a").empty(),
              "JSON string fields");
    }
}

}  // namespace

int RunSelfTest() {
    g_failures = 0;
    ParserTests();
    HistogramTests();
    UrlTests();
    HubWireTests();
    if (g_failures == 0) {
        std::fprintf(stderr, "self-test passed (%d checks)\n", g_checks);
        return 0;
    }
    std::fprintf(stderr, "self-test: %d failure(s)\n", g_failures);
    return 1;
}

}  // namespace conduit::loadgen
