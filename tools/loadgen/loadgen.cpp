#include "loadgen/loadgen.hpp"

#include "loadgen/response_parser.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <ctime>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <thread>
#include <unistd.h>

namespace conduit::loadgen {

namespace {

constexpr int64_t kMsNs = 1'000'000;
/// How often timeouts and reconnects are checked.
constexpr int64_t kHousekeepingNs = 5 * kMsNs;
/// Pause before reconnecting after a failed connect.
constexpr int64_t kConnectRetryNs = 20 * kMsNs;
constexpr size_t kReadBuffer = 64 * 1024;

char LowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

bool HasHeader(const std::vector<std::string>& headers, std::string_view lower_name) {
    for (const std::string& h : headers) {
        const size_t colon = h.find(':');
        if (colon != lower_name.size()) {
            continue;
        }
        bool same = true;
        for (size_t i = 0; i < colon && same; ++i) {
            same = LowerAscii(h[i]) == lower_name[i];
        }
        if (same) {
            return true;
        }
    }
    return false;
}

/// One keep-alive connection and the request it carries, if any.
struct Connection {
    enum class State { kDown, kConnecting, kIdle, kSending, kReceiving };

    explicit Connection(std::string_view record_header) : parser(record_header) {}

    int fd = -1;
    State state = State::kDown;
    bool in_free_list = false;
    bool want_write = false;  // EPOLLOUT is registered
    bool in_window = false;   // the current request is measured
    size_t written = 0;
    int64_t intended_ns = 0;
    int64_t deadline_ns = 0;    // request deadline (intended + timeout) or connect deadline
    int64_t retry_at_ns = 0;    // kDown: next connect attempt
    int64_t first_body_ns = 0;  // when the first body byte of the response arrived
    const std::string* request = nullptr;  // the bytes this connection sends
    ResponseParser parser;
};

/// One thread's event loop over its own connections (epoll, level-triggered, non-blocking).
class Worker {
public:
    /// `first_connection`: the run-wide number of this worker's first connection.
    Worker(const Plan& plan, int index, int connections, int first_connection)
        : plan_(plan),
          index_(index),
          timeout_ns_(plan.opts.timeout_ms * kMsNs),
          open_loop_(plan.opts.rate > 0.0),
          read_buffer_(kReadBuffer) {
        conns_.reserve(static_cast<size_t>(connections));
        const auto& per_conn = plan.connection_requests;
        for (int i = 0; i < connections; ++i) {
            conns_.push_back(std::make_unique<Connection>(plan.opts.record_header));
            conns_.back()->request =
                per_conn.empty()
                    ? &plan.request
                    : &per_conn[static_cast<size_t>(first_connection + i) % per_conn.size()];
        }
        free_.reserve(static_cast<size_t>(connections));
    }

    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    ~Worker() {
        for (auto& c : conns_) {
            if (c->fd >= 0) {
                ::close(c->fd);
            }
        }
        if (timer_fd_ >= 0) {
            ::close(timer_fd_);
        }
        if (epoll_fd_ >= 0) {
            ::close(epoll_fd_);
        }
    }

    /// Runs the worker to completion; results in stats().
    void Run();

    const Stats& stats() const { return stats_; }

private:
    /// Intended send time of this thread's k-th request (open loop): the run's schedule is one
    /// request every 1/rate seconds, dealt round-robin to the threads.
    int64_t IntendedAt(uint64_t k) const {
        const double global = static_cast<double>(k) * plan_.opts.threads + index_;
        return plan_.start_ns + static_cast<int64_t>(std::llround(global * 1e9 / plan_.opts.rate));
    }
    bool InWindow(int64_t t) const { return t >= plan_.window_begin_ns && t < plan_.window_end_ns; }
    /// Whether connections should still be (re)opened.
    bool MayConnect(int64_t now) const {
        return open_loop_ ? !schedule_done_ : now < plan_.window_end_ns;
    }

    void Connect(Connection& c, int64_t now);
    void Close(Connection& c);
    void MarkDown(Connection& c, int64_t now, int64_t retry_delay_ns);
    void PushFree(Connection& c);
    Connection* PopFree();
    void Pump(int64_t now);
    void Send(Connection& c, int64_t intended, int64_t now);
    void WriteMore(Connection& c, int64_t now);
    void ReadMore(Connection& c);
    void Complete(Connection& c, int64_t now, bool must_close);
    void Fail(Connection& c, ErrorKind kind, int64_t now);
    void OnEvent(Connection& c, uint32_t events, int64_t now);
    void Housekeeping(int64_t now);
    void SetInterest(Connection& c, bool want_write);
    void ArmTimer(int64_t at);
    int64_t NextDeadline(int64_t now) const;

