#include "tasks/provider_jobs.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "http_client/backoff.hpp"
#include "http_client/http1.hpp"
#include "json/helpers.hpp"

#include <boost/json.hpp>

namespace conduit::tasks {

namespace {

using Phase = JobState::Phase;

std::string JobsPath(JobKind kind) { return kind == JobKind::kVideo ? "/videos" : "/images/jobs"; }

/// Maps an HTTP failure to a CallError: 408, 409, 425, 429 and 5xx are worth retrying.
CallError StatusError(int status, std::string_view body, const net::Headers& headers) {
    CallError e;
    e.status = status;
    e.retryable = status == 408 || status == 409 || status == 425 || status == 429 || status >= 500;
    std::string detail;
    if (auto obj = json::ParseObject(body)) {
        if (auto it = obj->find("error"); it != obj->end()) {
            if (it->value().is_object()) {
                auto m = it->value().as_object().find("message");
                if (m != it->value().as_object().end() && m->value().is_string()) {
                    detail = std::string(m->value().as_string());
                }
            } else if (it->value().is_string()) {
                detail = std::string(it->value().as_string());
            }
        }
    }
    e.error = core::Error{
        e.retryable ? core::ErrorCode::kUpstreamError : core::ErrorCode::kInvalidRequest,
        "provider returned HTTP " + std::to_string(status) +
            (detail.empty() ? std::string() : ": " + detail),
        ""};
    e.retry_after = http_client::ParseRetryAfter(headers.Get("retry-after"));
    return e;
}

CallError TransportError(const http_client::Outcome& o) {
    CallError e;
    e.retryable = true;  // connect failures, timeouts and resets may pass
    e.error =
        core::Error{o.failure == http_client::Failure::kTimeout ? core::ErrorCode::kUpstreamTimeout
                                                                : core::ErrorCode::kUpstreamError,
                    "provider unreachable: " + o.message, ""};
    return e;
}

bool SameHost(std::string_view a, std::string_view b) {
    http_client::ParsedUrl ua;
    http_client::ParsedUrl ub;
    return http_client::ParseHttpUrl(a, ua) && http_client::ParseHttpUrl(b, ub) &&
           ua.pool_key == ub.pool_key;
}

}  // namespace

core::Result<JobState> ParseJobState(std::string_view body) {
    auto obj = json::ParseObject(body);
    if (!obj) {
        return tl::unexpected(obj.error());
    }
    const auto& o = *obj;
    JobState s;
    if (auto it = o.find("id"); it != o.end() && it->value().is_string()) {
        s.id = std::string(it->value().as_string());
    }
    std::string status;
    if (auto it = o.find("status"); it != o.end() && it->value().is_string()) {
        status = std::string(it->value().as_string());
    }
    if (status == "queued" || status == "pending" || status == "submitted") {
        s.phase = Phase::kQueued;
    } else if (status == "in_progress" || status == "running" || status == "processing") {
        s.phase = Phase::kRunning;
    } else if (status == "completed" || status == "succeeded" || status == "success") {
        s.phase = Phase::kSucceeded;
    } else if (status == "failed" || status == "error") {
        s.phase = Phase::kFailed;
    } else if (status == "cancelled" || status == "canceled") {
        s.phase = Phase::kCancelled;
    } else if (o.contains("data")) {
        s.phase = Phase::kSucceeded;  // a synchronous images response
    } else {
        return core::Fail(core::ErrorCode::kUpstreamError,
                          "unknown provider job status '" + status + "'");
    }
    if (auto it = o.find("progress"); it != o.end()) {
        if (it->value().is_int64()) {
            s.progress = static_cast<int>(it->value().as_int64());
        } else if (it->value().is_double()) {
            s.progress = static_cast<int>(it->value().as_double());
        }
    }
    s.progress = std::clamp(s.progress, 0, 100);
    if (auto it = o.find("seconds"); it != o.end()) {
        if (it->value().is_string()) {
            s.seconds = std::atof(std::string(it->value().as_string()).c_str());
        } else if (it->value().is_number()) {
            s.seconds = it->value().to_number<double>();
        }
    }
    if (auto it = o.find("error"); it != o.end() && it->value().is_object()) {
        const auto& eo = it->value().as_object();
        if (auto c = eo.find("code"); c != eo.end() && c->value().is_string()) {
            s.error_code = std::string(c->value().as_string());
        }
        if (auto m = eo.find("message"); m != eo.end() && m->value().is_string()) {
            s.error_message = std::string(m->value().as_string());
        }
    }
    if (auto it = o.find("data"); it != o.end() && it->value().is_array()) {
        for (const auto& item : it->value().as_array()) {
            if (!item.is_object()) {
                continue;
            }
            JobOutput out;
            const auto& io = item.as_object();
            if (auto u = io.find("url"); u != io.end() && u->value().is_string()) {
                out.url = std::string(u->value().as_string());
            }
            if (auto b = io.find("b64_json"); b != io.end() && b->value().is_string()) {
                out.b64 = std::string(b->value().as_string());
            }
            if (!out.url.empty() || !out.b64.empty()) {
                s.outputs.push_back(std::move(out));
            }
        }
    }
    return s;
}

bool ProviderJobs::SyncImages(const domain::Deployment& d) {
    return d.provider.type == domain::ProviderType::kOpenAI;
}

void ProviderJobs::Send(core::Loop& loop,
                        std::string method,
                        std::string url,
                        net::Headers headers,
                        std::string body,
                        std::chrono::milliseconds total,
                        std::function<void(JobResult<Reply>)> done) {
    http_client::Request req;
    req.method = std::move(method);
    req.url = std::move(url);
    req.headers = std::move(headers);
    req.body = std::move(body);
    req.timeouts = timeouts_;
    req.timeouts.total = total;
    req.timeouts.first_byte = std::min(timeouts_.first_byte, total);
    auto reply = std::make_shared<Reply>();
    http_client::Callbacks cb;
    cb.on_headers = [reply](int status, net::Headers h) {
        reply->status = status;
        reply->headers = std::move(h);
    };
    cb.on_data = [reply](std::string_view d) {
        if (reply->body.size() + d.size() <= (64u << 20)) {
            reply->body.append(d);
        }
        return true;
    };
    cb.on_done = [reply, done = std::move(done)](const http_client::Outcome& o) {
        if (o.failure != http_client::Failure::kNone) {
            done(tl::unexpected(TransportError(o)));
            return;
        }
        done(std::move(*reply));
    };
    clients_(loop.Index()).Start(std::move(req), std::move(cb));
}

void ProviderJobs::Submit(core::Loop& loop,
                          const domain::Deployment& d,
                          JobKind kind,
                          std::string body,
                          std::string idempotency_key,
                          std::function<void(JobResult<JobState>)> done) {
    net::Headers h;
    h.Add("Content-Type", "application/json");
    if (!d.authorization.empty()) {
        h.Add("Authorization", d.authorization);
    }
    h.Add("Idempotency-Key", idempotency_key);
    bool sync = kind == JobKind::kImage && SyncImages(d);
    std::string url = d.base_url + (sync ? "/images/generations" : JobsPath(kind));
    // A synchronous image call runs as long as the generation itself.
    auto total = sync ? timeouts_.total : std::chrono::milliseconds(60000);
    Send(loop, "POST", std::move(url), std::move(h), std::move(body), total,
         [done = std::move(done)](JobResult<Reply> r) {
             if (!r) {
                 done(tl::unexpected(r.error()));
                 return;
             }
             if (r->status < 200 || r->status >= 300) {
                 done(tl::unexpected(StatusError(r->status, r->body, r->headers)));
                 return;
             }
             auto s = ParseJobState(r->body);
             if (!s) {
                 done(tl::unexpected(CallError{s.error(), true, r->status, {}}));
                 return;
             }
             done(std::move(*s));
         });
}

void ProviderJobs::Poll(core::Loop& loop,
                        const domain::Deployment& d,
                        JobKind kind,
                        std::string job_id,
                        std::function<void(JobResult<JobState>)> done) {
    net::Headers h;
    if (!d.authorization.empty()) {
        h.Add("Authorization", d.authorization);
    }
    Send(loop, "GET", d.base_url + JobsPath(kind) + "/" + job_id, std::move(h), {},
         std::chrono::milliseconds(30000), [done = std::move(done)](JobResult<Reply> r) {
             if (!r) {
                 done(tl::unexpected(r.error()));
                 return;
             }
             if (r->status < 200 || r->status >= 300) {
                 CallError e = StatusError(r->status, r->body, r->headers);
                 if (r->status == 404) {
                     e.retryable = false;  // the provider forgot the job
                 }
                 done(tl::unexpected(std::move(e)));
                 return;
             }
             auto s = ParseJobState(r->body);
             if (!s) {
                 done(tl::unexpected(CallError{s.error(), true, r->status, {}}));
                 return;
             }
             done(std::move(*s));
         });
}

void ProviderJobs::Cancel(core::Loop& loop,
                          const domain::Deployment& d,
                          JobKind kind,
                          std::string job_id,
                          std::function<void(JobResult<void>)> done) {
    if (kind == JobKind::kImage && SyncImages(d)) {
        done({});  // nothing to cancel upstream
        return;
    }
    net::Headers h;
    if (!d.authorization.empty()) {
        h.Add("Authorization", d.authorization);
    }
    Send(loop, "DELETE", d.base_url + JobsPath(kind) + "/" + job_id, std::move(h), {},
         std::chrono::milliseconds(30000), [done = std::move(done)](JobResult<Reply> r) {
             if (!r) {
                 done(tl::unexpected(r.error()));
                 return;
             }
             // 404: the provider no longer has it — nothing left to stop.
             if ((r->status >= 200 && r->status < 300) || r->status == 404) {
                 done({});
                 return;
             }
             done(tl::unexpected(StatusError(r->status, r->body, r->headers)));
         });
}

void ProviderJobs::Fetch(core::Loop& loop,
                         const domain::Deployment& d,
                         JobKind kind,
                         const JobState& job,
                         size_t index,
                         std::shared_ptr<media::MediaWriter> writer,
                         std::function<void(core::Result<void>)> done) {
    std::string url;
    if (kind == JobKind::kVideo) {
        url = d.base_url + "/videos/" + job.id + "/content";
    } else {
        if (index >= job.outputs.size()) {
            done(core::Fail(core::ErrorCode::kUpstreamError, "missing job output"));
            return;
        }
        const JobOutput& out = job.outputs[index];
        if (!out.b64.empty()) {
            std::string bytes;
            if (!core::Base64Decode(out.b64, bytes)) {
                done(core::Fail(core::ErrorCode::kUpstreamError, "invalid base64 image"));
                return;
            }
            done(writer->Append(bytes));
            return;
        }
        url = out.url;
    }
    http_client::Request req;
    req.method = "GET";
    req.url = url;
    if (!d.authorization.empty() && SameHost(url, d.base_url)) {
        req.headers.Add("Authorization", d.authorization);
    }
    req.timeouts = timeouts_;
    auto status = std::make_shared<int>(0);
    auto failed = std::make_shared<core::Result<void>>();
    http_client::Callbacks cb;
    cb.on_headers = [status](int s, net::Headers) { *status = s; };
    // Streamed into the media store piece by piece: large files never sit whole in memory.
    cb.on_data = [status, failed, writer](std::string_view piece) {
        if (*status >= 200 && *status < 300 && *failed) {
            *failed = writer->Append(piece);
        }
        return true;
    };
    cb.on_done = [status, failed, done = std::move(done)](const http_client::Outcome& o) {
        if (o.failure != http_client::Failure::kNone) {
            done(core::Fail(core::ErrorCode::kUpstreamError, "download failed: " + o.message));
            return;
        }
        if (*status < 200 || *status >= 300) {
            done(core::Fail(core::ErrorCode::kUpstreamError,
                            "download returned HTTP " + std::to_string(*status)));
            return;
        }
        done(*failed);
    };
    clients_(loop.Index()).Start(std::move(req), std::move(cb));
}

}  // namespace conduit::tasks
