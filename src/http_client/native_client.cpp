// Native HTTP/1.1 upstream client on the shard's io_context: per-host keep-alive pools, TLS
// through Asio/OpenSSL, an incremental response parser (http1.hpp) and lazy per-call timers.
// Measured against libcurl on this workload it needs several times fewer instructions per
// request (see docs/architecture.md), which is why it carries the hot path.
#include "core/clock.hpp"
#include "core/strings.hpp"
#include "http_client/client.hpp"
#include "http_client/http1.hpp"
#include "net/asio_loop.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <deque>
#include <memory>
#include <unordered_map>

namespace conduit::http_client {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

int64_t NowNs() { return core::SystemClock::SteadyNowNs(); }
constexpr int64_t kMsNs = 1'000'000;
// Idle pooled connections older than this are not reused (servers commonly close at 60 s+;
// a connection the server closed earlier is detected on reuse and the request retried).
constexpr int64_t kMaxIdleNs = 50'000 * kMsNs;
constexpr int64_t kDnsTtlNs = 60'000 * kMsNs;
constexpr size_t kReadChunk = 16 * 1024;

/// One TLS context for every native client (SSL_CTX is safe to share across threads).
ssl::context& TlsContext() {
    static ssl::context* ctx = [] {
        auto* c = new ssl::context(ssl::context::tls_client);
        c->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
        error_code ec;
        c->set_default_verify_paths(ec);
        c->set_verify_mode(ssl::verify_peer);
        return c;
    }();
    return *ctx;
}

/// An upstream connection (plain or TLS) with its read buffer.
class Conn {
public:
    Conn(asio::io_context& ctx, bool tls) : socket_(ctx) {
        if (tls) {
            tls_ = std::make_unique<ssl::stream<tcp::socket&>>(socket_, TlsContext());
        }
    }

    template <class Buffers, class Handler>
    void AsyncWrite(const Buffers& buffers, Handler&& handler) {
        if (tls_) {
            asio::async_write(*tls_, buffers, std::forward<Handler>(handler));
        } else {
            asio::async_write(socket_, buffers, std::forward<Handler>(handler));
        }
    }
    template <class Handler>
    void AsyncRead(Handler&& handler) {
        Reserve();
        auto buf = asio::buffer(buf_.get() + end_, cap_ - end_);
        if (tls_) {
            tls_->async_read_some(buf, std::forward<Handler>(handler));
        } else {
            socket_.async_read_some(buf, std::forward<Handler>(handler));
        }
    }
    void Commit(size_t n) { end_ += n; }
    std::string_view Unread() const { return {buf_.get() + begin_, end_ - begin_}; }
    void Consume(size_t n) {
        begin_ += n;
        if (begin_ == end_) {
            begin_ = end_ = 0;
        }
    }
    void Close() {
        if (!open_) {
            return;
        }
        open_ = false;
        error_code ec;
        socket_.shutdown(tcp::socket::shutdown_both, ec);
        socket_.close(ec);
    }

    tcp::socket socket_;
    std::unique_ptr<ssl::stream<tcp::socket&>> tls_;
    bool open_ = true;
    bool reused_ = false;  // served a response before (a failure may be a stale keep-alive)
    int64_t idle_since_ns_ = 0;

private:
    void Reserve() {
        if (begin_ > 0 && begin_ == end_) {
            begin_ = end_ = 0;
        }
        if (cap_ - end_ >= kReadChunk / 4) {
            return;
        }
        size_t live = end_ - begin_;
        size_t cap = std::max(kReadChunk, live * 2 + kReadChunk);
        auto fresh = std::make_unique<char[]>(cap);
        if (live > 0) {  // buf_ is null before the first read (memcpy from null is UB)
            std::memcpy(fresh.get(), buf_.get() + begin_, live);
        }
        buf_ = std::move(fresh);
        cap_ = cap;
        begin_ = 0;
        end_ = live;
    }

