#include "webhooks/worker.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "http_client/backoff.hpp"
#include "http_client/http1.hpp"
#include "webhooks/message.hpp"
#include "webhooks/signing.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace conduit::webhooks {

namespace {

using std::chrono::milliseconds;

constexpr std::string_view kForbiddenHeaders[] = {"content-type",
                                                  "content-length",
                                                  "transfer-encoding",
                                                  "host",
                                                  "connection",
                                                  "user-agent",
                                                  "expect",
                                                  "te",
                                                  "upgrade",
                                                  "keep-alive",
                                                  "trailer",
                                                  "proxy-connection"};

bool IsTokenChar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

/// What is known of a delivered webhook.
struct KnownDelivery {
    int64_t delivered_at_ms = 0;
    int status_code = 0;
    int attempts = 0;
};

/// Webhook ids known as delivered, bounded, oldest forgotten first.
class RecentDelivered {
public:
    explicit RecentDelivered(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

    void Put(const std::string& id, KnownDelivery known) {
        std::lock_guard lock(mu_);
        auto [it, inserted] = at_.insert_or_assign(id, known);
        if (inserted) {
            order_.push_back(id);
            while (order_.size() > capacity_) {
                at_.erase(order_.front());
                order_.pop_front();
            }
        }
    }
    std::optional<KnownDelivery> Get(const std::string& id) const {
        std::lock_guard lock(mu_);
        auto it = at_.find(id);
        if (it == at_.end()) {
            return std::nullopt;
        }
        return it->second;
    }

private:
    size_t capacity_;
    mutable std::mutex mu_;  // guards at_, order_
    std::unordered_map<std::string, KnownDelivery> at_;
    std::deque<std::string> order_;
};

/// A delivery at `delivered_at_ms` makes message `m` a duplicate, unless `m` is an operator
/// redelivery requested after it.
bool IsDuplicate(const QueuedDelivery& m, int64_t delivered_at_ms) {
    if (delivered_at_ms <= 0) {
        return false;
    }
    return !m.redelivery || delivered_at_ms >= m.published_at_ms;
}

double CsprngUnit() {
    return static_cast<double>(core::RandomU64() >> 11) * 0x1.0p-53;  // 53 random bits
}

}  // namespace

std::string BreakerHost(std::string_view url) {
    http_client::ParsedUrl parsed;
    if (!http_client::ParseHttpUrl(url, parsed) || parsed.host.empty()) {
        return {};
    }
    return core::ToLower(parsed.host) + ":" + std::to_string(parsed.port);
}

bool IsAllowedCallerHeader(std::string_view name, std::string_view value) {
    if (name.empty() || name.size() > 256 || value.size() > 8192) {
        return false;
    }
    if (!std::all_of(name.begin(), name.end(), IsTokenChar)) {
        return false;
    }
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
        return false;
    }
    if (core::IStartsWith(name, "webhook-") || core::IStartsWith(name, "proxy-")) {
        return false;
    }
    for (std::string_view f : kForbiddenHeaders) {
        if (core::IEquals(name, f)) {
            return false;
        }
    }
    return true;
}

struct DeliveryWorker::Impl : std::enable_shared_from_this<Impl> {
    /// One delivery being handled; owned by the callbacks of its current step.
    struct Job {
        bus::Delivery delivery;
        bus::SettlementPtr settlement;
        core::Loop* loop = nullptr;
        QueuedDelivery msg;
        int attempt = 1;  // attempts spent including this one
        std::string host;
        SigningKeysPtr keys;
        int status = 0;
        std::string retry_after;
        std::string body_prefix;
        int64_t started_ns = 0;
        http_client::CallPtr call;
    };
    using JobPtr = std::shared_ptr<Job>;

    Impl(WorkerDeps d, const WebhookOptions& o)
        : deps(std::move(d)),
          options(o),
          registry(deps.registry != nullptr ? *deps.registry : obs::Registry::Global()),
          breakers(o, registry),
          recent(o.dedup_capacity),
          requests(registry.Counter("conduit_webhook_requests_total",
                                    "Webhook deliveries handled, by outcome",
                                    {"outcome"})),
          delivered(requests.With({"delivered"})),
          retried(requests.With({"retry"})),
          dead(requests.With({"dead"})),
          skipped(requests.With({"skipped_duplicate"})),
          breaker_open(requests.With({"breaker_open"})),
          duration(registry.Histogram("conduit_webhook_duration_seconds",
                                      "Webhook HTTP attempt duration (request to complete "
                                      "response or failure)")),
          active(registry.Gauge("conduit_webhook_active_requests",
                                "Webhook HTTP requests in flight")) {
        if (!deps.random01) {
            deps.random01 = CsprngUnit;
        }
    }

