#include "mock-provider/mock_jobs.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "mock-provider/mock_content.hpp"

#include <algorithm>
#include <charconv>

namespace conduit::mock {

namespace {

constexpr std::string_view kErrorMessage = "The mock provider failed this job.";

uint64_t Mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/// A non-negative decimal integer occupying all of `s` (no sign, no spaces).
std::optional<int64_t> ParseDigits(std::string_view s) {
    if (s.empty() || s.front() < '0' || s.front() > '9') {
        return std::nullopt;
    }
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

void AppendUnixSeconds(std::string& out, int64_t unix_ms) {
    if (unix_ms == 0) {
        out += "null";
    } else {
        AppendInt(out, unix_ms / 1000);
    }
}

void AppendUnixMs(std::string& out, int64_t unix_ms) {
    if (unix_ms == 0) {
        out += "null";
    } else {
        AppendInt(out, unix_ms);
    }
}

void AppendQuoted(std::string& out, std::string_view already_escaped) {
    out += '"';
    out += already_escaped;
    out += '"';
}

}  // namespace

std::string_view JobKindName(JobKind kind) { return kind == JobKind::kVideo ? "video" : "image"; }

std::string_view JobStatusName(JobStatus status) {
    switch (status) {
        case JobStatus::kQueued:
            return "queued";
        case JobStatus::kInProgress:
            return "in_progress";
        case JobStatus::kCompleted:
            return "completed";
        case JobStatus::kFailed:
            return "failed";
        case JobStatus::kCancelled:
            return "cancelled";
    }
    return "queued";
}

JobStatus JobStatusAt(const JobSpec& spec, int64_t now_ns, int& progress) {
    const int64_t duration_ns = spec.duration_ms * 1000000;
    const int64_t elapsed = std::max<int64_t>(now_ns - spec.created_ns, 0);
    if (elapsed >= duration_ns) {
        if (spec.fails) {
            progress = duration_ns > 0 ? 99 : 0;
            return JobStatus::kFailed;
        }
        progress = 100;
        return JobStatus::kCompleted;
    }
    // elapsed < duration_ns ≤ 24 h (validated), so elapsed * 100 cannot overflow.
    progress = static_cast<int>(elapsed * 100 / duration_ns);
    return progress == 0 ? JobStatus::kQueued : JobStatus::kInProgress;
}

bool ChosenToFail(std::string_view id, double rate) {
    if (!(rate > 0)) {
        return false;
    }
    if (rate >= 1) {
        return true;
    }
    return static_cast<double>(Mix(Fnv1a64(id)) >> 11) * 0x1.0p-53 < rate;
}

// ---------------------------------------------------------------------------------------------
// JobStore

MockJob JobStore::Snapshot(const Entry& e, int64_t now_ns) {
    MockJob j;
    j.spec = e.spec;
    if (e.cancelled_ns != 0) {
        j.status = JobStatus::kCancelled;
        j.progress = e.cancelled_progress;
        j.cancelled_unix_ms = e.cancelled_unix_ms;
    } else {
        j.status = JobStatusAt(*e.spec, now_ns, j.progress);
        if (j.status == JobStatus::kCompleted) {
            j.completed_unix_ms = e.spec->created_unix_ms + e.spec->duration_ms;
        }
    }
    j.poll_count = e.poll_count;
    j.polls_after_cancel = e.polls_after_cancel;
    j.content_downloads = e.content_downloads;
    j.idempotent_replays = e.idempotent_replays;
    return j;
}

JobStore::Submitted JobStore::Submit(std::shared_ptr<const JobSpec> spec, int64_t now_ns) {
    auto insert = [this, now_ns](std::shared_ptr<const JobSpec> s) {
        Bucket& b = BucketOf(s->id);
        std::lock_guard l(b.mu);
        std::string id = s->id;
        auto [it, inserted] = b.jobs.try_emplace(std::move(id));
        if (inserted) {
            it->second.spec = std::move(s);
        }
        return Snapshot(it->second, now_ns);
    };
    if (spec->idempotency_key.empty()) {
        return {insert(std::move(spec)), false};
    }
    std::string key;
    key.reserve(2 + spec->idempotency_key.size());
    key += spec->kind == JobKind::kVideo ? 'v' : 'i';
    key += ':';
    key += spec->idempotency_key;
    KeyBucket& kb = keys_[Hash{}(key) % kBuckets];
    // Held across the insert so concurrent submits with one key start one job.
    std::lock_guard kl(kb.mu);
    if (auto known = kb.ids.find(key); known != kb.ids.end()) {
        Bucket& b = BucketOf(known->second);
        std::lock_guard l(b.mu);
        if (auto it = b.jobs.find(known->second); it != b.jobs.end()) {
            ++it->second.idempotent_replays;
            return {Snapshot(it->second, now_ns), true};
        }
    }
    MockJob job = insert(std::move(spec));
    kb.ids.insert_or_assign(std::move(key), job.spec->id);
    return {std::move(job), false};
}

std::optional<MockJob> JobStore::Get(std::string_view id,
                                     std::optional<JobKind> kind,
                                     int64_t now_ns,
                                     Access access) {
    Bucket& b = BucketOf(id);
    std::lock_guard l(b.mu);
    auto it = b.jobs.find(id);
    if (it == b.jobs.end() || (kind && it->second.spec->kind != *kind)) {
        return std::nullopt;
    }
    Entry& e = it->second;
    if (access == Access::kPoll) {
        ++e.poll_count;
        if (e.cancelled_ns != 0) {
            ++e.polls_after_cancel;
        }
    }
    return Snapshot(e, now_ns);
}

void JobStore::CountDownload(std::string_view id) {
    Bucket& b = BucketOf(id);
    std::lock_guard l(b.mu);
    if (auto it = b.jobs.find(id); it != b.jobs.end()) {
        ++it->second.content_downloads;
    }
}

std::optional<JobStore::Cancelled> JobStore::Cancel(std::string_view id,
                                                    JobKind kind,
                                                    int64_t now_ns,
                                                    int64_t now_unix_ms) {
    Bucket& b = BucketOf(id);
    std::lock_guard l(b.mu);
    auto it = b.jobs.find(id);
    if (it == b.jobs.end() || it->second.spec->kind != kind) {
        return std::nullopt;
    }
    Entry& e = it->second;
    bool cancelled_now = false;
    if (e.cancelled_ns == 0) {
        int progress = 0;
        if (!IsTerminal(JobStatusAt(*e.spec, now_ns, progress))) {
            e.cancelled_ns = std::max<int64_t>(now_ns, 1);
            e.cancelled_unix_ms = now_unix_ms;
            e.cancelled_progress = progress;
            cancelled_now = true;
        }
    }
    return Cancelled{Snapshot(e, now_ns), cancelled_now};
}

std::vector<MockJob> JobStore::All(int64_t now_ns) const {
    std::vector<MockJob> out;
    for (const Bucket& b : buckets_) {
        std::lock_guard l(b.mu);
        for (const auto& [id, e] : b.jobs) {
            out.push_back(Snapshot(e, now_ns));
        }
    }
    std::sort(out.begin(), out.end(), [](const MockJob& a, const MockJob& b) {
        if (a.spec->created_ns != b.spec->created_ns) {
            return a.spec->created_ns < b.spec->created_ns;
        }
        return a.spec->id < b.spec->id;
    });
    return out;
}

JobTally JobStore::Tally(int64_t now_ns) const {
    JobTally t;
    for (const Bucket& b : buckets_) {
        std::lock_guard l(b.mu);
        for (const auto& [id, e] : b.jobs) {
            int progress = 0;
            JobStatus s = e.cancelled_ns != 0 ? JobStatus::kCancelled
                                              : JobStatusAt(*e.spec, now_ns, progress);
            switch (s) {
                case JobStatus::kQueued:
                    ++t.queued;
                    break;
                case JobStatus::kInProgress:
                    ++t.in_progress;
                    break;
                case JobStatus::kCompleted:
                    ++t.completed;
                    break;
                case JobStatus::kFailed:
                    ++t.failed;
                    break;
                case JobStatus::kCancelled:
                    ++t.cancelled;
                    break;
            }
        }
    }
    return t;
}

void JobStore::Clear() {
    for (KeyBucket& kb : keys_) {
        std::lock_guard l(kb.mu);
        kb.ids.clear();
    }
    for (Bucket& b : buckets_) {
        std::lock_guard l(b.mu);
        b.jobs.clear();
    }
}

std::string JobStore::ContentSha256(const JobSpec& spec) {
    Bucket& b = BucketOf(spec.id);
    {
        std::lock_guard l(b.mu);
        auto it = b.jobs.find(spec.id);
        if (it != b.jobs.end() && !it->second.content_sha256.empty()) {
            return it->second.content_sha256;
        }
    }
    // Hash outside the lock: other jobs of the bucket stay pollable meanwhile.
    std::string sha = core::Sha256Hex(VideoContent(spec.id, spec.content_bytes));
    std::lock_guard l(b.mu);
    if (auto it = b.jobs.find(spec.id); it != b.jobs.end()) {
        it->second.content_sha256 = sha;
    }
    return sha;
}

// ---------------------------------------------------------------------------------------------
// Content and ranges

void AppendVideoBytes(
    std::string& out, std::string_view id, int64_t total, int64_t begin, int64_t end) {
    begin = std::clamp<int64_t>(begin, 0, total);
    end = std::clamp<int64_t>(end, begin, total);
    // ftyp box (24 bytes: isom, minor 0x200, compatible isom mp41), then the header of an mdat
    // box holding the rest: a well-formed ISO-BMFF box sequence, if not a playable movie.
    unsigned char header[32] = {0,   0,   0, 24, 'f', 't', 'y', 'p', 'i', 's', 'o',
                                'm', 0,   0, 2,  0,   'i', 's', 'o', 'm', 'm', 'p',
                                '4', '1', 0, 0,  0,   0,   'm', 'd', 'a', 't'};
    const bool boxed = total >= 32;
    if (boxed) {
        const auto mdat = static_cast<uint32_t>(total - 24);
        header[24] = static_cast<unsigned char>(mdat >> 24);
        header[25] = static_cast<unsigned char>(mdat >> 16);
        header[26] = static_cast<unsigned char>(mdat >> 8);
        header[27] = static_cast<unsigned char>(mdat);
    }
    const uint64_t seed = Mix(Fnv1a64(id));
    const size_t old = out.size();
    out.resize(old + static_cast<size_t>(end - begin));
    char* p = out.data() + old;
    int64_t k = begin;
    for (; boxed && k < end && k < 32; ++k) {
        *p++ = static_cast<char>(header[k]);
    }
    while (k < end) {
        const uint64_t block = static_cast<uint64_t>(k) / 8;
        const uint64_t z = Mix(seed + (block + 1) * 0x9e3779b97f4a7c15ULL);
        for (int64_t b = k % 8; b < 8 && k < end; ++b, ++k) {
            *p++ = static_cast<char>(static_cast<unsigned char>(z >> (8 * b)));
        }
    }
}

std::string VideoContent(std::string_view id, int64_t total) {
    std::string out;
    AppendVideoBytes(out, id, total, 0, total);
    return out;
}

ByteRange ParseByteRange(std::string_view header, int64_t size) {
    ByteRange r;
    header = core::Trim(header);
    if (!core::IStartsWith(header, "bytes=")) {
        return r;
    }
    std::string_view spec = core::Trim(header.substr(6));
    size_t dash = spec.find('-');
    if (dash == std::string_view::npos || spec.find(',') != std::string_view::npos) {
        return r;
    }
    std::string_view first = core::Trim(spec.substr(0, dash));
    std::string_view last = core::Trim(spec.substr(dash + 1));
    if (first.empty()) {
        auto suffix = ParseDigits(last);
        if (!suffix) {
            return r;
        }
        if (*suffix == 0 || size == 0) {
            r.kind = ByteRange::kUnsatisfiable;
            return r;
        }
        r.kind = ByteRange::kPartial;
        r.begin = std::max<int64_t>(size - *suffix, 0);
        r.end = size;
        return r;
    }
    auto begin = ParseDigits(first);
    if (!begin) {
        return r;
    }
    std::optional<int64_t> last_byte;
    if (!last.empty()) {
        last_byte = ParseDigits(last);
        if (!last_byte || *last_byte < *begin) {
            return r;
        }
    }
    if (*begin >= size) {
        r.kind = ByteRange::kUnsatisfiable;
        return r;
    }
    r.kind = ByteRange::kPartial;
    r.begin = *begin;
    r.end = last_byte ? std::min(*last_byte + 1, size) : size;
    return r;
}

// ---------------------------------------------------------------------------------------------
// JSON

void AppendJobObject(std::string& out,
                     const MockJob& job,
                     std::string_view file_base,
                     std::string_view png_b64) {
    const JobSpec& s = *job.spec;
    const bool video = s.kind == JobKind::kVideo;
    const bool completed = job.status == JobStatus::kCompleted;
    out.reserve(out.size() + 256 + s.model_json.size() + s.prompt_json.size() +
                (completed && !video
                     ? static_cast<size_t>(s.n) * (s.b64 ? png_b64.size() + 16 : 96 + s.id.size())
                     : 0));
    out += R"({"id":")";
    out += s.id;
    out += video ? R"(","object":"video","model":)" : R"(","object":"image.job","model":)";
    out += s.model_json;
    out += R"(,"status":")";
    out += JobStatusName(job.status);
    out += R"(","progress":)";
    AppendInt(out, job.progress);
    out += R"(,"created_at":)";
    AppendInt(out, s.created_unix_ms / 1000);
    out += R"(,"completed_at":)";
    AppendUnixSeconds(out, job.completed_unix_ms);
    if (video) {
        out += R"(,"expires_at":)";
        AppendUnixSeconds(out, completed ? job.completed_unix_ms + 86400000 : 0);
    }
    out += R"(,"prompt":)";
    out += s.prompt_json;
    if (video) {
        out += R"(,"seconds":")";
        out += s.seconds;
        out += '"';
    }
    out += R"(,"size":")";
    out += s.size;
    out += '"';
    if (video) {
        out += R"(,"remixed_from_video_id":null)";
    }
    out += R"(,"error":)";
    if (job.status == JobStatus::kFailed) {
        out += R"({"code":")";
        out += s.error_code;
        out += R"(","message":")";
        out += kErrorMessage;
        out += R"("})";
    } else {
        out += "null";
    }
    if (job.status == JobStatus::kCancelled) {
        out += R"(,"cancelled_at":)";
        AppendUnixSeconds(out, job.cancelled_unix_ms);
    }
    if (!video && completed) {
        out += R"(,"data":[)";
        for (int64_t i = 0; i < s.n; ++i) {
            if (i > 0) {
                out += ',';
            }
            if (s.b64) {
                out += R"({"b64_json":")";
                out += png_b64;
                out += R"("})";
            } else {
                out += R"({"url":")";
                out += file_base;
                out += "/mock/files/";
                out += s.id;
                out += '-';
                AppendInt(out, i);
                out += R"(.png"})";
            }
        }
        out += ']';
    }
    out += '}';
}

