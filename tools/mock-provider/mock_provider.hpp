#pragma once

// conduit-mock-provider: a deterministic, controllable, fast OpenAI-compatible upstream for the
// gateway's tests, e2e tests, benchmarks and demo.
//
// Endpoints (OpenAI wire formats):
//   POST /v1/chat/completions     chat.completion, or SSE chat.completion.chunk when stream=true
//   POST /v1/completions          text_completion (legacy), stream too
//   POST /v1/messages             Anthropic Messages API (x-api-key, anthropic-version; text or a
//                                 tool_use per PlanToolUse; SSE event sequence when stream=true)
//   POST /v1/embeddings           float or base64 (little-endian float32) vectors
//   GET  /v1/models, /v1/models/{id}
//   POST /v1/images/generations   url (→ GET /mock/files/{name}) or b64_json
//   GET  /mock/files/{name}       a small PNG
//   POST /v1/videos               async video job (OpenAI Videos API shape) → video object
//   GET  /v1/videos/{id}          the job: queued → in_progress → completed | failed | cancelled
//   GET  /v1/videos/{id}/content  the video bytes once completed (Range supported)
//   DELETE /v1/videos/{id}        cancels a queued / in-progress job
//   POST /v1/images/jobs, GET|DELETE /v1/images/jobs/{id}   the same for images (`data` when
//                                 completed)
//   GET  /health                  {"status":"ok"}
// Control API (no auth): GET /mock/stats, POST /mock/release/{token}, GET|POST /mock/config,
// POST /mock/reset, GET /mock/jobs, GET /mock/jobs/{id}.
//
// Determinism rules:
//   - Generated text is a run of words from a fixed corpus starting at FNV-1a(raw bytes of
//     `messages` | `prompt`) — other body fields (stream, mock_*, …) do not change it; choice i
//     of n starts at a position derived from the same hash and i.
//   - Non-stream size: the words are sized so the whole JSON body is close to response_bytes.
//     Streams carry the same words (at least one per content chunk) split evenly over the chunks,
//     so their concatenation equals the non-stream content whenever it has ≥ chunks words.
//   - `max_tokens` / `max_completion_tokens` caps the word count (finish_reason "length" when it
//     cut the text, else "stop"); a stream then has min(chunks, max_tokens) content chunks.
//   - prompt_tokens = whitespace-separated words in the string values of `content`/`text` keys
//     of `messages` (chat), in every string of `prompt`/`input` (one token per integer of a
//     token-id array); at least 1 (per embeddings item). completion_tokens = generated words.
//   - Embeddings: FNV-1a of each item's raw JSON text seeds a unit-length vector.
//
// Per-request test controls, read from the JSON body: mock_latency_ms, mock_error_status,
// mock_hang, mock_chunks, mock_chunk_delay_ms, mock_hold, mock_disconnect_after, and for job
// submits mock_job_duration_ms, mock_job_fail, mock_job_fail_status, mock_job_error_code,
// mock_video_bytes (see MockProvider).
//
// Async jobs (see mock_jobs.hpp for the lifecycle): progress is computed from elapsed time on
// every read, so jobs need no timers. A submit with an `Idempotency-Key` header returns the job
// first submitted with that key (same kind), without starting another.

#include "core/error.hpp"
#include "mock-provider/mock_jobs.hpp"
#include "net/runtime.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace conduit::net {
class HttpServer;
}