    std::unique_ptr<char[]> buf_;
    size_t cap_ = 0;
    size_t begin_ = 0;
    size_t end_ = 0;
};
using ConnPtr = std::shared_ptr<Conn>;

class NativeClient;
class NativeCall;

/// Connections to one scheme://host:port, with the calls waiting for one.
struct Pool {
    ParsedUrl url;
    std::vector<ConnPtr> idle;
    int open = 0;  // idle + busy + connecting
    std::deque<std::weak_ptr<NativeCall>> waiters;
    std::vector<tcp::endpoint> endpoints;
    int64_t endpoints_expire_ns = 0;
};

class NativeCall final : public Call,
                         public ResponseParser::Sink,
                         public std::enable_shared_from_this<NativeCall> {
public:
    NativeCall(NativeClient* client, Request req, Callbacks cb, ParsedUrl url)
        : client_(client),
          req_(std::move(req)),
          cb_(std::move(cb)),
          url_(std::move(url)),
          parser_(req_.method == "HEAD") {}

    void Cancel() override;
    void Resume() override;
    Outcome Timing() const override {
        Outcome o;
        o.started_ns = started_ns_;
        o.sent_ns = sent_ns_;
        o.first_byte_ns = first_byte_ns_;
        o.headers_ns = headers_ns_;
        o.last_read_ns = last_read_ns_;
        o.status = status_;
        return o;
    }

    void OnHeaders(int status, net::Headers headers) override;
    bool OnBody(std::string_view data) override;

    void Begin();
    void OnConnection(ConnPtr conn);
    void Fail(Failure f, std::string message);

    NativeClient* client_;
    Request req_;
    Callbacks cb_;
    ParsedUrl url_;
    Pool* pool_ = nullptr;
    ConnPtr conn_;
    ResponseParser parser_;
    std::string head_;
    std::unique_ptr<asio::steady_timer> watchdog_;
    bool cancelled_ = false;
    bool finished_ = false;
    bool paused_ = false;
    bool retried_ = false;
    bool fresh_only_ = false;
    bool connected_ = false;
    bool got_bytes_ = false;
    bool reused_conn_ = false;
    int status_ = 0;
    int64_t started_ns_ = 0;
    int64_t sent_ns_ = 0;
    int64_t first_byte_ns_ = 0;
    int64_t headers_ns_ = 0;
    int64_t last_read_ns_ = 0;

private:
    void SendRequest();
    void ReadMore();
    void Process();
    void Complete();
    void Finish(Failure f, std::string message);
    void RetryOrFail(std::string message);
    void ArmWatchdog();
    void CheckTimers();
};

class NativeClient final : public Client {
public:
    NativeClient(core::Loop& loop, PoolOptions options)
        : loop_(loop), ctx_(net::ContextOf(loop)), options_(options), resolver_(ctx_) {}

    ~NativeClient() override {
        destroying_ = true;
        for (auto& [key, pool] : pools_) {
            for (auto& c : pool->idle) {
                c->Close();
            }
        }
    }

    CallPtr Start(Request request, Callbacks callbacks) override {
        ParsedUrl url;
        bool ok = ParseHttpUrl(request.url, url);
        auto call = std::make_shared<NativeCall>(this, std::move(request), std::move(callbacks),
                                                 std::move(url));
        call->started_ns_ = NowNs();
        ++active_;
        if (!ok) {
            // Failures are reported later, never from inside Start().
            asio::post(ctx_, [call] {
                if (!call->cancelled_) {
                    call->Fail(Failure::kOther, "unsupported or malformed URL");
                }
            });
            return call;
        }
        // Started at once (no queue hop): Begin() only initiates asynchronous operations and
        // never invokes a callback synchronously.
        call->Begin();
        return call;
    }

    size_t Active() const override { return active_; }

    Pool& PoolFor(const ParsedUrl& url) {
        auto& slot = pools_[url.pool_key];
        if (!slot) {
            slot = std::make_unique<Pool>();
            slot->url = url;
        }
        return *slot;
    }

    /// Hands `call` an idle connection, opens one, or queues the call.
    void Acquire(const std::shared_ptr<NativeCall>& call) {
        Pool& pool = *call->pool_;
        int64_t now = NowNs();
        while (!call->fresh_only_ && !pool.idle.empty()) {
            ConnPtr c = std::move(pool.idle.back());
            pool.idle.pop_back();
            if (c->open_ && now - c->idle_since_ns_ < kMaxIdleNs) {
                call->OnConnection(std::move(c));
                return;
            }
            c->Close();
            --pool.open;
            --total_open_;
        }
        if (pool.open < options_.max_connections_per_host &&
            total_open_ < options_.max_total_connections) {
            ++pool.open;
            ++total_open_;
            Connect(call);
            return;
        }
        pool.waiters.push_back(call);
    }

