// conduit-ws-ref-server: the same-run reference of bench/hubs.sh. A trivial WebSocket server on one
// thread (epoll, non-blocking, level-triggered) that holds any number of connections and, on
// request, sends one timestamped SignalR-shaped text frame to all of them. It does just enough for
// `conduit-loadgen hub` to treat it like a hub: a canned negotiate response, the JSON handshake
// answered with `{}\x1e`, pings ignored. So the load generator's own cost (connect rate, fan-out
// latency) and a floor for per-connection server memory can be read next to Conduit's.
//
//   conduit-ws-ref-server [--listen 127.0.0.1:0]
//     POST <path>/negotiate  → 200 with a fixed SignalR negotiate response (token "ref")
//     GET  <any path> with Upgrade: websocket  → 101, then a WebSocket connection
//     POST /broadcast  body {"message":"...","severity":"..."} → sends
//          {"type":1,"target":"SystemAnnouncement","arguments":["<message>","<severity>"]}\x1e
//          to every WebSocket, answers 200 {"sent":N}
//     GET  /stats  → {"connections":N}
//
// Prints "listening on http://HOST:PORT" on stdout once bound.

#include "loadgen/hub_wire.hpp"

#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {

namespace wire = conduit::loadgen::wire;

// --- SHA-1 (RFC 3174) and base64, for Sec-WebSocket-Accept ---

uint32_t Rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

std::string Sha1(std::string_view data) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    std::string msg(data);
    const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
    msg.push_back(static_cast<char>(0x80));
    while (msg.size() % 64 != 56) {
        msg.push_back('\0');
    }
    for (int shift = 56; shift >= 0; shift -= 8) {
        msg.push_back(static_cast<char>((bits >> shift) & 0xFF));
    }
    for (size_t block = 0; block < msg.size(); block += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; ++i) {
            const auto* p = reinterpret_cast<const unsigned char*>(msg.data() + block + 4 * i);
            w[i] = (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
                   (static_cast<uint32_t>(p[2]) << 8) | p[3];
        }
        for (int i = 16; i < 80; ++i) {
            w[i] = Rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; ++i) {
            uint32_t f = 0, k = 0;
            if (i < 20) {
                f = (b & c) | (~b & d);
                k = 0x5A827999u;
            } else if (i < 40) {
                f = b ^ c ^ d;
                k = 0x6ED9EBA1u;
            } else if (i < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8F1BBCDCu;
            } else {
                f = b ^ c ^ d;
                k = 0xCA62C1D6u;
            }
            const uint32_t t = Rotl(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = Rotl(b, 30);
            b = a;
            a = t;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    std::string out;
    for (uint32_t v : h) {
        for (int shift = 24; shift >= 0; shift -= 8) {
            out.push_back(static_cast<char>((v >> shift) & 0xFF));
        }
    }
    return out;
}

std::string Base64(std::string_view in) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) |
                           (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    if (i + 1 == in.size()) {
        const uint32_t v = static_cast<uint8_t>(in[i]) << 16;
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        const uint32_t v =
            (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

// --- server ---

struct Conn {
    int fd = -1;
    bool websocket = false;
    bool want_out = false;
    std::string in;
    std::string out;
};

std::string HeaderValue(std::string_view head, std::string_view name) {
    size_t pos = 0;
    while ((pos = head.find("\r\n", pos)) != std::string_view::npos) {
        pos += 2;
        if (head.size() - pos < name.size() + 1) {
            break;
        }
        bool same = true;
        for (size_t i = 0; i < name.size() && same; ++i) {
            same = std::tolower(static_cast<unsigned char>(head[pos + i])) ==
                   std::tolower(static_cast<unsigned char>(name[i]));
        }
        if (same && head[pos + name.size()] == ':') {
            size_t start = pos + name.size() + 1;
            const size_t end = head.find("\r\n", start);
            while (start < end && head[start] == ' ') {
                ++start;
            }
            return std::string(head.substr(start, end - start));
        }
    }
    return {};
}

/// An unmasked server text frame.
std::string TextFrame(std::string_view payload) {
    std::string f;
    f.push_back(static_cast<char>(0x81));
    if (payload.size() < 126) {
        f.push_back(static_cast<char>(payload.size()));
    } else if (payload.size() <= 0xFFFF) {
        f.push_back(static_cast<char>(126));
        f.push_back(static_cast<char>((payload.size() >> 8) & 0xFF));
        f.push_back(static_cast<char>(payload.size() & 0xFF));
    } else {
        f.push_back(static_cast<char>(127));
        for (int shift = 56; shift >= 0; shift -= 8) {
            f.push_back(static_cast<char>((static_cast<uint64_t>(payload.size()) >> shift) & 0xFF));
        }
    }
    f.append(payload);
    return f;
}

class Server {
public:
    bool Listen(const std::string& host, int port);
    void Run();

private:
    void Accept();
    void OnEvent(int fd, uint32_t events);
    void Write(Conn& c, std::string_view bytes);
    void Flush(Conn& c);
    void SetOut(Conn& c, bool want);
    void CloseConn(Conn& c);
    bool HandleHttp(Conn& c);
    bool HandleFrames(Conn& c);
    void Broadcast(std::string_view body, Conn& requester);

    int listen_fd_ = -1;
    int epoll_fd_ = -1;
    std::vector<std::unique_ptr<Conn>> conns_;  // by fd
    size_t websockets_ = 0;
};

bool Server::Listen(const std::string& host, int port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
        std::fprintf(stderr, "ws-ref-server: bad host %s\n", host.c_str());
        return false;
    }
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 4096) != 0) {
        std::fprintf(stderr, "ws-ref-server: bind/listen: %s\n", std::strerror(errno));
        return false;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listen_fd_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
    std::printf("listening on http://%s:%d\n", host.c_str(), ntohs(addr.sin_port));
    std::fflush(stdout);
    return true;
}

void Server::Run() {
    std::vector<epoll_event> events(512);
    for (;;) {
        const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int i = 0; i < n; ++i) {
            const int fd = events[static_cast<size_t>(i)].data.fd;
            if (fd == listen_fd_) {
                Accept();
            } else {
                OnEvent(fd, events[static_cast<size_t>(i)].events);
            }
        }
    }
}

void Server::Accept() {
    for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;  // EAGAIN, or out of descriptors (retried on the next event)
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (static_cast<size_t>(fd) >= conns_.size()) {
            conns_.resize(static_cast<size_t>(fd) + 1024);
        }
        conns_[static_cast<size_t>(fd)] = std::make_unique<Conn>();
        conns_[static_cast<size_t>(fd)]->fd = fd;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.fd = fd;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    }
}