namespace conduit::mock {

/// Behaviour knobs, settable by flags and at runtime (POST /mock/config, UpdateOptions).
struct MockConfig {
    /// Delay before the response headers (non-stream) or the first chunk (stream).
    int64_t latency_ms = 0;
    /// Uniform ± added to latency_ms (result clamped at 0).
    int64_t jitter_ms = 0;
    /// Stream pacing: chunk i is sent when the words before it would have been generated at this
    /// rate (deadline-scheduled from the first chunk). 0 = no pacing.
    double tokens_per_second = 0;
    /// Content chunks per stream.
    int64_t stream_chunks = 16;
    /// Approximate size of a non-stream chat/completions body.
    int64_t response_bytes = 1024;
    /// Fraction (0..1) of /v1 requests that fail with error_status.
    double error_rate = 0;
    int error_status = 500;
    /// Requests per second across the process (fixed one-second windows); excess → 429 with
    /// `retry-after: 1`. 0 = off.
    int64_t rate_limit = 0;
    /// When set, /v1 requests must carry `Authorization: Bearer <require_key>`, else 401.
    std::string require_key;
    /// Default embedding size (a request's `dimensions` overrides it).
    int64_t embedding_dims = 16;
    /// Time from a job's submit to its end (completed or failed); progress is linear in it.
    /// 0 = jobs are done at once. A submit's `mock_job_duration_ms` overrides it. At most 24 h.
    int64_t job_duration_ms = 2000;
    /// Fraction (0..1) of jobs that end `failed`, chosen by a hash of the job id (so a job's
    /// fate does not change between polls). A submit's `mock_job_fail` overrides it.
    double job_failure_rate = 0;
    /// Size of a completed video's content (a submit's `mock_video_bytes` overrides it).
    int64_t video_bytes = 256 * 1024;
};

/// Start-up options.
struct MockOptions {
    std::string host = "127.0.0.1";
    uint16_t port = 8090;  // 0 = pick a free port (returned by Start)
    MockConfig config;
    int64_t max_body_bytes = int64_t{64} << 20;
};

/// Empty when `config` is valid, else a message naming the offending field. Pure.
std::string ValidateConfig(const MockConfig& config);
/// Applies the members of a JSON object (any subset of MockConfig's field names; require_key
/// null or "" clears the key) to `config` and validates the result. Unknown members, wrong types
/// and invalid values are kInvalidRequest errors. Pure.
core::Result<MockConfig> ApplyConfigJson(MockConfig config, std::string_view json);
/// `config` as a JSON object with MockConfig's field names (GET /mock/config). Pure.
std::string ConfigJson(const MockConfig& config);

/// Counters since start or the last reset (gauges are never reset). Thread-safe snapshot.
struct MockStats {
    /// Requests to /v1/* (any method, including unknown paths).
    int64_t requests_total = 0;
    /// Per route label ("/v1/chat/completions", "/v1/models", "/mock/files", "/v1/other", …);
    /// only labels with a non-zero count appear.
    std::map<std::string, int64_t> per_path;
    int64_t streams_started = 0;       // stream response headers sent
    int64_t streams_completed = 0;     // ended normally ([DONE] written)
    int64_t streams_aborted = 0;       // the client left mid-stream
    int64_t streams_disconnected = 0;  // cut on purpose by mock_disconnect_after
    int64_t active_streams = 0;        // gauge
    int64_t hanging = 0;               // gauge: exchanges parked by mock_hang
    int64_t auth_failures = 0;
    int64_t rate_limited = 0;
    int64_t errors_injected = 0;  // error_rate, mock_error_status and mock_job_fail_status
    /// Async jobs. *_started count submits that created a job (replays of an Idempotency-Key do
    /// not); jobs_cancelled counts cancels that stopped a running job; jobs_completed,
    /// jobs_failed and jobs_active (queued or in progress) are the jobs in that state now.
    int64_t video_jobs_started = 0;
    int64_t image_jobs_started = 0;
    int64_t jobs_started = 0;  // video + image
    int64_t jobs_cancelled = 0;
    int64_t jobs_completed = 0;
    int64_t jobs_failed = 0;
    int64_t jobs_active = 0;
    /// GETs of a known job's object; polls_after_cancel counts those of them after its cancel.
    int64_t job_polls = 0;
    int64_t polls_after_cancel = 0;
    /// Successful GETs of a video's content (200 or 206).
    int64_t content_downloads = 0;
    /// Submits answered with an existing job because of their Idempotency-Key.
    int64_t idempotent_replays = 0;
    /// Of the most recent /v1 request: the whole Authorization header, the model, the body
    /// (truncated to 64 KiB). Empty before the first request or after a reset.
    std::string last_authorization;
    /// The `x-api-key` and `anthropic-version` headers of that request (Anthropic endpoint).
    std::string last_api_key;
    std::string last_anthropic_version;
    std::string last_model;
    std::string last_body;
    /// Hold tokens with a stream currently waiting at its hold point.
    std::vector<std::string> held;
};

/// The mock upstream. Runs on the caller's net::Runtime (one acceptor per shard, handlers on the
/// connection's shard), so tests can run it in-process next to the gateway.
///
/// Per-request controls (JSON body members, forwarded untouched by the gateway):
///   - `mock_latency_ms` (int): overrides latency_ms (no jitter) for this request.
///   - `mock_error_status` (int ≥ 400): after the latency, respond with this status and an
///     OpenAI error body.
///   - `mock_hang` (bool): never respond; the exchange stays parked until the client leaves.
///   - `mock_chunks` (int ≥ 1): content chunks of this stream.
///   - `mock_chunk_delay_ms` (int): fixed delay between content chunks (overrides pacing).
///   - `mock_hold` (string token): the stream sends everything except its last content chunk,
///     the finish chunk, the usage chunk and [DONE], then waits for POST /mock/release/{token}
///     (or Release()). A release that arrives before the stream reaches its hold point is
///     remembered, so there is no race. Use tokens of [A-Za-z0-9._-]: the body value is matched
///     as written (escapes are not decoded), the release path is URL-decoded.
///   - `mock_stream_error_after` (int n, Anthropic streams): after n content deltas an `error`
///     event (overloaded_error) is sent and the response ends.
///   - `mock_disconnect_after` (int n): after n content chunks the stream is cut: the connection
///     is aborted when net::Exchange offers an Abort(); with today's Exchange API the chunked
///     response is terminated instead, without finish chunk, usage or [DONE] (a truncated SSE
///     stream, which is what a client sees when an upstream drops mid-stream behind a proxy).
///   - Job submits (POST /v1/videos, /v1/images/jobs): `mock_job_duration_ms` (int ≥ 0,
///     overrides job_duration_ms), `mock_job_fail` (bool: the job ends `failed`, or never fails
///     when false), `mock_job_error_code` (string: the failed job's error.code), `mock_video_bytes`
///     (int: content size), `mock_job_fail_status` (int ≥ 400: the submit itself fails with that
///     status and starts no job, like mock_error_status).
///
/// Job routes honour require_key, rate_limit, latency/jitter and error_rate like the others; an
/// injected error happens before the job is touched (a failed submit starts nothing, a failed
/// poll counts no poll, a failed DELETE cancels nothing).
///
/// Thread-safety: every public method may be called from any thread. The Runtime must outlive
/// the MockProvider.
class MockProvider {
public:
    explicit MockProvider(MockOptions options);
    /// Calls Stop() when still running.
    ~MockProvider();
    MockProvider(const MockProvider&) = delete;
    MockProvider& operator=(const MockProvider&) = delete;

