#pragma once

#include "core/error.hpp"
#include "core/loop.hpp"
#include "domain/snapshot.hpp"
#include "http_client/client.hpp"
#include "media/media_store.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace conduit::tasks {

enum class JobKind { kImage, kVideo };

/// One output of a finished job (images: a URL or base64 data; videos: the content endpoint).
struct JobOutput {
    std::string url;
    std::string b64;
};

/// A provider job as last seen.
struct JobState {
    enum class Phase { kQueued, kRunning, kSucceeded, kFailed, kCancelled };
    Phase phase = Phase::kQueued;
    std::string id;
    int progress = 0;
    std::string error_code;
    std::string error_message;
    std::vector<JobOutput> outputs;
    double seconds = 0;  // video length, when the provider reports it
};

/// Why a provider call failed, and whether trying again later makes sense.
struct CallError {
    core::Error error;
    bool retryable = false;
    int status = 0;  // HTTP status, 0 when no response
    std::chrono::milliseconds retry_after{-1};
};

template <class T>
using JobResult = tl::expected<T, CallError>;

/// Drives media jobs on a provider deployment over HTTP (all calls asynchronous, on `loop`'s
/// thread, through that loop's upstream client).
///
/// Video: the OpenAI Videos API shape — POST {base}/videos, GET {base}/videos/{id},
/// DELETE {base}/videos/{id} (cancel), GET {base}/videos/{id}/content.
/// Images: the same job shape at {base}/images/jobs for OpenAI-compatible providers; providers
/// of type `openai` (no image job API) are called synchronously at {base}/images/generations,
/// the job then finishing within the submit call.
/// Every submit carries `Idempotency-Key`, so re-submitting an attempt after a crash returns the
/// job already started where the provider honours the key.
class ProviderJobs {
public:
    ProviderJobs(std::function<http_client::Client&(size_t loop_index)> clients,
                 http_client::Timeouts timeouts)
        : clients_(std::move(clients)), timeouts_(timeouts) {}

    void Submit(core::Loop& loop,
                const domain::Deployment& d,
                JobKind kind,
                std::string body,
                std::string idempotency_key,
                std::function<void(JobResult<JobState>)> done);
    void Poll(core::Loop& loop,
              const domain::Deployment& d,
              JobKind kind,
              std::string job_id,
              std::function<void(JobResult<JobState>)> done);
    void Cancel(core::Loop& loop,
                const domain::Deployment& d,
                JobKind kind,
                std::string job_id,
                std::function<void(JobResult<void>)> done);
    /// Streams output `index` of a finished job into `writer` (the provider's content endpoint
    /// for videos; the output URL or base64 data for images). The provider key is only sent to
    /// the provider's own host.
    void Fetch(core::Loop& loop,
               const domain::Deployment& d,
               JobKind kind,
               const JobState& job,
               size_t index,
               std::shared_ptr<media::MediaWriter> writer,
               std::function<void(core::Result<void>)> done);

    /// True when `d`'s provider runs image jobs synchronously (no job API).
    static bool SyncImages(const domain::Deployment& d);

private:
    struct Reply {
        int status = 0;
        net::Headers headers;
        std::string body;
    };
    void Send(core::Loop& loop,
              std::string method,
              std::string url,
              net::Headers headers,
              std::string body,
              std::chrono::milliseconds total,
              std::function<void(JobResult<Reply>)> done);

    std::function<http_client::Client&(size_t)> clients_;
    http_client::Timeouts timeouts_;
};

/// Parses a provider job object (OpenAI video shape, or the image job shape with `data`).
core::Result<JobState> ParseJobState(std::string_view json);

}  // namespace conduit::tasks
