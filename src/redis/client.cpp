// The only translation unit of the Redis client that includes Asio.
#include "redis/client.hpp"

#include "net/asio_loop.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <exception>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace conduit::redis {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using ErrorCodeSys = boost::system::error_code;

namespace {
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kSubscribeBatch = 512;  // channels per SUBSCRIBE when re-subscribing
}  // namespace

/// Everything but the thread runs on the I/O thread; public entry points post to it.
struct Client::Impl {
    struct Pending {
        ReplyCallback done;
        Clock::time_point issued;
        bool handshake = false;  // AUTH/SELECT: an error reply closes the connection
    };
    struct Offline {
        std::string resp;
        ReplyCallback done;
        Clock::time_point deadline;
    };

    Impl(ClientOptions o, bool subscriber, MessageCallback message_cb)
        : options(std::move(o)),
          subscriber_mode(subscriber),
          on_message(std::move(message_cb)),
          backoff(options.reconnect_min) {}

    // ---- any thread

    void Start() {
        asio::co_spawn(io, Guarded(Run()), asio::detached);
        asio::co_spawn(io, Guarded(TickLoop()), asio::detached);
        thread = std::thread([this] {
            try {
                io.run();
            } catch (const std::exception& e) {
                spdlog::error("{}: I/O thread stopped: {}", options.name, e.what());
            }
        });
    }

    void Stop() {
        work.reset();
        io.stop();
        if (thread.joinable()) {
            thread.join();
        }
        // Destroy pending handlers (coroutine frames) while every member still exists.
        io.ShutdownServices();
    }

    void Submit(std::string resp, ReplyCallback done) {
        stat_commands.fetch_add(1, std::memory_order_relaxed);
        asio::post(io, [this, resp = std::move(resp), done = std::move(done)]() mutable {
            Enqueue(std::move(resp), std::move(done));
        });
    }

    /// Runs `fn` where callbacks run.
    void Deliver(std::function<void()> fn) {
        if (options.callback_loop != nullptr) {
            options.callback_loop->Post(std::move(fn));
        } else {
            fn();
        }
    }

    ClientStats Stats() const {
        ClientStats s;
        s.connected = connected_flag.load();
        s.connects = stat_connects.load();
        s.disconnects = stat_disconnects.load();
        s.connect_failures = stat_connect_failures.load();
        s.commands = stat_commands.load();
        s.failed = stat_failed.load();
        s.messages = stat_messages.load();
        return s;
    }

    // ---- I/O thread

    asio::awaitable<void> Guarded(asio::awaitable<void> inner) {
        try {
            co_await std::move(inner);
        } catch (const std::exception& e) {
            spdlog::error("{}: internal error: {}", options.name, e.what());
        }
    }

    void Fail(ReplyCallback& done, core::ErrorCode code, std::string message) {
        stat_failed.fetch_add(1, std::memory_order_relaxed);
        if (done) {
            Deliver([done = std::move(done), code, message = std::move(message)] {
                done(core::Fail(code, message));
            });
        }
    }

    void Enqueue(std::string resp, ReplyCallback done) {
        if (!connected) {
            if (offline.size() >= options.max_offline_commands) {
                Fail(done, core::ErrorCode::kUnavailable,
                     "Redis unavailable (" + options.name + ": offline queue full)");
                return;
            }
            offline.push_back(
                Offline{std::move(resp), std::move(done), Clock::now() + options.command_timeout});
            return;
        }
        out.append(resp);
        in_flight.push_back(Pending{std::move(done), Clock::now(), false});
        StartWrite();
    }

    /// Writes without expecting a tracked reply (subscriber-mode (un)subscriptions).
    void WriteUntracked(std::string_view resp) {
        if (connected) {
            out.append(resp);
            StartWrite();
        }
    }

    void StartWrite() {
        if (writing || out.empty() || !connected) {
            return;
        }
        writing = true;
        writing_buf.clear();
        writing_buf.swap(out);
        uint64_t gen = generation;
        asio::async_write(socket, asio::buffer(writing_buf), [this, gen](ErrorCodeSys ec, size_t) {
            if (gen != generation) {
                return;  // a stale connection's write
            }
            writing = false;
            if (ec) {
                CloseSocket("write failed: " + ec.message());
                return;
            }
            StartWrite();
        });
    }

    void CloseSocket(std::string reason) {
        if (close_reason.empty()) {
            close_reason = std::move(reason);
        }
        ErrorCodeSys ignored;
        socket.shutdown(tcp::socket::shutdown_both, ignored);
        socket.close(ignored);
    }

