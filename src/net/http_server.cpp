#include "net/http_server.hpp"

#include "core/clock.hpp"
#include "core/strings.hpp"
#include "net/asio_loop.hpp"
#include "net/request_parser.hpp"
#include "net/websocket_impl.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <sys/socket.h>
#include <unordered_set>

namespace conduit::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// "Date" header value, recomputed at most once per second per thread.
std::string_view HttpDate() {
    thread_local std::time_t cached_second = 0;
    thread_local char buf[40] = {0};
    std::time_t now = std::time(nullptr);
    if (now != cached_second) {
        cached_second = now;
        std::tm tm{};
        gmtime_r(&now, &tm);
        std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    }
    return buf;
}

// Header values come from our code and from upstream pass-through: never let CR/LF through.
void AppendHeaderValue(std::string& out, std::string_view v) {
    for (char c : v) {
        if (c != '\r' && c != '\n') {
            out.push_back(c);
        }
    }
}

void AppendHeaders(std::string& out, const Headers& h) {
    for (const auto& [k, v] : h.entries()) {
        if (core::IEquals(k, "content-length") || core::IEquals(k, "transfer-encoding") ||
            core::IEquals(k, "connection")) {
            continue;  // framing headers are ours to set
        }
        out += k;
        out += ": ";
        AppendHeaderValue(out, v);
        out += "\r\n";
    }
}

std::string SerializeHead(int status,
                          const Headers& headers,
                          const Headers& extra,
                          bool chunked,
                          size_t content_length,
                          bool close) {
    std::string out;
    out.reserve(256);
    out += "HTTP/1.1 ";
    out += std::to_string(status);
    out += ' ';
    out += ReasonPhrase(status);
    out += "\r\nDate: ";
    out += HttpDate();
    out += "\r\n";
    AppendHeaders(out, headers);
    AppendHeaders(out, extra);
    if (chunked) {
        out += "Transfer-Encoding: chunked\r\n";
    } else if (status >= 200 && status != 204 && status != 304) {
        out += "Content-Length: ";
        out += std::to_string(content_length);
        out += "\r\n";
    }
    if (close) {
        out += "Connection: close\r\n";
    }
    out += "\r\n";
    return out;
}

}  // namespace

class Connection;

struct ShardState {
    AsioLoop* loop = nullptr;
    std::unique_ptr<tcp::acceptor> acceptor;
    std::unique_ptr<asio::steady_timer> sweeper;  // checks connection deadlines
    std::unordered_set<Connection*> connections;  // loop thread only
    bool draining = false;                        // loop thread only
};

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
    Impl(Runtime& rt, ServerOptions opts, Handler h)
        : runtime(rt), options(std::move(opts)), handler(std::move(h)) {}

    Runtime& runtime;
    ServerOptions options;
    Handler handler;
    std::vector<std::unique_ptr<ShardState>> shards;
    std::atomic<int64_t> connections{0};
    std::atomic<int64_t> inflight{0};
    std::atomic<size_t> drained_shards{0};  // shards that have closed their acceptor
    uint16_t port = 0;

    asio::awaitable<void> AcceptLoop(ShardState* shard);
    /// Enforces connection deadlines on one shard, then re-arms itself.
    void Sweep(ShardState* shard);
    std::chrono::milliseconds sweep_interval{250};
    Response ErrorResponse(int status, std::string_view message) const {
        if (options.error_response) {
            return options.error_response(status, message);
        }
        return Response::Text(status, std::string(message) + "\n");
    }
};

class ServerExchange;

/// One client connection; lives on its shard's thread. Reads requests one at a time, hands each
/// to the handler as a ServerExchange, and serialises the response writes.
class Connection final : public std::enable_shared_from_this<Connection> {
public:
    Connection(std::shared_ptr<HttpServer::Impl> server, ShardState& shard, tcp::socket socket)
        : server_(std::move(server)),
          shard_(shard),
          socket_(std::move(socket)),
          done_timer_(socket_.get_executor()) {
        error_code ec;
        auto ep = socket_.remote_endpoint(ec);
        if (!ec) {
            remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
        }
    }