    int MaxAttempts() const { return 1 + std::max(options.max_retries, 0); }
    int64_t SteadyMs() const { return deps.clock.SteadyNs() / 1'000'000; }

    // --- Steps (loop thread of job->loop unless noted) ----------------------------------------

    /// Any thread.
    void Handle(bus::Delivery delivery, bus::SettlementPtr settlement) {
        in_flight.fetch_add(1, std::memory_order_relaxed);
        auto job = std::make_shared<Job>();
        job->delivery = std::move(delivery);
        job->settlement = std::move(settlement);
        core::Loop* here = nullptr;
        for (core::Loop* l : deps.loops) {
            if (l != nullptr && l->InLoopThread()) {
                here = l;
                break;
            }
        }
        if (here == nullptr) {
            if (deps.loops.empty()) {
                Settle(job, [](bus::Settlement& s) { s.Retry(milliseconds(1000), "no loop"); });
                return;
            }
            size_t n = deps.loops.size();
            size_t index = static_cast<size_t>(std::max(job->delivery.partition, 0)) % n;
            job->loop = deps.loops[index];
            auto self = shared_from_this();
            job->loop->Post([self, job] { self->Start(job); });
            return;
        }
        job->loop = here;
        Start(job);
    }

    void Start(const JobPtr& job) {
        auto decoded = DecodeDelivery(job->delivery.body);
        if (!decoded) {
            spdlog::error("webhooks: dropping malformed delivery message {}: {}",
                          job->delivery.message_id, decoded.error().message);
            dead.Inc();
            Settle(job, [](bus::Settlement& s) { s.DeadLetter("malformed webhook message"); });
            return;
        }
        job->msg = std::move(*decoded);
        job->attempt = job->msg.prior_attempts + std::max(job->delivery.attempt, 1);
        job->host = BreakerHost(job->msg.url);
        if (job->host.empty()) {
            Dead(job, "invalid webhook URL (an absolute http or https URL is required)", 0);
            return;
        }
        if (auto known = recent.Get(job->msg.id);
            known && IsDuplicate(job->msg, known->delivered_at_ms)) {
            Skip(job, *known);
            return;
        }
        if (job->delivery.attempt <= 1) {
            Sign(job);
            return;
        }
        // A redelivery by the queue (a retry, or a crash before settling): the previous attempt
        // may have succeeded. The recorder holds the newest state of this instance's updates.
        if (auto row = deps.recorder.Peek(job->msg.id)) {
            if (row->status == kStatusDelivered && IsDuplicate(job->msg, row->delivered_at_ms)) {
                Skip(job, Known(*row));
            } else {
                Sign(job);
            }
            return;
        }
        auto self = shared_from_this();
        std::string id = job->msg.id;
        deps.executor.Call(
            *job->loop, [self, id] { return self->deps.store.GetWebhookDelivery(id); },
            [self, job](core::Result<std::optional<store::WebhookDelivery>> row) {
                // A failed lookup delivers (at-least-once beats at-most-once).
                if (row && *row && (*row)->status == kStatusDelivered &&
                    IsDuplicate(job->msg, (*row)->delivered_at_ms)) {
                    self->Skip(job, Known(**row));
                    return;
                }
                self->Sign(job);
            });
    }

    void Sign(const JobPtr& job) {
        auto self = shared_from_this();
        deps.secrets.Get(
            *job->loop, job->msg.virtual_key_id, [self, job](core::Result<SigningKeysPtr> keys) {
                if (!keys) {
                    self->Failed(job, 0, "signing secret unavailable: " + keys.error().message);
                    return;
                }
                job->keys = std::move(*keys);
                self->Admit(job);
            });
    }

    void Admit(const JobPtr& job) {
        auto admission = breakers.Acquire(job->host, SteadyMs());
        if (!admission.allowed) {
            Defer(job, milliseconds(admission.wait_ms));
            return;
        }
        Send(job);
    }