void AppendJobRecord(std::string& out, const MockJob& job, std::string_view content_sha256) {
    const JobSpec& s = *job.spec;
    const bool video = s.kind == JobKind::kVideo;
    out += R"({"id":")";
    out += s.id;
    out += R"(","kind":")";
    out += JobKindName(s.kind);
    out += R"(","status":")";
    out += JobStatusName(job.status);
    out += R"(","progress":)";
    AppendInt(out, job.progress);
    out += R"(,"model":)";
    out += s.model_json;
    out += R"(,"created_at":)";
    AppendInt(out, s.created_unix_ms / 1000);
    out += R"(,"created_at_ms":)";
    AppendInt(out, s.created_unix_ms);
    out += R"(,"duration_ms":)";
    AppendInt(out, s.duration_ms);
    out += R"(,"completed_at":)";
    AppendUnixSeconds(out, job.completed_unix_ms);
    out += R"(,"completed_at_ms":)";
    AppendUnixMs(out, job.completed_unix_ms);
    out += R"(,"fails":)";
    out += s.fails ? "true" : "false";
    out += R"(,"error_code":)";
    if (s.fails) {
        AppendQuoted(out, s.error_code);
    } else {
        out += "null";
    }
    out += R"(,"idempotency_key":)";
    if (s.idempotency_key.empty()) {
        out += "null";
    } else {
        out += '"';
        core::AppendJsonEscaped(out, s.idempotency_key);
        out += '"';
    }
    out += R"(,"poll_count":)";
    AppendInt(out, job.poll_count);
    out += R"(,"polls_after_cancel":)";
    AppendInt(out, job.polls_after_cancel);
    out += R"(,"cancelled_at":)";
    AppendUnixSeconds(out, job.cancelled_unix_ms);
    out += R"(,"cancelled_at_ms":)";
    AppendUnixMs(out, job.cancelled_unix_ms);
    out += R"(,"content_downloads":)";
    AppendInt(out, job.content_downloads);
    out += R"(,"idempotent_replays":)";
    AppendInt(out, job.idempotent_replays);
    out += R"(,"size":")";
    out += s.size;
    out += '"';
    if (video) {
        out += R"(,"seconds":")";
        out += s.seconds;
        out += R"(","content_bytes":)";
        AppendInt(out, s.content_bytes);
        if (!content_sha256.empty()) {
            out += R"(,"content_sha256":")";
            out += content_sha256;
            out += '"';
        }
    } else {
        out += R"(,"n":)";
        AppendInt(out, s.n);
        out += R"(,"response_format":")";
        out += s.b64 ? "b64_json" : "url";
        out += '"';
    }
    out += '}';
}

}  // namespace conduit::mock