    asio::awaitable<void> Run();

    // --- used by ServerExchange (loop thread) ---
    void QueueWrite(std::string data) {
        if (broken_ || data.empty()) {
            return;
        }
        pending_bytes_ += data.size();
        pending_.push_back(std::move(data));
        if (!writing_) {
            StartWrite();
        }
    }
    /// The exchange's last bytes are queued; it completes once they are written.
    void FinishResponse() {
        final_queued_ = true;
        if (!writing_ && pending_.empty()) {
            CompleteExchange();
        }
    }
    size_t Buffered() const { return pending_bytes_ + inflight_bytes_; }
    bool WillClose() const { return !keep_alive_ || shard_.draining; }
    void MarkClosing() { close_after_ = true; }
    AsioLoop& loop() { return *shard_.loop; }
    const std::string& remote() const { return remote_; }

    bool Draining() const { return shard_.draining; }
    /// Hands the socket (and the bytes read past the request) over to a WebSocket that first
    /// writes `response_head`; completes the current exchange. The connection then only waits
    /// for the WebSocket to close (no HTTP deadlines), still counted and shut down with the server.
    WebSocketPtr UpgradeToWebSocket(std::string response_head, WebSocketOptions options);

    /// Shutdown: closes the connection now if it is waiting for a request; a WebSocket closes
    /// with 1001 (going away).
    void DrainIfIdle() {
        if (ws_) {
            ws_->GoingAway();
            return;
        }
        if (idle_) {
            error_code ec;
            socket_.cancel(ec);
        }
    }
    /// Called by the shard's sweeper: enforces the current read or write deadline.
    void CheckDeadline(int64_t now_ns) {
        if (deadline_ns_ == 0 || now_ns < deadline_ns_ || broken_) {
            return;
        }
        deadline_ns_ = 0;
        if (deadline_is_write_) {
            OnBroken();  // a client that does not read its response
            return;
        }
        read_timed_out_ = true;
        error_code ec;
        socket_.cancel(ec);  // the pending read completes with operation_aborted
    }

    /// Hard close (shutdown deadline passed).
    void Abort() { OnBroken(); }
    /// Closes once what is already queued has been written (the client sees the bytes sent so
    /// far, then the connection dropping).
    void AbortAfterFlush() {
        if (writing_ || !pending_.empty()) {
            abort_after_flush_ = true;
        } else {
            OnBroken();
        }
    }

private:
    void StartWrite();
    void StartWatch();
    void CompleteExchange();
    void OnBroken();
    void SetReadDeadline(int64_t deadline_ns) {
        deadline_ns_ = deadline_ns;
        deadline_is_write_ = false;
    }
    void SetWriteDeadline() {
        deadline_ns_ =
            core::SystemClock::SteadyNowNs() +
            std::chrono::duration_cast<std::chrono::nanoseconds>(server_->options.write_timeout)
                .count();
        deadline_is_write_ = true;
    }
    /// Makes room for at least a few KB at the end of the read buffer.
    void ReserveRead();
    /// Prepares an error response for the server's own protocol errors (400/408/413/431).
    void PrepareProtocolError(int status, std::string_view message);
    /// Writes what PrepareProtocolError() prepared. No parameters: g++ 12 mishandles
    /// non-trivial coroutine parameters in some shapes (DESIGN §5).
    asio::awaitable<void> SendPreparedError();

    std::shared_ptr<HttpServer::Impl> server_;
    ShardState& shard_;
    tcp::socket socket_;
    asio::steady_timer done_timer_;
    std::unique_ptr<char[]> rbuf_;
    size_t rcap_ = 0;
    size_t rbegin_ = 0;
    size_t rend_ = 0;
    std::string remote_;
    std::string error_out_;

