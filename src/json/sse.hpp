#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace conduit::json {

/// Incremental scanner for a Server-Sent-Events byte stream (an upstream's `text/event-stream`
/// response), for proxying it event by event without re-serialising anything.
///
/// Feed it bytes as they arrive, split anywhere; it reports each complete event (lines up to and
/// including the blank line that ends it). Line endings may be `\n`, `\r\n` or `\r`, mixed
/// freely. Every byte fed appears exactly once, in order, either in some Event::raw or in
/// TakeRemainder(), so forwarding those reproduces the upstream stream exactly. Blank lines
/// between events come out as their own (comment-only) events.
///
/// A blank line ended by a CR that is the last byte fed is ambiguous (a CRLF may be split). In a
/// stream whose lines end in bare CRs the event is reported at once; otherwise it is held until
/// the next byte shows whether an LF follows, so CRLF events never split.
///
/// One instance per stream; not thread-safe; on_event must not call back into the scanner.
class SseScanner {
public:
    /// One complete event, valid only during the on_event call.
    struct Event {
        /// The event's bytes exactly as received, including its terminating blank line.
        std::string_view raw;
        /// The values of its `data` fields joined with "\n" (one leading space after the colon
        /// removed, as the SSE spec says).
        std::string data;
        /// The value of its last `event` field; empty when none.
        std::string_view event_name;
        /// True when it has no field lines at all: only comments (`:` lines, e.g. keep-alives)
        /// and/or blank lines.
        bool is_comment_only = false;
        /// True when it has at least one `data` field (possibly empty).
        bool has_data = false;
    };

    /// Default limit on the size of one event (complete or still buffered).
    static constexpr size_t kDefaultMaxEventBytes = size_t{8} << 20;

    /// `max_event_bytes`: an event larger than this puts the scanner in the failed state.
    explicit SseScanner(size_t max_event_bytes = kDefaultMaxEventBytes);

    /// Scans `bytes` and calls `on_event(const Event&)` for each event completed by them, in
    /// order. Keeps an incomplete trailing event buffered. Returns false (and calls nothing
    /// further, now or later) once an event exceeds the size limit; the caller should abort the
    /// stream. Works with any callable, including std::function; no allocation per call.
    template <class F>
    bool Feed(std::string_view bytes, F&& on_event) {
        using Fn = std::remove_reference_t<F>;
        return FeedImpl(bytes, const_cast<void*>(static_cast<const void*>(&on_event)),
                        [](void* ctx, const Event& event) { (*static_cast<Fn*>(ctx))(event); });
    }

    /// True once an event exceeded the size limit.
    bool Failed() const { return failed_; }
    /// Bytes held for an incomplete event.
    size_t BufferedBytes() const { return buffer_.size(); }
    /// True between events with no line-ending ambiguity pending: bytes that are whole events
    /// may then bypass the scanner without changing what it would have produced.
    bool AtEventBoundary() const {
        return buffer_.empty() && !after_cr_ && !cr_ended_blank_ && !failed_;
    }
    /// At end of stream: returns the bytes of the incomplete trailing event (usually empty; an
    /// SSE client discards such an event) and resets the scanner for a new stream.
    std::string TakeRemainder();

private:
    using Callback = void (*)(void*, const Event&);

    bool FeedImpl(std::string_view bytes, void* ctx, Callback cb);
    /// Scans `text` (which starts at the event being assembled; its first scan_pos_ bytes are
    /// already scanned) and emits complete events; returns the offset where the incomplete
    /// remainder starts, or npos after a size failure.
    size_t ScanAndEmit(std::string_view text, void* ctx, Callback cb);
    /// Fills event_ from the raw bytes of one complete event and hands it to `cb`.
    void Emit(std::string_view raw, void* ctx, Callback cb);
    void ResetLineState();

    size_t max_event_bytes_;
    bool failed_ = false;
    bool at_stream_start_ = true;
    std::string buffer_;  // bytes of the incomplete event
    // Line-scanner state, relative to the event being assembled.
    size_t scan_pos_ = 0;            // bytes of the event already scanned
    bool line_empty_ = true;         // no characters on the current line yet
    bool after_cr_ = false;          // last byte scanned was a CR ending a line
    bool cr_ended_blank_ = false;    // ...and that line was empty: the event may have ended there
    bool last_eol_bare_cr_ = false;  // the stream's latest resolved line ending was a lone CR
    Event event_;                    // reused so `data` keeps its capacity
};

/// True for the OpenAI end-of-stream marker event (`data: [DONE]`).
bool IsDoneEvent(const SseScanner::Event& event);

/// Cheap pre-filter before parsing a chunk: true when `data` contains `"usage"` (quoted, i.e.
/// as a JSON key or string).
bool MayContainUsage(std::string_view data);

/// Token usage as reported by an OpenAI-compatible upstream.
struct Usage {
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    /// Reported total, or prompt + completion when the upstream omits it.
    int64_t total_tokens = 0;
    /// False when `usage` is missing, null, not an object, or the JSON does not parse.
    bool present = false;
};

/// Reads the top-level `usage` object of a JSON document (a stream chunk or a whole response)
/// with simdjson On-Demand. Missing or non-integer counts read as 0. Any thread.
Usage ExtractUsage(std::string_view json);

/// True when the chunk's top-level `choices` is an empty array: OpenAI's final usage-only chunk
/// (which a client that did not ask for usage must not see). False on malformed JSON.
bool HasEmptyChoices(std::string_view chunk_json);

}  // namespace conduit::json