    /// Binds host:port on every shard of `runtime` and starts serving (before or after
    /// runtime.Start()). Returns the bound port. Call once.
    core::Result<uint16_t> Start(net::Runtime& runtime);
    /// The bound port (after Start()).
    uint16_t port() const;

    /// Graceful stop: releases every held stream, stops accepting, lets in-flight responses
    /// finish, closes what is left after `grace`, lets every shard run what that queued, and
    /// then calls `done` (on a loop thread). Runs `done` at once when never started or already
    /// stopping. The runtime must be running for `done` to come.
    void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0),
              std::function<void()> done = {});
    /// Stop() and block until `done` (at most grace + 5 s); false on timeout. Not on a loop
    /// thread of the runtime. Clean in-process teardown: StopAndWait() while the runtime runs,
    /// then destroy the MockProvider, then stop and destroy the runtime.
    bool StopAndWait(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

    /// Counters since start or the last ResetStats().
    MockStats Stats() const;
    /// GET /mock/stats body.
    std::string StatsJson() const;
    /// Zeroes the counters, forgets last_* and every job (gauges stay).
    void ResetStats();

    /// The current behaviour.
    MockConfig Config() const;
    /// Replaces the behaviour; requests that arrive afterwards use it.
    void UpdateOptions(MockConfig config);

    /// Releases the streams held with `token`. Returns true when a stream with this token was
    /// waiting or in flight; otherwise remembers the release for the next such stream and
    /// returns false.
    bool Release(std::string_view token);

    /// The job `id` (video_… or imgjob_…) as it is now, without counting a poll; nullopt when
    /// unknown (or forgotten by a reset).
    std::optional<MockJob> Job(std::string_view id) const;
    /// Every job as it is now, oldest first.
    std::vector<MockJob> Jobs() const;

    struct Impl;

private:
    std::shared_ptr<Impl> impl_;
    std::unique_ptr<net::HttpServer> server_;
    net::Runtime* runtime_ = nullptr;
    std::atomic<bool> stopped_{false};
};

}  // namespace conduit::mock