    std::shared_ptr<ServerExchange> exchange_;
    std::shared_ptr<ServerWebSocket> ws_;  // set once upgraded
    bool ws_finished_ = false;
    std::vector<std::string> pending_;
    std::vector<std::string> inflight_;
    std::vector<asio::const_buffer> write_buffers_;
    size_t pending_bytes_ = 0;
    size_t inflight_bytes_ = 0;
    uint64_t watch_gen_ = 0;
    int64_t deadline_ns_ = 0;  // 0 = none; enforced by the shard's sweeper
    bool deadline_is_write_ = false;
    bool writing_ = false;
    bool final_queued_ = false;
    bool exchange_done_ = true;
    bool broken_ = false;
    bool keep_alive_ = true;
    bool close_after_ = false;
    bool idle_ = false;
    bool read_timed_out_ = false;
    bool abort_after_flush_ = false;
};

/// The Exchange handed to handlers. It refers to its connection weakly: the connection's own
/// coroutine keeps it alive while the exchange is pending, and a handler that holds on to an
/// exchange after the connection died (or the runtime shut down) only gets no-ops.
class ServerExchange final : public Exchange {
public:
    ServerExchange(const std::shared_ptr<Connection>& conn, Request req, bool head)
        : conn_(conn), loop_(&conn->loop()), req_(std::move(req)), head_(head) {}

    Request& request() override { return req_; }
    core::Loop& loop() override { return *loop_; }

    void Respond(Response r) override {
        auto conn = conn_.lock();
        if (started_ || closed_ || !conn) {
            return;
        }
        started_ = responded_ = true;
        status_ = r.status;
        body_bytes_ = r.body.size();
        bool close = conn->WillClose();
        if (close) {
            conn->MarkClosing();
        }
        std::string head =
            SerializeHead(r.status, r.headers, extra_headers_, false, r.body.size(), close);
        if (head_ || r.body.empty()) {
            conn->QueueWrite(std::move(head));
        } else if (r.body.size() <= 16 * 1024) {
            head += r.body;
            conn->QueueWrite(std::move(head));
        } else {
            conn->QueueWrite(std::move(head));
            conn->QueueWrite(std::move(r.body));
        }
        conn->FinishResponse();
    }

    void BeginStream(int status, Headers headers) override {
        auto conn = conn_.lock();
        if (started_ || closed_ || !conn) {
            return;
        }
        started_ = true;
        status_ = status;
        bool close = conn->WillClose();
        if (close) {
            conn->MarkClosing();
        }
        conn->QueueWrite(SerializeHead(status, headers, extra_headers_, true, 0, close));
    }

    void BeginFixedLength(int status, Headers headers, uint64_t length) override {
        auto conn = conn_.lock();
        if (started_ || closed_ || !conn) {
            return;
        }
        started_ = true;
        fixed_length_ = true;
        status_ = status;
        bool close = conn->WillClose();
        if (close) {
            conn->MarkClosing();
        }
        conn->QueueWrite(SerializeHead(status, headers, extra_headers_, false,
                                       static_cast<size_t>(length), close));
    }

    void Write(std::string chunk) override {
        if (!started_ || responded_ || closed_ || chunk.empty() || head_) {
            return;
        }
        auto conn = conn_.lock();
        if (!conn) {
            return;
        }
        body_bytes_ += chunk.size();
        if (fixed_length_) {
            conn->QueueWrite(std::move(chunk));
            return;
        }
        // Chunk framing around the caller's buffer (moved, not copied); the small strings stay
        // in SSO storage.
        static constexpr char kHex[] = "0123456789abcdef";
        char size_line[24];
        size_t len = 0;
        for (size_t v = chunk.size(); v != 0 || len == 0; v >>= 4) {
            size_line[len++] = kHex[v & 0xF];
        }
        std::reverse(size_line, size_line + len);
        size_line[len++] = '\r';
        size_line[len++] = '\n';
        conn->QueueWrite(std::string(size_line, len));
        conn->QueueWrite(std::move(chunk));
        conn->QueueWrite(std::string("\r\n"));
    }

    void EndStream() override {
        auto conn = conn_.lock();
        if (!started_ || responded_ || closed_ || !conn) {
            return;
        }
        responded_ = true;
        if (!head_ && !fixed_length_) {
            conn->QueueWrite("0\r\n\r\n");
        }
        conn->FinishResponse();
    }