    asio::awaitable<void> Run() {
        auto executor = co_await asio::this_coro::executor;
        asio::steady_timer sleep_timer(executor);
        while (!stopping) {
            ErrorCodeSys ec = co_await Connect();
            if (!ec) {
                OnConnected();
                co_await ReadLoop();
                OnDisconnected();
            } else {
                stat_connect_failures.fetch_add(1, std::memory_order_relaxed);
                if (!connect_failure_logged) {
                    spdlog::warn("{}: cannot connect to {}: {} (retrying)", options.name,
                                 RedactedUrl(options.endpoint), ec.message());
                    connect_failure_logged = true;
                }
            }
            sleep_timer.expires_after(backoff);
            auto [sleep_ec] = co_await sleep_timer.async_wait(kTuple);
            (void)sleep_ec;
            backoff = std::min(backoff * 2, options.reconnect_max);
        }
    }

    asio::awaitable<ErrorCodeSys> Connect() {
        auto executor = co_await asio::this_coro::executor;
        socket = tcp::socket(executor);
        tcp::resolver resolver(executor);
        auto done = std::make_shared<bool>(false);
        auto timed_out = std::make_shared<bool>(false);
        asio::steady_timer deadline(executor);
        deadline.expires_after(options.connect_timeout);
        deadline.async_wait([this, done, timed_out, &resolver](ErrorCodeSys ec) {
            if (!ec && !*done) {
                *timed_out = true;
                resolver.cancel();
                ErrorCodeSys ignored;
                socket.close(ignored);
            }
        });
        auto [rec, results] = co_await resolver.async_resolve(
            options.endpoint.host, std::to_string(options.endpoint.port), kTuple);
        if (rec) {
            *done = true;
            deadline.cancel();
            co_return *timed_out ? asio::error::timed_out : rec;
        }
        auto [cec, endpoint] = co_await asio::async_connect(socket, results, kTuple);
        (void)endpoint;
        *done = true;
        deadline.cancel();
        if (*timed_out) {
            co_return asio::error::timed_out;
        }
        if (cec) {
            co_return cec;
        }
        ErrorCodeSys ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        socket.set_option(asio::socket_base::keep_alive(true), ignored);
        co_return ErrorCodeSys{};
    }

    void OnConnected() {
        ++generation;
        connected = true;
        connected_flag.store(true);
        stat_connects.fetch_add(1, std::memory_order_relaxed);
        close_reason.clear();
        writing = false;
        out.clear();
        reader = std::make_unique<ReplyReader>();
        last_activity = Clock::now();
        if (connect_failure_logged || stat_connects.load() > 1) {
            spdlog::info("{}: connected to {}", options.name, RedactedUrl(options.endpoint));
        }
        connect_failure_logged = false;
        auto handshake = [this](std::string resp) {
            out.append(resp);
            in_flight.push_back(Pending{{}, Clock::now(), true});
        };
        const Endpoint& ep = options.endpoint;
        if (!ep.password.empty()) {
            if (ep.username.empty()) {
                handshake(EncodeCommand({"AUTH", ep.password}));
            } else {
                handshake(EncodeCommand({"AUTH", ep.username, ep.password}));
            }
        }
        if (ep.db != 0 && !subscriber_mode) {
            std::string db = std::to_string(ep.db);
            handshake(EncodeCommand({"SELECT", db}));
        }
        if (subscriber_mode) {
            Resubscribe("SUBSCRIBE", channels);
            Resubscribe("PSUBSCRIBE", patterns);
        }
        // Commands queued while disconnected, in order.
        while (!offline.empty()) {
            Offline o = std::move(offline.front());
            offline.pop_front();
            out.append(o.resp);
            in_flight.push_back(Pending{std::move(o.done), Clock::now(), false});
        }
        StartWrite();
    }

    void Resubscribe(std::string_view verb, const std::set<std::string>& names) {
        std::vector<std::string_view> args;
        auto flush = [&] {
            if (args.size() > 1) {
                AppendCommand(out, args);
            }
            args.assign(1, verb);
        };
        flush();
        for (const auto& n : names) {
            args.push_back(n);
            if (args.size() > kSubscribeBatch) {
                flush();
            }
        }
        flush();
    }

