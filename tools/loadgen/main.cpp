// conduit-loadgen: a lean HTTP/1.1 load generator (epoll, keep-alive, closed or open loop).
// Prints one JSON object on stdout and a short summary on stderr; see --help.

#include "loadgen/hub_sessions.hpp"
#include "loadgen/loadgen.hpp"
#include "loadgen/self_test.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <netdb.h>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/resource.h>

namespace {

using namespace conduit::loadgen;

constexpr const char* kUsage =
    "Usage: conduit-loadgen --url http://HOST:PORT/PATH [options]\n"
    "       conduit-loadgen --self-test\n"
    "       conduit-loadgen hub|hub-announce|hub-merge ... (SignalR sessions; see hub --help)\n"
    "\n"
    "  --url URL             target (http:// only)\n"
    "  --method M            request method (default GET, or POST when a body is given)\n"
    "  --body STR            request body (Content-Type defaults to application/json)\n"
    "  --body-file F         request body from a file\n"
    "  --header 'K: V'       extra request header (repeatable; also -H)\n"
    "  --header-per-connection F\n"
    "                        file of 'K: V' lines: connection i (counted across threads) also\n"
    "                        sends line i mod lines (e.g. one API key per connection)\n"
    "  --connections N       keep-alive connections (default 10)\n"
    "  --threads T           worker threads, each owning connections/T of them (default 1)\n"
    "  --duration S          measured seconds (default 10)\n"
    "  --warmup S            unmeasured seconds of load before the measurement (default 0)\n"
    "  --rate R              open loop: R requests/s in total, at fixed intended send times;\n"
    "                        latency counts from the intended time (default 0 = closed loop:\n"
    "                        each connection sends again as soon as its response completes)\n"
    "  --timeout-ms MS       per-request deadline from the intended send time (default 5000)\n"
    "  --record-header NAME  record this response header's numeric value (us) in header_us\n"
    "  --self-test           run the built-in parser and histogram checks and exit\n"
    "\n"
    "Output: one JSON object on stdout (latencies in microseconds); a summary on stderr.\n";

bool ReadFile(const std::string& path, std::string* out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return false;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    *out = ss.str();
    return true;
}

bool ParseDouble(const std::string& s, double* out) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || errno != 0 || !(v >= 0.0)) {
        return false;
    }
    *out = v;
    return true;
}

bool ParseInt(const std::string& s, int64_t* out) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || end != s.c_str() + s.size() || errno != 0 || v < 0) {
        return false;
    }
    *out = v;
    return true;
}

/// Command-line result: options, plus whether to run the self-test.
struct Cli {
    Options opts;
    bool self_test = false;
    bool help = false;
    std::string body_file;
    bool has_body = false;
    std::string connection_headers_file;
};

