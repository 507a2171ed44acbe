#include "loadgen/self_test.hpp"

#include "loadgen/histogram.hpp"
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

}  // namespace

int RunSelfTest() {
    g_failures = 0;
    ParserTests();
    HistogramTests();
    UrlTests();
    if (g_failures == 0) {
        std::fprintf(stderr, "self-test passed (%d checks)\n", g_checks);
        return 0;
    }
    std::fprintf(stderr, "self-test: %d failure(s)\n", g_failures);
    return 1;
}

}  // namespace conduit::loadgen
