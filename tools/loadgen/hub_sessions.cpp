#include "loadgen/hub_sessions.hpp"

#include "loadgen/hub_wire.hpp"
#include "loadgen/loadgen.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sstream>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

namespace conduit::loadgen {

namespace {

using wire::ChunkedDecoder;
using wire::DecodeResult;
using wire::HeadResult;
using wire::HttpHead;
using wire::WsOpcode;

constexpr int64_t kMsNs = 1'000'000;
constexpr int64_t kSecNs = 1'000'000'000;
constexpr size_t kReadBuffer = 64 * 1024;
constexpr size_t kMaxFrame = 1 << 20;
constexpr size_t kMaxErrors = 8;

enum FailKind {
    kFailConnect,
    kFailNegotiate,
    kFailTransport,
    kFailHandshake,
    kFailTimeout,
    kFailKinds
};
constexpr const char* kFailNames[kFailKinds] = {"connect", "negotiate", "transport", "handshake",
                                                "timeout"};

int64_t ClockNs(clockid_t id) {
    timespec ts{};
    ::clock_gettime(id, &ts);
    return static_cast<int64_t>(ts.tv_sec) * kSecNs + ts.tv_nsec;
}

/// Phases of a session's main socket (WebSocket / SSE stream / long-poll GETs).
enum class Phase : uint8_t {
    kIdle,         // not started
    kNegotiating,  // WS: negotiate sent on the main socket; SSE/LP: on the POST socket
    kUpgrading,    // WS: upgrade GET sent
    kOpening,      // SSE: GET sent, waiting for the head / first bytes; LP: first poll sent
    kHandshaking,  // handshake sent, waiting for {}
    kConnected,
    kDone,  // failed or dropped; sockets closed
};

/// Phases of the POST socket (SSE and long polling).
enum class PostPhase : uint8_t { kNone, kConnecting, kNegotiating, kIdle, kSending };

struct Sock {
    int fd = -1;
    bool connecting = false;  // non-blocking connect in progress
    bool want_out = false;    // EPOLLOUT registered
    std::string in;
    std::string out;
};

struct Session {
    Sock main;
    Sock post;
    Phase phase = Phase::kIdle;
    PostPhase post_phase = PostPhase::kNone;
    bool handshake_queued = false;
    bool body_chunked = false;  // SSE stream body
    uint32_t messages = 0;
    int64_t started_ns = 0;
    std::string token;
    std::string post_queue;  // records waiting for a POST (SSE/LP)
    std::string pending;     // WS: fragmented message; SSE: decoded stream bytes
    ChunkedDecoder chunks;
    const std::string* extra_header = nullptr;
};

class Engine {
public:
    Engine(const HubOptions& o, HubStats* stats) : o_(o), stats_(*stats), buf_(kReadBuffer) {}
    ~Engine();

    bool Run(std::string* error);

private:
    bool Setup(std::string* error);
    void StartSession(size_t i, int64_t now);
    bool OpenSocket(Sock& s, size_t i, bool post);
    void Register(Sock& s, size_t i, bool post);
    void SetOut(Sock& s, size_t i, bool post, bool want);
    void Send(Session& s, size_t i, bool post, std::string_view bytes);
    void Flush(Session& s, size_t i, bool post);
    void OnEvent(size_t i, bool post, uint32_t events);
    bool ReadAll(Session& s, bool post, int64_t* kernel_rx);
    void ProcessMain(Session& s, size_t i, int64_t kernel_rx);
    void ProcessPost(Session& s, size_t i);
    void ProcessFrames(Session& s, size_t i, int64_t kernel_rx);
    void HandleRecords(Session& s, size_t i, std::string_view data, int64_t kernel_rx);
    void QueuePost(Session& s, size_t i, std::string_view records);
    void SendPoll(Session& s, size_t i);
    void AfterNegotiate(Session& s, size_t i, std::string_view body);
    void Connected(Session& s);
    void Fail(Session& s, FailKind kind, const std::string& why);
    void Drop(Session& s, const std::string& why);
    void CloseAll(Session& s);
    void NoteError(const std::string& text);
    std::string Request(const char* method,
                        const std::string& path,
                        const Session& s,
                        std::string_view extra,
                        std::string_view body) const;
    void Housekeeping(int64_t now);
    bool RampDone() const { return settled_ == sessions_.size(); }
    void WriteReady();
    uint32_t NextMask() {
        mask_state_ ^= mask_state_ << 13;
        mask_state_ ^= mask_state_ >> 17;
        mask_state_ ^= mask_state_ << 5;
        return mask_state_;
    }

