// conduit-webhook-sink: a minimal, fast webhook receiver for bench/tasks.sh.
//
//   conduit-webhook-sink --listen 127.0.0.1:0        # stdout: "listening on http://127.0.0.1:PORT"
//
// One thread, epoll, HTTP/1.1 keep-alive. Every request except the control routes below is
// answered `200` with an empty body as soon as its body has arrived, and recorded:
//  - receive time (CLOCK_REALTIME, µs, when the last body byte was read);
//  - delivery latency = receive time − the payload's "timestamp" member (ISO-8601 with ms, UTC;
//    Conduit sets it when it builds the webhook, i.e. when the task reached its terminal state)
//    — so latency counts the webhook's queueing, the delivery worker and the HTTP round trip;
//  - the `webhook-id` header (repeats are counted as duplicates: at-least-once delivery) and the
//    payload's "type".
//
// Control routes (not recorded):
//   GET  /stats    {"count","unique","duplicates","first_us","last_us","rate_per_s",
//                   "latency_ms":{"count","p50","p90","p95","p99","max","mean"},"types":{...},
//                   "bad_timestamp","held","release_us"} — rate = (count − 1) / (last − first)
//   POST /reset    forgets everything recorded
//   POST /hold     from now on, deliveries are read but not answered (the sender's connections
//                  stay busy, so a backlog builds up in its queue)
//   POST /release  forgets everything recorded (the held deliveries included), notes the time
//                  (release_us), answers every held delivery and stops holding: what arrives
//                  next is the backlog draining
//   GET  /health   200

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;

int64_t NowUs() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

/// "YYYY-MM-DDTHH:MM:SS[.fff]Z" → Unix ms; -1 when malformed.
int64_t ParseIsoMs(std::string_view s) {
    auto num = [&](size_t pos, size_t len, int64_t* out) {
        if (pos + len > s.size()) {
            return false;
        }
        int64_t v = 0;
        for (size_t i = pos; i < pos + len; ++i) {
            if (s[i] < '0' || s[i] > '9') {
                return false;
            }
            v = v * 10 + (s[i] - '0');
        }
        *out = v;
        return true;
    };
    int64_t y, mo, d, h, mi, se, ms = 0;
    if (!num(0, 4, &y) || !num(5, 2, &mo) || !num(8, 2, &d) || !num(11, 2, &h) ||
        !num(14, 2, &mi) || !num(17, 2, &se)) {
        return -1;
    }
    if (s.size() > 19 && s[19] == '.') {
        size_t i = 20;
        int64_t frac = 0;
        int digits = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
            if (digits < 3) {
                frac = frac * 10 + (s[i] - '0');
                ++digits;
            }
            ++i;
        }
        while (digits < 3) {
            frac *= 10;
            ++digits;
        }
        ms = frac;
    }
    int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
    return ((days * 24 + h) * 60 + mi) * 60'000 + se * 1000 + ms;
}

/// The string value of top-level-ish member `"name":"..."` (first occurrence), or empty.
std::string_view JsonStringMember(std::string_view body, std::string_view name) {
    std::string key;
    key.reserve(name.size() + 4);
    key.push_back('"');
    key.append(name);
    key.append("\":\"");
    size_t p = body.find(key);
    if (p == std::string_view::npos) {
        return {};
    }
    p += key.size();
    size_t e = body.find('"', p);
    if (e == std::string_view::npos) {
        return {};
    }
    return body.substr(p, e - p);
}

bool IEquals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return true;
}

struct Recorder {
    std::vector<int64_t> latency_us;  // one per recorded delivery with a timestamp
    int64_t count = 0;
    int64_t first_us = 0;
    int64_t last_us = 0;
    int64_t bad_timestamp = 0;
    std::unordered_set<std::string> ids;
    int64_t duplicates = 0;
    std::map<std::string, int64_t> types;
    int64_t held = 0;        // deliveries waiting for /release
    int64_t release_us = 0;  // time of the last /release

    void Reset() {
        int64_t keep_held = held;
        int64_t keep_release = release_us;
        *this = Recorder();
        held = keep_held;
        release_us = keep_release;
    }

    void Record(int64_t now_us, std::string_view webhook_id, std::string_view body) {
        ++count;
        if (first_us == 0) {
            first_us = now_us;
        }
        last_us = now_us;
        if (!webhook_id.empty() && !ids.insert(std::string(webhook_id)).second) {
            ++duplicates;
        }
        std::string_view type = JsonStringMember(body, "type");
        types[std::string(type.empty() ? "?" : type)] += 1;
        int64_t ts_ms = ParseIsoMs(JsonStringMember(body, "timestamp"));
        if (ts_ms < 0) {
            ++bad_timestamp;
            return;
        }
        latency_us.push_back(now_us - ts_ms * 1000);
    }

