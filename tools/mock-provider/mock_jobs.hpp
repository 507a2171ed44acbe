#pragma once

// Async media jobs of the mock provider (video jobs shaped like OpenAI's Videos API, image jobs
// the same way at /v1/images/jobs): the thread-safe job table, the lifecycle computed from
// elapsed time, deterministic video bytes, byte ranges and the JSON renderings. No I/O.
//
// Lifecycle: a job has a fixed duration D from its submit. Nothing runs in the background; every
// read computes the state at that instant from the elapsed time t:
//   - t < D: progress = floor(100 * t / D); status `queued` while progress is 0, else
//     `in_progress` (1..99);
//   - t ≥ D: `completed` (progress 100, completed_at = created + D), or `failed` when the job was
//     chosen to fail (progress stays at 99, or 0 for D = 0; `error` = {code, message});
//   - a cancel before t ≥ D makes it `cancelled` for good, progress frozen where it was.
// So thousands of jobs cost a map entry each and no timers.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace conduit::mock {

enum class JobKind : uint8_t { kVideo, kImage };
enum class JobStatus : uint8_t { kQueued, kInProgress, kCompleted, kFailed, kCancelled };

/// "video" / "image".
std::string_view JobKindName(JobKind kind);
/// "queued", "in_progress", "completed", "failed", "cancelled".
std::string_view JobStatusName(JobStatus status);
/// True for completed, failed and cancelled.
inline bool IsTerminal(JobStatus s) { return s >= JobStatus::kCompleted; }

/// What a submit fixed about a job; immutable once the job exists (shared by every snapshot).
struct JobSpec {
    std::string id;  // "video_<hex>" / "imgjob_<hex>"
    JobKind kind = JobKind::kVideo;
    /// `model` and `prompt` as JSON values, exactly as written in the submit body (the model
    /// defaults to "sora-2" for videos, "gpt-image-1" for images).
    std::string model_json;
    std::string prompt_json;
    /// Videos: `seconds` (decimal digits) and `size` ("WxH").
    std::string seconds;
    std::string size;
    /// Images: `n` and whether `data` carries b64_json (else url).
    int64_t n = 1;
    bool b64 = false;
    /// Lifecycle.
    int64_t duration_ms = 0;
    bool fails = false;
    /// Contents of the error code string literal (JSON escapes kept as written); used when fails.
    std::string error_code;
    /// The Idempotency-Key it was submitted with (empty = none).
    std::string idempotency_key;
    /// Videos: size of the content in bytes.
    int64_t content_bytes = 0;
    /// When it was submitted: steady clock (drives the lifecycle) and Unix milliseconds.
    int64_t created_ns = 0;
    int64_t created_unix_ms = 0;
};

/// A job as it is at one instant (a copy; cheap: the spec is shared).
struct MockJob {
    std::shared_ptr<const JobSpec> spec;
    JobStatus status = JobStatus::kQueued;
    int progress = 0;
    /// Unix milliseconds; 0 when not (yet) completed / not cancelled.
    int64_t completed_unix_ms = 0;
    int64_t cancelled_unix_ms = 0;
    /// GETs of the job's object (the /v1 poll route); polls_after_cancel counts those of them
    /// that came after the cancel.
    int64_t poll_count = 0;
    int64_t polls_after_cancel = 0;
    /// Successful GETs of the content (videos).
    int64_t content_downloads = 0;
    /// Submits with the job's Idempotency-Key that returned this job instead of starting one.
    int64_t idempotent_replays = 0;
};

/// Jobs per status at one instant.
struct JobTally {
    int64_t queued = 0;
    int64_t in_progress = 0;
    int64_t completed = 0;
    int64_t failed = 0;
    int64_t cancelled = 0;
};

/// The job table: jobs by id in mutex-protected buckets (a lookup locks one bucket), and
/// Idempotency-Key → id in buckets of their own (locked before a job bucket, never after).
/// Every method is thread-safe; times are passed in so the logic stays testable.
class JobStore {
public:
    /// What a read did to the job.
    enum class Access : uint8_t {
        kPeek,  // nothing (control API, content route)
        kPoll,  // poll_count (+ polls_after_cancel)
    };

    struct Submitted {
        MockJob job;
        bool replay = false;  // an existing job with the same kind and Idempotency-Key
    };
    /// Creates the job `spec` describes (spec.id must be new), or, when spec.idempotency_key is
    /// set and a job of the same kind was submitted with it, returns that job (counting a
    /// replay) and drops `spec`.
    Submitted Submit(std::shared_ptr<const JobSpec> spec, int64_t now_ns);