    const HubOptions& o_;
    HubStats& stats_;
    std::vector<char> buf_;
    std::vector<Session> sessions_;
    sockaddr_storage addr_{};
    socklen_t addr_len_ = 0;
    std::string host_header_;
    std::string path_;  // hub path with any query
    std::string common_headers_;
    int epoll_fd_ = -1;
    int timer_fd_ = -1;
    size_t next_start_ = 0;
    size_t pending_ = 0;    // started, not settled
    size_t settled_ = 0;    // connected or failed
    size_t live_ = 0;       // connected and not dropped
    size_t satisfied_ = 0;  // live sessions that reached `expect`
    uint32_t mask_state_ = 0x9E3779B9u;
    clockid_t clock_ = CLOCK_REALTIME;
    std::vector<std::string> session_headers_;
    std::string samples_;
};

Engine::~Engine() {
    for (Session& s : sessions_) {
        CloseAll(s);
    }
    if (timer_fd_ >= 0) ::close(timer_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

bool Engine::Setup(std::string* error) {
    Target t;
    if (!ParseUrl(o_.url, &t, error)) {
        return false;
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (const int rc = ::getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &res);
        rc != 0 || res == nullptr) {
        *error = "cannot resolve " + t.host + ": " + ::gai_strerror(rc);
        return false;
    }
    std::memcpy(&addr_, res->ai_addr, res->ai_addrlen);
    addr_len_ = res->ai_addrlen;
    ::freeaddrinfo(res);
    host_header_ = t.host_header;
    path_ = t.path;
    for (const std::string& h : o_.headers) {
        common_headers_ += h;
        common_headers_ += "\r\n";
    }
    for (const std::string& h : o_.session_headers) {
        session_headers_.push_back(h + "\r\n");
    }
    clock_ = o_.realtime_clock ? CLOCK_REALTIME : CLOCK_MONOTONIC;
    sessions_.resize(static_cast<size_t>(o_.sessions));
    for (size_t i = 0; i < sessions_.size(); ++i) {
        if (!session_headers_.empty()) {
            sessions_[i].extra_header = &session_headers_[i % session_headers_.size()];
        }
    }
    stats_.failures_by_kind.assign(kFailKinds, 0);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epoll_fd_ < 0 || timer_fd_ < 0) {
        *error = "epoll/timerfd: " + std::string(std::strerror(errno));
        return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = UINT64_MAX;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &ev);
    itimerspec spec{};
    spec.it_value.tv_nsec = 5 * kMsNs;
    spec.it_interval.tv_nsec = 5 * kMsNs;  // ramp and housekeeping tick
    ::timerfd_settime(timer_fd_, 0, &spec, nullptr);
    return true;
}

std::string Engine::Request(const char* method,
                            const std::string& path,
                            const Session& s,
                            std::string_view extra,
                            std::string_view body) const {
    std::string r;
    r.reserve(256 + body.size());
    r += method;
    r += ' ';
    r += path;
    r += " HTTP/1.1\r\nHost: ";
    r += host_header_;
    r += "\r\n";
    r += common_headers_;
    if (s.extra_header != nullptr) {
        r += *s.extra_header;
    }
    r += extra;
    if (body.size() > 0 || std::strcmp(method, "POST") == 0) {
        r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    r += "\r\n";
    r += body;
    return r;
}

/// The hub path plus `name=value` in its query.
std::string WithQuery(const std::string& path, std::string_view name, std::string_view value) {
    std::string out = path;
    out += path.find('?') == std::string::npos ? '?' : '&';
    out += name;
    out += '=';
    out += value;
    return out;
}

/// `{hub}/negotiate?negotiateVersion=1`, keeping the hub URL's own query.
std::string NegotiatePath(const std::string& path) {
    const size_t q = path.find('?');
    std::string out = path.substr(0, q) + "/negotiate";
    if (q != std::string::npos) {
        out += path.substr(q);
    }
    return WithQuery(out, "negotiateVersion", "1");
}

bool Engine::OpenSocket(Sock& s, size_t i, bool post) {
    s.fd = ::socket(addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd < 0) {
        NoteError(std::string("socket: ") + std::strerror(errno));
        return false;
    }
    int one = 1;
    ::setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!post) {
        ::setsockopt(s.fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    }
    const int rc = ::connect(s.fd, reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
    if (rc != 0 && errno != EINPROGRESS) {
        NoteError(std::string("connect: ") + std::strerror(errno));
        ::close(s.fd);
        s.fd = -1;
        return false;
    }
    s.connecting = rc != 0;
    Register(s, i, post);
    return true;
}

void Engine::Register(Sock& s, size_t i, bool post) {
    epoll_event ev{};
    s.want_out = true;  // until connected and flushed
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.u64 = (static_cast<uint64_t>(i) << 1) | (post ? 1u : 0u);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s.fd, &ev);
}

void Engine::SetOut(Sock& s, size_t i, bool post, bool want) {
    if (s.fd < 0 || s.want_out == want) {
        return;
    }
    s.want_out = want;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
    ev.data.u64 = (static_cast<uint64_t>(i) << 1) | (post ? 1u : 0u);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, s.fd, &ev);
}

void Engine::Send(Session& s, size_t i, bool post, std::string_view bytes) {
    Sock& k = post ? s.post : s.main;
    k.out.append(bytes);
    if (!k.connecting) {
        Flush(s, i, post);
    }
}

void Engine::Flush(Session& s, size_t i, bool post) {
    Sock& k = post ? s.post : s.main;
    while (!k.out.empty()) {
        const ssize_t n = ::send(k.fd, k.out.data(), k.out.size(), MSG_NOSIGNAL);
        if (n > 0) {
            k.out.erase(0, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            SetOut(k, i, post, true);
            return;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        const std::string why = std::string("send: ") + std::strerror(errno);
        if (s.phase == Phase::kConnected) {
            Drop(s, why);
        } else {
            Fail(s, kFailTransport, why);
        }
        return;
    }
    if (k.out.capacity() > 4096) {
        std::string().swap(k.out);
    }
    SetOut(k, i, post, false);
}

void Engine::StartSession(size_t i, int64_t now) {
    Session& s = sessions_[i];
    s.started_ns = now;
    ++stats_.started;
    ++pending_;
    if (stats_.first_start_ns == 0) {
        stats_.first_start_ns = now;
    }
    const bool ws = o_.transport == HubTransport::kWebSockets;
    if (ws) {
        if (!OpenSocket(s.main, i, false)) {
            Fail(s, kFailConnect, "connect failed");
            return;
        }
        if (o_.skip_negotiate) {
            s.phase = Phase::kUpgrading;
            Send(s, i, false,
                 Request("GET", path_, s,
                         "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: "
                         "13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                         {}));
        } else {
            s.phase = Phase::kNegotiating;
            Send(s, i, false,
                 Request("POST", NegotiatePath(path_), s, "X-Requested-With: XMLHttpRequest\r\n",
                         {}));
        }
        return;
    }
    // SSE / long polling: negotiate on the POST socket (kept alive for the sends).
    if (!OpenSocket(s.post, i, true)) {
        Fail(s, kFailConnect, "connect failed");
        return;
    }
    s.phase = Phase::kNegotiating;
    s.post_phase = PostPhase::kNegotiating;
    Send(s, i, true,
         Request("POST", NegotiatePath(path_), s, "X-Requested-With: XMLHttpRequest\r\n", {}));
}

void Engine::NoteError(const std::string& text) {
    if (stats_.errors.size() >= kMaxErrors) {
        return;
    }
    if (std::find(stats_.errors.begin(), stats_.errors.end(), text) == stats_.errors.end()) {
        stats_.errors.push_back(text);
    }
}

void Engine::CloseAll(Session& s) {
    for (Sock* k : {&s.main, &s.post}) {
        if (k->fd >= 0) {
            ::close(k->fd);  // also leaves the epoll set
            k->fd = -1;
        }
        std::string().swap(k->in);
        std::string().swap(k->out);
    }
    std::string().swap(s.pending);
    std::string().swap(s.post_queue);
    std::string().swap(s.token);
}

void Engine::Fail(Session& s, FailKind kind, const std::string& why) {
    if (s.phase == Phase::kDone) {
        return;
    }
    if (s.phase == Phase::kConnected) {
        Drop(s, why);
        return;
    }
    s.phase = Phase::kDone;
    CloseAll(s);
    ++stats_.failed;
    ++stats_.failures_by_kind[kind];
    NoteError(std::string(kFailNames[kind]) + ": " + why);
    --pending_;
    ++settled_;
}

void Engine::Drop(Session& s, const std::string& why) {
    if (s.phase != Phase::kConnected) {
        Fail(s, kFailTransport, why);
        return;
    }
    s.phase = Phase::kDone;
    CloseAll(s);
    ++stats_.dropped;
    --live_;
    if (o_.expect > 0 && s.messages >= static_cast<uint32_t>(o_.expect)) {
        --satisfied_;
    }
    NoteError("dropped: " + why);
}

void Engine::Connected(Session& s) {
    s.phase = Phase::kConnected;
    const int64_t now = NowNs();
    stats_.connect.Record(static_cast<uint64_t>(now - s.started_ns));
    ++stats_.connected;
    stats_.last_connected_ns = now;
    --pending_;
    ++settled_;
    ++live_;
    if (s.pending.capacity() > 256) {
        std::string().swap(s.pending);
    }
}

bool Engine::ReadAll(Session& s, bool post, int64_t* kernel_rx) {
    Sock& k = post ? s.post : s.main;
    for (;;) {
        iovec iov{buf_.data(), buf_.size()};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        const ssize_t n = ::recvmsg(k.fd, &msg, 0);
        if (n > 0) {
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    timespec ts{};
                    std::memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                    // The kernel stamps with CLOCK_REALTIME.
                    if (*kernel_rx < 0) {
                        *kernel_rx = static_cast<int64_t>(ts.tv_sec) * kSecNs + ts.tv_nsec;
                    }
                }
            }
            k.in.append(buf_.data(), static_cast<size_t>(n));
            if (static_cast<size_t>(n) < buf_.size()) {
                return true;
            }
            continue;
        }
        if (n == 0) {
            return false;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return true;
        }
        if (errno == EINTR) {
            continue;
        }
        return false;
    }
}

void Engine::OnEvent(size_t i, bool post, uint32_t events) {
    Session& s = sessions_[i];
    if (s.phase == Phase::kDone) {
        return;
    }
    Sock& k = post ? s.post : s.main;
    if (k.fd < 0) {
        return;
    }
    if (k.connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(k.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            Fail(s, kFailConnect, std::strerror(err));
            return;
        }
        k.connecting = false;
    }
    if ((events & EPOLLOUT) != 0 && !k.connecting) {
        Flush(s, i, post);
        if (s.phase == Phase::kDone) {
            return;
        }
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
        int64_t kernel_rx = -1;
        const bool open = ReadAll(s, post, &kernel_rx);
        if (!k.in.empty()) {
            if (post) {
                ProcessPost(s, i);
            } else {
                ProcessMain(s, i, kernel_rx);
            }
        }
        if (!open && s.phase != Phase::kDone) {
            if (s.phase == Phase::kConnected) {
                Drop(s, post ? "POST connection closed" : "connection closed by the server");
            } else {
                Fail(s, kFailTransport, "connection closed before the session was up");
            }
        }
    }
}

void Engine::AfterNegotiate(Session& s, size_t i, std::string_view body) {
    std::string_view token = wire::JsonStringField(body, "connectionToken");
    if (token.empty()) {
        token = wire::JsonStringField(body, "connectionId");
    }
    if (token.empty()) {
        Fail(s, kFailNegotiate, "no connectionToken in " + std::string(body.substr(0, 200)));
        return;
    }
    s.token.assign(token);
    const std::string path = WithQuery(path_, "id", s.token);
    switch (o_.transport) {
        case HubTransport::kWebSockets:
            s.phase = Phase::kUpgrading;
            Send(s, i, false,
                 Request("GET", path, s,
                         "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: "
                         "13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                         {}));
            return;
        case HubTransport::kServerSentEvents:
            s.post_phase = PostPhase::kIdle;
            if (!OpenSocket(s.main, i, false)) {
                Fail(s, kFailConnect, "connect failed");
                return;
            }
            s.phase = Phase::kOpening;
            Send(s, i, false,
                 Request("GET", path, s, "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
                         {}));
            return;
        case HubTransport::kLongPolling:
            s.post_phase = PostPhase::kIdle;
            if (!OpenSocket(s.main, i, false)) {
                Fail(s, kFailConnect, "connect failed");
                return;
            }
            s.phase = Phase::kOpening;
            SendPoll(s, i);
            return;
    }
}

void Engine::SendPoll(Session& s, size_t i) {
    Send(s, i, false,
         Request("GET", WithQuery(path_, "id", s.token), s, "X-Requested-With: XMLHttpRequest\r\n",
                 {}));
}

void Engine::QueuePost(Session& s, size_t i, std::string_view records) {
    s.post_queue.append(records);
    if (s.post_phase != PostPhase::kIdle || s.post_queue.empty()) {
        return;
    }
    if (s.post.fd < 0) {
        if (!OpenSocket(s.post, i, true)) {
            Drop(s, "POST connect failed");
            return;
        }
    }
    s.post_phase = PostPhase::kSending;
    std::string body;
    body.swap(s.post_queue);
    Send(s, i, true,
         Request("POST", WithQuery(path_, "id", s.token), s,
                 "X-Requested-With: XMLHttpRequest\r\nContent-Type: text/plain;charset=UTF-8\r\n",
                 body));
}

/// Takes one complete Content-Length response off `in`; false when incomplete (or on error,
/// with *error set).
bool TakeResponse(std::string& in, HttpHead* head, std::string* body, std::string* error) {
    const HeadResult r = wire::ParseHead(in, head, error);
    if (r != HeadResult::kComplete) {
        return false;
    }
    if (head->chunked) {
        // Short bodies only (negotiate, POST, poll): decode when complete.
        ChunkedDecoder dec;
        size_t used = 0;
        std::string out;
        const auto res = dec.Feed(std::string_view(in).substr(head->head_bytes), out, &used);
        if (res == ChunkedDecoder::Result::kError) {
            *error = "bad chunked body";
            return false;
        }
        if (res != ChunkedDecoder::Result::kDone) {
            return false;
        }
        *body = std::move(out);
        in.erase(0, head->head_bytes + used);
        return true;
    }
    const size_t len = head->content_length < 0 ? 0 : static_cast<size_t>(head->content_length);
    if (in.size() < head->head_bytes + len) {
        return false;
    }
    body->assign(in, head->head_bytes, len);
    in.erase(0, head->head_bytes + len);
    return true;
}

void Engine::ProcessPost(Session& s, size_t i) {
    for (;;) {
        if (s.phase == Phase::kDone) {
            return;
        }
        HttpHead head;
        std::string body;
        std::string error;
        if (!TakeResponse(s.post.in, &head, &body, &error)) {
            if (!error.empty()) {
                Fail(s, kFailTransport, "POST response: " + error);
            }
            return;
        }
        if (s.post_phase == PostPhase::kNegotiating) {
            if (head.status != 200) {
                Fail(s, kFailNegotiate, "status " + std::to_string(head.status) + " " + body);
                return;
            }
            AfterNegotiate(s, i, body);
        } else if (s.post_phase == PostPhase::kSending) {
            if (head.status != 200) {
                Fail(s, kFailTransport, "POST status " + std::to_string(head.status) + " " + body);
                return;
            }
            s.post_phase = PostPhase::kIdle;
            if (head.close) {
                ::close(s.post.fd);
                s.post.fd = -1;
            }
            QueuePost(s, i, {});
        } else {
            Fail(s, kFailTransport, "unexpected response on the POST connection");
            return;
        }
    }
}

void Engine::ProcessMain(Session& s, size_t i, int64_t kernel_rx) {
    std::string error;
    switch (s.phase) {
        case Phase::kNegotiating: {
            HttpHead head;
            std::string body;
            if (!TakeResponse(s.main.in, &head, &body, &error)) {
                if (!error.empty()) Fail(s, kFailNegotiate, error);
                return;
            }
            if (head.status != 200) {
                Fail(s, kFailNegotiate, "status " + std::to_string(head.status) + " " + body);
                return;
            }
            AfterNegotiate(s, i, body);
            if (s.main.in.empty() || s.phase == Phase::kDone) {
                return;
            }
            [[fallthrough]];
        }
        case Phase::kUpgrading: {
            if (s.phase != Phase::kUpgrading) {
                return;
            }
            HttpHead head;
            const HeadResult r = wire::ParseHead(s.main.in, &head, &error);
            if (r == HeadResult::kNeedMore) return;
            if (r == HeadResult::kError || head.status != 101) {
                Fail(s, kFailTransport,
                     r == HeadResult::kError ? error
                                             : "upgrade status " + std::to_string(head.status));
                return;
            }
            s.main.in.erase(0, head.head_bytes);
            s.phase = Phase::kHandshaking;
            std::string frame;
            wire::AppendClientFrame(frame, WsOpcode::kText,
                                    "{\"protocol\":\"json\",\"version\":1}\x1e", NextMask());
            Send(s, i, false, frame);
            ProcessFrames(s, i, kernel_rx);
            return;
        }
        case Phase::kOpening:
        case Phase::kHandshaking:
        case Phase::kConnected:
            break;
        default:
            return;
    }
    if (o_.transport == HubTransport::kWebSockets) {
        ProcessFrames(s, i, kernel_rx);
        return;
    }
    if (o_.transport == HubTransport::kServerSentEvents) {
        if (s.phase == Phase::kOpening && !s.handshake_queued) {
            HttpHead head;
            const HeadResult r = wire::ParseHead(s.main.in, &head, &error);
            if (r == HeadResult::kNeedMore) return;
            if (r == HeadResult::kError || head.status != 200) {
                Fail(s, kFailTransport,
                     r == HeadResult::kError ? error : "SSE status " + std::to_string(head.status));
                return;
            }
            s.body_chunked = head.chunked;
            s.main.in.erase(0, head.head_bytes);
            s.handshake_queued = true;
            s.phase = Phase::kHandshaking;
            QueuePost(s, i, "{\"protocol\":\"json\",\"version\":1}\x1e");
        }
        if (s.main.in.empty() || s.phase == Phase::kDone) {
            return;
        }
        if (s.body_chunked) {
            size_t used = 0;
            const auto r = s.chunks.Feed(s.main.in, s.pending, &used);
            s.main.in.erase(0, used);
            if (r != ChunkedDecoder::Result::kNeedMore) {
                Drop(s, r == ChunkedDecoder::Result::kDone ? "SSE stream ended"
                                                           : "bad chunked SSE stream");
                return;
            }
        } else {
            s.pending.append(s.main.in);
            s.main.in.clear();
        }
        std::string data;
        if (wire::TakeSseEvents(s.pending, data) > 0) {
            HandleRecords(s, i, data, kernel_rx);
        }
        return;
    }
    // Long polling: each response carries zero or more records; poll again at once.
    for (;;) {
        if (s.phase == Phase::kDone) {
            return;
        }
        HttpHead head;
        std::string body;
        if (!TakeResponse(s.main.in, &head, &body, &error)) {
            if (!error.empty()) Fail(s, kFailTransport, "poll response: " + error);
            return;
        }
        if (head.status == 204) {
            Drop(s, "poll answered 204 (connection closed by the server)");
            return;
        }
        if (head.status != 200) {
            Fail(s, kFailTransport, "poll status " + std::to_string(head.status) + " " + body);
            return;
        }
        if (head.close) {
            Drop(s, "poll response closed the connection");
            return;
        }
        if (s.phase == Phase::kOpening) {
            s.phase = Phase::kHandshaking;
            SendPoll(s, i);
            QueuePost(s, i, "{\"protocol\":\"json\",\"version\":1}\x1e");
            continue;
        }
        SendPoll(s, i);
        if (!body.empty()) {
            HandleRecords(s, i, body, kernel_rx);
        }
    }
}

void Engine::ProcessFrames(Session& s, size_t i, int64_t kernel_rx) {
    size_t pos = 0;
    std::string error;
    while (s.phase != Phase::kDone && pos < s.main.in.size()) {
        wire::WsFrame f;
        size_t used = 0;
        const DecodeResult r = wire::DecodeFrame(s.main.in.data() + pos, s.main.in.size() - pos,
                                                 kMaxFrame, &f, &used, &error);
        if (r == DecodeResult::kNeedMore) {
            break;
        }
        if (r == DecodeResult::kError) {
            Drop(s, "WebSocket: " + error);
            return;
        }
        pos += used;
        switch (static_cast<WsOpcode>(f.opcode)) {
            case WsOpcode::kText:
            case WsOpcode::kBinary:
            case WsOpcode::kContinuation:
                if (f.fin && s.pending.empty()) {
                    HandleRecords(s, i, f.payload, kernel_rx);
                } else {
                    s.pending.append(f.payload);
                    if (f.fin) {
                        std::string msg;
                        msg.swap(s.pending);
                        HandleRecords(s, i, msg, kernel_rx);
                    }
                }
                break;
            case WsOpcode::kPing: {
                std::string pong;
                wire::AppendClientFrame(pong, WsOpcode::kPong, f.payload, NextMask());
                Send(s, i, false, pong);
                break;
            }
            case WsOpcode::kPong:
                break;
            case WsOpcode::kClose: {
                std::string close;
                wire::AppendClientFrame(close, WsOpcode::kClose, f.payload.substr(0, 2),
                                        NextMask());
                Send(s, i, false, close);
                Drop(s, "WebSocket closed by the server");
                return;
            }
        }
    }
    if (s.phase != Phase::kDone) {
        s.main.in.erase(0, pos);
        if (s.main.in.empty() && s.main.in.capacity() > 4096) {
            std::string().swap(s.main.in);
        }
    }
}

void Engine::HandleRecords(Session& s, size_t i, std::string_view data, int64_t kernel_rx) {
    while (!data.empty() && s.phase != Phase::kDone) {
        const size_t end = data.find(wire::kRecordSeparator);
        if (end == std::string_view::npos) {
            Drop(s, "incomplete record");
            return;
        }
        const std::string_view record = data.substr(0, end);
        data.remove_prefix(end + 1);
        const wire::RecordInfo info = wire::InspectRecord(record, o_.stamp_prefix);
        if (s.phase == Phase::kHandshaking) {
            if (info.type != -1 || info.handshake_error) {
                Fail(s, kFailHandshake, std::string(record.substr(0, 200)));
                return;
            }
            Connected(s);
            if (!o_.invoke.empty()) {
                const std::string call = "{\"type\":1,\"invocationId\":\"0\",\"target\":\"" +
                                         o_.invoke + "\",\"arguments\":" + o_.invoke_args + "}\x1e";
                if (o_.transport == HubTransport::kWebSockets) {
                    std::string frame;
                    wire::AppendClientFrame(frame, WsOpcode::kText, call, NextMask());
                    Send(s, i, false, frame);
                } else {
                    QueuePost(s, i, call);
                }
            }
            continue;
        }
        if (s.phase != Phase::kConnected) {
            Fail(s, kFailHandshake, "record before the handshake: " + std::string(record));
            return;
        }
        switch (info.type) {
            case 6:
                ++stats_.pings_answered;
                if (o_.transport == HubTransport::kWebSockets) {
                    std::string frame;
                    wire::AppendClientFrame(frame, WsOpcode::kText, "{\"type\":6}\x1e", NextMask());
                    Send(s, i, false, frame);
                } else if (o_.transport == HubTransport::kServerSentEvents) {
                    QueuePost(s, i, "{\"type\":6}\x1e");
                }
                break;
            case 7:
                Drop(s, "Close from the server: " + std::string(record.substr(0, 200)));
                return;
            case 1:
                if (info.target == o_.target) {
                    ++s.messages;
                    ++stats_.messages;
                    if (info.stamp < 0) {
                        ++stats_.stamp_missing;
                    } else {
                        const int64_t now = ClockNs(clock_);
                        const int64_t user = std::max<int64_t>(now - info.stamp, 0);
                        // The kernel stamp is CLOCK_REALTIME: only comparable to realtime stamps.
                        const int64_t kernel = (kernel_rx > 0 && o_.realtime_clock)
                                                   ? std::max<int64_t>(kernel_rx - info.stamp, 0)
                                                   : user;
                        stats_.latency.Record(static_cast<uint64_t>(kernel));
                        stats_.user_latency.Record(static_cast<uint64_t>(user));
                        if (!o_.samples_file.empty()) {
                            char line[96];
                            const int n = std::snprintf(line, sizeof(line), "%lld %lld %lld\n",
                                                        static_cast<long long>(info.stamp),
                                                        static_cast<long long>(kernel),
                                                        static_cast<long long>(user));
                            samples_.append(line, static_cast<size_t>(n));
                        }
                    }
                    if (o_.expect > 0 && s.messages == static_cast<uint32_t>(o_.expect)) {
                        ++satisfied_;
                    }
                } else {
                    ++stats_.other_records;
                }
                break;
            default:
                ++stats_.other_records;
                break;
        }
    }
}

void Engine::Housekeeping(int64_t now) {
    const int64_t timeout = o_.connect_timeout_ms * kMsNs;
    for (Session& s : sessions_) {
        if (s.phase != Phase::kIdle && s.phase != Phase::kConnected && s.phase != Phase::kDone &&
            now - s.started_ns > timeout) {
            Fail(s, kFailTimeout, "not connected within the timeout");
        }
    }
}

void Engine::WriteReady() {
    if (o_.ready_file.empty()) {
        return;
    }
    const std::string tmp = o_.ready_file + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"connected\":" << stats_.connected << ",\"failed\":" << stats_.failed
        << ",\"dropped\":" << stats_.dropped << "}\n";
    out.close();
    std::rename(tmp.c_str(), o_.ready_file.c_str());
}

bool Engine::Run(std::string* error) {
    if (!Setup(error)) {
        return false;
    }
    const int64_t t0 = NowNs();
    int64_t ramp_done_at = -1;
    int64_t next_housekeeping = t0 + 100 * kMsNs;
    std::vector<epoll_event> events(512);
    for (;;) {
        int64_t now = NowNs();
        // Ramp: start sessions on schedule, at most max_pending connecting at once.
        while (next_start_ < sessions_.size() &&
               pending_ < static_cast<size_t>(std::max(o_.max_pending, 1))) {
            if (o_.ramp_rate > 0.0) {
                const int64_t due = t0 + static_cast<int64_t>(static_cast<double>(next_start_) *
                                                              1e9 / o_.ramp_rate);
                if (due > now) {
                    break;
                }
            }
            StartSession(next_start_++, now);
        }
        if (now >= next_housekeeping) {
            Housekeeping(now);
            next_housekeeping = now + 100 * kMsNs;
        }
        if (ramp_done_at < 0 && next_start_ == sessions_.size() && RampDone()) {
            ramp_done_at = now;
            WriteReady();
            std::fprintf(stderr, "hub: %llu connected, %llu failed; holding up to %.1f s\n",
                         static_cast<unsigned long long>(stats_.connected),
                         static_cast<unsigned long long>(stats_.failed), o_.hold_s);
        }
        if (ramp_done_at >= 0) {
            if (now - ramp_done_at >= static_cast<int64_t>(o_.hold_s * 1e9)) {
                break;
            }
            if (o_.expect > 0 && live_ > 0 && satisfied_ == live_) {
                break;
            }
            if (live_ == 0) {
                break;
            }
        }
        const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            *error = std::string("epoll_wait: ") + std::strerror(errno);
            return false;
        }
        for (int e = 0; e < n; ++e) {
            const uint64_t tag = events[static_cast<size_t>(e)].data.u64;
            if (tag == UINT64_MAX) {
                uint64_t expirations = 0;
                [[maybe_unused]] ssize_t r = ::read(timer_fd_, &expirations, sizeof(expirations));
                continue;
            }
            OnEvent(static_cast<size_t>(tag >> 1), (tag & 1) != 0,
                    events[static_cast<size_t>(e)].events);
        }
    }
    if (ramp_done_at < 0) {
        WriteReady();
    }
    if (!o_.samples_file.empty()) {
        std::ofstream out(o_.samples_file, std::ios::trunc | std::ios::binary);
        out << samples_;
        if (!out) {
            *error = "cannot write " + o_.samples_file;
            return false;
        }
    }
    return true;
}

// --- output ---

void AppendHist(std::string& out, const char* name, const Histogram& h) {
    char buf[320];
    auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    std::snprintf(buf, sizeof(buf),
                  "\"%s\":{\"count\":%llu,\"min\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
                  "\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
                  name, static_cast<unsigned long long>(h.count()), us(h.min()),
                  us(h.Percentile(0.5)), us(h.Percentile(0.9)), us(h.Percentile(0.99)),
                  us(h.Percentile(0.999)), us(h.max()), h.Mean() / 1000.0);
    out += buf;
}

std::string Escape(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char b[8];
            std::snprintf(b, sizeof(b), "\\u%04x", c);
            out += b;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

const char* TransportName(HubTransport t) {
    switch (t) {
        case HubTransport::kWebSockets:
            return "WebSockets";
        case HubTransport::kServerSentEvents:
            return "ServerSentEvents";
        case HubTransport::kLongPolling:
            return "LongPolling";
    }
    return "?";
}

bool ParseNumber(const std::string& s, double* out) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || errno != 0 || !(v >= 0.0)) {
        return false;
    }
    *out = v;
    return true;
}

bool ReadLines(const std::string& path, std::vector<std::string>* out) {
    std::ifstream in(path);
    if (!in) {
        return false;
    }
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) out->push_back(line);
    }
    return true;
}

/// Long option parsing shared by the subcommands: "--name value" or "--name=value".
class Args {
public:
    Args(int argc, char** argv) : argc_(argc), argv_(argv) {}
    bool Next(std::string* name, std::string* value, bool* has_value) {
        if (i_ >= argc_) return false;
        std::string a = argv_[i_++];
        *has_value = false;
        if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
            *value = a.substr(eq + 1);
            a = a.substr(0, eq);
            *has_value = true;
        }
        *name = a;
        return true;
    }
    bool Value(const std::string& name, std::string* value, bool has_value, std::string* error) {
        if (has_value) return true;
        if (i_ >= argc_) {
            *error = "missing value for " + name;
            return false;
        }
        *value = argv_[i_++];
        return true;
    }

private:
    int argc_;
    char** argv_;
    int i_ = 0;
};

void RaiseNoFile() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

constexpr const char* kHubUsage =
    "Usage: conduit-loadgen hub --url http://HOST:PORT/hubs/NAME [options]\n"
    "  --transport ws|sse|lp   WebSockets (default), ServerSentEvents or LongPolling\n"
    "  --sessions N            concurrent sessions (default 100)\n"
    "  --ramp-rate R           sessions started per second (default 1000; 0 = no pacing)\n"
    "  --max-pending N         sessions connecting at once (default 256)\n"
    "  --header 'K: V'         header on every request (repeatable)\n"
    "  --header-per-session F  file of 'K: V' lines: session i sends line i mod lines\n"
    "  --skip-negotiate        WebSockets without negotiate (plain upgrade at the URL)\n"
    "  --target NAME           invocation target measured (default SystemAnnouncement)\n"
    "  --stamp-prefix P        the send stamp follows P in the message (default bench:)\n"
    "  --invoke M              invoke hub method M once after the handshake (e.g. a subscribe)\n"
    "  --invoke-args JSON      its arguments as a JSON array (default [])\n"
    "  --clock realtime|monotonic  clock of the stamps (default realtime)\n"
    "  --hold S                seconds to stay connected after the ramp (default 30)\n"
    "  --expect N              end once every live session received N target messages\n"
    "  --connect-timeout-ms MS start → handshake response (default 30000)\n"
    "  --samples-file F        one line per message: stamp kernel_latency_ns user_latency_ns\n"
    "  --ready-file F          JSON written once every session is connected or failed\n"
    "Output: one JSON object on stdout (latencies in microseconds).\n";

}  // namespace

bool RunHubSessions(const HubOptions& opts, HubStats* stats, std::string* error) {
    Engine engine(opts, stats);
    return engine.Run(error);
}

std::string HubStatsJson(const HubOptions& o, const HubStats& s) {
    std::string out = "{";
    out += "\"url\":" + Escape(o.url);
    out += ",\"transport\":\"" + std::string(TransportName(o.transport)) + "\"";
    out += ",\"sessions\":" + std::to_string(o.sessions);
    out += ",\"started\":" + std::to_string(s.started);
    out += ",\"connected\":" + std::to_string(s.connected);
    out += ",\"failed\":" + std::to_string(s.failed);
    out += ",\"dropped\":" + std::to_string(s.dropped);
    out += ",\"failures\":{";
    for (size_t k = 0; k < s.failures_by_kind.size(); ++k) {
        out += (k ? ",\"" : "\"") + std::string(kFailNames[k]) +
               "\":" + std::to_string(s.failures_by_kind[k]);
    }
    out += "}";
    const double ramp_s = s.last_connected_ns > s.first_start_ns
                              ? static_cast<double>(s.last_connected_ns - s.first_start_ns) / 1e9
                              : 0.0;
    char buf[128];
    std::snprintf(buf, sizeof(buf), ",\"ramp_s\":%.3f,\"connect_rate\":%.1f", ramp_s,
                  ramp_s > 0 ? static_cast<double>(s.connected) / ramp_s : 0.0);
    out += buf;
    std::snprintf(buf, sizeof(buf), ",\"ramp_rate_target\":%.1f", o.ramp_rate);
    out += buf;
    out += ",\"messages\":" + std::to_string(s.messages);
    out += ",\"stamp_missing\":" + std::to_string(s.stamp_missing);
    out += ",\"other_records\":" + std::to_string(s.other_records);
    out += ",\"pings_answered\":" + std::to_string(s.pings_answered);
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    std::snprintf(buf, sizeof(buf), ",\"client_cpu_s\":%.3f,\"client_maxrss_kb\":%ld",
                  static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                      static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
                  ru.ru_maxrss);
    out += buf;
    out += ",";
    AppendHist(out, "connect_us", s.connect);
    out += ",";
    AppendHist(out, "latency_us", s.latency);
    out += ",";
    AppendHist(out, "user_latency_us", s.user_latency);
    out += ",\"errors\":[";
    for (size_t k = 0; k < s.errors.size(); ++k) {
        out += (k ? "," : "") + Escape(s.errors[k]);
    }
    out += "]}\n";
    return out;
}

int HubMain(int argc, char** argv) {
    HubOptions o;
    Args args(argc, argv);
    std::string name, v, error;
    bool has = false;
    auto bad = [&](const std::string& what) {
        std::fprintf(stderr, "conduit-loadgen hub: %s\n\n%s", what.c_str(), kHubUsage);
        return 2;
    };
    double d = 0;
    while (args.Next(&name, &v, &has)) {
        if (name == "--help" || name == "-h") {
            std::fputs(kHubUsage, stdout);
            return 0;
        }
        if (name == "--skip-negotiate") {
            o.skip_negotiate = true;
            continue;
        }
        if (!args.Value(name, &v, has, &error)) return bad(error);
        if (name == "--url") {
            o.url = v;
        } else if (name == "--transport") {
            if (v == "ws" || v == "WebSockets")
                o.transport = HubTransport::kWebSockets;
            else if (v == "sse" || v == "ServerSentEvents")
                o.transport = HubTransport::kServerSentEvents;
            else if (v == "lp" || v == "LongPolling")
                o.transport = HubTransport::kLongPolling;
            else
                return bad("bad --transport '" + v + "'");
        } else if (name == "--sessions") {
            if (!ParseNumber(v, &d) || d < 1 || d > 1e6) return bad("bad --sessions");
            o.sessions = static_cast<int>(d);
        } else if (name == "--ramp-rate") {
            if (!ParseNumber(v, &d)) return bad("bad --ramp-rate");
            o.ramp_rate = d;
        } else if (name == "--max-pending") {
            if (!ParseNumber(v, &d) || d < 1) return bad("bad --max-pending");
            o.max_pending = static_cast<int>(d);
        } else if (name == "--header" || name == "-H") {
            if (v.find(':') == std::string::npos || v.find_first_of("\r\n") != std::string::npos)
                return bad("bad header '" + v + "'");
            o.headers.push_back(v);
        } else if (name == "--header-per-session") {
            if (!ReadLines(v, &o.session_headers) || o.session_headers.empty())
                return bad("cannot read header lines from " + v);
            for (const std::string& h : o.session_headers) {
                if (h.find(':') == std::string::npos) return bad("bad header line in " + v);
            }
        } else if (name == "--target") {
            o.target = v;
        } else if (name == "--invoke") {
            o.invoke = v;
        } else if (name == "--invoke-args") {
            if (v.empty() || v.front() != '[' || v.back() != ']')
                return bad("--invoke-args needs a JSON array");
            o.invoke_args = v;
        } else if (name == "--stamp-prefix") {
            o.stamp_prefix = v;
        } else if (name == "--clock") {
            if (v == "realtime")
                o.realtime_clock = true;
            else if (v == "monotonic")
                o.realtime_clock = false;
            else
                return bad("bad --clock");
        } else if (name == "--hold") {
            if (!ParseNumber(v, &d)) return bad("bad --hold");
            o.hold_s = d;
        } else if (name == "--expect") {
            if (!ParseNumber(v, &d)) return bad("bad --expect");
            o.expect = static_cast<int>(d);
        } else if (name == "--connect-timeout-ms") {
            if (!ParseNumber(v, &d) || d < 1) return bad("bad --connect-timeout-ms");
            o.connect_timeout_ms = static_cast<int64_t>(d);
        } else if (name == "--samples-file") {
            o.samples_file = v;
        } else if (name == "--ready-file") {
            o.ready_file = v;
        } else {
            return bad("unknown argument '" + name + "'");
        }
    }
    if (o.url.empty()) return bad("--url is required");
    if (o.skip_negotiate && o.transport != HubTransport::kWebSockets)
        return bad("--skip-negotiate needs --transport ws");
    RaiseNoFile();
    HubStats stats;
    if (!RunHubSessions(o, &stats, &error)) {
        std::fprintf(stderr, "conduit-loadgen hub: %s\n", error.c_str());
        return 1;
    }
    const std::string json = HubStatsJson(o, stats);
    std::fwrite(json.data(), 1, json.size(), stdout);
    std::fflush(stdout);
    std::fprintf(stderr,
                 "hub %s: %llu/%d connected, %llu failed, %llu dropped; %llu messages; latency us "
                 "p50 %.0f p99 %.0f max %.0f\n",
                 TransportName(o.transport), static_cast<unsigned long long>(stats.connected),
                 o.sessions, static_cast<unsigned long long>(stats.failed),
                 static_cast<unsigned long long>(stats.dropped),
                 static_cast<unsigned long long>(stats.messages),
                 static_cast<double>(stats.latency.Percentile(0.5)) / 1000.0,
                 static_cast<double>(stats.latency.Percentile(0.99)) / 1000.0,
                 static_cast<double>(stats.latency.max()) / 1000.0);
    return 0;
}

// --- hub-announce ---

namespace {

constexpr const char* kAnnounceUsage =
    "Usage: conduit-loadgen hub-announce --url http://HOST:PORT/PATH [options]\n"
    "  POSTs {\"message\":\"<prefix><now ns>\",\"severity\":S} COUNT times, INTERVAL apart,\n"
    "  on one keep-alive connection; the stamp is taken just before each send.\n"
    "  --count N          messages (default 20)\n"
    "  --interval-ms MS   between sends (default 200)\n"
    "  --header 'K: V'    extra header (repeatable; e.g. the admin key)\n"
    "  --prefix P         stamp prefix (default bench:)\n"
    "  --severity S       (default info)\n"
    "  --clock realtime|monotonic (default realtime)\n"
    "  --body T           body template instead: %STAMP% becomes <prefix><now ns>\n"
    "                     (e.g. to trigger another server event that echoes a text)\n"
    "Output: one JSON object on stdout.\n";

}  // namespace

int HubAnnounceMain(int argc, char** argv) {
    std::string url, prefix = "bench:", severity = "info", body_template;
    std::vector<std::string> headers;
    int count = 20;
    double interval_ms = 200;
    clockid_t clock = CLOCK_REALTIME;
    Args args(argc, argv);
    std::string name, v, error;
    bool has = false;
    double d = 0;
    auto bad = [&](const std::string& what) {
        std::fprintf(stderr, "conduit-loadgen hub-announce: %s\n\n%s", what.c_str(),
                     kAnnounceUsage);
        return 2;
    };
    while (args.Next(&name, &v, &has)) {
        if (name == "--help" || name == "-h") {
            std::fputs(kAnnounceUsage, stdout);
            return 0;
        }
        if (!args.Value(name, &v, has, &error)) return bad(error);
        if (name == "--url")
            url = v;
        else if (name == "--count") {
            if (!ParseNumber(v, &d) || d < 1) return bad("bad --count");
            count = static_cast<int>(d);
        } else if (name == "--interval-ms") {
            if (!ParseNumber(v, &interval_ms)) return bad("bad --interval-ms");
        } else if (name == "--header" || name == "-H") {
            if (v.find(':') == std::string::npos || v.find_first_of("\r\n") != std::string::npos)
                return bad("bad header '" + v + "'");
            headers.push_back(v);
        } else if (name == "--prefix")
            prefix = v;
        else if (name == "--severity")
            severity = v;
        else if (name == "--body") {
            if (v.find("%STAMP%") == std::string::npos) return bad("--body needs %STAMP%");
            body_template = v;
        } else if (name == "--clock") {
            if (v == "realtime")
                clock = CLOCK_REALTIME;
            else if (v == "monotonic")
                clock = CLOCK_MONOTONIC;
            else
                return bad("bad --clock");
        } else
            return bad("unknown argument '" + name + "'");
    }
    if (url.empty()) return bad("--url is required");
    Target t;
    if (!ParseUrl(url, &t, &error)) return bad(error);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &res) != 0 || res == nullptr) {
        return bad("cannot resolve " + t.host);
    }
    sockaddr_storage addr{};
    std::memcpy(&addr, res->ai_addr, res->ai_addrlen);
    const socklen_t addr_len = res->ai_addrlen;
    ::freeaddrinfo(res);

    int fd = -1;
    std::string in;
    std::vector<int> statuses;
    std::vector<int64_t> stamps;
    std::vector<int64_t> round_trips;
    std::string first_error;
    auto connect_fd = [&]() {
        fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0) {
            ::close(fd);
            fd = -1;
        }
        in.clear();
    };
    const int64_t t0 = NowNs();
    for (int k = 0; k < count; ++k) {
        const int64_t due = t0 + static_cast<int64_t>(k * interval_ms * 1e6);
        for (int64_t now = NowNs(); now < due; now = NowNs()) {
            const int64_t wait = due - now;
            timespec ts{static_cast<time_t>(wait / kSecNs), static_cast<long>(wait % kSecNs)};
            ::nanosleep(&ts, nullptr);
        }
        if (fd < 0) connect_fd();
        if (fd < 0) {
            statuses.push_back(0);
            if (first_error.empty()) first_error = "connect failed";
            continue;
        }
        const int64_t stamp = ClockNs(clock);
        std::string body;
        if (body_template.empty()) {
            body = "{\"message\":\"" + prefix + std::to_string(stamp) + "\",\"severity\":\"" +
                   severity + "\"}";
        } else {
            body = body_template;
            body.replace(body.find("%STAMP%"), 7, prefix + std::to_string(stamp));
        }
        std::string req = "POST " + t.path + " HTTP/1.1\r\nHost: " + t.host_header + "\r\n";
        for (const std::string& h : headers) req += h + "\r\n";
        req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\n\r\n" + body;
        const int64_t sent_at = NowNs();
        bool ok =
            ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
        HttpHead head;
        std::string resp_body;
        while (ok && !TakeResponse(in, &head, &resp_body, &error)) {
            if (!error.empty()) {
                ok = false;
                break;
            }
            char b[4096];
            const ssize_t n = ::recv(fd, b, sizeof(b), 0);
            if (n <= 0) {
                ok = false;
                break;
            }
            in.append(b, static_cast<size_t>(n));
        }
        stamps.push_back(stamp);
        if (!ok) {
            statuses.push_back(0);
            if (first_error.empty()) first_error = "no response";
            ::close(fd);
            fd = -1;
            continue;
        }
        round_trips.push_back(NowNs() - sent_at);
        statuses.push_back(head.status);
        if ((head.status < 200 || head.status > 299) && first_error.empty()) {
            first_error = "status " + std::to_string(head.status) + ": " + resp_body.substr(0, 200);
        }
        if (head.close) {
            ::close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) ::close(fd);
    int ok = 0;
    for (int s : statuses) ok += (s >= 200 && s <= 299) ? 1 : 0;
    std::sort(round_trips.begin(), round_trips.end());
    std::string out = "{\"url\":" + Escape(url) + ",\"count\":" + std::to_string(count) +
                      ",\"ok\":" + std::to_string(ok) + ",\"statuses\":[";
    for (size_t k = 0; k < statuses.size(); ++k)
        out += (k ? "," : "") + std::to_string(statuses[k]);
    out += "],\"stamps\":[";
    for (size_t k = 0; k < stamps.size(); ++k) out += (k ? "," : "") + std::to_string(stamps[k]);
    char buf[96];
    std::snprintf(
        buf, sizeof(buf), "],\"response_p50_us\":%.1f",
        round_trips.empty() ? 0.0 : static_cast<double>(round_trips[round_trips.size() / 2]) / 1e3);
    out += buf;
    out += ",\"error\":" + Escape(first_error) + "}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return ok == count ? 0 : 1;
}