    void OnDisconnected() {
        ++generation;  // stale write completions are ignored
        connected = false;
        connected_flag.store(false);
        writing = false;
        out.clear();
        stat_disconnects.fetch_add(1, std::memory_order_relaxed);
        ErrorCodeSys ignored;
        socket.close(ignored);
        if (!stopping) {
            spdlog::warn("{}: connection to {} lost ({}); reconnecting", options.name,
                         RedactedUrl(options.endpoint),
                         close_reason.empty() ? "closed" : close_reason);
        }
        close_reason.clear();
        std::deque<Pending> lost;
        lost.swap(in_flight);
        for (auto& p : lost) {
            Fail(p.done, core::ErrorCode::kUnavailable,
                 "Redis connection lost before the reply (" + options.name + ")");
        }
    }

    asio::awaitable<void> ReadLoop() {
        std::vector<char> buf(kReadChunk);
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), kTuple);
            if (ec) {
                if (close_reason.empty()) {
                    close_reason = ec == asio::error::eof ? "closed by the server" : ec.message();
                }
                co_return;
            }
            last_activity = Clock::now();
            reader->Feed(std::string_view(buf.data(), n));
            for (;;) {
                auto next = reader->Next();
                if (!next) {
                    CloseSocket(next.error().message);
                    co_return;
                }
                if (!next->has_value()) {
                    break;
                }
                HandleReply(std::move(**next));
                if (!socket.is_open()) {
                    co_return;
                }
            }
        }
    }

    static bool IsPushKind(std::string_view kind) {
        return kind == "subscribe" || kind == "unsubscribe" || kind == "psubscribe" ||
               kind == "punsubscribe";
    }

    void HandleReply(Reply reply) {
        if (subscriber_mode && reply.type == Reply::Type::kArray && !reply.elements.empty() &&
            reply.elements[0].type == Reply::Type::kString) {
            const std::string& kind = reply.elements[0].str;
            if (kind == "message" && reply.elements.size() == 3) {
                stat_messages.fetch_add(1, std::memory_order_relaxed);
                Message m{std::move(reply.elements[1].str), {}, std::move(reply.elements[2].str)};
                DeliverMessage(std::move(m));
                return;
            }
            if (kind == "pmessage" && reply.elements.size() == 4) {
                stat_messages.fetch_add(1, std::memory_order_relaxed);
                Message m{std::move(reply.elements[2].str), std::move(reply.elements[1].str),
                          std::move(reply.elements[3].str)};
                DeliverMessage(std::move(m));
                return;
            }
            if (IsPushKind(kind)) {
                return;
            }
            // ["pong", ""] answers a PING in subscribed mode: a tracked reply.
        }
        if (in_flight.empty()) {
            spdlog::warn("{}: unexpected reply {}", options.name, reply.Describe());
            if (!subscriber_mode) {
                CloseSocket("reply without a command (protocol out of sync)");
            }
            return;
        }
        Pending p = std::move(in_flight.front());
        in_flight.pop_front();
        if (p.handshake) {
            if (reply.IsError()) {
                // Keep backing off: a wrong password must not turn into a reconnect storm.
                spdlog::error("{}: connection set-up failed: {}", options.name, reply.str);
                CloseSocket("AUTH/SELECT failed: " + reply.str);
                return;
            }
        }
        backoff = options.reconnect_min;  // this connection works
        if (p.handshake) {
            return;
        }
        if (p.done) {
            Deliver([done = std::move(p.done), reply = std::move(reply)]() mutable {
                done(std::move(reply));
            });
        }
    }

    void DeliverMessage(Message m) {
        if (!on_message) {
            return;
        }
        if (options.callback_loop != nullptr) {
            options.callback_loop->Post(
                [cb = on_message, m = std::move(m)]() mutable { cb(std::move(m)); });
        } else {
            on_message(std::move(m));
        }
    }

    asio::awaitable<void> TickLoop() {
        auto executor = co_await asio::this_coro::executor;
        asio::steady_timer timer(executor);
        auto period = std::clamp(options.command_timeout / 4, std::chrono::milliseconds(10),
                                 std::chrono::milliseconds(250));
        while (!stopping) {
            timer.expires_after(period);
            auto [ec] = co_await timer.async_wait(kTuple);
            if (ec) {
                co_return;
            }
            Tick();
        }
    }

    void Tick() {
        auto now = Clock::now();
        while (!offline.empty() && offline.front().deadline <= now) {
            Offline o = std::move(offline.front());
            offline.pop_front();
            Fail(o.done, core::ErrorCode::kUpstreamTimeout,
                 "Redis unavailable: no connection within the command timeout (" + options.name +
                     ")");
        }
        if (!connected) {
            return;
        }
        if (!in_flight.empty() && now - in_flight.front().issued > options.command_timeout) {
            CloseSocket("no reply within the command timeout");
            return;
        }
        if (options.ping_interval.count() > 0 && in_flight.empty() &&
            now - last_activity > options.ping_interval) {
            last_activity = now;
            Enqueue(EncodeCommand({"PING"}), {});
        }
    }

    // Subscriber-mode state changes (I/O thread).
    void ChangeSubscription(std::string_view verb,
                            std::set<std::string>& set,
                            std::string name,
                            bool add) {
        bool changed = add ? set.insert(name).second : set.erase(name) > 0;
        if (changed) {
            WriteUntracked(EncodeCommand({verb, name}));
        }
    }

    ClientOptions options;
    const bool subscriber_mode;
    MessageCallback on_message;

    net::ShutdownableContext io{1};
    asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
    tcp::socket socket{io};
    std::thread thread;
    bool stopping = false;  // I/O thread (the loop is stopped from outside via io.stop())

    bool connected = false;
    uint64_t generation = 0;
    std::string out;          // bytes to write next
    std::string writing_buf;  // bytes being written
    bool writing = false;
    std::unique_ptr<ReplyReader> reader;
    std::deque<Pending> in_flight;
    std::deque<Offline> offline;
    std::string close_reason;
    std::chrono::milliseconds backoff;
    bool connect_failure_logged = false;
    Clock::time_point last_activity{};
    std::set<std::string> channels;  // Subscriber: wanted SUBSCRIBE channels
    std::set<std::string> patterns;  // Subscriber: wanted PSUBSCRIBE patterns

    std::atomic<bool> connected_flag{false};
    std::atomic<uint64_t> stat_connects{0}, stat_disconnects{0}, stat_connect_failures{0},
        stat_commands{0}, stat_failed{0}, stat_messages{0};
};