    std::string StatsJson() const {
        std::vector<int64_t> v = latency_us;
        std::sort(v.begin(), v.end());
        auto pct = [&](double p) -> double {
            if (v.empty()) {
                return 0;
            }
            size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
            return static_cast<double>(v[std::min(i, v.size() - 1)]) / 1000.0;
        };
        double mean = 0;
        for (int64_t x : v) {
            mean += static_cast<double>(x);
        }
        mean = v.empty() ? 0 : mean / static_cast<double>(v.size()) / 1000.0;
        double rate = count > 1 && last_us > first_us ? static_cast<double>(count - 1) * 1e6 /
                                                            static_cast<double>(last_us - first_us)
                                                      : 0;
        char buf[1200];
        std::snprintf(buf, sizeof(buf),
                      "{\"count\":%lld,\"unique\":%zu,\"duplicates\":%lld,\"first_us\":%lld,"
                      "\"last_us\":%lld,\"rate_per_s\":%.1f,\"bad_timestamp\":%lld,"
                      "\"held\":%lld,\"release_us\":%lld,"
                      "\"latency_ms\":{\"count\":%zu,\"p50\":%.3f,\"p90\":%.3f,\"p95\":%.3f,"
                      "\"p99\":%.3f,\"max\":%.3f,\"mean\":%.3f},\"types\":{",
                      static_cast<long long>(count), ids.size(), static_cast<long long>(duplicates),
                      static_cast<long long>(first_us), static_cast<long long>(last_us), rate,
                      static_cast<long long>(bad_timestamp), static_cast<long long>(held),
                      static_cast<long long>(release_us), v.size(), pct(0.5), pct(0.9), pct(0.95),
                      pct(0.99), v.empty() ? 0.0 : static_cast<double>(v.back()) / 1000, mean);
        std::string out = buf;
        bool first = true;
        for (const auto& [k, n] : types) {
            out += (first ? "\"" : ",\"") + k + "\":" + std::to_string(n);
            first = false;
        }
        out += "}}\n";
        return out;
    }
};

struct Conn {
    int fd = -1;
    std::string in;
    std::string out;
    size_t out_off = 0;
    bool held = false;  // `out` is withheld until /release
};

class Server {
public:
    bool Listen(const std::string& host, int port) {
        lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(port));
        if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
            std::fprintf(stderr, "bad listen host %s (IPv4 only)\n", host.c_str());
            return false;
        }
        if (::bind(lfd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
            ::listen(lfd_, 1024) != 0) {
            std::perror("bind/listen");
            return false;
        }
        socklen_t len = sizeof(addr);
        ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&addr), &len);
        port_ = ntohs(addr.sin_port);
        ep_ = ::epoll_create1(EPOLL_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = nullptr;
        ::epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev);
        std::printf("listening on http://%s:%d\n", host.c_str(), port_);
        std::fflush(stdout);
        return true;
    }

    void Run() {
        std::vector<epoll_event> events(256);
        std::vector<char> buf(64 * 1024);
        while (!g_stop) {
            int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 200);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                break;
            }
            for (int i = 0; i < n; ++i) {
                auto* c = static_cast<Conn*>(events[static_cast<size_t>(i)].data.ptr);
                if (c == nullptr) {
                    Accept();
                    continue;
                }
                uint32_t e = events[static_cast<size_t>(i)].events;
                if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                    if (!Read(*c, buf)) {
                        Close(c);
                        continue;
                    }
                }
                if ((e & EPOLLOUT) && !Flush(*c)) {
                    Close(c);
                }
            }
        }
    }