    void Abort() override {
        if (auto conn = conn_.lock(); conn && !closed_) {
            conn->AbortAfterFlush();
        }
    }

    WebSocketPtr AcceptWebSocket(Headers headers, WebSocketOptions options) override {
        auto conn = conn_.lock();
        if (started_ || closed_ || !conn || conn->Draining() || !IsWebSocketUpgrade(req_)) {
            return nullptr;
        }
        started_ = responded_ = true;
        status_ = 101;
        headers.Set("Upgrade", "websocket");
        headers.Set("Sec-WebSocket-Accept",
                    ws::AcceptKey(core::Trim(req_.headers.Get("sec-websocket-key"))));
        std::string head = SerializeHead(101, headers, extra_headers_, false, 0, false);
        head.insert(head.size() - 2, "Connection: Upgrade\r\n");  // SerializeHead drops it
        return conn->UpgradeToWebSocket(std::move(head), options);
    }

    size_t BufferedBytes() const override {
        auto conn = conn_.lock();
        return conn ? conn->Buffered() : 0;
    }
    void SetOnDrain(std::function<void()> fn) override { on_drain_ = std::move(fn); }
    void SetOnClose(std::function<void()> fn) override { on_close_ = std::move(fn); }
    void SetOnComplete(std::function<void(int, size_t)> fn) override {
        on_complete_ = std::move(fn);
    }
    bool closed() const override { return closed_; }
    bool responded() const override { return responded_; }
    bool started() const override { return started_; }

    // --- connection side ---
    void NotifyDrained() {
        if (on_drain_) {
            auto fn = std::move(on_drain_);
            on_drain_ = nullptr;
            fn();
        }
    }
    void NotifyClosed() {
        if (closed_) {
            return;
        }
        closed_ = true;
        if (on_close_) {
            auto fn = std::move(on_close_);
            on_close_ = nullptr;
            fn();
        }
    }
    void NotifyComplete() {
        on_drain_ = nullptr;
        on_close_ = nullptr;
        if (on_complete_) {
            auto fn = std::move(on_complete_);
            on_complete_ = nullptr;
            // 499 (nginx's "client closed request") when the client left before completion.
            fn(closed_ && !responded_ ? 499 : status_, body_bytes_);
        }
        conn_.reset();
    }

private:
    std::weak_ptr<Connection> conn_;
    AsioLoop* loop_;
    Request req_;
    bool head_;
    bool started_ = false;
    bool responded_ = false;
    bool closed_ = false;
    bool fixed_length_ = false;
    int status_ = 0;
    size_t body_bytes_ = 0;
    std::function<void()> on_drain_;
    std::function<void()> on_close_;
    std::function<void(int, size_t)> on_complete_;
};

void Connection::ReserveRead() {
    if (rbegin_ == rend_) {
        rbegin_ = rend_ = 0;
    }
    constexpr size_t kChunk = 8192;
    if (rcap_ - rend_ >= kChunk / 2) {
        return;
    }
    size_t live = rend_ - rbegin_;
    if (rbegin_ > 0 && rcap_ - live >= kChunk) {
        std::memmove(rbuf_.get(), rbuf_.get() + rbegin_, live);
    } else {
        size_t cap = std::max(kChunk, live * 2 + kChunk);
        auto fresh = std::make_unique<char[]>(cap);
        if (live > 0) {
            std::memcpy(fresh.get(), rbuf_.get() + rbegin_, live);
        }
        rbuf_ = std::move(fresh);
        rcap_ = cap;
    }
    rbegin_ = 0;
    rend_ = live;
}

