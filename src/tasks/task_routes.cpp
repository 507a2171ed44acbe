#include "tasks/task_routes.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "gateway/errors.hpp"
#include "gateway/proxy.hpp"
#include "json/helpers.hpp"
#include "media/media_http.hpp"

#include <boost/json.hpp>

namespace conduit::tasks {

namespace {

using core::ErrorCode;
using domain::AsyncTask;

void Fail(const net::ExchangePtr& ex, ErrorCode code, std::string msg, std::string param = {}) {
    ex->Respond(gateway::ErrorResponse(core::Error{code, std::move(msg), std::move(param)}));
}

std::string Iso(int64_t ms) { return core::FormatIso8601(ms); }
std::string IsoOrNull(int64_t ms) { return ms == 0 ? "null" : core::JsonQuote(Iso(ms)); }

/// Authenticates the caller; responds with 401 and returns nullptr on failure.
const domain::KeyEntry* Authenticate(const net::ExchangePtr& ex,
                                     const domain::Snapshot& snap,
                                     const core::Clock& clock) {
    auto key =
        snap.Authenticate(gateway::OpenAIProxy::PresentedKey(ex->request()), clock.NowUnixMs());
    if (!key) {
        ex->Respond(gateway::ErrorResponse(key.error()));
        return nullptr;
    }
    return *key;
}

std::string BaseUrl(const TaskRoutesDeps& d, const net::Request& req) {
    if (!d.public_base_url.empty()) {
        std::string b = d.public_base_url;
        while (!b.empty() && b.back() == '/') {
            b.pop_back();
        }
        return b;
    }
    auto host = req.headers.Get("host");
    return "http://" + std::string(host.empty() ? "localhost" : host);
}

std::string StatusPath(const AsyncTask& t) {
    return t.type == domain::kVideoTask ? "/v1/videos/generations/tasks/" + t.id
                                        : "/v1/images/generations/" + t.id + "/status";
}

std::string AcceptedJson(const AsyncTask& t, const std::string& base) {
    return "{\"task_id\":" + core::JsonQuote(t.id) +
           ",\"status\":" + core::JsonQuote(domain::ToString(t.state)) +
           ",\"progress\":" + std::to_string(t.progress) +
           ",\"created_at\":" + core::JsonQuote(Iso(t.created_at_ms)) +
           ",\"updated_at\":" + core::JsonQuote(Iso(t.updated_at_ms)) +
           ",\"check_status_url\":" + core::JsonQuote(base + StatusPath(t)) + "}";
}

bool ValidHttpUrl(std::string_view url) {
    if (url.size() > 2048) {
        return false;
    }
    std::string_view rest;
    if (core::IStartsWith(url, "https://")) {
        rest = url.substr(8);
    } else if (core::IStartsWith(url, "http://")) {
        rest = url.substr(7);
    } else {
        return false;
    }
    if (rest.empty() || rest.front() == '/' || rest.find_first_of(" \r\n\t") != std::string::npos) {
        return false;
    }
    return true;
}

/// Validates and submits an async image or video request.
void Submit(const std::shared_ptr<TaskRoutesDeps>& d,
            const net::ExchangePtr& ex,
            std::string_view type) {
    auto snap = d->config.Get();
    const domain::KeyEntry* key = Authenticate(ex, *snap, d->clock);
    if (key == nullptr) {
        return;
    }
    const net::Request& req = ex->request();
    auto parsed = json::ParseObject(req.body);
    if (!parsed) {
        ex->Respond(gateway::ErrorResponse(parsed.error()));
        return;
    }
    boost::json::object body = std::move(*parsed);
    auto model = json::GetString(body, "model", json::Presence::kRequired);
    if (!model) {
        ex->Respond(gateway::ErrorResponse(model.error()));
        return;
    }
    auto prompt = json::GetString(body, "prompt", json::Presence::kRequired);
    if (!prompt) {
        ex->Respond(gateway::ErrorResponse(prompt.error()));
        return;
    }
    if (core::Trim(**prompt).empty()) {
        Fail(ex, ErrorCode::kInvalidRequest, "'prompt' must not be empty.", "prompt");
        return;
    }
    bool video = type == domain::kVideoTask;
    if (!video) {
        auto n = json::GetInt64(body, "n");
        if (!n) {
            ex->Respond(gateway::ErrorResponse(n.error()));
            return;
        }
        if (*n && (**n < 1 || **n > 10)) {
            Fail(ex, ErrorCode::kInvalidRequest, "'n' must be between 1 and 10.", "n");
            return;
        }
    }
    std::string webhook_url;
    auto wu = json::GetString(body, "webhook_url");
    if (!wu) {
        ex->Respond(gateway::ErrorResponse(wu.error()));
        return;
    }
    if (*wu) {
        if (!ValidHttpUrl(**wu)) {
            Fail(ex, ErrorCode::kInvalidRequest, "'webhook_url' must be an http(s) URL.",
                 "webhook_url");
            return;
        }
        webhook_url = **wu;
    }
    std::string webhook_headers;
    auto wh = json::GetStringMap(body, "webhook_headers");
    if (!wh) {
        ex->Respond(gateway::ErrorResponse(wh.error()));
        return;
    }
    if (*wh) {
        if ((*wh)->size() > 20) {
            Fail(ex, ErrorCode::kInvalidRequest, "At most 20 webhook headers.", "webhook_headers");
            return;
        }
        boost::json::object h;
        for (const auto& [k, v] : **wh) {
            bool bad = k.empty() || k.size() > 256 || v.size() > 4096 ||
                       k.find_first_of(" :\r\n") != std::string::npos ||
                       v.find_first_of("\r\n") != std::string::npos;
            if (bad) {
                Fail(ex, ErrorCode::kInvalidRequest, "Invalid webhook header '" + k + "'.",
                     "webhook_headers");
                return;
            }
            h[k] = v;
        }
        webhook_headers = json::Serialize(h);
    }
    auto timeout = json::GetInt64(body, "timeout_seconds");
    if (!timeout) {
        ex->Respond(gateway::ErrorResponse(timeout.error()));
        return;
    }
    if (*timeout && (**timeout < 1 || **timeout > 86400)) {
        Fail(ex, ErrorCode::kInvalidRequest, "'timeout_seconds' must be between 1 and 86400.",
             "timeout_seconds");
        return;
    }
    std::string idem(core::Trim(req.headers.Get("idempotency-key")));
    if (idem.size() > 255) {
        Fail(ex, ErrorCode::kInvalidRequest, "Idempotency-Key is too long (max 255).");
        return;
    }
    auto dep = snap->Resolve(*key, **model);
    if (!dep) {
        ex->Respond(gateway::ErrorResponse(dep.error()));
        return;
    }
    const auto& mapping = (*dep)->mapping;
    if (video ? !mapping.supports_video_generation : !mapping.supports_image_generation) {
        Fail(ex, ErrorCode::kInvalidRequest,
             "The model '" + **model + "' does not support " + (video ? "video" : "image") +
                 " generation.",
             "model");
        return;
    }
    auto available = d->book.Available(key->key.group_id);
    if (!available || *available <= 0) {
        Fail(ex, ErrorCode::kInsufficientBalance,
             "Insufficient balance: the key's group has no remaining credit.");
        return;
    }
    SubmitRequest sr;
    sr.type = std::string(type);
    sr.virtual_key_id = key->key.id;
    sr.group_id = key->key.group_id;
    sr.mapping_id = mapping.id;
    sr.model_alias = **model;
    sr.request_hash = core::Sha256Hex(req.body);
    body.erase("webhook_url");
    body.erase("webhook_headers");
    body.erase("timeout_seconds");
    sr.request_json = json::Serialize(body);
    sr.webhook_url = std::move(webhook_url);
    sr.webhook_headers_json = std::move(webhook_headers);
    sr.timeout_seconds = *timeout ? **timeout : 0;
    sr.idempotency_key = std::move(idem);
    std::string hash = sr.request_hash;
    std::string base = BaseUrl(*d, req);
    d->engine->Submit(ex->loop(), std::move(sr), [ex, hash, base](core::Result<SubmitOutcome> r) {
        if (!r) {
            ex->Respond(gateway::ErrorResponse(r.error()));
            return;
        }
        if (!r->created && r->task.request_hash != hash) {
            Fail(ex, ErrorCode::kConflict,
                 "This Idempotency-Key was used with a different request.");
            return;
        }
        net::Response resp = net::Response::Json(202, AcceptedJson(r->task, base));
        if (!r->created) {
            resp.headers.Add("Idempotent-Replayed", "true");
        }
        ex->Respond(std::move(resp));
    });
}

/// Runs `fn(key)` for an authenticated caller with the route's {task_id}.
template <class Fn>
void WithKey(const std::shared_ptr<TaskRoutesDeps>& d, const net::ExchangePtr& ex, Fn fn) {
    auto snap = d->config.Get();
    const domain::KeyEntry* key = Authenticate(ex, *snap, d->clock);
    if (key == nullptr) {
        return;
    }
    fn(key->key.id, ex->request().path_params.at(0));
}

// The image routes see image tasks only, the video routes video tasks only (another type is
// "not found" there, as another key's task is); the generic /v1/tasks routes see both.
core::Result<AsyncTask> OfView(core::Result<AsyncTask> r, TaskView view) {
    if (r && ((view == TaskView::kImage && r->type != domain::kImageTask) ||
              (view == TaskView::kVideo && r->type != domain::kVideoTask))) {
        return core::Fail(ErrorCode::kNotFound, "Task not found.", "task_id");
    }
    return r;
}

void RespondTask(const net::ExchangePtr& ex,
                 core::Result<AsyncTask> r,
                 TaskView view,
                 int status = 200) {
    r = OfView(std::move(r), view);
    if (!r) {
        ex->Respond(gateway::ErrorResponse(r.error()));
        return;
    }
    ex->Respond(net::Response::Json(status, TaskJson(*r, view)));
}

}  // namespace

std::string TaskJson(const AsyncTask& t, TaskView view) {
    std::string out = "{\"task_id\":" + core::JsonQuote(t.id);
    if (view == TaskView::kGeneric) {
        out += ",\"task_type\":" + core::JsonQuote(t.type);
    }
    out += ",\"status\":" + core::JsonQuote(domain::ToString(t.state));
    out += ",\"progress\":" + std::to_string(t.progress);
    out += ",\"message\":" + core::JsonQuote(t.message);
    if (view == TaskView::kGeneric) {
        out += ",\"result\":" + (t.result_json.empty() ? std::string("null") : t.result_json);
        out += ",\"error\":" +
               (t.error_message.empty() ? std::string("null") : core::JsonQuote(t.error_message));
    } else {
        if (!t.result_json.empty()) {
            out += ",\"result\":" + t.result_json;
        }
        if (!t.error_message.empty()) {
            out += ",\"error\":" + core::JsonQuote(t.error_message);
        }
    }
    out += ",\"created_at\":" + core::JsonQuote(Iso(t.created_at_ms));
    out += ",\"updated_at\":" + core::JsonQuote(Iso(t.updated_at_ms));
    out += ",\"completed_at\":" + IsoOrNull(t.completed_at_ms);
    out += ",\"retry_count\":" + std::to_string(t.retry_count);
    out += ",\"max_retries\":" + std::to_string(t.max_retries);
    out += std::string(",\"retryable\":") + (t.retryable ? "true" : "false");
    if (view == TaskView::kVideo || view == TaskView::kImage) {
        out += ",\"model\":" + core::JsonQuote(t.model_alias);
    }
    out += "}";
    return out;
}

void RegisterTaskRoutes(net::Router& router, std::shared_ptr<TaskRoutesDeps> d) {
    router.Add("POST", "/v1/images/generations/async",
               [d](const net::ExchangePtr& ex) { Submit(d, ex, domain::kImageTask); });
    router.Add("POST", "/v1/videos/generations/async",
               [d](const net::ExchangePtr& ex) { Submit(d, ex, domain::kVideoTask); });

    auto status = [d](TaskView view) {
        return [d, view](const net::ExchangePtr& ex) {
            WithKey(d, ex, [&](domain::Id key, const std::string& id) {
                d->engine->Get(ex->loop(), id, key, [ex, view](core::Result<AsyncTask> r) {
                    RespondTask(ex, std::move(r), view);
                });
            });
        };
    };
    router.Add("GET", "/v1/images/generations/{task_id}/status", status(TaskView::kImage));
    router.Add("GET", "/v1/videos/generations/tasks/{task_id}", status(TaskView::kVideo));
    router.Add("GET", "/v1/tasks/{task_id}", status(TaskView::kGeneric));

    auto cancel = [d](TaskView view) {
        return [d, view](const net::ExchangePtr& ex) {
            WithKey(d, ex, [&](domain::Id key, const std::string& id) {
                auto do_cancel = [d, ex, view, key, id] {
                    d->engine->Cancel(ex->loop(), id, key, [ex, view](core::Result<AsyncTask> r) {
                        if (!r) {
                            ex->Respond(gateway::ErrorResponse(r.error()));
                            return;
                        }
                        if (view == TaskView::kGeneric) {
                            ex->Respond(net::Response::Json(200, TaskJson(*r, view)));
                            return;
                        }
                        ex->Respond(
                            net::Response::Json(200, "{\"task_id\":" + core::JsonQuote(r->id) +
                                                         ",\"status\":\"cancelled\"}"));
                    });
                };
                if (view == TaskView::kGeneric) {
                    do_cancel();
                    return;
                }
                // A typed route cancels only its type: look first (a task's type never changes).
                d->engine->Get(ex->loop(), id, key,
                               [ex, view, do_cancel](core::Result<AsyncTask> r) {
                                   r = OfView(std::move(r), view);
                                   if (!r) {
                                       ex->Respond(gateway::ErrorResponse(r.error()));
                                       return;
                                   }
                                   do_cancel();
                               });
            });
        };
    };
    router.Add("DELETE", "/v1/images/generations/{task_id}", cancel(TaskView::kImage));
    router.Add("DELETE", "/v1/videos/generations/{task_id}", cancel(TaskView::kVideo));
    router.Add("POST", "/v1/tasks/{task_id}/cancel", cancel(TaskView::kGeneric));

    router.Add(
        "POST", "/v1/videos/generations/tasks/{task_id}/retry", [d](const net::ExchangePtr& ex) {
            WithKey(d, ex, [&](domain::Id key, const std::string& id) {
                d->engine->Get(
                    ex->loop(), id, key, [d, ex, key, id](core::Result<AsyncTask> found) {
                        found = OfView(std::move(found), TaskView::kVideo);
                        if (!found) {
                            ex->Respond(gateway::ErrorResponse(found.error()));
                            return;
                        }
                        d->engine->Retry(ex->loop(), id, key, [ex](core::Result<AsyncTask> r) {
                            RespondTask(ex, std::move(r), TaskView::kVideo, 202);
                        });
                    });
            });
        });

    router.Add("GET", "/v1/tasks/{task_id}/poll", [d](const net::ExchangePtr& ex) {
        WithKey(d, ex, [&](domain::Id key, const std::string& id) {
            auto query = ex->request().query();
            int64_t timeout_s = 30;
            double interval_s = 1.0;
            if (auto t = core::QueryParam(query, "timeout")) {
                auto v = core::ParseInt(*t);
                if (!v || *v < 0) {
                    Fail(ex, ErrorCode::kInvalidRequest, "'timeout' must be seconds (0-600).",
                         "timeout");
                    return;
                }
                timeout_s = std::min<int64_t>(*v, 600);
            }
            if (auto i = core::QueryParam(query, "interval")) {
                char* end = nullptr;
                double v = std::strtod(i->c_str(), &end);
                if (end == i->c_str() || v <= 0) {
                    Fail(ex, ErrorCode::kInvalidRequest, "'interval' must be positive seconds.",
                         "interval");
                    return;
                }
                interval_s = std::clamp(v, 0.1, 60.0);
            }
            d->engine->WaitTerminal(
                ex->loop(), id, key, std::chrono::seconds(timeout_s),
                std::chrono::milliseconds(static_cast<int64_t>(interval_s * 1000)),
                [ex](core::Result<AsyncTask> r) {
                    RespondTask(ex, std::move(r), TaskView::kGeneric);
                });
        });
    });

    // Generated media: capability URLs (unguessable task ids), no key needed — like the
    // original, so browsers and <img> tags can fetch them.
    router.Add("GET", "/v1/media/{key*}", [d](const net::ExchangePtr& ex) {
        media::ServeMedia(ex, d->media, ex->request().path_params.at(0));
    });
}

}  // namespace conduit::tasks
