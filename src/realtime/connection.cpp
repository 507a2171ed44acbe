#include "realtime/connection.hpp"

#include "core/strings.hpp"

#include <atomic>

namespace conduit::realtime {
namespace {

constexpr std::string_view kClosedWithError = "Connection closed with an error.";

std::string UnexpectedText(std::string_view method) {
    return "An unexpected error occurred invoking '" + std::string(method) + "' on the server.";
}

/// True once `timeout` has certainly passed since `since` (shard clock). The shard clock only
/// moves on heartbeats, so an event between two ticks is stamped with the earlier one, up to one
/// heartbeat early: the deadline is one heartbeat later, so that a timeout never ends early (it
/// ends between `timeout` and `timeout` + one heartbeat after the event, like ASP.NET's).
bool TimedOut(int64_t now, int64_t since, const HubOptions& o, std::chrono::milliseconds timeout) {
    return now - since >= timeout.count() + o.heartbeat.count();
}

}  // namespace

// --- UploadStream / StreamWriter ---

void UploadStream::Consume(std::function<void(const boost::json::value&)> on_item,
                           std::function<void(std::optional<std::string>)> on_end) {
    on_item_ = std::move(on_item);
    on_end_ = std::move(on_end);
    auto items = std::move(buffered_);
    buffered_.clear();
    for (const auto& item : items) {
        if (on_item_) {
            on_item_(item);
        }
    }
    if (ended_) {
        auto end = std::move(*ended_);
        ended_.reset();
        End(std::move(end));
    }
}

bool UploadStream::Push(boost::json::value item, size_t capacity) {
    if (on_item_) {
        on_item_(item);
        return true;
    }
    if (buffered_.size() >= capacity) {
        return false;
    }
    buffered_.push_back(std::move(item));
    return true;
}

void UploadStream::End(std::optional<std::string> error) {
    if (on_end_) {
        auto fn = std::move(on_end_);
        on_end_ = nullptr;
        on_item_ = nullptr;
        fn(std::move(error));
    } else {
        ended_ = std::move(error);
    }
}

bool StreamWriter::Write(const boost::json::value& item) { return WriteJson(ToJson(item)); }

bool StreamWriter::WriteJson(std::string_view item_json) {
    auto conn = conn_.lock();
    if (!conn || done_ || cancelled_ || conn->state() == HubConnection::State::kClosed) {
        return false;
    }
    std::string record;
    WriteStreamItem(record, id_, item_json);
    conn->SendRecord(record, true);
    return true;
}

void StreamWriter::Complete(std::optional<std::string> error) {
    if (done_) {
        return;
    }
    done_ = true;
    on_cancel_ = nullptr;
    auto conn = conn_.lock();
    if (!conn) {
        return;
    }
    if (!cancelled_) {
        std::optional<std::string_view> err;
        if (error) {
            err = *error;
        }
        conn->SendCompletion(id_, std::nullopt, err);
    }
    conn->StreamEnded(id_);
}

void StreamWriter::Cancel() {
    if (done_ || cancelled_) {
        return;
    }
    cancelled_ = true;
    if (on_cancel_) {
        auto fn = std::move(on_cancel_);
        on_cancel_ = nullptr;
        fn();
    }
}

// --- HubConnection ---

HubConnection::HubConnection(ConnectionHost& host,
                             core::Loop& loop,
                             std::string id,
                             std::string token,
                             Principal principal,
                             bool stateful_reconnect)
    : host_(host),
      loop_(loop),
      id_(std::move(id)),
      token_(std::move(token)),
      principal_(std::move(principal)),
      stateful_(stateful_reconnect),
      reader_(host.options().max_message_bytes) {
    state_since_ms_ = host_.NowMs(loop_);
}

bool HubConnection::Attach(std::shared_ptr<Transport> transport) {
    const int64_t now = host_.NowMs(loop_);
    if (state_ == State::kNegotiated) {
        transport_ = std::move(transport);
        kind_ = transport_->kind();
        state_ = State::kHandshaking;
        state_since_ms_ = last_received_ms_ = last_sent_ms_ = now;
        return true;
    }
    const bool resumable = stateful_ && kind_ == TransportKind::kWebSockets &&
                           transport->kind() == TransportKind::kWebSockets &&
                           (state_ == State::kInactive || state_ == State::kConnected);
    if (!resumable) {
        return false;
    }
    auto old = std::move(transport_);
    transport_ = std::move(transport);
    if (old) {
        old->Close(false);
    }
    state_ = State::kConnected;
    state_since_ms_ = last_received_ms_ = now;
    awaiting_sequence_ = true;
    std::string out;
    WriteSequence(out, unacked_.empty() ? next_send_seq_ : unacked_.front().seq);
    for (const auto& b : unacked_) {
        out += b.bytes;
    }
    Write(std::move(out));
    return true;
}

void HubConnection::OnData(std::string_view data) {
    if (state_ != State::kHandshaking && state_ != State::kConnected) {
        return;
    }
    auto self = shared_from_this();
    last_received_ms_ = host_.NowMs(loop_);
    std::vector<std::string> records;
    const bool ok = reader_.Feed(data, records);
    for (auto& r : records) {
        if (state_ == State::kClosed) {
            return;
        }
        HandleRecord(r);
    }
    if (!ok && state_ != State::kClosed) {
        if (state_ == State::kHandshaking) {
            Write(HandshakeErrorResponse("Handshake was canceled."));
            Dispose(std::string("Handshake was canceled."), true);
        } else {
            Fail("The maximum message size of " +
                 std::to_string(host_.options().max_message_bytes) + "B was exceeded.");
        }
    }
}

void HubConnection::HandleRecord(std::string_view record) {
    if (state_ == State::kHandshaking) {
        std::string error;
        auto hs = ParseHandshake(record, error);
        if (hs) {
            error = ValidateHandshake(*hs, true);
        }
        if (!error.empty()) {
            Write(HandshakeErrorResponse(error));
            Dispose(error, true);
            return;
        }
        // Stateful reconnect needs the negotiate opt-in, handshake version 2 and WebSockets.
        stateful_ = stateful_ && hs->version >= 2 && kind_ == TransportKind::kWebSockets;
        Write(HandshakeResponse());
        state_ = State::kConnected;
        state_since_ms_ = host_.NowMs(loop_);
        connected_hook_ran_ = true;
        if (host_.hub().on_connected) {
            std::optional<std::string> err;
            try {
                err = host_.hub().on_connected(*this, host_.context());
            } catch (...) {
                err = "exception";
            }
            if (err) {
                Close(std::string(kClosedWithError));
            }
        }
        return;
    }
    auto parsed = ParseMessage(record);
    if (parsed.status == ParseResult::Status::kUnknownType) {
        return;
    }
    if (parsed.status == ParseResult::Status::kError) {
        Fail(parsed.error);
        return;
    }
    HandleMessage(std::move(parsed.message));
}

void HubConnection::HandleMessage(HubMessage m) {
    if (stateful_ && IsTrackable(m.type)) {
        ++recv_counter_;
        if (recv_counter_ <= last_processed_) {
            return;  // a replayed duplicate
        }
        last_processed_ = recv_counter_;
    }
    switch (m.type) {
        case MessageType::kInvocation:
        case MessageType::kStreamInvocation:
            for (const auto& sid : m.stream_ids) {
                uploads_[sid] = std::shared_ptr<UploadStream>(new UploadStream(sid));
            }
            queue_.push_back(std::move(m));
            RunNext();
            return;
        case MessageType::kStreamItem: {
            auto it = uploads_.find(*m.invocation_id);
            if (it != uploads_.end() &&
                !it->second->Push(std::move(m.item), host_.options().stream_buffer_capacity)) {
                Fail("Client sent more stream items than the stream buffer holds.");
            }
            return;
        }
        case MessageType::kCompletion: {
            const std::string& id = *m.invocation_id;
            if (auto it = uploads_.find(id); it != uploads_.end()) {
                auto stream = it->second;
                uploads_.erase(it);
                stream->End(m.error);
                return;
            }
            if (auto it = client_calls_.find(id); it != client_calls_.end()) {
                auto cb = std::move(it->second);
                client_calls_.erase(it);
                HubResult r;
                if (m.error) {
                    r = HubResult::Exception(*m.error);
                } else if (m.result) {
                    r = HubResult::Value(std::move(*m.result));
                }
                cb(std::move(r));
            }
            return;
        }
        case MessageType::kCancelInvocation: {
            if (auto it = streams_.find(*m.invocation_id); it != streams_.end()) {
                auto writer = it->second;
                streams_.erase(it);
                writer->Cancel();
            }
            return;
        }
        case MessageType::kPing:
            return;
        case MessageType::kClose:
            Dispose(m.error, true);
            return;
        case MessageType::kAck:
            while (!unacked_.empty() && unacked_.front().seq <= m.sequence_id) {
                unacked_bytes_ -= unacked_.front().bytes.size();
                unacked_.pop_front();
            }
            return;
        case MessageType::kSequence:
            if (!stateful_) {
                return;
            }
            if (m.sequence_id > last_processed_ + 1) {
                Fail("Sequence ID greater than amount of messages we've received.");
                return;
            }
            recv_counter_ = m.sequence_id - 1;
            awaiting_sequence_ = false;
            return;
    }
}

void HubConnection::RunNext() {
    while (!busy_ && !queue_.empty() && state_ == State::kConnected) {
        HubMessage m = std::move(queue_.front());
        queue_.pop_front();
        Dispatch(std::move(m));
    }
}

void HubConnection::Dispatch(HubMessage m) {
    const Hub::Method* method = host_.hub().Find(m.target);
    std::vector<std::shared_ptr<UploadStream>> streams;
    for (const auto& sid : m.stream_ids) {
        auto it = uploads_.find(sid);
        if (it != uploads_.end()) {
            streams.push_back(it->second);
        }
    }
    auto reject = [&](std::string error) {
        for (const auto& s : streams) {
            uploads_.erase(s->id());
        }
        if (m.invocation_id) {
            SendCompletion(*m.invocation_id, std::nullopt, error);
        }
    };
    if (method == nullptr) {
        reject("Unknown hub method '" + m.target + "'");
        return;
    }
    const bool stream_call = m.type == MessageType::kStreamInvocation;
    const bool stream_method = method->kind == Hub::Method::Kind::kStream;
    if (stream_call && !stream_method) {
        reject("The client attempted to invoke the non-streaming '" + method->name +
               "' method with a streaming invocation.");
        return;
    }
    if (!stream_call && stream_method) {
        reject("The client attempted to invoke the streaming '" + method->name +
               "' method with a non-streaming invocation.");
        return;
    }
    if (method->arg_count >= 0 && m.arguments.size() != static_cast<size_t>(method->arg_count)) {
        reject("Failed to invoke '" + method->name +
               "' due to an error on the server. InvalidDataException: Invocation provides " +
               std::to_string(m.arguments.size()) + " argument(s) but target expects " +
               std::to_string(method->arg_count) + ".");
        return;
    }
    CallContext ctx{shared_from_this(), &host_.context(), method->name, m.invocation_id,
                    std::move(streams)};
    const InvocationGate& gate = host_.hub().gate();
    if (!gate) {
        Invoke(method, m, ctx);
        return;
    }
    // The gate may answer at once (then Invoke runs here, and RunNext's loop goes on) or later
    // (then the answer resumes the queue).
    struct Held {
        HubMessage m;
        CallContext ctx;
        bool in_call = true;
        std::optional<std::optional<std::string>> early;  // answered during the gate call
    };
    auto held = std::make_shared<Held>(Held{std::move(m), std::move(ctx)});
    auto after = [method](HubConnection& self, Held& h, std::optional<std::string> refusal) {
        self.busy_ = false;
        if (!refusal) {
            self.Invoke(method, h.m, h.ctx);
            return;
        }
        for (const auto& s : h.ctx.streams) {
            self.uploads_.erase(s->id());
        }
        self.FinishInvocation(h.m.invocation_id, method->name, HubResult::Exception(*refusal));
    };
    busy_ = true;
    std::weak_ptr<HubConnection> weak = weak_from_this();
    core::Loop* loop = &loop_;
    auto once = std::make_shared<std::atomic<bool>>(false);
    gate(held->ctx, [weak, loop, held, after, once](std::optional<std::string> refusal) {
        if (once->exchange(true)) {
            return;
        }
        auto deliver = [weak, held, after, refusal = std::move(refusal)]() mutable {
            auto self = weak.lock();
            if (!self || self->state_ == State::kClosed) {
                return;
            }
            if (held->in_call) {
                held->early = std::move(refusal);
                return;
            }
            after(*self, *held, std::move(refusal));
            self->RunNext();
        };
        if (loop->InLoopThread()) {
            deliver();
        } else {
            loop->Post(std::move(deliver));
        }
    });
    held->in_call = false;
    if (held->early) {
        after(*this, *held, std::move(*held->early));
    }
}

void HubConnection::Invoke(const Hub::Method* method, HubMessage& m, CallContext& ctx) {
    switch (method->kind) {
        case Hub::Method::Kind::kSync: {
            busy_ = true;
            HubResult r;
            try {
                r = method->sync(ctx, m.arguments);
            } catch (...) {
                r = HubResult::Unexpected();
            }
            busy_ = false;
            FinishInvocation(m.invocation_id, method->name, std::move(r));
            return;
        }
        case Hub::Method::Kind::kAsync: {
            busy_ = true;
            auto done = std::make_shared<std::atomic<bool>>(false);
            std::weak_ptr<HubConnection> weak = weak_from_this();
            core::Loop* loop = &loop_;
            Completer completer = [weak, loop, done, id = m.invocation_id,
                                   name = method->name](HubResult r) {
                if (done->exchange(true)) {
                    return;
                }
                auto deliver = [weak, id, name, r = std::move(r)]() mutable {
                    auto self = weak.lock();
                    if (!self || self->state_ == State::kClosed) {
                        return;
                    }
                    self->busy_ = false;
                    self->FinishInvocation(id, name, std::move(r));
                    self->RunNext();
                };
                if (loop->InLoopThread()) {
                    deliver();
                } else {
                    loop->Post(std::move(deliver));
                }
            };
            try {
                method->async(ctx, m.arguments, completer);
            } catch (...) {
                completer(HubResult::Unexpected());
            }
            return;
        }
        case Hub::Method::Kind::kStream: {
            auto writer =
                std::shared_ptr<StreamWriter>(new StreamWriter(weak_from_this(), *m.invocation_id));
            streams_[*m.invocation_id] = writer;
            try {
                method->stream(ctx, m.arguments, writer);
            } catch (...) {
                writer->Complete(UnexpectedText(method->name));
            }
            return;
        }
    }
}

void HubConnection::FinishInvocation(const std::optional<std::string>& invocation_id,
                                     const std::string& method,
                                     HubResult result) {
    if (!invocation_id || state_ == State::kClosed) {
        return;  // fire-and-forget: nothing goes back
    }
    switch (result.failure) {
        case HubResult::Failure::kHubException:
            SendCompletion(*invocation_id, std::nullopt,
                           UnexpectedText(method) + " HubException: " + result.message);
            return;
        case HubResult::Failure::kUnexpected:
            SendCompletion(*invocation_id, std::nullopt, UnexpectedText(method));
            return;
        case HubResult::Failure::kNone:
            break;
    }
    if (result.value) {
        SendCompletion(*invocation_id, ToJson(*result.value), std::nullopt);
    } else {
        SendCompletion(*invocation_id, std::nullopt, std::nullopt);
    }
}

void HubConnection::SendCompletion(std::string_view id,
                                   std::optional<std::string_view> result_json,
                                   std::optional<std::string_view> error) {
    std::string record;
    WriteCompletion(record, id, result_json, error);
    SendRecord(record, true);
}

void HubConnection::StreamEnded(const std::string& id) { streams_.erase(id); }

bool HubConnection::Track(std::string_view record, bool trackable) {
    if (state_ != State::kConnected && state_ != State::kInactive) {
        return false;
    }
    if (stateful_ && trackable) {
        unacked_.push_back(Buffered{next_send_seq_++, std::string(record)});
        unacked_bytes_ += record.size();
        if (unacked_bytes_ > host_.options().stateful_reconnect_buffer_bytes) {
            Dispose(std::string("The stateful reconnect buffer is full."), false);
            return false;
        }
    }
    return state_ != State::kInactive;  // inactive: replayed on resume
}

void HubConnection::SendRecord(std::string_view record, bool trackable) {
    if (Track(record, trackable)) {
        Write(std::string(record));
    }
}

void HubConnection::SendShared(SharedRecord& record) {
    if (Track(record.record(), true)) {
        WriteShared(record);
    }
}

void HubConnection::SendInvocation(std::string_view target, const boost::json::array& args) {
    std::string record;
    WriteInvocation(record, std::nullopt, target, ToJson(args));
    SendRecord(record, true);
}

void HubConnection::InvokeClient(std::string_view target,
                                 const boost::json::array& args,
                                 std::function<void(HubResult)> on_result) {
    if (state_ != State::kConnected && state_ != State::kInactive) {
        on_result(HubResult::Exception("Connection disconnected."));
        return;
    }
    std::string id = "s" + std::to_string(next_client_call_++);
    client_calls_[id] = std::move(on_result);
    std::string record;
    WriteInvocation(record, id, target, ToJson(args));
    SendRecord(record, true);
}

void HubConnection::Write(std::string records) {
    if (!transport_) {
        return;
    }
    last_sent_ms_ = host_.NowMs(loop_);
    transport_->Send(std::move(records));
    CheckBacklog();
}

void HubConnection::WriteShared(SharedRecord& record) {
    if (!transport_) {
        return;
    }
    last_sent_ms_ = host_.NowMs(loop_);
    transport_->SendShared(record);
    CheckBacklog();
}

void HubConnection::CheckBacklog() {
    if (transport_ && transport_->BufferedBytes() > host_.options().max_send_buffer_bytes) {
        Dispose(std::string("The client does not read fast enough."), false);
    }
}

void HubConnection::Close(std::optional<std::string> error, bool allow_reconnect) {
    if (state_ == State::kClosed) {
        return;
    }
    if (state_ == State::kConnected) {
        std::string record;
        std::optional<std::string_view> e;
        if (error) {
            e = *error;
        }
        WriteClose(record, e, allow_reconnect);
        Write(std::move(record));
    }
    Dispose(std::move(error), true);
}

void HubConnection::Fail(std::string error) {
    (void)error;  // details stay on the server (EnableDetailedErrors = false)
    Close(std::string(kClosedWithError));
}

void HubConnection::DropTransport() {
    if (state_ == State::kClosed) {
        return;
    }
    if (stateful_ && state_ == State::kConnected && kind_ == TransportKind::kWebSockets) {
        auto t = std::move(transport_);
        state_ = State::kInactive;
        state_since_ms_ = host_.NowMs(loop_);
        if (t) {
            t->Close(false);
        }
        return;
    }
    Dispose(std::string("The connection was lost."), false);
}

void HubConnection::Kick() { Dispose(std::nullopt, true); }

void HubConnection::OnTransportClosed(const Transport* transport, bool abrupt) {
    if (transport == nullptr || transport != transport_.get() || state_ == State::kClosed) {
        return;
    }
    auto self = shared_from_this();
    transport_.reset();
    if (abrupt && stateful_ && state_ == State::kConnected) {
        state_ = State::kInactive;
        state_since_ms_ = host_.NowMs(loop_);
        return;
    }
    Dispose(abrupt ? std::optional<std::string>("The connection was lost.") : std::nullopt, true);
}

void HubConnection::Dispose(std::optional<std::string> error, bool graceful) {
    if (state_ == State::kClosed) {
        return;
    }
    auto self = shared_from_this();
    state_ = State::kClosed;
    queue_.clear();
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto& [id, w] : streams) {
        w->Cancel();
    }
    auto uploads = std::move(uploads_);
    uploads_.clear();
    for (auto& [id, u] : uploads) {
        u->End(std::string("Connection closed."));
    }
    auto calls = std::move(client_calls_);
    client_calls_.clear();
    for (auto& [id, cb] : calls) {
        cb(HubResult::Exception("Connection disconnected."));
    }
    if (auto t = std::move(transport_)) {
        t->Close(graceful);
    }
    unacked_.clear();
    if (connected_hook_ran_ && host_.hub().on_disconnected) {
        try {
            host_.hub().on_disconnected(*this, host_.context(), error);
        } catch (...) {
        }
    }
    host_.Forget(*this);
}