    /// A call is done with `conn`: keep it for the next request or close it.
    void Release(Pool& pool, ConnPtr conn, bool reusable) {
        if (destroying_) {
            return;
        }
        if (reusable && conn->open_) {
            conn->reused_ = true;
            conn->idle_since_ns_ = NowNs();
            while (!pool.waiters.empty()) {
                auto next = pool.waiters.front().lock();
                pool.waiters.pop_front();
                if (next && !next->cancelled_ && !next->finished_) {
                    next->OnConnection(std::move(conn));
                    return;
                }
            }
            pool.idle.push_back(std::move(conn));
            return;
        }
        conn->Close();
        SlotFreed(pool);
    }

    /// A connection of `pool` is gone (closed, or a connect attempt failed): let the first live
    /// waiter open a new one.
    void SlotFreed(Pool& pool) {
        --pool.open;
        --total_open_;
        while (!pool.waiters.empty()) {
            auto next = pool.waiters.front().lock();
            pool.waiters.pop_front();
            if (next && !next->cancelled_ && !next->finished_) {
                Acquire(next);
                return;
            }
        }
    }

    void CallEnded() { --active_; }
    core::Loop& loop() { return loop_; }

private:
    void Connect(const std::shared_ptr<NativeCall>& call) {
        Pool& pool = *call->pool_;
        error_code ec;
        auto addr = asio::ip::make_address(pool.url.host, ec);
        if (!ec) {
            ConnectTo(call, {tcp::endpoint(addr, pool.url.port)});
            return;
        }
        if (!pool.endpoints.empty() && NowNs() < pool.endpoints_expire_ns) {
            ConnectTo(call, pool.endpoints);
            return;
        }
        resolver_.async_resolve(
            pool.url.host, std::to_string(pool.url.port),
            [this, call](error_code rec, tcp::resolver::results_type results) {
                if (call->cancelled_ || call->finished_) {
                    SlotFreed(*call->pool_);
                    return;
                }
                if (rec || results.empty()) {
                    SlotFreed(*call->pool_);
                    call->Fail(Failure::kConnect,
                               "cannot resolve " + call->pool_->url.host + ": " + rec.message());
                    return;
                }
                Pool& p = *call->pool_;
                p.endpoints.assign(results.begin(), results.end());
                p.endpoints_expire_ns = NowNs() + kDnsTtlNs;
                ConnectTo(call, p.endpoints);
            });
    }

    void ConnectTo(const std::shared_ptr<NativeCall>& call, std::vector<tcp::endpoint> eps) {
        auto conn = std::make_shared<Conn>(ctx_, call->pool_->url.tls);
        call->conn_ = conn;  // so Cancel() and timeouts can close it
        asio::async_connect(
            conn->socket_, eps, [this, call, conn](error_code ec, const tcp::endpoint&) {
                if (call->cancelled_ || call->finished_) {
                    // Cancel()/Finish() release the connection they find in conn_; release it
                    // here only if they have not.
                    if (call->conn_ == conn) {
                        call->conn_.reset();
                        Release(*call->pool_, conn, false);
                    }
                    return;
                }
                if (ec) {
                    call->conn_.reset();
                    Release(*call->pool_, conn, false);
                    call->Fail(Failure::kConnect, "cannot connect to " + call->pool_->url.host +
                                                      ":" + std::to_string(call->pool_->url.port) +
                                                      ": " + ec.message());
                    return;
                }
                error_code ignored;
                conn->socket_.set_option(tcp::no_delay(true), ignored);
                if (!conn->tls_) {
                    call->conn_.reset();
                    call->OnConnection(conn);
                    return;
                }
                const std::string& host = call->pool_->url.host;
                SSL_set_tlsext_host_name(conn->tls_->native_handle(), host.c_str());
                conn->tls_->set_verify_callback(ssl::host_name_verification(host));
                conn->tls_->async_handshake(
                    ssl::stream_base::client, [this, call, conn](error_code hec) {
                        if (call->cancelled_ || call->finished_) {
                            if (call->conn_ == conn) {
                                call->conn_.reset();
                                Release(*call->pool_, conn, false);
                            }
                            return;
                        }
                        call->conn_.reset();
                        if (hec) {
                            Release(*call->pool_, conn, false);
                            call->Fail(Failure::kConnect, "TLS handshake with " +
                                                              call->pool_->url.host +
                                                              " failed: " + hec.message());
                            return;
                        }
                        call->OnConnection(conn);
                    });
            });
    }

