#include "gateway/proxy.hpp"

#include "core/strings.hpp"
#include "domain/cost.hpp"
#include "gateway/anthropic.hpp"
#include "gateway/budget_gate.hpp"
#include "gateway/errors.hpp"
#include "json/json_peek.hpp"
#include "json/sse.hpp"
#include "obs/logging.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_map>

namespace conduit::gateway {

namespace {

using core::ErrorCode;
using Kind = OpenAIProxy::Kind;

void Fail(const net::ExchangePtr& ex, ErrorCode code, std::string message, std::string param = {}) {
    ex->Respond(ErrorResponse(core::Error{code, std::move(message), std::move(param)}));
}

std::string_view UpstreamPath(Kind kind) {
    switch (kind) {
        case Kind::kChat:
            return "/chat/completions";
        case Kind::kCompletion:
            return "/completions";
        case Kind::kEmbedding:
            return "/embeddings";
        case Kind::kImage:
            return "/images/generations";
    }
    return "/";
}

static_assert(GatewayMetrics::kRequestTypes[static_cast<size_t>(Kind::kChat)] == "chat" &&
              GatewayMetrics::kRequestTypes[static_cast<size_t>(Kind::kCompletion)] ==
                  "completion" &&
              GatewayMetrics::kRequestTypes[static_cast<size_t>(Kind::kEmbedding)] == "embedding" &&
              GatewayMetrics::kRequestTypes[static_cast<size_t>(Kind::kImage)] == "image");

std::string_view KindName(Kind kind) {
    switch (kind) {
        case Kind::kChat:
            return "chat";
        case Kind::kCompletion:
            return "completion";
        case Kind::kEmbedding:
            return "embedding";
        case Kind::kImage:
            return "image";
    }
    return "unknown";
}

domain::RequestKind ToRequestKind(Kind kind) {
    switch (kind) {
        case Kind::kChat:
            return domain::RequestKind::kChat;
        case Kind::kCompletion:
            return domain::RequestKind::kCompletion;
        case Kind::kEmbedding:
            return domain::RequestKind::kEmbedding;
        case Kind::kImage:
            return domain::RequestKind::kImage;
    }
    return domain::RequestKind::kChat;
}

std::string_view FailureKind(http_client::Failure f) {
    switch (f) {
        case http_client::Failure::kConnect:
            return "connect";
        case http_client::Failure::kTimeout:
            return "timeout";
        case http_client::Failure::kCancelled:
            return "cancelled";
        case http_client::Failure::kOther:
            return "other";
        case http_client::Failure::kNone:
            return "none";
    }
    return "other";
}

/// State of one proxied request, alive until the upstream call ends or the client leaves.
struct ProxyCall : std::enable_shared_from_this<ProxyCall> {
    ProxyCall(const ProxyDeps& d, net::ExchangePtr e) : deps(d), ex(std::move(e)) {}

    const ProxyDeps& deps;
    net::ExchangePtr ex;
    domain::SnapshotPtr snapshot;  // keeps key and deployment alive
    const domain::KeyEntry* key = nullptr;
    const domain::Deployment* deployment = nullptr;
    Kind kind = Kind::kChat;
    bool stream = false;
    bool client_wants_usage = false;
    int64_t images_requested = 1;
    size_t request_bytes = 0;

    // Routing: the deployments to try in order, the current one (`deployment`) and its key.
    std::vector<const domain::Deployment*> plan;
    size_t plan_pos = 0;
    size_t credential = 0;  // index into deployment->credentials
    int attempts = 0;       // upstream calls started
    bool acquired = false;  // the current deployment's breaker admitted this attempt
    json::PeekedRequest peek;
    bool force_usage = false;
    DeploymentHealth* health = nullptr;
    core::TimerPtr backoff;
    // Set for a stream from an Anthropic deployment (translated to OpenAI chunks).
    std::optional<anthropic::AnthropicStreamTranslator> translator;
    // The worst-case cost reserved from the group's balance, settled once in Record().
    std::optional<BudgetGate::Hold> hold;

    void SettleHold(domain::Micros actual) {
        if (hold && deps.budget != nullptr) {
            deps.budget->Settle(*hold, actual);
        }
        hold.reset();
    }

    bool IsAnthropic() const {
        return deployment->provider.type == domain::ProviderType::kAnthropic;
    }
    /// The alias the client asked for (answers carry it, whichever deployment served).
    std::string ClientModel() const { return peek.model.value_or(deployment->mapping.model_alias); }
    /// The request body for the current deployment (model rewritten, or translated for
    /// Anthropic; the translation was validated before the first attempt).
    std::string UpstreamBody() const {
        if (IsAnthropic()) {
            auto t = anthropic::TranslateChatRequest(ex->request().body,
                                                     deployment->mapping.provider_model_id);
            return t ? std::move(t->body) : std::string();
        }
        return json::RewriteForUpstream(ex->request().body, peek,
                                        deployment->mapping.provider_model_id, force_usage);
    }