    const Plan& plan_;
    const int index_;
    const int64_t timeout_ns_;
    const bool open_loop_;
    std::vector<std::unique_ptr<Connection>> conns_;
    std::vector<Connection*> free_;
    std::vector<char> read_buffer_;
    int epoll_fd_ = -1;
    int timer_fd_ = -1;
    int64_t armed_at_ = -1;
    int64_t next_housekeeping_ns_ = 0;
    uint64_t next_k_ = 0;  // open loop: next request of this thread's schedule
    bool schedule_done_ = false;
    int64_t in_flight_window_ = 0;  // measured requests sent and not yet finished
    Stats stats_;
};

void Worker::Run() {
    // Timers as precise as the kernel allows (the default slack is 50 µs).
    ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epoll_fd_ < 0 || timer_fd_ < 0) {
        stats_.errors[static_cast<size_t>(ErrorKind::kIo)] += 1;
        return;
    }
    epoll_event tev{};
    tev.events = EPOLLIN;
    tev.data.ptr = nullptr;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &tev);

    int64_t now = NowNs();
    while (now < plan_.start_ns) {
        const int64_t wait = plan_.start_ns - now;
        timespec ts{static_cast<time_t>(wait / 1'000'000'000),
                    static_cast<long>(wait % 1'000'000'000)};
        ::nanosleep(&ts, nullptr);
        now = NowNs();
    }
    for (auto& c : conns_) {
        Connect(*c, now);
    }
    next_housekeeping_ns_ = now + kHousekeepingNs;

    std::vector<epoll_event> events(256);
    for (;;) {
        now = NowNs();
        if (now >= next_housekeeping_ns_) {
            Housekeeping(now);
            next_housekeeping_ns_ = now + kHousekeepingNs;
        }
        Pump(now);
        const bool window_over = open_loop_ ? schedule_done_ : now >= plan_.window_end_ns;
        if ((window_over && in_flight_window_ == 0) || now >= plan_.drain_end_ns) {
            break;
        }
        ArmTimer(NextDeadline(now));
        const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        now = NowNs();
        for (int i = 0; i < n; ++i) {
            auto* c = static_cast<Connection*>(events[static_cast<size_t>(i)].data.ptr);
            if (c == nullptr) {
                uint64_t expirations = 0;
                [[maybe_unused]] ssize_t r = ::read(timer_fd_, &expirations, sizeof(expirations));
                armed_at_ = -1;
                continue;
            }
            OnEvent(*c, events[static_cast<size_t>(i)].events, now);
        }
    }
    // Whatever measured work is left missed its deadline.
    now = std::max(NowNs(), plan_.drain_end_ns);
    Pump(now);
    stats_.errors[static_cast<size_t>(ErrorKind::kTimeout)] +=
        static_cast<uint64_t>(std::max<int64_t>(in_flight_window_, 0));
    in_flight_window_ = 0;
}

int64_t Worker::NextDeadline(int64_t now) const {
    int64_t at = next_housekeeping_ns_;
    if (open_loop_ && !schedule_done_) {
        const int64_t due = IntendedAt(next_k_);
        // When due already, the request waits for a connection (an event wakes us).
        if (due > now) {
            at = std::min(at, due);
        }
    }
    if (now < plan_.window_end_ns) {
        at = std::min(at, plan_.window_end_ns);
    }
    return std::min(at, plan_.drain_end_ns);
}

void Worker::ArmTimer(int64_t at) {
    if (at == armed_at_) {
        return;
    }
    armed_at_ = at;
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(at / 1'000'000'000);
    spec.it_value.tv_nsec = static_cast<long>(at % 1'000'000'000);
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) {
        spec.it_value.tv_nsec = 1;
    }
    ::timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
}

void Worker::Connect(Connection& c, int64_t now) {
    if (!MayConnect(now)) {
        c.state = Connection::State::kDown;
        c.retry_at_ns = INT64_MAX;
        return;
    }
    const int fd = ::socket(plan_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (now >= plan_.window_begin_ns && now < plan_.window_end_ns) {
            stats_.errors[static_cast<size_t>(ErrorKind::kConnect)] += 1;
        }
        MarkDown(c, now, kConnectRetryNs);
        return;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    stats_.connects += 1;
    c.fd = fd;
    const int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&plan_.addr), plan_.addr_len);
    if (r < 0 && errno != EINPROGRESS) {
        Fail(c, ErrorKind::kConnect, now);
        return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = &c;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    c.want_write = true;
    c.state = Connection::State::kConnecting;
    c.deadline_ns = now + timeout_ns_;
}

void Worker::Close(Connection& c) {
    if (c.fd >= 0) {
        ::close(c.fd);  // also leaves the epoll set
        c.fd = -1;
    }
    c.want_write = false;
}

void Worker::MarkDown(Connection& c, int64_t now, int64_t retry_delay_ns) {
    Close(c);
    c.state = Connection::State::kDown;
    c.retry_at_ns = now + retry_delay_ns;
}

void Worker::PushFree(Connection& c) {
    c.state = Connection::State::kIdle;
    if (!c.in_free_list) {
        c.in_free_list = true;
        free_.push_back(&c);
    }
}

Connection* Worker::PopFree() {
    while (!free_.empty()) {
        Connection* c = free_.back();
        free_.pop_back();
        c->in_free_list = false;
        if (c->state == Connection::State::kIdle) {
            return c;
        }
    }
    return nullptr;
}

void Worker::Pump(int64_t now) {
    if (!open_loop_) {
        if (now >= plan_.window_end_ns) {
            return;
        }
        while (Connection* c = PopFree()) {
            Send(*c, now, now);
        }
        return;
    }
    while (!schedule_done_) {
        const int64_t due = IntendedAt(next_k_);
        if (due >= plan_.window_end_ns) {
            schedule_done_ = true;
            break;
        }
        if (due > now) {
            break;
        }
        if (due + timeout_ns_ <= now) {
            // It waited for a connection past its deadline: a timeout that was never sent.
            if (InWindow(due)) {
                stats_.errors[static_cast<size_t>(ErrorKind::kTimeout)] += 1;
            }
            ++next_k_;
            continue;
        }
        Connection* c = PopFree();
        if (c == nullptr) {
            break;  // backlog: the next free connection takes it, with its original due time
        }
        ++next_k_;
        Send(*c, due, now);
    }
}

void Worker::Send(Connection& c, int64_t intended, int64_t now) {
    c.intended_ns = intended;
    c.deadline_ns = intended + timeout_ns_;
    c.in_window = InWindow(intended);
    c.written = 0;
    c.parser.Reset();
    c.state = Connection::State::kSending;
    stats_.sent += 1;
    if (c.in_window) {
        in_flight_window_ += 1;
        if (open_loop_) {
            stats_.send_lag.Record(static_cast<uint64_t>(std::max<int64_t>(now - intended, 0)));
        }
    }
    WriteMore(c, now);
}

void Worker::WriteMore(Connection& c, int64_t now) {
    const std::string& request = *c.request;
    while (c.written < request.size()) {
        const ssize_t n =
            ::send(c.fd, request.data() + c.written, request.size() - c.written, MSG_NOSIGNAL);
        if (n > 0) {
            c.written += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            SetInterest(c, true);
            return;
        }
        Fail(c, ErrorKind::kIo, now);
        return;
    }
    c.state = Connection::State::kReceiving;
    SetInterest(c, false);
}

void Worker::SetInterest(Connection& c, bool want_write) {
    if (c.want_write == want_write || c.fd < 0) {
        return;
    }
    c.want_write = want_write;
    epoll_event ev{};
    ev.events = want_write ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
    ev.data.ptr = &c;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Worker::OnEvent(Connection& c, uint32_t events, int64_t now) {
    switch (c.state) {
        case Connection::State::kConnecting: {
            int err = 0;
            socklen_t len = sizeof(err);
            ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0 || (events & (EPOLLERR | EPOLLHUP)) != 0) {
                Fail(c, ErrorKind::kConnect, now);
                return;
            }
            if ((events & EPOLLOUT) != 0) {
                SetInterest(c, false);
                PushFree(c);
            }
            return;
        }
        case Connection::State::kSending:
            if ((events & EPOLLOUT) != 0) {
                WriteMore(c, now);
            }
            if (c.state != Connection::State::kDown &&
                (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) {
                ReadMore(c);  // an early response (e.g. 413) or a reset
            }
            return;
        case Connection::State::kReceiving:
            ReadMore(c);
            return;
        case Connection::State::kIdle: {
            // The server closed a kept-alive connection, or sent bytes nobody asked for.
            const ssize_t n = ::recv(c.fd, read_buffer_.data(), read_buffer_.size(), 0);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                return;
            }
            if (n > 0 && now >= plan_.window_begin_ns && now < plan_.window_end_ns) {
                stats_.errors[static_cast<size_t>(ErrorKind::kParse)] += 1;
            }
            MarkDown(c, now, 0);
            Connect(c, now);
            return;
        }
        case Connection::State::kDown:
            return;
    }
}

void Worker::ReadMore(Connection& c) {
    for (;;) {
        const ssize_t n = ::recv(c.fd, read_buffer_.data(), read_buffer_.size(), 0);
        const int64_t now = NowNs();
        if (n > 0) {
            stats_.bytes_read += static_cast<uint64_t>(n);
            const bool had_body = c.parser.body_started();
            size_t used = 0;
            const auto r = c.parser.Feed(read_buffer_.data(), static_cast<size_t>(n), &used);
            if (!had_body && c.parser.body_started()) {
                c.first_body_ns = now;
            }
            if (r == ResponseParser::Result::kComplete) {
                Complete(c, now, used != static_cast<size_t>(n));
                return;
            }
            if (r == ResponseParser::Result::kError) {
                Fail(c, ErrorKind::kParse, now);
                return;
            }
            if (static_cast<size_t>(n) < read_buffer_.size()) {
                return;  // most likely drained; level-triggered epoll reports any rest
            }
            continue;
        }
        if (n == 0) {
            if (c.parser.FinishOnClose() == ResponseParser::Result::kComplete &&
                c.parser.started()) {
                Complete(c, now, true);
            } else {
                Fail(c, ErrorKind::kIo, now);
            }
            return;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        }
        Fail(c, ErrorKind::kIo, now);
        return;
    }
}

void Worker::Complete(Connection& c, int64_t now, bool must_close) {
    const int status = c.parser.status();
    if (c.in_window) {
        in_flight_window_ -= 1;
        stats_.status[static_cast<size_t>(std::clamp(status, 0, 599))] += 1;
        if (status >= 200 && status < 300) {
            stats_.requests += 1;
            stats_.latency.Record(static_cast<uint64_t>(now - c.intended_ns));
            if (c.parser.body_started()) {
                stats_.ttfb.Record(static_cast<uint64_t>(c.first_body_ns - c.intended_ns));
            }
            if (c.parser.has_recorded()) {
                stats_.header.Record(static_cast<uint64_t>(c.parser.recorded() * 1000.0));
            }
        } else {
            stats_.errors[static_cast<size_t>(ErrorKind::kStatus)] += 1;
        }
        if (must_close && c.state == Connection::State::kReceiving && c.parser.keep_alive()) {
            // Bytes after the response that no request asked for.
            stats_.errors[static_cast<size_t>(ErrorKind::kParse)] += 1;
        }
    }
    c.in_window = false;
    if (must_close || !c.parser.keep_alive() || c.state != Connection::State::kReceiving) {
        MarkDown(c, now, 0);
        Connect(c, now);
        return;
    }
    PushFree(c);
}

void Worker::Fail(Connection& c, ErrorKind kind, int64_t now) {
    const bool busy =
        c.state == Connection::State::kSending || c.state == Connection::State::kReceiving;
    if (busy) {
        if (c.in_window) {
            in_flight_window_ -= 1;
            stats_.errors[static_cast<size_t>(kind)] += 1;
        }
    } else if (now >= plan_.window_begin_ns && now < plan_.window_end_ns) {
        stats_.errors[static_cast<size_t>(kind)] += 1;
    }
    c.in_window = false;
    const int64_t delay = kind == ErrorKind::kConnect ? kConnectRetryNs : 0;
    MarkDown(c, now, delay);
    if (delay == 0) {
        Connect(c, now);
    }
}

void Worker::Housekeeping(int64_t now) {
    for (auto& p : conns_) {
        Connection& c = *p;
        switch (c.state) {
            case Connection::State::kSending:
            case Connection::State::kReceiving:
                if (now >= c.deadline_ns) {
                    Fail(c, ErrorKind::kTimeout, now);
                }
                break;
            case Connection::State::kConnecting:
                if (now >= c.deadline_ns) {
                    Fail(c, ErrorKind::kConnect, now);
                }
                break;
            case Connection::State::kDown:
                if (now >= c.retry_at_ns) {
                    Connect(c, now);
                }
                break;
            case Connection::State::kIdle:
                break;
        }
    }
}

}  // namespace

int64_t NowNs() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

bool ParseUrl(const std::string& url, Target* out, std::string* error) {
    constexpr std::string_view kScheme = "http://";
    std::string_view s = url;
    if (s.substr(0, kScheme.size()) != kScheme) {
        *error = "only http:// URLs are supported";
        return false;
    }
    s.remove_prefix(kScheme.size());
    const size_t slash = s.find_first_of("/?");
    std::string_view authority = s.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? "/" : s.substr(slash);
    if (authority.empty()) {
        *error = "URL has no host";
        return false;
    }
    out->host_header = std::string(authority);
    std::string_view port = "80";
    if (authority.front() == '[') {
        const size_t close = authority.find(']');
        if (close == std::string_view::npos) {
            *error = "bad IPv6 literal";
            return false;
        }
        out->host = std::string(authority.substr(1, close - 1));
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':') {
                *error = "bad authority";
                return false;
            }
            port = authority.substr(close + 2);
        }
    } else {
        const size_t colon = authority.rfind(':');
        out->host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) {
            port = authority.substr(colon + 1);
        }
    }
    if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) {
        *error = "bad port";
        return false;
    }
    out->port = std::string(port);
    out->path.clear();
    if (path.front() == '?') {
        out->path.push_back('/');
    }
    out->path.append(path);
    return true;
}