void HubConnection::Tick(int64_t now) {
    const HubOptions& o = host_.options();
    switch (state_) {
        case State::kNegotiated:
            if (TimedOut(now, state_since_ms_, o, o.disconnect_timeout)) {
                Dispose(std::nullopt, true);
            }
            return;
        case State::kHandshaking:
            if (TimedOut(now, state_since_ms_, o, o.handshake_timeout)) {
                Write(HandshakeErrorResponse("Handshake was canceled."));
                Dispose(std::string("Handshake was canceled."), true);
            }
            return;
        case State::kInactive:
            if (TimedOut(now, state_since_ms_, o, o.disconnect_timeout)) {
                Dispose(std::string("The connection was lost."), false);
            }
            return;
        case State::kClosed:
            return;
        case State::kConnected:
            break;
    }
    if (kind_ == TransportKind::kLongPolling) {
        // No pings either way; an idle connection (no poll held) is reaped instead.
        if (transport_ && !transport_->active()) {
            if (inactive_since_ms_ < 0) {
                inactive_since_ms_ = now;
            } else if (now - inactive_since_ms_ >= o.disconnect_timeout.count()) {
                Dispose(std::string("The connection was lost."), true);
                return;
            }
        } else {
            inactive_since_ms_ = -1;
        }
    } else {
        if (TimedOut(now, last_received_ms_, o, o.client_timeout)) {
            Dispose(std::string("Client timeout elapsed."), false);
            return;
        }
    }
    if (stateful_ && last_processed_ > last_ack_sent_) {
        std::string ack;
        WriteAck(ack, last_processed_);
        last_ack_sent_ = last_processed_;
        Write(std::move(ack));
        if (state_ != State::kConnected) {
            return;
        }
    }
    if (kind_ != TransportKind::kLongPolling && now - last_sent_ms_ >= o.keep_alive.count()) {
        std::string ping;
        WritePing(ping);
        Write(std::move(ping));
    }
}