// ---------------------------------------------------------------- Client

Client::Client(ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options), false, MessageCallback{})) {
    impl_->Start();
}

Client::~Client() { impl_->Stop(); }

void Client::Command(std::span<const std::string_view> args, ReplyCallback done) {
    impl_->Submit(EncodeCommand(args), std::move(done));
}

void Client::SendEncoded(std::string resp, ReplyCallback done) {
    impl_->Submit(std::move(resp), std::move(done));
}

bool Client::Connected() const { return impl_->connected_flag.load(); }

ClientStats Client::Stats() const { return impl_->Stats(); }

// ---------------------------------------------------------------- Subscriber

Subscriber::Subscriber(ClientOptions options, MessageCallback on_message)
    : impl_(std::make_unique<Client::Impl>(std::move(options), true, std::move(on_message))) {
    impl_->Start();
}

Subscriber::~Subscriber() { impl_->Stop(); }

void Subscriber::Subscribe(std::string channel) {
    auto* impl = impl_.get();
    asio::post(impl->io, [impl, c = std::move(channel)]() mutable {
        impl->ChangeSubscription("SUBSCRIBE", impl->channels, std::move(c), true);
    });
}

void Subscriber::Unsubscribe(std::string channel) {
    auto* impl = impl_.get();
    asio::post(impl->io, [impl, c = std::move(channel)]() mutable {
        impl->ChangeSubscription("UNSUBSCRIBE", impl->channels, std::move(c), false);
    });
}

void Subscriber::PSubscribe(std::string pattern) {
    auto* impl = impl_.get();
    asio::post(impl->io, [impl, p = std::move(pattern)]() mutable {
        impl->ChangeSubscription("PSUBSCRIBE", impl->patterns, std::move(p), true);
    });
}

void Subscriber::PUnsubscribe(std::string pattern) {
    auto* impl = impl_.get();
    asio::post(impl->io, [impl, p = std::move(pattern)]() mutable {
        impl->ChangeSubscription("PUNSUBSCRIBE", impl->patterns, std::move(p), false);
    });
}

void Subscriber::Ping(ReplyCallback done) {
    impl_->Submit(EncodeCommand({"PING"}), std::move(done));
}

void Subscriber::Dispatch(std::function<void()> fn) {
    auto* impl = impl_.get();
    asio::post(impl->io, [impl, fn = std::move(fn)]() mutable { impl->Deliver(std::move(fn)); });
}

bool Subscriber::Connected() const { return impl_->connected_flag.load(); }

ClientStats Subscriber::Stats() const { return impl_->Stats(); }

}  // namespace conduit::redis
