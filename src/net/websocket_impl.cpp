#include "net/websocket_impl.hpp"

#include <boost/asio/write.hpp>

#include <algorithm>
#include <cstring>

namespace conduit::net {

namespace asio = boost::asio;
using boost::system::error_code;
using Event = ws::FrameReader::Event;

namespace {
// Payloads up to this size are copied next to their frame header (one buffer); larger ones are
// moved into the queue as they are.
constexpr size_t kCopyLimit = 1024;
}  // namespace

ServerWebSocket::ServerWebSocket(AsioLoop& loop,
                                 asio::ip::tcp::socket socket,
                                 std::string remote,
                                 WebSocketOptions options)
    : loop_(loop),
      socket_(std::move(socket)),
      remote_(std::move(remote)),
      options_(options),
      reader_(options.max_message_bytes) {}

ServerWebSocket::~ServerWebSocket() {
    error_code ec;
    socket_.close(ec);
}

void ServerWebSocket::Start(std::string response_head,
                            std::string leftover,
                            std::function<void()> on_finished) {
    on_finished_ = std::move(on_finished);
    error_code ec;
    socket_.non_blocking(true, ec);  // reads are done by hand once the socket is readable
    Enqueue(std::move(response_head));
    loop_.Post([self = Self(), leftover = std::move(leftover)] {
        if (!self->finished_) {
            self->ProcessInput(leftover);
        }
    });
}

char* ServerWebSocket::ScratchBuffer() {
    // One read buffer per loop thread, shared by every socket of the loop: an idle socket holds
    // no read memory. Payloads are copied out by the FrameReader as they are parsed, and at most
    // an incomplete frame header is kept back per socket (partial_).
    thread_local std::unique_ptr<char[]> buffer(new char[kScratchBytes]);
    return buffer.get();
}

void ServerWebSocket::StartRead() {
    if (finished_ || stop_reading_) {
        return;
    }
    socket_.async_wait(asio::ip::tcp::socket::wait_read, [self = Self()](error_code ec) {
        if (self->finished_ || self->stop_reading_) {
            return;
        }
        if (ec) {
            self->NotifyClose(1006);
            self->Finish();
            return;
        }
        self->ReadAvailable();
    });
}

void ServerWebSocket::ReadAvailable() {
    char* buf = ScratchBuffer();
    size_t keep = partial_.size();  // at most 14 bytes
    std::memcpy(buf, partial_.data(), keep);
    error_code ec;
    size_t n = socket_.read_some(asio::buffer(buf + keep, kScratchBytes - keep), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
        StartRead();  // a spurious wake-up
        return;
    }
    if (ec || n == 0) {
        // EOF or reset without a closing handshake (or before the client answered ours).
        NotifyClose(1006);
        Finish();
        return;
    }
    partial_.clear();
    ProcessInput(std::string_view(buf, keep + n));
}

void ServerWebSocket::ProcessInput(std::string_view input) {
    auto self = Self();  // a callback may drop the last outside reference
    size_t pos = 0;
    while (!finished_ && !stop_reading_ && pos < input.size()) {
        Event event;
        size_t n = reader_.Feed(input.substr(pos), event);
        pos += n;
        if (event.kind == Event::Kind::kNone) {
            if (n == 0) {
                break;  // an incomplete frame header
            }
            continue;
        }
        HandleEvent(event);
    }
    if (finished_ || stop_reading_) {
        return;
    }
    // What is left is part of a frame header (at most 14 bytes: fits the string's inline
    // storage, so nothing is allocated for it).
    partial_.assign(input.substr(pos));
    StartRead();
}

void ServerWebSocket::HandleEvent(Event& event) {
    switch (event.kind) {
        case Event::Kind::kNone:
            return;
        case Event::Kind::kMessage:
            if (!closed_ && on_message_) {
                auto fn = on_message_;  // the callback may replace itself
                fn(std::move(event.payload), event.binary);
            }
            return;
        case Event::Kind::kPing:
            if (!close_queued_) {
                QueueControl(ws::Opcode::kPong, event.payload);
            }
            return;
        case Event::Kind::kPong:
            return;
        case Event::Kind::kClose:
            stop_reading_ = true;
            finish_after_flush_ = true;
            if (close_queued_) {
                // The client answered our close: the handshake is complete.
                if (!writing_ && pending_.empty()) {
                    Finish();
                }
                return;
            }
            NotifyClose(event.code);
            // Echo the code (an empty close frame when the client sent none).
            QueueClose(event.code == 1005 ? std::string() : ws::ClosePayload(event.code, {}));
            return;
        case Event::Kind::kError:
            NotifyClose(event.code);
            if (!close_queued_) {
                QueueClose(ws::ClosePayload(event.code, event.payload));
            }
            reader_.DropData();
            if (reader_.failed()) {
                // The stream cannot be parsed further: close once our close frame is out.
                stop_reading_ = true;
                finish_after_flush_ = true;
                if (!writing_ && pending_.empty()) {
                    Finish();
                }
            }
            return;
    }
}

void ServerWebSocket::Send(std::string message, bool binary) {
    if (closed_ || finished_) {
        return;
    }
    std::string head;
    ws::AppendFrameHeader(head, binary ? ws::Opcode::kBinary : ws::Opcode::kText, message.size());
    if (message.size() <= kCopyLimit) {
        head += message;
        Enqueue(std::move(head));
    } else {
        pending_bytes_ += head.size();
        pending_.push_back(Chunk{std::move(head), nullptr});
        Enqueue(std::move(message));
    }
    CheckBuffered();
}

void ServerWebSocket::SendShared(const SharedFrame& frame) {
    if (closed_ || finished_ || !frame.bytes) {
        return;
    }
    EnqueueShared(frame.bytes);
    CheckBuffered();
}

void ServerWebSocket::CheckBuffered() {
    if (BufferedBytes() > options_.max_buffered_bytes) {
        // A client that does not read: drop what has not gone out yet (the write in flight
        // cannot be cut without corrupting the stream) and close with 1008.
        pending_.clear();
        pending_bytes_ = 0;
        NotifyClose(1008);
        QueueClose(ws::ClosePayload(1008, "send buffer full"));
        reader_.DropData();
    }
}

void ServerWebSocket::Close(uint16_t code, std::string reason) {
    if (closed_ || finished_) {
        return;
    }
    NotifyClose(code);
    // 1005/1006/1015 and other reserved codes must not appear on the wire.
    QueueClose(ws::IsValidCloseCode(code) ? ws::ClosePayload(code, reason) : std::string());
    reader_.DropData();
}

void ServerWebSocket::Abort() {
    if (finished_) {
        return;
    }
    NotifyClose(1006);
    Finish();
}

void ServerWebSocket::Enqueue(std::string bytes) {
    if (finished_ || bytes.empty()) {
        return;
    }
    pending_bytes_ += bytes.size();
    pending_.push_back(Chunk{std::move(bytes), nullptr});
    if (!writing_) {
        StartWrite();
    }
}

void ServerWebSocket::EnqueueShared(std::shared_ptr<const std::string> bytes) {
    if (finished_ || bytes->empty()) {
        return;
    }
    pending_bytes_ += bytes->size();
    pending_.push_back(Chunk{std::string(), std::move(bytes)});
    if (!writing_) {
        StartWrite();
    }
}

void ServerWebSocket::QueueControl(ws::Opcode opcode, std::string_view payload) {
    std::string frame;
    frame.reserve(2 + payload.size());
    ws::AppendFrameHeader(frame, opcode, payload.size());
    frame += payload;
    Enqueue(std::move(frame));
}

void ServerWebSocket::QueueClose(std::string payload) {
    if (close_queued_ || finished_) {
        return;
    }
    // Marked first: the close frame may be written at once (StartWrite), and the completion
    // must see that it was the last one.
    close_queued_ = true;
    closed_ = true;
    QueueControl(ws::Opcode::kClose, payload);
    std::weak_ptr<ServerWebSocket> weak = Self();
    close_timer_ = loop_.StartTimer(kCloseTimeout, [weak] {
        if (auto self = weak.lock()) {
            self->close_timer_.reset();
            self->Finish();
        }
    });
}

void ServerWebSocket::StartWrite() {
    if (pending_.empty() || finished_) {
        return;
    }
    writing_ = true;
    inflight_.swap(pending_);
    inflight_bytes_ = pending_bytes_;
    pending_bytes_ = 0;
    write_buffers_.clear();
    for (const auto& chunk : inflight_) {
        std::string_view b = chunk.bytes();
        write_buffers_.emplace_back(b.data(), b.size());
    }
    // Write at once (the socket is non-blocking): usually everything goes out here, without a
    // reactor registration or a posted completion per socket (what makes a broadcast to
    // thousands of sockets cheap). Only what the kernel did not take is left to async_write.
    error_code ec;
    size_t written = socket_.write_some(write_buffers_, ec);
    if (ec) {
        written = 0;  // would block, or an error async_write reports through OnWritten
    }
    if (written == inflight_bytes_) {
        if (close_queued_ || on_drain_) {
            // The completion does more than bookkeeping (finish the TCP connection, call
            // OnDrain): run it as a completion, never inside the caller's Send or Close.
            loop_.Post([self = Self()] {
                if (self->writing_) {
                    self->OnWritten(true);
                }
            });
            return;
        }
        writing_ = false;
        inflight_.clear();
        inflight_bytes_ = 0;
        return;
    }
    // Skip what went out.
    size_t skip = written;
    size_t first = 0;
    while (first < write_buffers_.size() && skip >= write_buffers_[first].size()) {
        skip -= write_buffers_[first].size();
        ++first;
    }
    write_buffers_.erase(write_buffers_.begin(), write_buffers_.begin() + first);
    if (!write_buffers_.empty()) {
        write_buffers_.front() += skip;
    }
    asio::async_write(socket_, write_buffers_,
                      [self = Self()](error_code e, size_t /*n*/) { self->OnWritten(!e); });
}

void ServerWebSocket::OnWritten(bool ok) {
    writing_ = false;
    inflight_.clear();
    inflight_bytes_ = 0;
    if (finished_) {
        return;
    }
    if (!ok) {
        NotifyClose(1006);
        Finish();
        return;
    }
    if (!pending_.empty()) {
        StartWrite();
        return;
    }
    if (close_queued_) {
        // Our close frame (always the last one) is out.
        if (finish_after_flush_) {
            Finish();
        }
        return;
    }
    if (on_drain_) {
        auto fn = std::move(on_drain_);
        on_drain_ = nullptr;
        fn();
    }
}

void ServerWebSocket::NotifyClose(uint16_t code) {
    closed_ = true;
    if (notified_) {
        return;
    }
    notified_ = true;
    loop_.Post([self = Self(), code] {
        auto fn = std::move(self->on_close_);
        // Drop the callbacks: they often capture the socket's owner (and the socket).
        self->on_close_ = nullptr;
        self->on_message_ = nullptr;
        self->on_drain_ = nullptr;
        if (fn) {
            fn(code);
        }
    });
}

void ServerWebSocket::Finish() {
    if (finished_) {
        return;
    }
    NotifyClose(1006);  // no-op when a code was already reported
    finished_ = true;
    closed_ = true;
    if (close_timer_) {
        close_timer_->Cancel();
        close_timer_.reset();
    }
    error_code ec;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    // inflight_ stays until the aborted write completes (its buffers are in use).
    pending_.clear();
    pending_bytes_ = 0;
    partial_.clear();
    partial_.shrink_to_fit();
    if (on_finished_) {
        auto fn = std::move(on_finished_);
        on_finished_ = nullptr;
        fn();
    }
}

}  // namespace conduit::net