void Connection::StartWrite() {
    if (pending_.empty() || broken_) {
        return;
    }
    writing_ = true;
    inflight_.swap(pending_);
    inflight_bytes_ = pending_bytes_;
    pending_bytes_ = 0;
    write_buffers_.clear();
    for (const auto& s : inflight_) {
        write_buffers_.emplace_back(s.data(), s.size());
    }
    SetWriteDeadline();
    asio::async_write(socket_, write_buffers_,
                      [self = shared_from_this()](error_code ec, size_t /*n*/) {
                          self->deadline_ns_ = 0;
                          self->writing_ = false;
                          self->inflight_.clear();
                          self->inflight_bytes_ = 0;
                          if (ec) {
                              self->OnBroken();
                              return;
                          }
                          if (!self->pending_.empty()) {
                              self->StartWrite();
                              return;
                          }
                          if (self->abort_after_flush_) {
                              self->OnBroken();
                              return;
                          }
                          if (self->final_queued_) {
                              self->CompleteExchange();
                          } else if (self->exchange_) {
                              // Copy: the callback may replace the exchange's drain handler.
                              auto ex = self->exchange_;
                              ex->NotifyDrained();
                          }
                      });
}

// While a handler works (e.g. waits for an upstream), watch the socket for EOF so a client that
// disconnects is noticed at once, not at the next write.
void Connection::StartWatch() {
    uint64_t gen = ++watch_gen_;
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this(), gen](error_code ec) {
        if (ec || gen != self->watch_gen_ || self->exchange_done_ || self->broken_) {
            return;
        }
        char c;
        ssize_t n = ::recv(self->socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            self->OnBroken();
        } else if (n < 0) {
            self->StartWatch();
        }
        // n > 0: the client pipelined its next request; it is read after this exchange.
    });
}

void Connection::CompleteExchange() {
    if (exchange_done_) {
        return;
    }
    exchange_done_ = true;
    final_queued_ = false;
    ++watch_gen_;
    server_->inflight.fetch_sub(1, std::memory_order_relaxed);
    auto ex = std::move(exchange_);
    exchange_.reset();
    if (ex) {
        ex->NotifyComplete();
    }
    done_timer_.cancel();
}

WebSocketPtr Connection::UpgradeToWebSocket(std::string response_head, WebSocketOptions options) {
    ++watch_gen_;  // a pending EOF watch no longer concerns this socket
    error_code ec;
    socket_.cancel(ec);
    deadline_ns_ = 0;  // the sweeper leaves WebSockets alone
    close_after_ = true;
    std::string leftover(rbuf_.get() + rbegin_, rend_ - rbegin_);
    rbuf_.reset();
    rcap_ = rbegin_ = rend_ = 0;
    auto ws = std::make_shared<ServerWebSocket>(*shard_.loop, std::move(socket_), remote_, options);
    ws_ = ws;
    std::weak_ptr<Connection> weak = shared_from_this();
    ws->Start(std::move(response_head), std::move(leftover), [weak] {
        if (auto self = weak.lock()) {
            self->ws_finished_ = true;
            self->done_timer_.cancel();
        }
    });
    CompleteExchange();
    return ws;
}

void Connection::OnBroken() {
    if (ws_) {
        ws_->Abort();  // shutdown deadline passed
        return;
    }
    if (broken_) {
        return;
    }
    broken_ = true;
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    deadline_ns_ = 0;
    pending_.clear();
    pending_bytes_ = 0;
    if (exchange_ && !exchange_done_) {
        auto ex = exchange_;
        ex->NotifyClosed();
        CompleteExchange();
    }
    done_timer_.cancel();
}

void Connection::PrepareProtocolError(int status, std::string_view message) {
    Response r = server_->ErrorResponse(status, message);
    error_out_ = SerializeHead(status, r.headers, Headers{}, false, r.body.size(), true);
    error_out_ += r.body;
}

asio::awaitable<void> Connection::SendPreparedError() {
    if (broken_ || error_out_.empty()) {
        co_return;
    }
    SetWriteDeadline();
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(error_out_), kTuple);
    (void)ec;
    (void)n;
    deadline_ns_ = 0;
    error_out_.clear();
}