void Server::SetOut(Conn& c, bool want) {
    if (c.want_out == want) return;
    c.want_out = want;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
    ev.data.fd = c.fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Server::Write(Conn& c, std::string_view bytes) {
    if (c.out.empty()) {
        const ssize_t n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n == static_cast<ssize_t>(bytes.size())) {
            return;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            return;  // the read side sees the error and closes
        }
        bytes.remove_prefix(n > 0 ? static_cast<size_t>(n) : 0);
    }
    c.out.append(bytes);
    SetOut(c, true);
}

void Server::Flush(Conn& c) {
    while (!c.out.empty()) {
        const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            return;
        }
        c.out.erase(0, static_cast<size_t>(n));
    }
    std::string().swap(c.out);
    SetOut(c, false);
}

void Server::CloseConn(Conn& c) {
    const int fd = c.fd;
    if (c.websocket) {
        --websockets_;
    }
    ::close(fd);
    conns_[static_cast<size_t>(fd)].reset();
}

void Server::OnEvent(int fd, uint32_t events) {
    if (static_cast<size_t>(fd) >= conns_.size() || !conns_[static_cast<size_t>(fd)]) {
        return;
    }
    Conn& c = *conns_[static_cast<size_t>(fd)];
    if ((events & EPOLLOUT) != 0) {
        Flush(c);
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == 0) {
        return;
    }
    char buf[16384];
    bool open = true;
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            c.in.append(buf, static_cast<size_t>(n));
            if (static_cast<size_t>(n) < sizeof(buf)) break;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        open = false;
        break;
    }
    const bool keep = c.websocket ? HandleFrames(c) : HandleHttp(c);
    if (!keep || !open) {
        CloseConn(c);
        return;
    }
    if (c.in.empty() && c.in.capacity() > 1024) {
        std::string().swap(c.in);
    }
}