    http_client::CallPtr call;
    json::SseScanner scanner;
    int upstream_status = 0;
    net::Headers upstream_headers;
    std::string body;  // non-streamed upstream body
    bool began_stream = false;
    bool finished = false;
    bool body_overflow = false;
    json::Usage usage;
    int64_t content_events = 0;
    int64_t upstream_started_ns = 0;

    /// Starts the next attempt: the first deployment of the plan (from plan_pos) whose breaker
    /// admits it. False when none is left.
    bool Launch();
    /// Starts an attempt on `deployment` (its breaker already admitted it) with fresh
    /// per-attempt state.
    void StartAttempt();
    void Start(std::string upstream_body);
    /// After a failed attempt that may be retried: starts the next one (now, or after a
    /// backoff when the same deployment is tried again) and returns true; false when the
    /// failure is final.
    bool Retry(bool key_rejected, bool timed_out);
    void ReleaseAttempt();
    void OnHeaders(int status, net::Headers headers);
    bool OnData(std::string_view data);
    void OnDone(const http_client::Outcome& outcome);
    void OnClientGone();
    void HandleEvent(const json::SseScanner::Event& ev, std::string& out);
    void RespondBuffered(const http_client::Outcome& outcome);
    void RespondAnthropic(const http_client::Outcome& outcome, int status);
    void Record(int status);
    /// Per-key and usage metrics and the request's log line.
    void Observe(const domain::RequestLogRow& row, bool billable);
    int64_t OverheadUs(int64_t upstream_wait_ns) const;
};

bool ProxyCall::Launch() {
    const int64_t now = SteadyNowMs();
    while (plan_pos < plan.size() && !health->TryAcquire(*plan[plan_pos], now)) {
        ++plan_pos;  // its breaker opened, or its half-open probe is taken
        credential = 0;
    }
    if (plan_pos >= plan.size()) {
        return false;
    }
    deployment = plan[plan_pos];
    StartAttempt();
    return true;
}

void ProxyCall::StartAttempt() {
    acquired = true;
    ++attempts;
    if (attempts > 1) {
        ex->extra_headers().Set("X-Conduit-Attempts", std::to_string(attempts));
    }
    upstream_status = 0;
    upstream_headers = net::Headers{};
    body.clear();
    body_overflow = false;
    finished = false;
    usage = json::Usage{};
    content_events = 0;
    scanner = json::SseScanner{};
    translator.reset();
    Start(UpstreamBody());
}

void ProxyCall::ReleaseAttempt() {
    if (acquired) {
        acquired = false;
        health->Release(*deployment);
    }
}

void ProxyCall::Start(std::string upstream_body) {
    const domain::Deployment& d = *deployment;
    const domain::Credential* cred =
        credential < d.credentials.size() ? &d.credentials[credential] : nullptr;
    const std::string& base_url = cred != nullptr ? cred->base_url : d.base_url;
    const std::string& authorization = cred != nullptr ? cred->authorization : d.authorization;
    const std::string& organization = cred != nullptr ? cred->organization : d.organization;
    http_client::Request req;
    req.method = "POST";
    std::string_view path = IsAnthropic() ? anthropic::kMessagesPath : UpstreamPath(kind);
    req.url.reserve(base_url.size() + path.size());
    req.url.append(base_url).append(path);
    if (IsAnthropic()) {
        req.headers =
            anthropic::UpstreamHeaders(cred != nullptr ? cred->api_key : d.api_key, stream);
    } else {
        req.headers.reserve(5);
        req.headers.Add("Content-Type", "application/json");
        req.headers.Add("Accept", stream ? "text/event-stream" : "application/json");
        if (!authorization.empty()) {
            req.headers.Add("Authorization", authorization);
        }
        if (!organization.empty()) {
            req.headers.Add("OpenAI-Organization", organization);
        }
    }
    if (auto rid = ex->extra_headers().Get("X-Request-Id"); !rid.empty()) {
        req.headers.Add("X-Request-Id", std::string(rid));
    }
    req.body = std::move(upstream_body);
    req.timeouts = deps.timeouts;

    std::weak_ptr<ProxyCall> weak = shared_from_this();
    http_client::Callbacks cb;
    cb.on_headers = [weak](int status, net::Headers headers) {
        if (auto self = weak.lock()) {
            self->OnHeaders(status, std::move(headers));
        }
    };
    cb.on_data = [weak](std::string_view data) {
        auto self = weak.lock();
        return self ? self->OnData(data) : true;
    };
    // on_done holds a strong reference: the call must outlive the upstream transfer.
    cb.on_done = [self = shared_from_this()](const http_client::Outcome& o) { self->OnDone(o); };
    ex->SetOnClose([weak] {
        if (auto self = weak.lock()) {
            self->OnClientGone();
        }
    });
    upstream_started_ns = core::SystemClock::SteadyNowNs();
    call = deps.client(ex->loop().Index()).Start(std::move(req), std::move(cb));
}

int64_t ProxyCall::OverheadUs(int64_t upstream_wait_ns) const {
    // Gateway time runs from the request's first byte; upstream wait is only the time between
    // the request having been sent and the response bytes arriving, so the HTTP client's own
    // work counts as gateway time.
    const auto& req = ex->request();
    int64_t start = req.first_byte_ns != 0 ? req.first_byte_ns : req.received_ns;
    int64_t total = core::SystemClock::SteadyNowNs() - start;
    int64_t overhead = total - upstream_wait_ns;
    return overhead < 0 ? 0 : overhead / 1000;
}

bool ProxyCall::Retry(bool key_rejected, bool timed_out) {
    const auto& router = snapshot->router();
    if (attempts > router.max_retries) {
        return false;
    }
    if (key_rejected && credential + 1 < deployment->credentials.size()) {
        // Same deployment, next key (primary first): at once.
        ReleaseAttempt();
        ++credential;
        if (!health->TryAcquire(*deployment, SteadyNowMs())) {
            return false;
        }
        StartAttempt();
        return true;
    }
    ReleaseAttempt();
    if (plan_pos + 1 < plan.size()) {
        // Another deployment (or a fallback model): at once.
        ++plan_pos;
        credential = 0;
        return Launch();
    }
    if (timed_out || key_rejected) {
        // The only deployment left timed out (another wait would double the client's) or has
        // no working key.
        return false;
    }
    // The same deployment again, after a backoff (connect error, 429, 5xx).
    const int n = attempts;  // 1 before the second attempt
    int64_t delay = router.retry_base_delay_ms;
    for (int i = 1; i < n && delay < router.retry_max_delay_ms; ++i) {
        delay *= 2;
    }
    delay = std::min(delay, router.retry_max_delay_ms);
    credential = 0;
    std::weak_ptr<ProxyCall> weak = shared_from_this();
    finished = false;  // the client may still leave during the wait (OnClientGone)
    call.reset();
    backoff = ex->loop().StartTimer(std::chrono::milliseconds(delay), [weak] {
        auto self = weak.lock();
        if (!self || self->finished || self->ex->closed()) {
            return;
        }
        self->backoff.reset();
        if (!self->Launch()) {
            self->finished = true;
            self->ex->Respond(
                ErrorResponse({ErrorCode::kUnavailable,
                               "The upstream provider '" + self->deployment->provider.name +
                                   "' is unavailable (circuit open); try again later.",
                               ""}));
            self->Record(503);
        }
    });
    // Keep the call alive during the wait (the timer holds only a weak reference).
    ex->SetOnClose([self = shared_from_this()] { self->OnClientGone(); });
    return true;
}

void ProxyCall::OnHeaders(int status, net::Headers headers) {
    upstream_status = status;
    upstream_headers = std::move(headers);
    if (!stream || status < 200 || status >= 300 || ex->closed()) {
        return;  // buffered: answered in OnDone
    }
    http_client::Outcome t = call ? call->Timing() : http_client::Outcome{};
    int64_t sent = t.sent_ns != 0 ? t.sent_ns : upstream_started_ns;
    int64_t arrived = t.first_byte_ns != 0 ? t.first_byte_ns : core::SystemClock::SteadyNowNs();
    int64_t overhead_us = OverheadUs(arrived - sent);
    // The stream is committed: this attempt succeeded (latency = time to the first byte).
    if (acquired) {
        acquired = false;
        health->Record(*deployment, true, static_cast<double>(arrived - upstream_started_ns) / 1e6,
                       SteadyNowMs());
    }
    deps.metrics.overhead.Observe(static_cast<double>(overhead_us) / 1e6);
    if (IsAnthropic()) {
        translator.emplace(anthropic::AnthropicStreamTranslator::Options{
            ClientModel(), deps.clock.NowUnixMs() / 1000, client_wants_usage});
    }
    net::Headers h;
    h.Add("Content-Type", "text/event-stream; charset=utf-8");
    h.Add("Cache-Control", "no-cache");
    h.Add("X-Accel-Buffering", "no");
    h.Add("X-Conduit-Overhead-Us", std::to_string(overhead_us));
    began_stream = true;
    ex->BeginStream(200, std::move(h));
}

bool ProxyCall::OnData(std::string_view data) {
    if (!began_stream) {
        if (body.size() + data.size() > deps.max_upstream_body_bytes) {
            body_overflow = true;
            return true;  // keep draining; answered with 502 in OnDone
        }
        body.append(data);
        return true;
    }
    if (ex->closed()) {
        return true;
    }
    if (ex->BufferedBytes() > deps.stream_high_water_bytes) {
        // The client reads slower than the upstream writes: pause the upstream until the
        // client has taken what is queued (backpressure, DESIGN §2).
        std::weak_ptr<ProxyCall> weak = shared_from_this();
        ex->SetOnDrain([weak] {
            if (auto self = weak.lock(); self && self->call) {
                self->call->Resume();
            }
        });
        return false;
    }
    if (translator) {
        std::string out;
        const bool ok = translator->Feed(data, out);
        content_events = translator->content_chunks();
        if (!out.empty()) {
            ex->Write(std::move(out));
        }
        if (!ok) {
            if (call) {
                call->Cancel();
            }
            core::Error err{ErrorCode::kUpstreamError, "Upstream sent an oversized stream event.",
                            ""};
            ex->Write("data: " + ErrorBody(err) + "\n\n");
            ex->EndStream();
            finished = true;
            Record(502);
        }
        return true;
    }
    // Fast path: whole events (LF line endings, ending at a blank line) with no usage in them
    // are forwarded as they are, without scanning each event.
    if (scanner.AtEventBoundary() && data.size() >= 2 && data.substr(data.size() - 2) == "\n\n" &&
        !json::MayContainUsage(data)) {
        for (size_t pos = 0; (pos = data.find("data:", pos)) != std::string_view::npos; pos += 5) {
            ++content_events;
        }
        ex->Write(std::string(data));
        return true;
    }
    std::string out;
    out.reserve(data.size() + 64);
    bool ok = scanner.Feed(data, [&](const json::SseScanner::Event& ev) { HandleEvent(ev, out); });
    if (!out.empty()) {
        ex->Write(std::move(out));
    }
    if (!ok) {
        // An event larger than the scanner allows: stop instead of buffering without bound.
        if (call) {
            call->Cancel();
        }
        core::Error err{ErrorCode::kUpstreamError, "Upstream sent an oversized stream event.", ""};
        ex->Write("data: " + ErrorBody(err) + "\n\n");
        ex->EndStream();
        finished = true;
        Record(502);
    }
    return true;
}

void ProxyCall::HandleEvent(const json::SseScanner::Event& ev, std::string& out) {
    if (ev.has_data && json::MayContainUsage(ev.data)) {
        json::Usage u = json::ExtractUsage(ev.data);
        if (u.present) {
            usage = u;
            // We asked for usage on the client's behalf: drop the usage-only chunk it did not
            // ask for, so it sees exactly what the provider would have sent it.
            if (!client_wants_usage && json::HasEmptyChoices(ev.data)) {
                return;
            }
        }
    }
    if (ev.has_data && !json::IsDoneEvent(ev)) {
        ++content_events;
    }
    out.append(ev.raw);
}

void ProxyCall::OnDone(const http_client::Outcome& outcome) {
    if (finished) {
        return;
    }
    finished = true;
    double seconds = static_cast<double>(outcome.finished_ns - outcome.started_ns) / 1e9;
    deps.metrics.upstream_duration.With({deployment->provider.name}).Observe(seconds);
    if (outcome.failure != http_client::Failure::kNone) {
        deps.metrics.upstream_failures
            .With({deployment->provider.name, FailureKind(outcome.failure)})
            .Inc();
    }
    if (ex->closed()) {
        return;  // recorded in OnClientGone
    }
    if (!began_stream) {
        using http_client::Failure;
        const bool transport = outcome.failure == Failure::kConnect ||
                               outcome.failure == Failure::kTimeout ||
                               outcome.failure == Failure::kOther;
        const int status = upstream_status;
        const bool key_rejected = outcome.failure == Failure::kNone && !body_overflow &&
                                  (status == 401 || status == 403) &&
                                  credential < deployment->credentials.size();
        const bool retryable = transport || (outcome.failure == Failure::kNone && !body_overflow &&
                                             (status == 429 || status >= 500));
        if (key_rejected) {
            const auto& cred = deployment->credentials[credential];
            spdlog::warn("provider '{}' rejected key #{} with HTTP {}", deployment->provider.name,
                         cred.provider_key_id, status);
            if (deps.on_key_rejected) {
                deps.on_key_rejected(cred.provider_key_id, status);
            }
        }
        if (acquired) {
            // A rejected key is the key's fault, not the deployment's, while other keys remain.
            const bool keys_left = key_rejected && credential + 1 < deployment->credentials.size();
            if (!keys_left) {
                acquired = false;
                const int64_t last =
                    outcome.last_read_ns != 0 ? outcome.last_read_ns : outcome.finished_ns;
                health->Record(*deployment, !(retryable || key_rejected),
                               static_cast<double>(last - upstream_started_ns) / 1e6,
                               SteadyNowMs());
            }
        }
        if ((retryable || key_rejected) &&
            Retry(key_rejected, outcome.failure == Failure::kTimeout)) {
            return;
        }
        ReleaseAttempt();
        RespondBuffered(outcome);
        return;
    }
    if (translator) {
        usage = translator->usage().ToOpenAI();  // what the provider reported, even if cut
    }
    if (outcome.failure != http_client::Failure::kNone) {
        core::Error err{outcome.failure == http_client::Failure::kTimeout
                            ? ErrorCode::kUpstreamTimeout
                            : ErrorCode::kUpstreamError,
                        "The upstream stream failed: " + outcome.message, ""};
        ex->Write("data: " + ErrorBody(err) + "\n\n");
        ex->EndStream();
        Record(200);
        return;
    }
    if (translator) {
        if (!translator->Finished()) {
            core::Error err{ErrorCode::kUpstreamError,
                            "The upstream stream ended before its last event.", ""};
            ex->Write("data: " + ErrorBody(err) + "\n\n");
        }
        ex->EndStream();
        Record(200);
        return;
    }
    std::string rest = scanner.TakeRemainder();
    if (!rest.empty()) {
        ex->Write(std::move(rest));
    }
    ex->EndStream();
    Record(200);
}

void ProxyCall::RespondAnthropic(const http_client::Outcome& outcome, int status) {
    if (status < 200 || status >= 300) {
        auto mapped = anthropic::MapError(status, body);
        net::Response r = ErrorResponse(mapped.error);
        if (mapped.status == 429) {
            if (auto ra = upstream_headers.Get("retry-after"); !ra.empty()) {
                r.headers.Add("Retry-After", std::string(ra));
            }
        }
        ex->Respond(std::move(r));
        Record(mapped.status);
        return;
    }
    auto translated =
        anthropic::TranslateChatResponse(body, ClientModel(), deps.clock.NowUnixMs() / 1000);
    if (!translated) {
        ex->Respond(ErrorResponse(translated.error()));
        Record(502);
        return;
    }
    usage = translated->usage.ToOpenAI();
    int64_t sent = outcome.sent_ns != 0 ? outcome.sent_ns : outcome.started_ns;
    int64_t last = outcome.last_read_ns != 0 ? outcome.last_read_ns : outcome.finished_ns;
    int64_t overhead_us = OverheadUs(last - sent);
    deps.metrics.overhead.Observe(static_cast<double>(overhead_us) / 1e6);
    net::Response r = net::Response::Json(200, std::move(translated->body));
    r.headers.Add("X-Conduit-Overhead-Us", std::to_string(overhead_us));
    ex->Respond(std::move(r));
    Record(200);
}

void ProxyCall::RespondBuffered(const http_client::Outcome& outcome) {
    using http_client::Failure;
    if (outcome.failure == Failure::kConnect) {
        ex->Respond(ErrorResponse(
            {ErrorCode::kUpstreamError,
             "Could not connect to the upstream provider '" + deployment->provider.name + "'.",
             ""}));
        Record(502);
        return;
    }
    if (outcome.failure == Failure::kTimeout) {
        ex->Respond(ErrorResponse(
            {ErrorCode::kUpstreamTimeout,
             "The upstream provider '" + deployment->provider.name + "' did not answer in time.",
             ""}));
        Record(504);
        return;
    }
    if (outcome.failure != Failure::kNone || body_overflow) {
        ex->Respond(
            ErrorResponse({ErrorCode::kUpstreamError,
                           body_overflow ? "The upstream response is too large."
                                         : "The upstream provider failed: " + outcome.message,
                           ""}));
        Record(502);
        return;
    }
    int status = upstream_status;
    if (IsAnthropic()) {
        RespondAnthropic(outcome, status);
        return;
    }
    if (status >= 500) {
        // Provider faults become a gateway error; the provider's body may reveal internals.
        ex->Respond(ErrorResponse(
            {ErrorCode::kUpstreamError,
             "The upstream provider returned HTTP " + std::to_string(status) + ".", ""}));
        Record(502);
        return;
    }
    net::Response r;
    r.status = status;
    auto ct = upstream_headers.Get("content-type");
    r.headers.Add("Content-Type", ct.empty() ? "application/json" : std::string(ct));
    if (status == 429) {
        if (auto ra = upstream_headers.Get("retry-after"); !ra.empty()) {
            r.headers.Add("Retry-After", std::string(ra));
        }
    }
    if (status >= 200 && status < 300) {
        usage = json::ExtractUsage(body);
    }
    int64_t sent = outcome.sent_ns != 0 ? outcome.sent_ns : outcome.started_ns;
    int64_t last = outcome.last_read_ns != 0 ? outcome.last_read_ns : outcome.finished_ns;
    int64_t overhead_us = OverheadUs(last - sent);
    deps.metrics.overhead.Observe(static_cast<double>(overhead_us) / 1e6);
    r.headers.Add("X-Conduit-Overhead-Us", std::to_string(overhead_us));
    r.body = std::move(body);
    ex->Respond(std::move(r));
    Record(status);
}

void ProxyCall::OnClientGone() {
    if (finished) {
        return;
    }
    finished = true;
    if (backoff) {
        backoff->Cancel();
        backoff.reset();
    }
    if (call) {
        call->Cancel();  // releases the upstream connection now
    }
    ReleaseAttempt();
    deps.metrics.streams_aborted.Inc();
    Record(499);
}

void ProxyCall::Observe(const domain::RequestLogRow& row, bool billable) {
    // Per-key totals (label: the key id); the family lookup takes a lock, so each loop thread
    // keeps its own memo of the series it has used.
    thread_local std::unordered_map<domain::Id, std::pair<obs::Counter*, obs::Counter*>> memo;
    thread_local uint64_t memo_owner = 0;
    if (memo_owner != deps.metrics.uid) {
        memo.clear();
        memo_owner = deps.metrics.uid;
    }
    auto it = memo.find(row.virtual_key_id);
    if (it == memo.end()) {
        const std::string id = std::to_string(row.virtual_key_id);
        it = memo.emplace(row.virtual_key_id,
                          std::make_pair(&deps.metrics.key_requests.With({id}),
                                         &deps.metrics.key_spend_micros.With({id})))
                 .first;
    }
    it->second.first->Inc();
    const std::string_view type = KindName(kind);
    const auto k = static_cast<size_t>(kind);  // GatewayMetrics::kRequestTypes order
    if (billable) {
        deps.metrics.usage_requests_by_type[k]->Inc();
        if (row.cost > 0) {
            it->second.second->Inc(static_cast<uint64_t>(row.cost));
        }
    } else {
        deps.metrics.usage_failures_by_type[k]->Inc();
    }
    // One structured line per request (JSON logs: top-level fields), never a secret.
    if (spdlog::should_log(spdlog::level::info)) {
        const std::string key_id = std::to_string(row.virtual_key_id);
        const std::string status = std::to_string(row.status_code);
        const std::string ms = std::to_string(row.response_time_ms);
        const std::string tokens_in = std::to_string(row.input_tokens);
        const std::string tokens_out = std::to_string(row.output_tokens);
        const std::string cost = std::to_string(row.cost);
        const std::string tries = std::to_string(attempts);
        obs::LogEvent(spdlog::level::info, "request",
                      {{"request_id", row.request_id},
                       {"key_id", key_id},
                       {"model", row.model_alias},
                       {"provider", deployment->provider.name},
                       {"type", type},
                       {"status", status},
                       {"stream", stream ? "true" : "false"},
                       {"duration_ms", ms},
                       {"input_tokens", tokens_in},
                       {"output_tokens", tokens_out},
                       {"cost_micros", cost},
                       {"attempts", tries}});
    }
}

void ProxyCall::Record(int status) {
    deps.metrics.model_requests.With({deployment->mapping.model_alias, std::to_string(status)})
        .Inc();
    // Requests that failed are not billed; a client that left mid-stream pays for what the
    // provider produced until then.
    bool billable = (status >= 200 && status < 300) || (status == 499 && began_stream);
    domain::RequestLogRow row;
    row.request_id = std::string(ex->extra_headers().Get("X-Request-Id"));
    row.virtual_key_id = key->key.id;
    row.group_id = key->key.group_id;
    row.model_alias = deployment->mapping.model_alias;
    row.provider_model = deployment->mapping.provider_model_id;
    row.request_type = std::string(KindName(kind));
    row.status_code = status;
    row.streamed = stream;
    row.client_ip = ex->request().remote_address;
    row.timestamp_ms = deps.clock.NowUnixMs();
    row.response_time_ms =
        (core::SystemClock::SteadyNowNs() - ex->request().received_ns) / 1'000'000;
    if (billable) {
        domain::UsageAmounts amounts;
        if (usage.present) {
            amounts.prompt_tokens = usage.prompt_tokens;
            amounts.completion_tokens = usage.completion_tokens;
        } else if (kind != Kind::kImage) {
            // No usage from the provider: estimate (≈4 bytes per token) and mark it.
            row.usage_estimated = true;
            amounts.prompt_tokens = static_cast<int64_t>(request_bytes / 4) + 1;
            amounts.completion_tokens =
                stream ? content_events : static_cast<int64_t>(body.size() / 4);
        }
        amounts.images = kind == Kind::kImage ? images_requested : 0;
        row.input_tokens = amounts.prompt_tokens;
        row.output_tokens = amounts.completion_tokens;
        const domain::ModelCost* cost = deployment->cost ? &*deployment->cost : nullptr;
        row.cost = domain::ComputeCost(cost, ToRequestKind(kind), amounts);
        deps.metrics.tokens.With({"prompt"}).Inc(static_cast<uint64_t>(amounts.prompt_tokens));
        deps.metrics.tokens.With({"completion"})
            .Inc(static_cast<uint64_t>(amounts.completion_tokens));
        if (row.cost > 0) {
            deps.metrics.spend_micros.Inc(static_cast<uint64_t>(row.cost));
        }
    }
    const domain::Micros billed = billable ? row.cost : 0;
    Observe(row, billable);
    if (billable && deps.on_usage) {
        deps.on_usage(key->key, row.input_tokens + row.output_tokens);  // e.g. tokens per minute
    }
    deps.spend.Record(std::move(row));
    SettleHold(billed);  // after the spend is in the BalanceBook
}

}  // namespace

OpenAIProxy::OpenAIProxy(ProxyDeps deps) : deps_(std::move(deps)) {
    if (deps_.health == nullptr) {
        own_registry_ = std::make_unique<obs::Registry>();
        own_health_ = std::make_unique<DeploymentHealth>(domain::BreakerOptions{}, *own_registry_);
    }
}

std::string_view OpenAIProxy::PresentedKey(const net::Request& req) {
    auto bearer = req.BearerToken();
    if (!bearer.empty()) {
        return bearer;
    }
    return core::Trim(req.headers.Get("x-api-key"));
}

void OpenAIProxy::ChatCompletions(const net::ExchangePtr& ex) { Proxy(ex, Kind::kChat); }
void OpenAIProxy::Completions(const net::ExchangePtr& ex) { Proxy(ex, Kind::kCompletion); }
void OpenAIProxy::Embeddings(const net::ExchangePtr& ex) { Proxy(ex, Kind::kEmbedding); }
void OpenAIProxy::ImageGenerations(const net::ExchangePtr& ex) { Proxy(ex, Kind::kImage); }

void OpenAIProxy::Proxy(const net::ExchangePtr& ex, Kind kind) {
    auto snapshot = deps_.config.Get();
    auto& req = ex->request();
    auto key = snapshot->Authenticate(PresentedKey(req), deps_.clock.NowUnixMs());
    if (!key) {
        ex->Respond(ErrorResponse(key.error()));
        return;
    }
    auto peek = json::PeekRequest(req.body);
    if (!peek) {
        ex->Respond(ErrorResponse(peek.error()));
        return;
    }
    if (!peek->model || peek->model->empty()) {
        Fail(ex, ErrorCode::kInvalidRequest, "Missing required parameter: 'model'.", "model");
        return;
    }
    switch (kind) {
        case Kind::kChat:
            if (!peek->has_messages) {
                Fail(ex, ErrorCode::kInvalidRequest, "Missing required parameter: 'messages'.",
                     "messages");
                return;
            }
            break;
        case Kind::kCompletion:
        case Kind::kImage:
            if (!peek->has_prompt) {
                Fail(ex, ErrorCode::kInvalidRequest, "Missing required parameter: 'prompt'.",
                     "prompt");
                return;
            }
            break;
        case Kind::kEmbedding:
            if (!peek->has_input) {
                Fail(ex, ErrorCode::kInvalidRequest, "Missing required parameter: 'input'.",
                     "input");
                return;
            }
            break;
    }
    auto deployment = snapshot->Resolve(**key, *peek->model);
    if (!deployment) {
        ex->Respond(ErrorResponse(deployment.error()));
        return;
    }
    auto available = deps_.book.Available((*key)->key.group_id);
    if (!available || *available <= 0) {
        Fail(ex, ErrorCode::kInsufficientBalance,
             "Insufficient balance: the key's group has no remaining credit.");
        return;
    }

    DeploymentHealth& health = deps_.health != nullptr ? *deps_.health : *own_health_;
    auto plan = PlanRoute(*snapshot, **key, *peek->model, health, SteadyNowMs());
    if (plan.empty()) {
        ex->extra_headers().Set("Retry-After", "5");
        Fail(ex, ErrorCode::kUnavailable,
             "Every deployment of the model '" + *peek->model +
                 "' is unavailable (circuit open); try again shortly.");
        return;
    }

    // Anthropic deployments serve chat only; their request must translate (a 400 before any
    // upstream call otherwise).
    if (kind != Kind::kChat) {
        std::erase_if(plan, [](const domain::Deployment* d) {
            return d->provider.type == domain::ProviderType::kAnthropic;
        });
        if (plan.empty()) {
            Fail(ex, ErrorCode::kInvalidRequest,
                 "The model '" + *peek->model +
                     "' is served by Anthropic, which supports chat "
                     "completions only.",
                 "model");
            return;
        }
    } else if (std::any_of(plan.begin(), plan.end(), [](const domain::Deployment* d) {
                   return d->provider.type == domain::ProviderType::kAnthropic;
               })) {
        if (auto t = anthropic::TranslateChatRequest(req.body, "-"); !t) {
            ex->Respond(ErrorResponse(t.error()));
            return;
        }
    }

    auto pc = std::make_shared<ProxyCall>(deps_, ex);
    pc->snapshot = std::move(snapshot);
    pc->key = *key;
    pc->deployment = plan.front();
    pc->plan = std::move(plan);
    pc->health = &health;
    pc->kind = kind;
    pc->stream = (kind == Kind::kChat || kind == Kind::kCompletion) && peek->stream.value_or(false);
    pc->client_wants_usage = peek->include_usage.value_or(false);
    pc->images_requested = peek->n.value_or(1);
    pc->request_bytes = req.body.size();
    // Streams always ask the provider for usage (for billing); the extra chunk is dropped again
    // if the client did not ask for it.
    pc->force_usage = pc->stream && json::NeedsIncludeUsage(*peek);
    pc->peek = std::move(*peek);
    auto start = [pc] {
        if (!pc->Launch()) {
            // Every breaker closed between planning and now (another request took the probe).
            pc->SettleHold(0);
            pc->ex->extra_headers().Set("Retry-After", "5");
            Fail(pc->ex, ErrorCode::kUnavailable,
                 "Every deployment of the model '" + pc->deployment->mapping.model_alias +
                     "' is unavailable (circuit open); try again shortly.");
        }
    };
    if (deps_.budget == nullptr) {
        start();
        return;
    }
    // The worst case: the prompt estimate plus every completion token the client allows, at the
    // highest price of the deployments this request may use.
    domain::UsageAmounts worst_usage;
    worst_usage.prompt_tokens = static_cast<int64_t>(req.body.size() / 4) + 1;
    if (kind == Kind::kChat || kind == Kind::kCompletion) {
        worst_usage.completion_tokens =
            pc->peek.max_tokens.value_or(deps_.budget->options().default_max_tokens);
    }
    worst_usage.images = kind == Kind::kImage ? pc->images_requested : 0;
    domain::Micros worst = 0;
    for (const auto* d : pc->plan) {
        worst = std::max(worst, domain::ComputeCost(d->cost ? &*d->cost : nullptr,
                                                    ToRequestKind(kind), worst_usage));
    }
    deps_.budget->Admit(ex, pc->key->key, worst, [pc, start](std::optional<BudgetGate::Hold> hold) {
        pc->hold = hold;
        start();
    });
}

void OpenAIProxy::ListModels(const net::ExchangePtr& ex) {
    auto snapshot = deps_.config.Get();
    auto key = snapshot->Authenticate(PresentedKey(ex->request()), deps_.clock.NowUnixMs());
    if (!key) {
        ex->Respond(ErrorResponse(key.error()));
        return;
    }
    std::string out = "{\"object\":\"list\",\"data\":[";
    bool first = true;
    for (const auto& m : snapshot->ModelsFor(**key)) {
        if (!first) {
            out += ',';
        }
        first = false;
        out += "{\"id\":" + core::JsonQuote(m.id) +
               ",\"object\":\"model\",\"created\":" + std::to_string(m.created_s) +
               ",\"owned_by\":" + core::JsonQuote(m.owned_by) + "}";
    }
    out += "]}";
    ex->Respond(net::Response::Json(200, std::move(out)));
}

void OpenAIProxy::GetModel(const net::ExchangePtr& ex) {
    auto snapshot = deps_.config.Get();
    auto key = snapshot->Authenticate(PresentedKey(ex->request()), deps_.clock.NowUnixMs());
    if (!key) {
        ex->Respond(ErrorResponse(key.error()));
        return;
    }
    const std::string& id = ex->request().path_params.at(0);
    for (const auto& m : snapshot->ModelsFor(**key)) {
        if (core::IEquals(m.id, id)) {
            ex->Respond(net::Response::Json(
                200, "{\"id\":" + core::JsonQuote(m.id) +
                         ",\"object\":\"model\",\"created\":" + std::to_string(m.created_s) +
                         ",\"owned_by\":" + core::JsonQuote(m.owned_by) + "}"));
            return;
        }
    }
    Fail(ex, ErrorCode::kModelNotFound, "The model '" + id + "' does not exist.", "model");
}

}  // namespace conduit::gateway