asio::awaitable<void> Connection::Run() {
    auto self = shared_from_this();
    const ServerOptions& opt = server_->options;
    auto ns = [](std::chrono::milliseconds d) {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    };
    while (!broken_ && !close_after_) {
        if (shard_.draining) {
            break;
        }
        RequestParser parser(static_cast<size_t>(opt.max_header_bytes),
                             static_cast<uint64_t>(opt.max_body_bytes));
        int64_t first_byte_ns = 0;
        int64_t headers_done_ns = 0;
        bool continue_sent = false;
        bool complete = false;
        for (;;) {
            if (rend_ > rbegin_) {
                if (first_byte_ns == 0) {
                    first_byte_ns = core::SystemClock::SteadyNowNs();
                }
                size_t consumed = 0;
                auto st =
                    parser.Feed(std::string_view(rbuf_.get() + rbegin_, rend_ - rbegin_), consumed);
                rbegin_ += consumed;
                if (st == RequestParser::Status::kDone) {
                    complete = true;
                    break;
                }
                if (st == RequestParser::Status::kError) {
                    PrepareProtocolError(parser.error_status(), parser.error());
                    co_await SendPreparedError();
                    break;
                }
                if (parser.headers_done() && headers_done_ns == 0) {
                    headers_done_ns = core::SystemClock::SteadyNowNs();
                }
                if (parser.expects_continue() && !continue_sent) {
                    continue_sent = true;
                    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
                    SetWriteDeadline();
                    auto [cec, cn] =
                        co_await asio::async_write(socket_, asio::buffer(kContinue), kTuple);
                    (void)cn;
                    deadline_ns_ = 0;
                    if (cec) {
                        broken_ = true;
                        break;
                    }
                }
            }
            // Wait for more bytes: the keep-alive idle timeout before a request starts, the
            // header timeout from its first byte, the body timeout from the end of headers.
            int64_t now = core::SystemClock::SteadyNowNs();
            if (first_byte_ns == 0) {
                idle_ = true;
                SetReadDeadline(now + ns(opt.idle_timeout));
            } else if (headers_done_ns == 0) {
                SetReadDeadline(first_byte_ns + ns(opt.header_timeout));
            } else {
                SetReadDeadline(now + ns(opt.body_timeout));
            }
            read_timed_out_ = false;
            ReserveRead();
            auto [ec, n] = co_await socket_.async_read_some(
                asio::buffer(rbuf_.get() + rend_, rcap_ - rend_), kTuple);
            deadline_ns_ = 0;
            idle_ = false;
            if (n > 0) {
                rend_ += n;
            }
            if (ec || n == 0) {
                if (read_timed_out_ && first_byte_ns != 0) {
                    PrepareProtocolError(408, headers_done_ns == 0
                                                  ? "Timed out reading the request headers."
                                                  : "Timed out reading the request body.");
                    co_await SendPreparedError();
                }
                // Otherwise: the client closed, the idle timeout passed, or shutdown.
                break;
            }
        }
        if (!complete || broken_) {
            break;
        }

        keep_alive_ = parser.keep_alive();
        Request req = std::move(parser.request());
        req.remote_address = remote_;
        req.first_byte_ns = first_byte_ns;
        req.received_ns = core::SystemClock::SteadyNowNs();
        bool head = req.method == "HEAD";

        exchange_done_ = false;
        final_queued_ = false;
        server_->inflight.fetch_add(1, std::memory_order_relaxed);
        exchange_ = std::make_shared<ServerExchange>(self, std::move(req), head);
        auto ex = exchange_;
        try {
            server_->handler(ex);
        } catch (const std::exception& e) {
            spdlog::error("handler threw: {}", e.what());
            if (!ex->started()) {
                ex->Respond(server_->ErrorResponse(500, "Internal server error."));
            } else if (!ex->responded()) {
                OnBroken();
            }
        }
        ex.reset();
        if (!exchange_done_) {
            StartWatch();
            while (!exchange_done_) {
                done_timer_.expires_at(asio::steady_timer::time_point::max());
                co_await done_timer_.async_wait(kTuple);
            }
        }
    }
    // An upgraded connection lives as long as its WebSocket.
    while (ws_ && !ws_finished_) {
        done_timer_.expires_at(asio::steady_timer::time_point::max());
        co_await done_timer_.async_wait(kTuple);
    }
    ws_.reset();
    // Orderly close: flush is done (no exchange pending); send FIN.
    if (!broken_) {
        broken_ = true;
        error_code ec;
        socket_.shutdown(tcp::socket::shutdown_send, ec);
        socket_.close(ec);
    }
    deadline_ns_ = 0;
}