bool ParseArgs(int argc, char** argv, Cli* cli, std::string* error) {
    Options& o = cli->opts;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string value;
        bool has_inline = false;
        if (arg.rfind("--", 0) == 0) {
            if (const size_t eq = arg.find('='); eq != std::string::npos) {
                value = arg.substr(eq + 1);
                arg = arg.substr(0, eq);
                has_inline = true;
            }
        }
        auto next = [&](std::string* v) {
            if (has_inline) {
                *v = value;
                return true;
            }
            if (i + 1 >= argc) {
                *error = "missing value for " + arg;
                return false;
            }
            *v = argv[++i];
            return true;
        };
        std::string v;
        int64_t n = 0;
        if (arg == "--help" || arg == "-h") {
            cli->help = true;
        } else if (arg == "--self-test") {
            cli->self_test = true;
        } else if (arg == "--url") {
            if (!next(&o.url)) return false;
        } else if (arg == "--method") {
            if (!next(&o.method)) return false;
            std::transform(o.method.begin(), o.method.end(), o.method.begin(),
                           [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
        } else if (arg == "--body") {
            if (!next(&o.body)) return false;
            cli->has_body = true;
        } else if (arg == "--body-file") {
            if (!next(&cli->body_file)) return false;
            cli->has_body = true;
        } else if (arg == "--header" || arg == "-H") {
            if (!next(&v)) return false;
            if (v.find(':') == std::string::npos || v.find_first_of("\r\n") != std::string::npos) {
                *error = "bad header '" + v + "' (expected 'Name: value')";
                return false;
            }
            o.headers.push_back(v);
        } else if (arg == "--header-per-connection") {
            if (!next(&cli->connection_headers_file)) return false;
        } else if (arg == "--connections" || arg == "-c") {
            if (!next(&v)) return false;
            if (!ParseInt(v, &n) || n < 1 || n > 1'000'000) {
                *error = "bad --connections";
                return false;
            }
            o.connections = static_cast<int>(n);
        } else if (arg == "--threads" || arg == "-t") {
            if (!next(&v)) return false;
            if (!ParseInt(v, &n) || n < 1 || n > 1024) {
                *error = "bad --threads";
                return false;
            }
            o.threads = static_cast<int>(n);
        } else if (arg == "--duration" || arg == "-d") {
            if (!next(&v)) return false;
            if (!ParseDouble(v, &o.duration_s) || o.duration_s <= 0.0) {
                *error = "bad --duration";
                return false;
            }
        } else if (arg == "--warmup") {
            if (!next(&v)) return false;
            if (!ParseDouble(v, &o.warmup_s)) {
                *error = "bad --warmup";
                return false;
            }
        } else if (arg == "--rate" || arg == "-R") {
            if (!next(&v)) return false;
            if (!ParseDouble(v, &o.rate)) {
                *error = "bad --rate";
                return false;
            }
        } else if (arg == "--timeout-ms") {
            if (!next(&v)) return false;
            if (!ParseInt(v, &n) || n < 1) {
                *error = "bad --timeout-ms";
                return false;
            }
            o.timeout_ms = n;
        } else if (arg == "--record-header") {
            if (!next(&o.record_header)) return false;
            std::transform(o.record_header.begin(), o.record_header.end(), o.record_header.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        } else {
            *error = "unknown argument '" + arg + "'";
            return false;
        }
    }
    return true;
}

void AppendF(std::string& out, const char* fmt, double v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), fmt, v);
    out += buf;
}

/// `"name":{"count":..,"min":..,"p50":..,...}` with values converted from ns to µs.
void AppendHistogram(std::string& out, const char* name, const Histogram& h) {
    auto us = [](double ns) { return ns / 1000.0; };
    out += "\"";
    out += name;
    out += "\":{\"count\":" + std::to_string(h.count());
    AppendF(out, ",\"min\":%.1f", us(static_cast<double>(h.min())));
    AppendF(out, ",\"p50\":%.1f", us(static_cast<double>(h.Percentile(0.50))));
    AppendF(out, ",\"p90\":%.1f", us(static_cast<double>(h.Percentile(0.90))));
    AppendF(out, ",\"p99\":%.1f", us(static_cast<double>(h.Percentile(0.99))));
    AppendF(out, ",\"p999\":%.1f", us(static_cast<double>(h.Percentile(0.999))));
    AppendF(out, ",\"max\":%.1f", us(static_cast<double>(h.max())));
    AppendF(out, ",\"mean\":%.1f", us(h.Mean()));
    out += "}";
}