std::string BuildRequest(const Options& opts,
                         const Target& target,
                         const std::string& extra_header) {
    std::string req;
    req.reserve(256 + opts.body.size());
    req.append(opts.method).append(" ").append(target.path).append(" HTTP/1.1\r\n");
    if (!HasHeader(opts.headers, "host")) {
        req.append("Host: ").append(target.host_header).append("\r\n");
    }
    for (const std::string& h : opts.headers) {
        req.append(h).append("\r\n");
    }
    if (!extra_header.empty()) {
        req.append(extra_header).append("\r\n");
    }
    const bool wants_length = !opts.body.empty() || opts.method == "POST" || opts.method == "PUT" ||
                              opts.method == "PATCH";
    if (!opts.body.empty() && !HasHeader(opts.headers, "content-type")) {
        req.append("Content-Type: application/json\r\n");
    }
    if (wants_length && !HasHeader(opts.headers, "content-length")) {
        req.append("Content-Length: ").append(std::to_string(opts.body.size())).append("\r\n");
    }
    req.append("\r\n").append(opts.body);
    return req;
}

void Stats::Merge(const Stats& other) {
    latency.Merge(other.latency);
    ttfb.Merge(other.ttfb);
    header.Merge(other.header);
    send_lag.Merge(other.send_lag);
    for (size_t i = 0; i < errors.size(); ++i) {
        errors[i] += other.errors[i];
    }
    for (size_t i = 0; i < status.size(); ++i) {
        status[i] += other.status[i];
    }
    requests += other.requests;
    sent += other.sent;
    connects += other.connects;
    bytes_read += other.bytes_read;
}

Stats RunLoad(const Plan& plan) {
    const int threads = std::max(1, std::min(plan.opts.threads, plan.opts.connections));
    std::vector<std::unique_ptr<Worker>> workers;
    int first = 0;
    for (int i = 0; i < threads; ++i) {
        const int share = plan.opts.connections / threads + (i < plan.opts.connections % threads);
        workers.push_back(std::make_unique<Worker>(plan, i, share, first));
        first += share;
    }
    std::vector<std::thread> running;
    for (auto& w : workers) {
        running.emplace_back([&w] { w->Run(); });
    }
    for (auto& t : running) {
        t.join();
    }
    Stats total;
    for (auto& w : workers) {
        total.Merge(w->stats());
    }
    return total;
}

}  // namespace conduit::loadgen