asio::awaitable<void> HttpServer::Impl::AcceptLoop(ShardState* shard) {
    auto self = shared_from_this();
    for (;;) {
        auto [ec, socket] = co_await shard->acceptor->async_accept(kTuple);
        if (ec) {
            if (ec == asio::error::operation_aborted || !shard->acceptor->is_open()) {
                co_return;
            }
            // EMFILE and friends: back off briefly instead of spinning.
            spdlog::warn("accept failed: {}", ec.message());
            asio::steady_timer t(shard->acceptor->get_executor(), std::chrono::milliseconds(50));
            co_await t.async_wait(kTuple);
            continue;
        }
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        auto conn = std::make_shared<Connection>(self, *shard, std::move(socket));
        shard->connections.insert(conn.get());
        connections.fetch_add(1, std::memory_order_relaxed);
        Connection* raw = conn.get();
        asio::co_spawn(shard->loop->context(), conn->Run(),
                       [self, shard, raw, conn](std::exception_ptr e) {
                           if (e) {
                               try {
                                   std::rethrow_exception(e);
                               } catch (const std::exception& ex) {
                                   spdlog::error("connection failed: {}", ex.what());
                               }
                           }
                           shard->connections.erase(raw);
                           self->connections.fetch_sub(1, std::memory_order_relaxed);
                       });
    }
}

/// Polls (every 20 ms, on loop 0) until every connection has finished or the grace period
/// ends; then aborts what is left and calls `done` once.
struct ShutdownWaiter : std::enable_shared_from_this<ShutdownWaiter> {
    ShutdownWaiter(std::shared_ptr<HttpServer::Impl> i,
                   asio::io_context& ctx,
                   std::chrono::milliseconds grace,
                   std::function<void()> d)
        : impl(std::move(i)),
          timer(ctx),
          deadline(std::chrono::steady_clock::now() + grace),
          done(std::move(d)) {}

    void Tick() {
        bool expired = std::chrono::steady_clock::now() >= deadline;
        bool all_closed =
            impl->drained_shards.load() == impl->shards.size() && impl->connections.load() == 0;
        if (!all_closed && !expired) {
            timer.expires_after(std::chrono::milliseconds(20));
            timer.async_wait([self = shared_from_this()](error_code ec) {
                if (!ec) {
                    self->Tick();
                }
            });
            return;
        }
        if (expired) {
            for (auto& shard : impl->shards) {
                ShardState* s = shard.get();
                asio::post(s->loop->context(), [s] {
                    std::vector<Connection*> conns(s->connections.begin(), s->connections.end());
                    for (auto* c : conns) {
                        c->Abort();
                    }
                });
            }
        }
        if (done) {
            auto fn = std::move(done);
            done = nullptr;
            fn();
        }
    }

    std::shared_ptr<HttpServer::Impl> impl;
    asio::steady_timer timer;
    std::chrono::steady_clock::time_point deadline;
    std::function<void()> done;
};

void HttpServer::Impl::Sweep(ShardState* shard) {
    int64_t now = core::SystemClock::SteadyNowNs();
    for (auto* c : shard->connections) {
        c->CheckDeadline(now);  // never erases from the set synchronously
    }
    shard->sweeper->expires_after(sweep_interval);
    shard->sweeper->async_wait([self = shared_from_this(), shard](error_code ec) {
        if (!ec) {
            self->Sweep(shard);
        }
    });
}

HttpServer::HttpServer(Runtime& runtime, ServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>(runtime, std::move(options), std::move(handler))) {}

HttpServer::~HttpServer() = default;