bool Server::HandleHttp(Conn& c) {
    for (;;) {
        const size_t end = c.in.find("\r\n\r\n");
        if (end == std::string::npos) {
            return c.in.size() < 65536;
        }
        const std::string_view head(c.in.data(), end + 2);
        const size_t sp1 = head.find(' ');
        const size_t sp2 = head.find(' ', sp1 + 1);
        if (sp1 == std::string_view::npos || sp2 == std::string_view::npos) {
            return false;
        }
        const std::string method(head.substr(0, sp1));
        const std::string path(head.substr(sp1 + 1, sp2 - sp1 - 1));
        const std::string length = HeaderValue(head, "Content-Length");
        const size_t body_len = length.empty() ? 0 : std::strtoul(length.c_str(), nullptr, 10);
        if (c.in.size() < end + 4 + body_len) {
            return true;
        }
        const std::string body = c.in.substr(end + 4, body_len);
        const std::string key = HeaderValue(head, "Sec-WebSocket-Key");
        const std::string upgrade = HeaderValue(head, "Upgrade");
        c.in.erase(0, end + 4 + body_len);
        if (method == "GET" && !key.empty() && (upgrade == "websocket" || upgrade == "WebSocket")) {
            const std::string accept = Base64(Sha1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"));
            Write(c,
                  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                  "Upgrade\r\nSec-WebSocket-Accept: " +
                      accept + "\r\n\r\n");
            c.websocket = true;
            ++websockets_;
            return HandleFrames(c);
        }
        if (method == "POST" && path.find("/negotiate") != std::string::npos) {
            // The same round trip as a SignalR negotiate, so the load generator's path is the
            // same as against a hub (the token is not checked).
            const std::string json =
                "{\"negotiateVersion\":1,\"connectionId\":\"ref\",\"connectionToken\":\"ref\","
                "\"availableTransports\":[{\"transport\":\"WebSockets\",\"transferFormats\":["
                "\"Text\"]}]}";
            Write(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                         std::to_string(json.size()) + "\r\n\r\n" + json);
            continue;
        }
        if (method == "POST" && path.rfind("/broadcast", 0) == 0) {
            Broadcast(body, c);
            continue;
        }
        if (method == "GET" && path == "/stats") {
            const std::string json = "{\"connections\":" + std::to_string(websockets_) + "}";
            Write(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                         std::to_string(json.size()) + "\r\n\r\n" + json);
            continue;
        }
        Write(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
}

void Server::Broadcast(std::string_view body, Conn& requester) {
    const std::string_view message = wire::JsonStringField(body, "message");
    std::string_view severity = wire::JsonStringField(body, "severity");
    if (severity.empty()) severity = "info";
    std::string record = "{\"type\":1,\"target\":\"SystemAnnouncement\",\"arguments\":[\"";
    record.append(message);
    record += "\",\"";
    record.append(severity);
    record += "\"]}\x1e";
    const std::string frame = TextFrame(record);
    size_t sent = 0;
    for (auto& c : conns_) {
        if (c && c->websocket) {
            Write(*c, frame);
            ++sent;
        }
    }
    const std::string json = "{\"sent\":" + std::to_string(sent) + "}";
    Write(requester, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                         std::to_string(json.size()) + "\r\n\r\n" + json);
}

bool Server::HandleFrames(Conn& c) {
    size_t pos = 0;
    std::string error;
    while (pos < c.in.size()) {
        wire::WsFrame f;
        size_t used = 0;
        const auto r =
            wire::DecodeFrame(c.in.data() + pos, c.in.size() - pos, 1 << 20, &f, &used, &error);
        if (r == wire::DecodeResult::kNeedMore) break;
        if (r == wire::DecodeResult::kError) return false;
        pos += used;
        switch (static_cast<wire::WsOpcode>(f.opcode)) {
            case wire::WsOpcode::kText:
                if (f.payload.find("\"protocol\"") != std::string_view::npos) {
                    Write(c, TextFrame("{}\x1e"));  // the SignalR JSON handshake response
                }
                break;  // pings and anything else: ignored
            case wire::WsOpcode::kPing: {
                std::string pong = TextFrame(f.payload);
                pong[0] = static_cast<char>(0x8A);
                Write(c, pong);
                break;
            }
            case wire::WsOpcode::kClose:
                Write(c, std::string("\x88\x00", 2));
                return false;
            default:
                break;
        }
    }
    c.in.erase(0, pos);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    std::string listen = "127.0.0.1:0";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--listen" && i + 1 < argc) {
            listen = argv[++i];
        } else if (a == "--help" || a == "-h") {
            std::puts("Usage: conduit-ws-ref-server [--listen HOST:PORT]");
            return 0;
        } else {
            std::fprintf(stderr, "ws-ref-server: unknown argument '%s'\n", a.c_str());
            return 2;
        }
    }
    const size_t colon = listen.rfind(':');
    if (colon == std::string::npos) {
        std::fprintf(stderr, "ws-ref-server: --listen needs HOST:PORT\n");
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    Server server;
    if (!server.Listen(listen.substr(0, colon), std::atoi(listen.c_str() + colon + 1))) {
        return 1;
    }
    server.Run();
    return 0;
}