private:
    void Accept() {
        for (;;) {
            int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                return;
            }
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            auto c = std::make_unique<Conn>();
            c->fd = fd;
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.ptr = c.get();
            ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
            conns_[c.get()] = std::move(c);
        }
    }

    void Close(Conn* c) {
        if (c->held) {
            rec_.held -= 1;
        }
        ::close(c->fd);
        conns_.erase(c);
    }

    void Release() {
        rec_.Reset();
        rec_.release_us = NowUs();
        holding_ = false;
        for (auto& [ptr, c] : conns_) {
            if (c->held) {
                c->held = false;
                rec_.held -= 1;
                if (!Flush(*c)) {
                    // Closed by the next event on it (closing here would leave a dangling
                    // pointer in the current epoll batch).
                    ::shutdown(c->fd, SHUT_RDWR);
                }
            }
        }
    }

    bool Read(Conn& c, std::vector<char>& buf) {
        for (;;) {
            ssize_t r = ::read(c.fd, buf.data(), buf.size());
            if (r > 0) {
                c.in.append(buf.data(), static_cast<size_t>(r));
                continue;
            }
            if (r == 0) {
                return false;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            return false;
        }
        // Every complete request in the buffer.
        for (;;) {
            size_t end = c.in.find("\r\n\r\n");
            if (end == std::string::npos) {
                return c.in.size() < 1'000'000;
            }
            std::string_view head(c.in.data(), end);
            size_t line_end = head.find("\r\n");
            std::string_view request_line = head.substr(0, line_end);
            size_t content_length = 0;
            bool chunked = false;
            bool close_after = false;
            std::string_view webhook_id;
            size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
            while (pos < head.size()) {
                size_t e = head.find("\r\n", pos);
                if (e == std::string_view::npos) {
                    e = head.size();
                }
                std::string_view line = head.substr(pos, e - pos);
                size_t colon = line.find(':');
                if (colon != std::string_view::npos) {
                    std::string_view name = line.substr(0, colon);
                    std::string_view value = line.substr(colon + 1);
                    while (!value.empty() && value.front() == ' ') {
                        value.remove_prefix(1);
                    }
                    if (IEquals(name, "content-length")) {
                        content_length = static_cast<size_t>(
                            std::strtoull(std::string(value).c_str(), nullptr, 10));
                    } else if (IEquals(name, "transfer-encoding")) {
                        chunked = true;
                    } else if (IEquals(name, "connection") && IEquals(value, "close")) {
                        close_after = true;
                    } else if (IEquals(name, "webhook-id")) {
                        webhook_id = value;
                    }
                }
                pos = e + 2;
            }
            if (chunked) {
                std::fprintf(stderr, "chunked request bodies are not supported\n");
                return false;
            }
            size_t total = end + 4 + content_length;
            if (c.in.size() < total) {
                return true;
            }
            std::string_view body(c.in.data() + end + 4, content_length);
            int64_t now = NowUs();
            std::string response;
            if (request_line.rfind("GET /stats", 0) == 0) {
                std::string json = rec_.StatsJson();
                response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(json.size()) + "\r\n\r\n" + json;
            } else if (request_line.rfind("POST /reset", 0) == 0) {
                rec_.Reset();
                response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            } else if (request_line.rfind("GET /health", 0) == 0) {
                response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            } else if (request_line.rfind("POST /hold", 0) == 0) {
                holding_ = true;
                response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            } else if (request_line.rfind("POST /release", 0) == 0) {
                Release();
                response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            } else {
                rec_.Record(now, webhook_id, body);
                response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                if (holding_) {
                    c.out += response;
                    c.in.erase(0, total);
                    c.held = true;
                    rec_.held += 1;
                    return true;  // the sender waits for this response: nothing else comes
                }
            }
            c.out += response;
            c.in.erase(0, total);
            if (!Flush(c)) {
                return false;
            }
            if (close_after) {
                return false;
            }
        }
    }

    bool Flush(Conn& c) {
        while (c.out_off < c.out.size()) {
            ssize_t w =
                ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
            if (w > 0) {
                c.out_off += static_cast<size_t>(w);
                continue;
            }
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                epoll_event ev{};
                ev.events = EPOLLIN | EPOLLOUT;
                ev.data.ptr = &c;
                ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
                return true;
            }
            return false;
        }
        c.out.clear();
        c.out_off = 0;
        return true;
    }

    int lfd_ = -1;
    int ep_ = -1;
    int port_ = 0;
    bool holding_ = false;
    Recorder rec_;
    std::unordered_map<Conn*, std::unique_ptr<Conn>> conns_;
};

}  // namespace

int main(int argc, char** argv) {
    std::string listen = "127.0.0.1:0";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--listen" && i + 1 < argc) {
            listen = argv[++i];
        } else if (a == "--help" || a == "-h") {
            std::puts("Usage: conduit-webhook-sink [--listen HOST:PORT]   (see the source header)");
            return 0;
        } else {
            std::fprintf(stderr, "unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    size_t colon = listen.rfind(':');
    if (colon == std::string::npos) {
        std::fprintf(stderr, "--listen wants HOST:PORT\n");
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGTERM, [](int) { g_stop = 1; });
    std::signal(SIGINT, [](int) { g_stop = 1; });
    Server s;
    if (!s.Listen(listen.substr(0, colon), std::atoi(listen.c_str() + colon + 1))) {
        return 1;
    }
    s.Run();
    return 0;
}