    void Send(const JobPtr& job) {
        const QueuedDelivery& m = job->msg;
        const int64_t now_ms = deps.clock.NowUnixMs();
        const int64_t ts = now_ms / 1000;

        http_client::Request req;
        req.method = "POST";
        req.url = m.url;
        req.body = m.payload;
        auto total = options.request_timeout;
        req.timeouts.connect = std::min(options.connect_timeout, total);
        req.timeouts.first_byte = total;
        req.timeouts.idle = total;
        req.timeouts.total = total;
        req.headers.reserve(6 + m.headers.size());
        req.headers.Add("content-type", "application/json");
        req.headers.Add("webhook-id", m.id);
        req.headers.Add("webhook-timestamp", std::to_string(ts));
        if (job->keys) {
            auto active_keys = job->keys->ActiveAt(now_ms);
            if (!active_keys.empty()) {
                req.headers.Add("webhook-signature",
                                signing::SignatureHeader(active_keys, m.id, ts, m.payload));
            }
        }
        req.headers.Add("user-agent", options.user_agent);
        for (const auto& [name, value] : m.headers) {
            if (IsAllowedCallerHeader(name, value)) {
                req.headers.Add(name, value);
            }
        }

        auto self = shared_from_this();
        http_client::Callbacks cb;
        cb.on_headers = [job](int status, net::Headers headers) {
            job->status = status;
            job->retry_after = std::string(headers.Get("retry-after"));
        };
        cb.on_data = [job, limit = options.max_error_body_bytes](std::string_view chunk) {
            if (job->body_prefix.size() < limit) {
                job->body_prefix.append(chunk.substr(0, limit - job->body_prefix.size()));
            }
            return true;
        };
        cb.on_done = [self, job](const http_client::Outcome& outcome) {
            self->OnDone(job, outcome);
        };
        job->started_ns = deps.clock.SteadyNs();
        active.Inc();
        job->call = deps.client_for(job->loop->Index()).Start(std::move(req), std::move(cb));
    }

    void OnDone(const JobPtr& job, const http_client::Outcome& outcome) {
        job->call.reset();  // breaks call → callbacks → job
        active.Dec();
        duration.Observe(static_cast<double>(deps.clock.SteadyNs() - job->started_ns) / 1e9);
        const int status = outcome.failure == http_client::Failure::kNone ? job->status : 0;
        if (outcome.failure != http_client::Failure::kNone || status == 0) {
            std::string what;
            switch (outcome.failure) {
                case http_client::Failure::kConnect:
                    what = "connection failed";
                    break;
                case http_client::Failure::kTimeout:
                    what = "timed out";
                    break;
                case http_client::Failure::kCancelled:
                    what = "cancelled";
                    break;
                default:
                    what = "request failed";
                    break;
            }
            if (!outcome.message.empty()) {
                what += ": " + outcome.message;
            }
            breakers.Report(job->host, /*failure=*/true, SteadyMs());
            Failed(job, 0, std::move(what));
            return;
        }
        if (status >= 200 && status < 300) {
            breakers.Report(job->host, /*failure=*/false, SteadyMs());
            Delivered(job, status);
            return;
        }
        std::string what = "HTTP " + std::to_string(status);
        if (!job->body_prefix.empty()) {
            what += ": " + job->body_prefix;
        }
        if (status == 408 || status == 429 || status >= 500) {
            breakers.Report(job->host, /*failure=*/true, SteadyMs());
            Failed(job, status, std::move(what));
            return;
        }
        // The host answered: it is healthy, the request is what is wrong (3xx, 4xx).
        breakers.Report(job->host, /*failure=*/false, SteadyMs());
        Dead(job, std::move(what), status);
    }

    // --- Outcomes -------------------------------------------------------------------------

    store::WebhookDelivery Row(const JobPtr& job,
                               std::string_view status,
                               int code,
                               std::string error) {
        store::WebhookDelivery row = RowFor(job->msg);
        row.status = std::string(status);
        row.attempts = job->attempt;
        row.last_status_code = code;
        row.last_error = std::move(error);
        row.updated_at_ms = deps.clock.NowUnixMs();
        return row;
    }

    void Delivered(const JobPtr& job, int status) {
        store::WebhookDelivery row = Row(job, kStatusDelivered, status, {});
        row.delivered_at_ms = row.updated_at_ms;
        recent.Put(job->msg.id, Known(row));
        deps.recorder.Record(std::move(row));
        delivered.Inc();
        Settle(job, [](bus::Settlement& s) { s.Ack(); });
    }

    /// A transient failure: retry, or dead when this was the last attempt.
    void Failed(const JobPtr& job, int status, std::string error) {
        if (job->attempt >= MaxAttempts()) {
            Dead(job, std::move(error), status);
            return;
        }
        milliseconds delay = RetryDelay(*job, status);
        std::string reason = error;
        deps.recorder.Record(Row(job, kStatusFailed, status, std::move(error)));
        retried.Inc();
        Settle(job, [delay, reason = std::move(reason)](bus::Settlement& s) mutable {
            s.Retry(delay, std::move(reason));
        });
    }

    void Dead(const JobPtr& job, std::string error, int status) {
        std::string reason = error;
        deps.recorder.Record(Row(job, kStatusDead, status, std::move(error)));
        dead.Inc();
        spdlog::info(
            "webhooks: delivery {} to {} is dead after {} attempt(s): {}", job->msg.id,
            job->host.empty() ? std::string_view("(invalid URL)") : std::string_view(job->host),
            job->attempt, reason);
        Settle(job, [reason = std::move(reason)](bus::Settlement& s) mutable {
            s.DeadLetter(std::move(reason));
        });
    }