    /// The job `id` of `kind` (any kind when nullopt) at `now_ns`, after applying `access`.
    std::optional<MockJob> Get(std::string_view id,
                               std::optional<JobKind> kind,
                               int64_t now_ns,
                               Access access = Access::kPeek);

    struct Cancelled {
        MockJob job;
        bool cancelled_now = false;  // false: it was already terminal (or cancelled)
    };
    /// Cancels a queued or in-progress job; a terminal job is returned unchanged.
    std::optional<Cancelled> Cancel(std::string_view id,
                                    JobKind kind,
                                    int64_t now_ns,
                                    int64_t now_unix_ms);

    /// Counts one download of the content of job `id`.
    void CountDownload(std::string_view id);

    /// Every job at `now_ns`, oldest first.
    std::vector<MockJob> All(int64_t now_ns) const;
    /// Jobs per status at `now_ns`.
    JobTally Tally(int64_t now_ns) const;
    /// Forgets every job and key.
    void Clear();

    /// The SHA-256 (hex) of a video job's content, computed once and remembered.
    std::string ContentSha256(const JobSpec& spec);

private:
    struct Entry {
        std::shared_ptr<const JobSpec> spec;
        int64_t cancelled_ns = 0;  // 0 = not cancelled
        int64_t cancelled_unix_ms = 0;
        int cancelled_progress = 0;
        int64_t poll_count = 0;
        int64_t polls_after_cancel = 0;
        int64_t content_downloads = 0;
        int64_t idempotent_replays = 0;
        std::string content_sha256;
    };
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    template <class V>
    using Map = std::unordered_map<std::string, V, Hash, std::equal_to<>>;
    struct alignas(64) Bucket {
        mutable std::mutex mu;
        Map<Entry> jobs;
    };
    struct alignas(64) KeyBucket {
        std::mutex mu;
        Map<std::string> ids;  // kind letter + key → job id
    };
    static constexpr size_t kBuckets = 16;

    Bucket& BucketOf(std::string_view id) { return buckets_[Hash{}(id) % kBuckets]; }
    static MockJob Snapshot(const Entry& e, int64_t now_ns);

    std::array<Bucket, kBuckets> buckets_;
    std::array<KeyBucket, kBuckets> keys_;
};

/// Status and progress of `spec` at `now_ns`, ignoring cancellation. Pure.
JobStatus JobStatusAt(const JobSpec& spec, int64_t now_ns, int& progress);

/// True for the fraction `rate` of ids, decided by a hash of the id (so the same id always
/// gets the same answer). Pure.
bool ChosenToFail(std::string_view id, double rate);

/// Appends bytes [begin, end) of the deterministic content of video `id` whose whole size is
/// `total`: an ISO-BMFF `ftyp` box and an `mdat` box header (when total ≥ 32), then
/// pseudo-random bytes seeded by FNV-1a(id). Pure.
void AppendVideoBytes(
    std::string& out, std::string_view id, int64_t total, int64_t begin, int64_t end);
/// The whole content of video `id` of `total` bytes (tests compare downloads with it).
std::string VideoContent(std::string_view id, int64_t total);

/// A `Range` request header against a body of `size` bytes.
struct ByteRange {
    enum Kind : uint8_t {
        kWhole,          // no (usable) Range header: send everything with 200
        kPartial,        // send [begin, end) with 206
        kUnsatisfiable,  // 416 with `Content-Range: bytes */size`
    } kind = kWhole;
    int64_t begin = 0;
    int64_t end = 0;
};
/// Parses one `bytes=a-b`, `bytes=a-` or `bytes=-n` range (RFC 9110 §14.1.2). A header this does
/// not understand (other units, several ranges, bad syntax) yields kWhole, as RFC 9110 allows.
/// Pure.
ByteRange ParseByteRange(std::string_view header, int64_t size);

/// The OpenAI-style object of a job: a video (`"object":"video"`) or an image job
/// (`"object":"image.job"`, with `data` once completed; urls start with `file_base`, e.g.
/// "http://host:port", and b64_json items carry `png_b64`). Pure.
void AppendJobObject(std::string& out,
                     const MockJob& job,
                     std::string_view file_base,
                     std::string_view png_b64);
/// The control API's full record of a job (GET /mock/jobs/{id}); `content_sha256` is added when
/// not empty. Pure.
void AppendJobRecord(std::string& out, const MockJob& job, std::string_view content_sha256 = {});

}  // namespace conduit::mock