// --- Hub ---

Hub& Hub::On(std::string name, SyncMethod fn, int arg_count) {
    Method m;
    m.kind = Method::Kind::kSync;
    m.name = name;
    m.arg_count = arg_count;
    m.sync = std::move(fn);
    methods_[core::ToLower(name)] = std::move(m);
    return *this;
}

Hub& Hub::OnAsync(std::string name, AsyncMethod fn, int arg_count) {
    Method m;
    m.kind = Method::Kind::kAsync;
    m.name = name;
    m.arg_count = arg_count;
    m.async = std::move(fn);
    methods_[core::ToLower(name)] = std::move(m);
    return *this;
}

Hub& Hub::OnStream(std::string name, StreamMethod fn, int arg_count) {
    Method m;
    m.kind = Method::Kind::kStream;
    m.name = name;
    m.arg_count = arg_count;
    m.stream = std::move(fn);
    methods_[core::ToLower(name)] = std::move(m);
    return *this;
}

Hub& Hub::OnConnected(std::function<std::optional<std::string>(HubConnection&, HubContext&)> fn) {
    on_connected = std::move(fn);
    return *this;
}

Hub& Hub::OnDisconnected(
    std::function<void(HubConnection&, HubContext&, std::optional<std::string>)> fn) {
    on_disconnected = std::move(fn);
    return *this;
}

const Hub::Method* Hub::Find(std::string_view name) const {
    auto it = methods_.find(core::ToLower(name));
    return it == methods_.end() ? nullptr : &it->second;
}

}  // namespace conduit::realtime