std::string JsonString(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string ToJson(const Options& o, const Stats& s) {
    auto err = [&s](ErrorKind k) { return s.errors[static_cast<size_t>(k)]; };
    uint64_t total_errors = 0;
    for (uint64_t e : s.errors) {
        total_errors += e;
    }
    std::string out = "{";
    out += "\"url\":" + JsonString(o.url);
    out += ",\"method\":" + JsonString(o.method);
    out += std::string(",\"mode\":\"") + (o.rate > 0.0 ? "open" : "closed") + "\"";
    out += ",\"connections\":" + std::to_string(o.connections);
    out += ",\"threads\":" + std::to_string(o.threads);
    AppendF(out, ",\"rate_target\":%.1f", o.rate);
    AppendF(out, ",\"duration_s\":%.3f", o.duration_s);
    AppendF(out, ",\"warmup_s\":%.3f", o.warmup_s);
    out += ",\"requests\":" + std::to_string(s.requests);
    AppendF(out, ",\"rps\":%.1f", static_cast<double>(s.requests) / o.duration_s);
    out += ",\"errors\":{\"connect\":" + std::to_string(err(ErrorKind::kConnect)) +
           ",\"timeout\":" + std::to_string(err(ErrorKind::kTimeout)) +
           ",\"status_non_2xx\":" + std::to_string(err(ErrorKind::kStatus)) +
           ",\"parse\":" + std::to_string(err(ErrorKind::kParse)) +
           ",\"io\":" + std::to_string(err(ErrorKind::kIo)) +
           ",\"total\":" + std::to_string(total_errors) + "}";
    out += ",\"status\":{";
    bool first = true;
    for (size_t code = 0; code < s.status.size(); ++code) {
        if (s.status[code] != 0) {
            out += (first ? "\"" : ",\"") + std::to_string(code) +
                   "\":" + std::to_string(s.status[code]);
            first = false;
        }
    }
    out += "}";
    out += ",\"sent\":" + std::to_string(s.sent);
    out += ",\"connects\":" + std::to_string(s.connects);
    out += ",\"bytes_read\":" + std::to_string(s.bytes_read);
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto seconds = [](const timeval& tv) {
        return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
    };
    AppendF(out, ",\"client_cpu_s\":%.3f", seconds(ru.ru_utime) + seconds(ru.ru_stime));
    out += ",";
    AppendHistogram(out, "latency_us", s.latency);
    out += ",";
    AppendHistogram(out, "ttfb_us", s.ttfb);
    if (!o.record_header.empty()) {
        out += ",\"header_name\":" + JsonString(o.record_header) + ",";
        AppendHistogram(out, "header_us", s.header);
    }
    if (o.rate > 0.0) {
        out += ",";
        AppendHistogram(out, "send_lag_us", s.send_lag);
    }
    out += "}\n";
    return out;
}

void PrintSummary(const Options& o, const Stats& s) {
    uint64_t total_errors = 0;
    for (uint64_t e : s.errors) {
        total_errors += e;
    }
    const double us = 1000.0;
    std::fprintf(
        stderr,
        "%s %s  %s loop, %d conns, %d threads%s, %.1fs (+%.1fs warm-up)\n"
        "  %llu ok, %llu errors, %.1f req/s\n"
        "  latency us  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n"
        "  ttfb    us  p50 %.1f  p99 %.1f\n",
        o.method.c_str(), o.url.c_str(), o.rate > 0.0 ? "open" : "closed", o.connections, o.threads,
        o.rate > 0.0 ? (", " + std::to_string(static_cast<long long>(o.rate)) + " req/s").c_str()
                     : "",
        o.duration_s, o.warmup_s, static_cast<unsigned long long>(s.requests),
        static_cast<unsigned long long>(total_errors),
        static_cast<double>(s.requests) / o.duration_s,
        static_cast<double>(s.latency.Percentile(0.5)) / us,
        static_cast<double>(s.latency.Percentile(0.9)) / us,
        static_cast<double>(s.latency.Percentile(0.99)) / us,
        static_cast<double>(s.latency.Percentile(0.999)) / us,
        static_cast<double>(s.latency.max()) / us, s.latency.Mean() / us,
        static_cast<double>(s.ttfb.Percentile(0.5)) / us,
        static_cast<double>(s.ttfb.Percentile(0.99)) / us);
    if (!o.record_header.empty()) {
        std::fprintf(stderr, "  %s us  p50 %.1f  p99 %.1f  p99.9 %.1f  (%llu samples)\n",
                     o.record_header.c_str(), static_cast<double>(s.header.Percentile(0.5)) / us,
                     static_cast<double>(s.header.Percentile(0.99)) / us,
                     static_cast<double>(s.header.Percentile(0.999)) / us,
                     static_cast<unsigned long long>(s.header.count()));
    }
}

/// Raises the soft open-file limit to the hard one (each connection is a descriptor).
void RaiseFileLimit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2) {
        const std::string_view sub = argv[1];
        if (sub == "hub") {
            return HubMain(argc - 2, argv + 2);
        }
        if (sub == "hub-announce") {
            return HubAnnounceMain(argc - 2, argv + 2);
        }
        if (sub == "hub-merge") {
            return HubMergeMain(argc - 2, argv + 2);
        }
    }
    Cli cli;
    std::string error;
    if (!ParseArgs(argc, argv, &cli, &error)) {
        std::fprintf(stderr, "conduit-loadgen: %s\n\n%s", error.c_str(), kUsage);
        return 2;
    }
    if (cli.help) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    if (cli.self_test) {
        return RunSelfTest();
    }
    Options& o = cli.opts;
    if (o.url.empty()) {
        std::fprintf(stderr, "conduit-loadgen: --url is required\n\n%s", kUsage);
        return 2;
    }
    if (!cli.body_file.empty() && !ReadFile(cli.body_file, &o.body)) {
        std::fprintf(stderr, "conduit-loadgen: cannot read --body-file %s\n",
                     cli.body_file.c_str());
        return 2;
    }
    if (!cli.connection_headers_file.empty()) {
        std::string text;
        if (!ReadFile(cli.connection_headers_file, &text)) {
            std::fprintf(stderr, "conduit-loadgen: cannot read --header-per-connection %s\n",
                         cli.connection_headers_file.c_str());
            return 2;
        }
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            if (!line.empty() && line.back() == '\r') {
                line.pop_back();
            }
            if (line.empty()) {
                continue;
            }
            if (line.find(':') == std::string::npos) {
                std::fprintf(stderr, "conduit-loadgen: bad header line '%s' in %s\n", line.c_str(),
                             cli.connection_headers_file.c_str());
                return 2;
            }
            o.connection_headers.push_back(line);
        }
        if (o.connection_headers.empty()) {
            std::fprintf(stderr, "conduit-loadgen: no headers in %s\n",
                         cli.connection_headers_file.c_str());
            return 2;
        }
    }
    if (o.method.empty()) {
        o.method = cli.has_body ? "POST" : "GET";
    }
    o.threads = std::min(o.threads, o.connections);

    Target target;
    if (!ParseUrl(o.url, &target, &error)) {
        std::fprintf(stderr, "conduit-loadgen: %s\n", error.c_str());
        return 2;
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (const int rc = ::getaddrinfo(target.host.c_str(), target.port.c_str(), &hints, &res);
        rc != 0 || res == nullptr) {
        std::fprintf(stderr, "conduit-loadgen: cannot resolve %s: %s\n", target.host.c_str(),
                     ::gai_strerror(rc));
        return 2;
    }
    Plan plan;
    plan.opts = o;
    std::memcpy(&plan.addr, res->ai_addr, res->ai_addrlen);
    plan.addr_len = res->ai_addrlen;
    ::freeaddrinfo(res);
    plan.request = BuildRequest(o, target);
    for (const std::string& h : o.connection_headers) {
        plan.connection_requests.push_back(BuildRequest(o, target, h));
    }

    std::signal(SIGPIPE, SIG_IGN);
    RaiseFileLimit();
    // A short lead so every thread starts on the same schedule.
    plan.start_ns = NowNs() + 20'000'000;
    plan.window_begin_ns = plan.start_ns + static_cast<int64_t>(o.warmup_s * 1e9);
    plan.window_end_ns = plan.window_begin_ns + static_cast<int64_t>(o.duration_s * 1e9);
    plan.drain_end_ns = plan.window_end_ns + o.timeout_ms * 1'000'000;

    const Stats stats = RunLoad(plan);
    const std::string json = ToJson(o, stats);
    std::fwrite(json.data(), 1, json.size(), stdout);
    std::fflush(stdout);
    PrintSummary(o, stats);
    return 0;
}