// --- hub-merge ---

int HubMergeMain(int argc, char** argv) {
    if (argc < 1) {
        std::fprintf(stderr,
                     "Usage: conduit-loadgen hub-merge SAMPLES_FILE...\n"
                     "  Merges samples files of `hub --samples-file` into one JSON report:\n"
                     "  overall and per-broadcast (per stamp) latency percentiles.\n");
        return 2;
    }
    Histogram kernel, user;
    std::map<long long, Histogram> per;  // stamp → kernel latency
    for (int a = 0; a < argc; ++a) {
        std::FILE* f = std::fopen(argv[a], "r");
        if (f == nullptr) {
            std::fprintf(stderr, "conduit-loadgen hub-merge: cannot read %s\n", argv[a]);
            return 2;
        }
        long long stamp = 0, k = 0, u = 0;
        while (std::fscanf(f, "%lld %lld %lld", &stamp, &k, &u) == 3) {
            kernel.Record(static_cast<uint64_t>(k));
            user.Record(static_cast<uint64_t>(u));
            per[stamp].Record(static_cast<uint64_t>(k));
        }
        std::fclose(f);
    }
    std::string out = "{";
    AppendHist(out, "latency_us", kernel);
    out += ",";
    AppendHist(out, "user_latency_us", user);
    // Per broadcast: its p50/p99/max; then the median and worst of the per-broadcast p99s.
    std::vector<uint64_t> p99s;
    out += ",\"broadcasts\":[";
    bool first = true;
    for (const auto& [stamp, h] : per) {
        char buf[200];
        std::snprintf(buf, sizeof(buf),
                      "%s{\"stamp\":%lld,\"count\":%llu,\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}",
                      first ? "" : ",", stamp, static_cast<unsigned long long>(h.count()),
                      static_cast<double>(h.Percentile(0.5)) / 1e3,
                      static_cast<double>(h.Percentile(0.99)) / 1e3,
                      static_cast<double>(h.max()) / 1e3);
        out += buf;
        first = false;
        p99s.push_back(h.Percentile(0.99));
    }
    out += "]";
    std::sort(p99s.begin(), p99s.end());
    char buf[160];
    std::snprintf(buf, sizeof(buf),
                  ",\"broadcast_count\":%zu,\"broadcast_p99_median_us\":%.1f,"
                  "\"broadcast_p99_worst_us\":%.1f}\n",
                  p99s.size(),
                  p99s.empty() ? 0.0 : static_cast<double>(p99s[p99s.size() / 2]) / 1e3,
                  p99s.empty() ? 0.0 : static_cast<double>(p99s.back()) / 1e3);
    out += buf;
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

}  // namespace conduit::loadgen