    static KnownDelivery Known(const store::WebhookDelivery& row) {
        return KnownDelivery{row.delivered_at_ms, row.last_status_code, row.attempts};
    }

    /// A duplicate of a delivered webhook (e.g. the final event re-sent by a redelivered task
    /// step): not sent again. Its publisher recorded it as pending once more, possibly on another
    /// instance, so the delivered state is recorded again, newer than that pending row.
    void Skip(const JobPtr& job, const KnownDelivery& known) {
        skipped.Inc();
        store::WebhookDelivery row = RowFor(job->msg);
        row.status = std::string(kStatusDelivered);
        row.attempts = known.attempts;
        row.last_status_code = known.status_code;
        row.delivered_at_ms = known.delivered_at_ms;
        row.updated_at_ms = std::max(deps.clock.NowUnixMs(), known.delivered_at_ms);
        deps.recorder.Record(std::move(row));
        Settle(job, [](bus::Settlement& s) { s.Ack(); });
    }

    /// The host's breaker is open: republish with a delay instead of spending an attempt.
    void Defer(const JobPtr& job, milliseconds wait) {
        if (job->msg.deferrals >= options.max_breaker_deferrals) {
            Dead(job, "circuit breaker open for " + job->host, 0);
            return;
        }
        breaker_open.Inc();
        QueuedDelivery next = job->msg;
        next.prior_attempts = job->attempt - 1;  // this attempt was not spent
        next.deferrals += 1;
        bus::OutgoingMessage out;
        out.topic = options.topic;
        out.partition_key = job->delivery.partition_key;
        out.body = EncodeDelivery(next);
        out.delay = wait;
        std::vector<bus::OutgoingMessage> batch;
        batch.push_back(std::move(out));
        auto self = shared_from_this();
        deps.queue.Publish(std::move(batch), [self, job, wait](core::Result<void> r) {
            if (r) {
                self->Settle(job, [](bus::Settlement& s) { s.Ack(); });
            } else {
                // Fall back to the queue's own retry (spends an attempt, loses nothing).
                self->Settle(job,
                             [wait](bus::Settlement& s) { s.Retry(wait, "circuit breaker open"); });
            }
        });
    }

    milliseconds RetryDelay(const Job& job, int status) {
        if ((status == 429 || status == 503) && !job.retry_after.empty()) {
            milliseconds after = http_client::ParseRetryAfter(job.retry_after);
            if (after.count() >= 0) {
                return std::min(after, options.retry_after_max);
            }
        }
        return http_client::BackoffDelay(job.attempt, options.retry_base, options.retry_max,
                                         deps.random01());
    }

    /// Settles once and releases the in-flight count. Any thread.
    template <class Fn>
    void Settle(const JobPtr& job, Fn fn) {
        if (job->settlement) {
            bus::SettlementPtr s = std::move(job->settlement);
            fn(*s);
            in_flight.fetch_sub(1, std::memory_order_relaxed);
        }
    }

    WorkerDeps deps;
    WebhookOptions options;
    obs::Registry& registry;
    HostBreakers breakers;
    RecentDelivered recent;
    obs::CounterFamily& requests;
    obs::Counter& delivered;
    obs::Counter& retried;
    obs::Counter& dead;
    obs::Counter& skipped;
    obs::Counter& breaker_open;
    obs::Histogram& duration;
    obs::Gauge& active;
    std::atomic<size_t> in_flight{0};
};

DeliveryWorker::DeliveryWorker(WorkerDeps deps, const WebhookOptions& options)
    : impl_(std::make_shared<Impl>(std::move(deps), options)) {}

DeliveryWorker::~DeliveryWorker() = default;

void DeliveryWorker::Register() {
    std::weak_ptr<Impl> weak = impl_;
    impl_->deps.queue.Consume(
        impl_->options.topic, [weak](bus::Delivery delivery, bus::SettlementPtr settlement) {
            if (auto self = weak.lock()) {
                self->Handle(std::move(delivery), std::move(settlement));
            } else {
                // The worker is gone: hand the message back untouched.
                settlement->Retry(std::chrono::seconds(1), "webhook worker stopped");
            }
        });
}

void DeliveryWorker::Handle(bus::Delivery delivery, bus::SettlementPtr settlement) {
    impl_->Handle(std::move(delivery), std::move(settlement));
}

const HostBreakers& DeliveryWorker::breakers() const { return impl_->breakers; }

size_t DeliveryWorker::InFlight() const { return impl_->in_flight.load(std::memory_order_relaxed); }

}  // namespace conduit::webhooks