    core::Loop& loop_;
    asio::io_context& ctx_;
    PoolOptions options_;
    tcp::resolver resolver_;
    std::unordered_map<std::string, std::unique_ptr<Pool>> pools_;
    int total_open_ = 0;
    size_t active_ = 0;
    bool destroying_ = false;
};

void NativeCall::Begin() {
    pool_ = &client_->PoolFor(url_);
    ArmWatchdog();
    client_->Acquire(shared_from_this());
}

void NativeCall::OnConnection(ConnPtr conn) {
    if (cancelled_ || finished_) {
        bool open = conn->open_;
        client_->Release(*pool_, std::move(conn), open);
        return;
    }
    conn_ = std::move(conn);
    connected_ = true;
    reused_conn_ = conn_->reused_;
    SendRequest();
}

void NativeCall::SendRequest() {
    head_.clear();
    head_.reserve(256 + req_.headers.entries().size() * 48);
    head_ += req_.method;
    head_ += ' ';
    head_ += url_.target;
    head_ += " HTTP/1.1\r\nHost: ";
    head_ += url_.host_header;
    head_ += "\r\n";
    for (const auto& [k, v] : req_.headers.entries()) {
        if (core::IEquals(k, "host") || core::IEquals(k, "content-length") ||
            core::IEquals(k, "connection") || core::IEquals(k, "transfer-encoding") ||
            core::IEquals(k, "expect")) {
            continue;
        }
        head_ += k;
        head_ += ": ";
        for (char c : v) {
            if (c != '\r' && c != '\n') {
                head_.push_back(c);
            }
        }
        head_ += "\r\n";
    }
    bool has_body = !req_.body.empty() ||
                    (req_.method != "GET" && req_.method != "HEAD" && req_.method != "DELETE");
    if (has_body) {
        head_ += "Content-Length: ";
        head_ += std::to_string(req_.body.size());
        head_ += "\r\n";
    }
    head_ += "\r\n";
    std::array<asio::const_buffer, 2> bufs{asio::buffer(head_),
                                           asio::buffer(req_.body.data(), req_.body.size())};
    auto self = shared_from_this();
    auto conn = conn_;
    conn->AsyncWrite(bufs, [self, conn](error_code ec, size_t) {
        if (self->cancelled_ || self->finished_ || self->conn_ != conn) {
            return;
        }
        if (ec) {
            self->RetryOrFail("writing the request failed: " + ec.message());
            return;
        }
        self->ReadMore();
    });
    // Asio writes speculatively when the socket has room, so for a request that fits in the
    // socket buffer it is in the kernel now; its completion handler only runs later.
    sent_ns_ = NowNs();
}

void NativeCall::ReadMore() {
    auto self = shared_from_this();
    auto conn = conn_;
    conn->AsyncRead([self, conn](error_code ec, size_t n) {
        if (self->cancelled_ || self->finished_ || self->conn_ != conn) {
            return;
        }
        int64_t now = NowNs();
        if (n > 0) {
            conn->Commit(n);
            if (!self->got_bytes_) {
                self->got_bytes_ = true;
                self->first_byte_ns_ = now;
            }
            self->last_read_ns_ = now;
        }
        if (ec) {
            bool eof = ec == asio::error::eof || ec == ssl::error::stream_truncated;
            if (eof) {
                // Parse what arrived with this read, then let the parser judge the close.
                if (!conn->Unread().empty()) {
                    size_t consumed = 0;
                    auto st = self->parser_.Feed(conn->Unread(), consumed, *self);
                    conn->Consume(consumed);
                    if (self->cancelled_ || self->finished_) {
                        return;
                    }
                    if (st == ResponseParser::Status::kDone) {
                        self->Complete();
                        return;
                    }
                    if (st == ResponseParser::Status::kPaused) {
                        // Resume() re-feeds; the close is seen again by the next read.
                        self->paused_ = true;
                        return;
                    }
                }
                if (self->parser_.OnEof(*self) == ResponseParser::Status::kDone) {
                    self->Complete();
                    return;
                }
            }
            if (!self->got_bytes_) {
                self->RetryOrFail("connection closed before a response: " + ec.message());
            } else {
                self->Finish(Failure::kOther,
                             "upstream connection failed mid-response: " +
                                 (eof ? std::string("closed early") : ec.message()));
            }
            return;
        }
        self->Process();
    });
}

void NativeCall::Process() {
    for (;;) {
        size_t consumed = 0;
        auto st = parser_.Feed(conn_->Unread(), consumed, *this);
        if (cancelled_ || finished_) {
            return;
        }
        conn_->Consume(consumed);
        switch (st) {
            case ResponseParser::Status::kNeedMore:
                ReadMore();
                return;
            case ResponseParser::Status::kPaused:
                paused_ = true;
                return;
            case ResponseParser::Status::kDone:
                Complete();
                return;
            case ResponseParser::Status::kError:
                Finish(Failure::kOther, "malformed upstream response: " + parser_.error());
                return;
        }
    }
}

void NativeCall::OnHeaders(int status, net::Headers headers) {
    status_ = status;
    headers_ns_ = NowNs();
    if (cb_.on_headers) {
        auto keep = shared_from_this();
        cb_.on_headers(status, std::move(headers));
    }
}

bool NativeCall::OnBody(std::string_view data) {
    if (cancelled_ || !cb_.on_data) {
        return true;
    }
    auto keep = shared_from_this();
    return cb_.on_data(data);
}

void NativeCall::Complete() { Finish(Failure::kNone, {}); }

void NativeCall::RetryOrFail(std::string message) {
    // A pooled connection the server had already closed: the request never reached it.
    // Retry once on a fresh connection (what libcurl and browsers do).
    if (conn_ && conn_->reused_ && !got_bytes_ && !retried_) {
        retried_ = true;
        fresh_only_ = true;
        parser_ = ResponseParser(req_.method == "HEAD");  // forget the failed attempt
        client_->Release(*pool_, std::move(conn_), false);
        conn_.reset();
        connected_ = false;
        client_->Acquire(shared_from_this());
        return;
    }
    Finish(got_bytes_ ? Failure::kOther : Failure::kConnect, std::move(message));
}

void NativeCall::Finish(Failure f, std::string message) {
    if (finished_) {
        return;
    }
    finished_ = true;
    if (watchdog_) {
        watchdog_->cancel();
    }
    if (conn_) {
        bool reusable =
            f == Failure::kNone && parser_.keep_alive() && conn_->Unread().empty() && connected_;
        client_->Release(*pool_, std::move(conn_), reusable);
        conn_.reset();
    }
    client_->CallEnded();
    Outcome o;
    o.failure = f;
    o.message = std::move(message);
    o.status = parser_.headers_done() ? status_ : 0;
    o.started_ns = started_ns_;
    o.sent_ns = sent_ns_;
    o.first_byte_ns = first_byte_ns_;
    o.headers_ns = headers_ns_;
    o.last_read_ns = last_read_ns_;
    o.finished_ns = NowNs();
    o.reused_connection = reused_conn_;
    if (!cancelled_ && cb_.on_done) {
        auto done = std::move(cb_.on_done);
        cb_ = Callbacks{};
        done(o);
    }
}

void NativeCall::Fail(Failure f, std::string message) {
    if (conn_) {
        client_->Release(*pool_, std::move(conn_), false);
        conn_.reset();
    }
    if (pool_ == nullptr) {
        // Never reached a pool (bad URL): account for the call only.
        finished_ = true;
        client_->CallEnded();
        if (!cancelled_ && cb_.on_done) {
            Outcome o;
            o.failure = f;
            o.message = std::move(message);
            o.started_ns = started_ns_;
            o.finished_ns = NowNs();
            auto done = std::move(cb_.on_done);
            cb_ = Callbacks{};
            done(o);
        }
        return;
    }
    Finish(f, std::move(message));
}

void NativeCall::Cancel() {
    if (cancelled_ || finished_) {
        return;
    }
    cancelled_ = true;
    if (watchdog_) {
        watchdog_->cancel();
    }
    // The connection is closed, not pooled: the upstream must see the client go away.
    auto self = shared_from_this();
    client_->loop().Post([self] {
        if (self->conn_) {
            self->client_->Release(*self->pool_, std::move(self->conn_), false);
            self->conn_.reset();
        }
        if (!self->finished_) {
            self->finished_ = true;
            self->client_->CallEnded();
        }
        self->cb_ = Callbacks{};  // deferred: Cancel() may run inside one of these callbacks
    });
}

void NativeCall::Resume() {
    if (!paused_ || cancelled_ || finished_) {
        return;
    }
    auto self = shared_from_this();
    client_->loop().Post([self] {
        if (!self->paused_ || self->cancelled_ || self->finished_ || !self->conn_) {
            return;
        }
        self->paused_ = false;
        self->last_read_ns_ = NowNs();
        self->Process();
    });
}

void NativeCall::ArmWatchdog() {
    const auto& t = req_.timeouts;
    std::chrono::milliseconds next = std::chrono::milliseconds::max();
    for (auto d : {t.connect, t.first_byte, t.idle, t.total}) {
        if (d.count() > 0 && d < next) {
            next = d;
        }
    }
    if (next == std::chrono::milliseconds::max()) {
        return;
    }
    if (!watchdog_) {
        watchdog_ = std::make_unique<asio::steady_timer>(net::ContextOf(client_->loop()));
    }
    watchdog_->expires_after(next);
    std::weak_ptr<NativeCall> weak = shared_from_this();
    watchdog_->async_wait([weak](error_code ec) {
        if (ec) {
            return;
        }
        if (auto c = weak.lock()) {
            c->CheckTimers();
        }
    });
}

void NativeCall::CheckTimers() {
    if (finished_ || cancelled_) {
        return;
    }
    const auto& t = req_.timeouts;
    int64_t now = NowNs();
    auto ns = [](std::chrono::milliseconds d) { return d.count() * kMsNs; };
    auto expired = [&](std::chrono::milliseconds d, int64_t since) {
        return d.count() > 0 && now - since >= ns(d);
    };
    std::string what;
    if (expired(t.total, started_ns_)) {
        what = "the upstream call exceeded " + std::to_string(t.total.count()) + " ms";
    } else if (!connected_ && expired(t.connect, started_ns_)) {
        what = "connecting to the upstream took over " + std::to_string(t.connect.count()) + " ms";
    } else if (!parser_.headers_done() && expired(t.first_byte, started_ns_)) {
        what = "no response from upstream within " + std::to_string(t.first_byte.count()) + " ms";
    } else if (parser_.headers_done() && !paused_ && expired(t.idle, last_read_ns_)) {
        what = "upstream sent nothing for " + std::to_string(t.idle.count()) + " ms";
    }
    if (!what.empty()) {
        Finish(Failure::kTimeout, std::move(what));
        return;
    }
    // Re-arm for the earliest deadline still ahead.
    int64_t next = INT64_MAX;
    auto consider = [&](std::chrono::milliseconds d, int64_t since) {
        if (d.count() > 0) {
            next = std::min(next, since + ns(d) - now);
        }
    };
    consider(t.total, started_ns_);
    if (!connected_) {
        consider(t.connect, started_ns_);
    }
    if (!parser_.headers_done()) {
        consider(t.first_byte, started_ns_);
    } else if (!paused_) {
        consider(t.idle, last_read_ns_);
    } else if (t.idle.count() > 0) {
        next = std::min(next, ns(t.idle));
    }
    if (next == INT64_MAX) {
        return;
    }
    watchdog_->expires_after(std::chrono::nanoseconds(std::max<int64_t>(next, kMsNs)));
    std::weak_ptr<NativeCall> weak = shared_from_this();
    watchdog_->async_wait([weak](error_code ec) {
        if (ec) {
            return;
        }
        if (auto c = weak.lock()) {
            c->CheckTimers();
        }
    });
}

}  // namespace

std::unique_ptr<Client> MakeNativeClient(core::Loop& loop, PoolOptions options) {
    return std::make_unique<NativeClient>(loop, options);
}

}  // namespace conduit::http_client