core::Result<uint16_t> HttpServer::Start() {
    error_code ec;
    auto address = asio::ip::make_address(impl_->options.host, ec);
    if (ec) {
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "invalid listen address '" + impl_->options.host + "'");
    }
    uint16_t port = impl_->options.port;
    if (port != 0) {
        // The shards share the port through SO_REUSEPORT, which would also let this process
        // silently share it with another listener of the same user (each getting part of the
        // connections). A bind without SO_REUSEPORT first fails when anyone listens there.
        tcp::acceptor probe(static_cast<AsioLoop&>(impl_->runtime.loop(0)).context());
        tcp::endpoint ep(address, port);
        probe.open(ep.protocol(), ec);
        if (!ec) {
            probe.set_option(asio::socket_base::reuse_address(true), ec);
            probe.bind(ep, ec);
        }
        if (ec) {
            return core::Fail(core::ErrorCode::kUnavailable,
                              "cannot listen on " + impl_->options.host + ":" +
                                  std::to_string(port) + ": " + ec.message());
        }
        probe.close(ec);
    }
    for (size_t i = 0; i < impl_->runtime.size(); ++i) {
        auto shard = std::make_unique<ShardState>();
        shard->loop = &static_cast<AsioLoop&>(impl_->runtime.loop(i));
        shard->acceptor = std::make_unique<tcp::acceptor>(shard->loop->context());
        tcp::endpoint ep(address, port);
        auto& acc = *shard->acceptor;
        acc.open(ep.protocol(), ec);
        if (!ec) {
            acc.set_option(asio::socket_base::reuse_address(true), ec);
            int one = 1;
            ::setsockopt(acc.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
            acc.bind(ep, ec);
        }
        if (!ec) {
            acc.listen(4096, ec);
        }
        if (ec) {
            return core::Fail(core::ErrorCode::kUnavailable,
                              "cannot listen on " + impl_->options.host + ":" +
                                  std::to_string(port) + ": " + ec.message());
        }
        if (port == 0) {
            port = acc.local_endpoint().port();
        }
        impl_->shards.push_back(std::move(shard));
    }
    impl_->port = port;
    // Deadlines are checked by one timer per shard (no timer operation per read or write);
    // its period bounds how late a timeout can fire.
    auto smallest = std::min({impl_->options.idle_timeout, impl_->options.header_timeout,
                              impl_->options.body_timeout, impl_->options.write_timeout});
    impl_->sweep_interval =
        std::clamp(smallest / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(250));
    for (auto& shard : impl_->shards) {
        ShardState* s = shard.get();
        s->sweeper = std::make_unique<asio::steady_timer>(s->loop->context());
        asio::post(s->loop->context(), [impl = impl_, s] { impl->Sweep(s); });
    }
    for (auto& shard : impl_->shards) {
        ShardState* s = shard.get();
        auto impl = impl_;
        asio::co_spawn(s->loop->context(), impl->AcceptLoop(s), [](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    spdlog::error("accept loop failed: {}", ex.what());
                }
            }
        });
    }
    return port;
}

uint16_t HttpServer::port() const { return impl_->port; }

int64_t HttpServer::ActiveConnections() const { return impl_->connections.load(); }
int64_t HttpServer::InFlight() const { return impl_->inflight.load(); }

void HttpServer::Shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
    auto impl = impl_;
    for (auto& shard : impl->shards) {
        ShardState* s = shard.get();
        asio::post(s->loop->context(), [s, impl] {
            if (s->draining) {
                return;
            }
            s->draining = true;
            error_code ec;
            s->acceptor->close(ec);
            for (auto* c : s->connections) {
                c->DrainIfIdle();
            }
            impl->drained_shards.fetch_add(1);
        });
    }
    auto& ctx = static_cast<AsioLoop&>(impl->runtime.loop(0)).context();
    auto waiter = std::make_shared<ShutdownWaiter>(impl, ctx, grace, std::move(done));
    asio::post(ctx, [waiter] { waiter->Tick(); });
}

}  // namespace conduit::net
