#include "realtime/transports.hpp"

namespace conduit::realtime {

void RunOn(core::Loop& loop, std::function<void()> fn) {
    if (loop.InLoopThread()) {
        fn();
    } else {
        loop.Post(std::move(fn));
    }
}

std::string FormatSseEvent(std::string_view payload) {
    std::string out;
    out.reserve(payload.size() + 16);
    while (true) {
        const size_t nl = payload.find('\n');
        std::string_view line = payload.substr(0, nl);
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        out += "data: ";
        out += line;
        out += "\r\n";
        if (nl == std::string_view::npos) {
            break;
        }
        payload.remove_prefix(nl + 1);
    }
    out += "\r\n";
    return out;
}

// --- WebSockets ---

void WebSocketTransport::Bind(const std::shared_ptr<HubConnection>& conn) {
    std::weak_ptr<HubConnection> weak = conn;
    std::weak_ptr<WebSocketTransport> self = shared_from_this();
    core::Loop* loop = &conn->loop();
    ws_->SetOnMessage([weak, self, loop](std::string message, bool /*binary*/) {
        RunOn(*loop, [weak, self, message = std::move(message)] {
            auto c = weak.lock();
            auto t = self.lock();
            // Only the connection's current transport feeds it (not a refused second socket).
            if (c && t && c->transport().get() == t.get()) {
                c->OnData(message);
            }
        });
    });
    ws_->SetOnClose([weak, self, loop](uint16_t code) {
        RunOn(*loop, [weak, self, code] {
            auto c = weak.lock();
            auto t = self.lock();
            if (c && t) {
                c->OnTransportClosed(t.get(), code != 1000 && code != 1005);
            }
        });
    });
}

void WebSocketTransport::Send(std::string records) {
    if (ws_->loop().InLoopThread()) {
        ws_->Send(std::move(records));
        return;
    }
    auto ws = ws_;
    ws->loop().Post([ws, records = std::move(records)]() mutable { ws->Send(std::move(records)); });
}

void WebSocketTransport::SendShared(SharedRecord& record) {
    const net::SharedFrame& frame = record.WebSocketFrame();
    if (ws_->loop().InLoopThread()) {
        ws_->SendShared(frame);
        return;
    }
    auto ws = ws_;
    ws->loop().Post([ws, frame] { ws->SendShared(frame); });
}

void WebSocketTransport::Close(bool graceful) {
    auto ws = ws_;
    RunOn(ws->loop(), [ws, graceful] {
        if (graceful) {
            ws->Close(1000);
        } else {
            ws->Abort();
        }
    });
}

// --- Server-Sent Events ---

void SseTransport::Start(const std::shared_ptr<HubConnection>& conn) {
    std::weak_ptr<HubConnection> weak = conn;
    std::weak_ptr<SseTransport> self = shared_from_this();
    core::Loop* loop = &conn->loop();
    auto ex = ex_;
    RunOn(ex->loop(), [ex, weak, self, loop] {
        net::Headers h;
        h.Add("Content-Type", "text/event-stream");
        h.Add("Cache-Control", "no-cache,no-store");
        h.Add("Pragma", "no-cache");
        h.Add("Content-Encoding", "identity");
        h.Add("X-Accel-Buffering", "no");
        ex->BeginStream(200, std::move(h));
        ex->Write(":\r\n");
        // The client closing the GET ends the connection (§2.3, §6.10).
        ex->SetOnClose([weak, self, loop] {
            RunOn(*loop, [weak, self] {
                auto c = weak.lock();
                auto t = self.lock();
                if (c && t) {
                    c->OnTransportClosed(t.get(), false);
                }
            });
        });
    });
}

void SseTransport::Send(std::string records) {
    if (ended_) {
        return;
    }
    auto ex = ex_;
    RunOn(ex->loop(), [ex, ev = FormatSseEvent(records)]() mutable { ex->Write(std::move(ev)); });
}

void SseTransport::Close(bool graceful) {
    if (ended_) {
        return;
    }
    ended_ = true;
    auto ex = ex_;
    RunOn(ex->loop(), [ex, graceful] {
        ex->SetOnClose(nullptr);
        if (graceful) {
            ex->EndStream();
        } else {
            ex->Abort();
        }
    });
}

// --- Long polling ---

net::Headers LongPollTransport::PollHeaders() {
    net::Headers h;
    h.Add("Content-Type", "application/octet-stream");
    h.Add("Cache-Control", "no-cache, no-store");
    h.Add("Pragma", "no-cache");
    h.Add("Expires", "Thu, 01 Jan 1970 00:00:00 GMT");
    return h;
}

void LongPollTransport::Answer(int status, std::string body) {
    auto ex = std::move(held_);
    held_ = nullptr;
    if (timer_) {
        timer_->Cancel();
        timer_ = nullptr;
    }
    if (!ex) {
        return;
    }
    RunOn(ex->loop(), [ex, status, body = std::move(body)]() mutable {
        ex->SetOnClose(nullptr);
        net::Response r;
        r.status = status;
        r.headers = PollHeaders();
        if (status == 204) {
            r.headers.Remove("Content-Type");
        }
        r.body = std::move(body);
        ex->Respond(std::move(r));
    });
}

void LongPollTransport::Poll(const net::ExchangePtr& exchange) {
    if (held_) {
        Answer(204, {});  // a newer poll replaces the held one
    }
    held_ = exchange;
    if (closed_) {
        Answer(pending_.empty() ? 204 : 200, std::move(pending_));
        pending_.clear();
        return;
    }
    if (!pending_.empty()) {
        Answer(200, std::move(pending_));
        pending_.clear();
        return;
    }
    std::weak_ptr<LongPollTransport> weak = weak_from_this();
    timer_ = loop_.StartTimer(hold_, [weak] {
        if (auto self = weak.lock()) {
            self->timer_ = nullptr;
            self->Answer(200, {});
        }
    });
    core::Loop* loop = &loop_;
    net::Exchange* raw = exchange.get();
    RunOn(exchange->loop(), [exchange, weak, loop, raw] {
        exchange->SetOnClose([weak, loop, raw] {
            RunOn(*loop, [weak, raw] {
                auto self = weak.lock();
                if (self && self->held_.get() == raw) {
                    self->held_ = nullptr;  // the client gave up this poll
                    if (self->timer_) {
                        self->timer_->Cancel();
                        self->timer_ = nullptr;
                    }
                }
            });
        });
    });
}

void LongPollTransport::Send(std::string records) {
    if (closed_) {
        return;
    }
    pending_ += records;
    if (held_) {
        Answer(200, std::move(pending_));
        pending_.clear();
    }
}

void LongPollTransport::Close(bool graceful) {
    if (closed_) {
        return;
    }
    closed_ = true;
    if (!graceful) {
        pending_.clear();
    }
    if (held_) {
        Answer(pending_.empty() ? 204 : 200, std::move(pending_));
        pending_.clear();
    }
}

}  // namespace conduit::realtime
