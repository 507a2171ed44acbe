#include "tasks/task_engine.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "domain/cost.hpp"
#include "http_client/backoff.hpp"
#include "json/helpers.hpp"
#include "json/json_peek.hpp"
#include "tasks/task_events.hpp"

#include <spdlog/spdlog.h>

namespace conduit::tasks {

namespace {

using core::ErrorCode;
using domain::AsyncTask;
using domain::TaskState;

constexpr int kMaxMutateTries = 10;

int64_t Ms(std::chrono::milliseconds d) { return d.count(); }

/// Queue message of a task step: {"op","task_id","v"} (v = task version the step expects).
std::string StepBody(std::string_view op, const AsyncTask& t) {
    return "{\"op\":" + core::JsonQuote(op) + ",\"task_id\":" + core::JsonQuote(t.id) +
           ",\"v\":" + std::to_string(t.version) + "}";
}

struct Step {
    std::string op;
    std::string task_id;
    int64_t version = -1;
};

core::Result<Step> ParseStep(std::string_view body) {
    auto obj = json::ParseObject(body);
    if (!obj) {
        return tl::unexpected(obj.error());
    }
    Step s;
    if (auto it = obj->find("op"); it != obj->end() && it->value().is_string()) {
        s.op = std::string(it->value().as_string());
    }
    if (auto it = obj->find("task_id"); it != obj->end() && it->value().is_string()) {
        s.task_id = std::string(it->value().as_string());
    }
    if (auto it = obj->find("v"); it != obj->end() && it->value().is_int64()) {
        s.version = it->value().as_int64();
    }
    if (s.op.empty() || s.task_id.empty()) {
        return core::Fail(ErrorCode::kInvalidRequest, "malformed task step");
    }
    return s;
}

bool TimedOut(const AsyncTask& t, int64_t now_ms) {
    return t.timeout_seconds > 0 && now_ms >= t.created_at_ms + t.timeout_seconds * 1000;
}

double RequestedSeconds(const AsyncTask& t) {
    auto obj = json::ParseObject(t.request_json);
    if (!obj) {
        return 0;
    }
    for (const char* k : {"seconds", "duration"}) {
        if (auto it = obj->find(k); it != obj->end()) {
            if (it->value().is_number()) {
                return it->value().to_number<double>();
            }
            if (it->value().is_string()) {
                return std::atof(std::string(it->value().as_string()).c_str());
            }
        }
    }
    return 0;
}

void Settle(const bus::SettlementPtr& s) {
    if (s) {
        s->Ack();
    }
}

// The step could not queue its successor: run it again later (its redelivery resumes the task).
void RetryStep(const bus::SettlementPtr& s, const core::Error& e) {
    if (s) {
        s->Retry(std::chrono::seconds(2), "next step could not be queued: " + e.message);
    }
}

}  // namespace

JobKind KindOf(std::string_view task_type) {
    return task_type == domain::kVideoTask ? JobKind::kVideo : JobKind::kImage;
}

TaskEngine::TaskEngine(TaskEngineDeps deps) : d_(std::move(deps)) {}

// ---------------------------------------------------------------------------------------------
// Plumbing

void TaskEngine::Mutate(core::Loop& loop,
                        std::string task_id,
                        Mutator m,
                        std::function<void(core::Result<Mutation>)> done,
                        std::optional<Bill> bill) {
    auto& store = d_.store;
    auto& clock = d_.clock;
    auto& spend = d_.spend;
    d_.executor.Call(
        loop,
        [&store, &clock, &spend, task_id = std::move(task_id), m = std::move(m),
         bill = std::move(bill)]() -> core::Result<Mutation> {
            for (int i = 0; i < kMaxMutateTries; ++i) {
                auto got = store.GetTask(task_id);
                if (!got) {
                    return tl::unexpected(got.error());
                }
                if (!got->has_value()) {
                    return Mutation{};
                }
                AsyncTask t = std::move(**got);
                AsyncTask before = t;
                if (!m(t)) {
                    return Mutation{std::move(before), false, true};
                }
                t.updated_at_ms = clock.NowUnixMs();
                auto upd = bill ? store.UpdateTaskWithSpend(t, bill->row, bill->description,
                                                            t.updated_at_ms)
                                : store.UpdateTask(t);
                if (upd) {
                    if (!upd->has_value()) {
                        return Mutation{};
                    }
                    if (bill) {
                        spend.RecordCommitted(bill->row);
                    }
                    return Mutation{std::move(**upd), true, true};
                }
                if (upd.error().code != ErrorCode::kConflict) {
                    return tl::unexpected(upd.error());
                }
                // Someone else changed the task: re-read and decide again.
            }
            return core::Fail(ErrorCode::kUnavailable, "task update kept conflicting");
        },
        std::move(done));
}

void TaskEngine::EnqueueThenSettle(std::string op,
                                   const AsyncTask& task,
                                   std::chrono::milliseconds delay,
                                   bus::SettlementPtr s) {
    // A step is acked only once its successor is durably queued: a crash in between redelivers
    // the step instead of silently ending the task's chain.
    Enqueue(std::move(op), task, delay, [s](core::Result<void> q) {
        if (!q) {
            RetryStep(s, q.error());
            return;
        }
        Settle(s);
    });
}

void TaskEngine::Enqueue(std::string op,
                         const AsyncTask& task,
                         std::chrono::milliseconds delay,
                         std::function<void(core::Result<void>)> done) {
    bus::OutgoingMessage m;
    m.topic = std::string(kTasksTopic);
    m.partition_key = std::to_string(task.virtual_key_id);
    m.body = StepBody(op, task);
    m.delay = delay;
    std::vector<bus::OutgoingMessage> batch;
    batch.push_back(std::move(m));
    d_.queue.Publish(
        std::move(batch), done ? std::move(done) : [](core::Result<void> r) {
            if (!r) {
                spdlog::error("task step could not be queued: {}", r.error().message);
            }
        });
}

void TaskEngine::Publish(const AsyncTask& task, std::string_view event) {
    d_.backplane.Publish(std::string(kTaskEventsChannel),
                         ToJson(EventFor(task, event, d_.clock.NowUnixMs())));
}

std::string TaskEngine::WebhookPayload(const AsyncTask& task, std::string_view type) const {
    std::string out = "{\"type\":" + core::JsonQuote(type);
    out += ",\"task_id\":" + core::JsonQuote(task.id);
    out += ",\"task_type\":" + core::JsonQuote(task.type);
    out += ",\"status\":" + core::JsonQuote(domain::ToString(task.state));
    out += ",\"progress\":" + std::to_string(task.progress);
    if (!task.result_json.empty()) {
        out += ",\"result\":" + task.result_json;
    }
    if (!task.error_message.empty()) {
        out += ",\"error\":" + core::JsonQuote(task.error_message);
    }
    out += ",\"timestamp\":" + core::JsonQuote(core::FormatIso8601(d_.clock.NowUnixMs()));
    out += "}";
    return out;
}

void TaskEngine::Notify(const AsyncTask& task, std::string_view event, bus::SettlementPtr s) {
    Publish(task, event);
    SendWebhook(task, event, std::move(s));
}

void TaskEngine::SendWebhook(const AsyncTask& task, std::string_view event, bus::SettlementPtr s) {
    if (task.webhook_url.empty() || !d_.webhook) {
        Settle(s);
        return;
    }
    // specs/api.md §6 knows four webhook types; a timeout is delivered as a failure (its status
    // says "timedout"). The webhook-id still derives from the event.
    std::string_view type = event == "task.timedout" ? std::string_view("task.failed") : event;
    // The step that caused the event is settled only once its webhook is durably queued, so a
    // crash in between redelivers the step, which re-sends the event with the same id.
    d_.webhook(task, type, WebhookIdFor(task, event), WebhookPayload(task, type),
               [s](core::Result<void> r) {
                   if (!r && s) {
                       s->Retry(std::chrono::seconds(2),
                                "webhook could not be queued: " + r.error().message);
                       return;
                   }
                   Settle(s);
               });
}

std::string WebhookIdFor(const AsyncTask& task, std::string_view event) {
    // Derived from the task, never random: the same event sent twice (a step redelivered after
    // a crash) keeps its webhook-id, so the worker and receivers can de-duplicate it.
    std::string id = "msg_" + task.id + "_" + std::to_string(task.retry_count) + "_";
    auto dot = event.find('.');
    id.append(dot == std::string_view::npos ? event : event.substr(dot + 1));
    if (event == "task.progress") {
        id += "_" + std::to_string(task.progress / 25);
    }
    return id;
}

std::string_view TerminalEvent(TaskState state) {
    switch (state) {
        case TaskState::kCompleted:
            return "task.completed";
        case TaskState::kFailed:
            return "task.failed";
        case TaskState::kCancelled:
            return "task.cancelled";
        case TaskState::kTimedOut:
            return "task.timedout";
        default:
            return {};
    }
}

const domain::Deployment* TaskEngine::DeploymentFor(const AsyncTask& task,
                                                    domain::SnapshotPtr& hold) const {
    hold = d_.config.Get();
    return hold->FindDeployment(task.mapping_id);
}

// ---------------------------------------------------------------------------------------------
// API side

void TaskEngine::Submit(core::Loop& loop,
                        SubmitRequest req,
                        std::function<void(core::Result<SubmitOutcome>)> done) {
    AsyncTask t;
    t.id = domain::NewTaskId();
    t.type = req.type;
    t.state = TaskState::kPending;
    t.virtual_key_id = req.virtual_key_id;
    t.group_id = req.group_id;
    t.mapping_id = req.mapping_id;
    t.model_alias = req.model_alias;
    t.request_json = std::move(req.request_json);
    t.request_hash = std::move(req.request_hash);
    t.webhook_url = std::move(req.webhook_url);
    t.webhook_headers_json = std::move(req.webhook_headers_json);
    t.timeout_seconds = req.timeout_seconds;
    t.idempotency_key = std::move(req.idempotency_key);
    t.max_retries = d_.options.max_retries;
    t.message = "Queued";
    t.created_at_ms = t.updated_at_ms = d_.clock.NowUnixMs();
    auto& store = d_.store;
    auto self = shared_from_this();
    d_.executor.Call(
        loop, [&store, t]() { return store.CreateTask(t); },
        [self, &loop, done = std::move(done)](core::Result<std::pair<AsyncTask, bool>> r) mutable {
            if (!r) {
                done(tl::unexpected(r.error()));
                return;
            }
            auto [task, created] = std::move(*r);
            if (!created) {
                // Idempotent replay: same key and same body → the same task. A pending one may
                // have been created by a process that died before queueing its start, or by a
                // submit still waiting for the queue: queue it (again). It is touched first (a
                // new version), so that a first submit whose publish fails later does not fail
                // a task this replay accepted. A duplicate start is harmless: the partition runs
                // it after the first, which finds the task no longer pending.
                if (task.state == TaskState::kPending) {
                    std::string id = task.id;  // `task` is moved into the callback below
                    self->Mutate(
                        loop, std::move(id),
                        [](AsyncTask& t) { return t.state == TaskState::kPending; },
                        [self, &loop, task = std::move(task),
                         done = std::move(done)](core::Result<Mutation> m) mutable {
                            if (m && m->found && !m->applied) {
                                done(SubmitOutcome{std::move(m->task), false});  // moved on
                                return;
                            }
                            auto replay = std::make_shared<AsyncTask>(
                                m && m->applied ? std::move(m->task) : std::move(task));
                            self->Enqueue("start", *replay, std::chrono::milliseconds(0),
                                          [&loop, replay,
                                           done = std::move(done)](core::Result<void>) mutable {
                                              loop.Post([replay, done = std::move(done)]() mutable {
                                                  done(SubmitOutcome{std::move(*replay), false});
                                              });
                                          });
                        });
                    return;
                }
                done(SubmitOutcome{std::move(task), false});
                return;
            }
            auto t2 = task;
            self->Enqueue("start", task, std::chrono::milliseconds(0),
                          [self, &loop, task = std::move(t2),
                           done = std::move(done)](core::Result<void> q) mutable {
                              loop.Post([self, &loop, q = std::move(q), task = std::move(task),
                                         done = std::move(done)]() mutable {
                                  if (!q) {
                                      // Never accepted: fail the task so it does not linger —
                                      // unless it changed meanwhile (an idempotent replay
                                      // accepted and queued it, or it is already running).
                                      self->Mutate(
                                          loop, task.id,
                                          [version = task.version](AsyncTask& failed) {
                                              if (failed.state != TaskState::kPending ||
                                                  failed.version != version) {
                                                  return false;
                                              }
                                              failed.state = TaskState::kFailed;
                                              failed.error_message = "could not be queued";
                                              failed.error_code = "queue_unavailable";
                                              return true;
                                          },
                                          [](core::Result<Mutation>) {});
                                      done(core::Fail(ErrorCode::kUnavailable,
                                                      "The task queue is unavailable."));
                                      return;
                                  }
                                  self->Publish(task, "task.created");
                                  done(SubmitOutcome{std::move(task), true});
                              });
                          });
        });
}

void TaskEngine::Get(core::Loop& loop,
                     std::string task_id,
                     domain::Id virtual_key_id,
                     std::function<void(core::Result<AsyncTask>)> done) {
    auto& store = d_.store;
    d_.executor.Call(
        loop, [&store, task_id]() { return store.GetTask(task_id); },
        [virtual_key_id, done = std::move(done)](core::Result<std::optional<AsyncTask>> r) {
            if (!r) {
                done(tl::unexpected(r.error()));
                return;
            }
            // Another key's task does not exist as far as this caller can tell.
            if (!r->has_value() || (*r)->virtual_key_id != virtual_key_id) {
                done(core::Fail(ErrorCode::kNotFound, "Task not found.", "task_id"));
                return;
            }
            done(std::move(**r));
        });
}

void TaskEngine::Cancel(core::Loop& loop,
                        std::string task_id,
                        domain::Id virtual_key_id,
                        std::function<void(core::Result<AsyncTask>)> done) {
    int64_t now = d_.clock.NowUnixMs();
    auto self = shared_from_this();
    Mutate(
        loop, task_id,
        [virtual_key_id, now](AsyncTask& t) {
            if (t.virtual_key_id != virtual_key_id || domain::IsTerminal(t.state)) {
                return false;
            }
            t.state = TaskState::kCancelled;
            t.message = "Cancelled by the client";
            t.error_message = "Cancelled by the client";
            t.error_code = "cancelled";
            t.retryable = false;
            t.completed_at_ms = now;
            return true;
        },
        [self, virtual_key_id, done = std::move(done)](core::Result<Mutation> r) {
            if (!r) {
                done(tl::unexpected(r.error()));
                return;
            }
            if (!r->found || r->task.virtual_key_id != virtual_key_id) {
                done(core::Fail(ErrorCode::kNotFound, "Task not found.", "task_id"));
                return;
            }
            if (!r->applied) {
                done(core::Fail(
                    ErrorCode::kConflict,
                    "The task is already " + std::string(domain::ToString(r->task.state)) + "."));
                return;
            }
            const AsyncTask& t = r->task;
            self->Notify(t, "task.cancelled");
            if (!t.upstream_job_id.empty()) {
                self->Enqueue("cancel_upstream", t, std::chrono::milliseconds(0), nullptr);
            }
            done(t);
        });
}

void TaskEngine::Retry(core::Loop& loop,
                       std::string task_id,
                       domain::Id virtual_key_id,
                       std::function<void(core::Result<AsyncTask>)> done) {
    int64_t now = d_.clock.NowUnixMs();
    auto self = shared_from_this();
    Mutate(
        loop, task_id,
        [virtual_key_id, now](AsyncTask& t) {
            // `max_retries` bounds automatic retries; a client may ask again for any failed
            // task whose failure is retryable (each attempt is billed on success only).
            if (t.virtual_key_id != virtual_key_id || t.state != TaskState::kFailed ||
                !t.retryable) {
                return false;
            }
            t.state = TaskState::kPending;
            t.retry_count += 1;
            t.upstream_job_id.clear();
            t.error_message.clear();
            t.error_code.clear();
            t.result_json.clear();
            t.progress = 0;
            t.completed_at_ms = 0;
            t.next_attempt_at_ms = now;
            t.message = "Retry requested";
            return true;
        },
        [self, &loop, virtual_key_id, done = std::move(done)](core::Result<Mutation> r) {
            if (!r) {
                done(tl::unexpected(r.error()));
                return;
            }
            if (!r->found || r->task.virtual_key_id != virtual_key_id) {
                done(core::Fail(ErrorCode::kNotFound, "Task not found.", "task_id"));
                return;
            }
            if (!r->applied) {
                done(core::Fail(ErrorCode::kConflict,
                                "Only a failed task with a retryable error can be retried."));
                return;
            }
            AsyncTask t = r->task;
            self->Enqueue("start", t, std::chrono::milliseconds(0),
                          [&loop, t, done = std::move(done)](core::Result<void> q) mutable {
                              loop.Post([q = std::move(q), t = std::move(t),
                                         done = std::move(done)]() mutable {
                                  if (!q) {
                                      done(tl::unexpected(q.error()));
                                      return;
                                  }
                                  done(std::move(t));
                              });
                          });
            self->Publish(t, "task.progress");
        });
}

void TaskEngine::WaitTerminal(core::Loop& loop,
                              std::string task_id,
                              domain::Id virtual_key_id,
                              std::chrono::milliseconds timeout,
                              std::chrono::milliseconds interval,
                              std::function<void(core::Result<AsyncTask>)> done) {
    struct Wait : std::enable_shared_from_this<Wait> {
        std::shared_ptr<TaskEngine> engine;
        core::Loop* loop = nullptr;
        std::string id;
        domain::Id key = 0;
        int64_t deadline_ns = 0;
        std::chrono::milliseconds interval{1000};
        std::function<void(core::Result<AsyncTask>)> done;
        core::TimerPtr timer;
        uint64_t token = 0;  // registration in engine->waiters_
        bool finished = false;
        bool checking = false;
        bool recheck = false;  // an event arrived while a check was reading the store

        void Check(bool final) {
            if (finished) {
                return;
            }
            if (checking) {
                recheck = true;  // the read in flight may predate the event
                return;
            }
            checking = true;
            auto self = shared_from_this();
            engine->Get(*loop, id, key, [self, final](core::Result<AsyncTask> r) {
                self->checking = false;
                if (self->finished) {
                    return;
                }
                bool expired = core::SystemClock::SteadyNowNs() >= self->deadline_ns;
                if (!r || domain::IsTerminal(r->state) || final || expired) {
                    self->finished = true;
                    if (self->timer) {
                        self->timer->Cancel();
                    }
                    self->engine->ForgetWaiter(self->id, self->token);
                    self->done(std::move(r));
                    return;
                }
                if (self->recheck) {
                    self->recheck = false;
                    self->Check(false);
                    return;
                }
                self->Arm();
            });
        }
        void Arm() {
            if (timer) {
                timer->Cancel();  // one pending timer per wait, however often events wake it
            }
            auto self = shared_from_this();
            int64_t left = deadline_ns - core::SystemClock::SteadyNowNs();
            auto wait = std::min<std::chrono::nanoseconds>(
                interval, std::chrono::nanoseconds(std::max<int64_t>(left, 0)));
            timer = loop->StartTimer(wait, [self] { self->Check(false); });
        }
    };
    auto w = std::make_shared<Wait>();
    w->engine = shared_from_this();
    w->loop = &loop;
    w->id = task_id;
    w->key = virtual_key_id;
    w->deadline_ns = core::SystemClock::SteadyNowNs() +
                     std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
    w->interval = interval;
    w->done = std::move(done);
    {
        // Wake up at once whenever an event for this task arrives (any instance, via the
        // Backplane), until the wait ends.
        std::lock_guard lock(waiters_mu_);
        w->token = ++next_waiter_;
        std::weak_ptr<Wait> weak = w;
        waiters_[task_id].emplace_back(w->token, [weak, &loop] {
            loop.Post([weak] {
                if (auto s = weak.lock()) {
                    s->Check(false);
                }
            });
        });
    }
    w->Check(false);
}

void TaskEngine::SubscribeEvents() {
    std::weak_ptr<TaskEngine> weak = shared_from_this();
    d_.backplane.Subscribe(std::string(kTaskEventsChannel),
                           [weak](std::string_view, std::string_view payload) {
                               auto self = weak.lock();
                               if (!self) {
                                   return;
                               }
                               auto ev = ParseTaskEvent(payload);
                               if (!ev) {
                                   return;
                               }
                               std::vector<std::function<void()>> wake;
                               {
                                   std::lock_guard lock(self->waiters_mu_);
                                   auto it = self->waiters_.find(ev->task_id);
                                   if (it == self->waiters_.end()) {
                                       return;
                                   }
                                   for (const auto& entry : it->second) {
                                       wake.push_back(entry.second);
                                   }
                               }
                               for (auto& fn : wake) {
                                   fn();
                               }
                           });
}

void TaskEngine::ForgetWaiter(const std::string& task_id, uint64_t token) {
    std::lock_guard lock(waiters_mu_);
    auto it = waiters_.find(task_id);
    if (it == waiters_.end()) {
        return;
    }
    std::erase_if(it->second, [token](const auto& entry) { return entry.first == token; });
    if (it->second.empty()) {
        waiters_.erase(it);
    }
}

// ---------------------------------------------------------------------------------------------
// Worker side

void TaskEngine::StartWorker(std::function<core::Loop&()> any_loop) {
    any_loop_ = std::move(any_loop);
    std::weak_ptr<TaskEngine> weak = shared_from_this();
    d_.queue.Consume(std::string(kTasksTopic),
                     [weak](bus::Delivery delivery, bus::SettlementPtr settlement) {
                         if (auto self = weak.lock()) {
                             self->OnMessage(std::move(delivery), std::move(settlement));
                         } else {
                             settlement->Retry(std::chrono::seconds(1), "shutting down");
                         }
                     });
    core::Loop& loop = any_loop_();
    loop.Post([weak] {
        if (auto self = weak.lock()) {
            self->Sweep();
        }
    });
}

void TaskEngine::StopWorker() { stopping_ = true; }

void TaskEngine::OnMessage(bus::Delivery delivery, bus::SettlementPtr settlement) {
    core::Loop* loop = core::CurrentLoop();
    if (loop == nullptr) {
        loop = &any_loop_();
    }
    auto step = ParseStep(delivery.body);
    if (!step) {
        settlement->DeadLetter("malformed task step: " + step.error().message);
        return;
    }
    auto self = shared_from_this();
    auto& store = d_.store;
    std::string id = step->task_id;
    d_.executor.Call(
        *loop, [&store, id]() { return store.GetTask(id); },
        [self, loop, step = std::move(*step), delivery_attempt = delivery.attempt,
         settlement](core::Result<std::optional<AsyncTask>> r) mutable {
            if (!r) {
                settlement->Retry(std::chrono::seconds(2), r.error().message);
                return;
            }
            if (!r->has_value()) {
                settlement->Ack();  // deleted: nothing to do
                return;
            }
            AsyncTask task = std::move(**r);
            if (delivery_attempt > 1 && domain::IsTerminal(task.state) &&
                step.op != "cancel_upstream") {
                // A redelivered step of a finished task: the process may have died between
                // the final state change and queueing its webhook. Send it again (same id).
                self->SendWebhook(task, TerminalEvent(task.state), settlement);
                return;
            }
            // A redelivered step (the process died while it ran) of a task whose job is recorded
            // may have changed the task and died before queueing its successor: it resumes
            // polling. If the chain did survive, the duplicate retires at the next version
            // check (every poll's heartbeat is an optimistic update).
            bool resume = delivery_attempt > 1 && task.state == TaskState::kRunning &&
                          !task.upstream_job_id.empty();
            if (step.op == "start") {
                if (resume) {
                    self->HandlePoll(*loop, std::move(task), settlement);
                    return;
                }
                self->HandleStart(*loop, std::move(task), settlement);
            } else if (step.op == "poll") {
                if (step.version >= 0 && task.version != step.version && !resume) {
                    // A stale or duplicate poll chain: the task moved on since this step was
                    // queued; the live chain carries the newest version.
                    settlement->Ack();
                    return;
                }
                self->HandlePoll(*loop, std::move(task), settlement);
            } else if (step.op == "cancel_upstream") {
                self->HandleCancelUpstream(*loop, std::move(task), settlement);
            } else {
                settlement->DeadLetter("unknown task step '" + step.op + "'");
            }
        });
}

void TaskEngine::HandleStart(core::Loop& loop, AsyncTask task, bus::SettlementPtr s) {
    int64_t now = d_.clock.NowUnixMs();
    if (domain::IsTerminal(task.state)) {
        Settle(s);
        return;
    }
    if (TimedOut(task, now)) {
        TimeOut(loop, std::move(task), s);
        return;
    }
    if (task.state == TaskState::kPending && task.next_attempt_at_ms > now + 50) {
        // Early (a duplicate of a delayed retry): come back when it is due.
        EnqueueThenSettle("start", task, std::chrono::milliseconds(task.next_attempt_at_ms - now),
                          s);
        return;
    }
    if (task.state == TaskState::kRunning && !task.upstream_job_id.empty()) {
        // The job of this attempt is already recorded (a redelivered start after a crash): its
        // poll chain or the sweeper carries on. Never start it twice.
        Settle(s);
        return;
    }
    if (task.state == TaskState::kRunning) {
        // Crashed between marking the attempt and recording its job: submit the same attempt
        // again with the same idempotency key.
        SubmitJob(loop, std::move(task), s);
        return;
    }
    auto self = shared_from_this();
    Mutate(
        loop, task.id,
        [now](AsyncTask& t) {
            if (t.state != TaskState::kPending) {
                return false;
            }
            t.state = TaskState::kRunning;
            t.attempt += 1;
            t.upstream_job_id.clear();
            t.progress = 0;
            t.message = "Submitting to the provider";
            if (t.started_at_ms == 0) {
                t.started_at_ms = now;
            }
            return true;
        },
        [self, &loop, s](core::Result<Mutation> r) {
            if (!r) {
                if (s) {
                    s->Retry(std::chrono::seconds(2), r.error().message);
                }
                return;
            }
            if (!r->applied) {
                Settle(s);  // someone else started, cancelled or finished it
                return;
            }
            self->SubmitJob(loop, r->task, s);
        });
}

void TaskEngine::SubmitJob(core::Loop& loop, AsyncTask task, bus::SettlementPtr s) {
    domain::SnapshotPtr hold;
    const domain::Deployment* dep = DeploymentFor(task, hold);
    if (dep == nullptr) {
        CallError e;
        e.error = core::Error{ErrorCode::kModelNotFound,
                              "The model '" + task.model_alias + "' is no longer available.", ""};
        e.retryable = false;
        FailAttempt(loop, std::move(task), e, s);
        return;
    }
    std::string body = task.request_json;
    auto peek = json::PeekRequest(body);
    if (peek) {
        body = json::ReplaceModel(body, *peek, dep->mapping.provider_model_id);
    }
    std::string idem = task.id + "-" + std::to_string(task.attempt);
    auto self = shared_from_this();
    int attempt = task.attempt;
    d_.jobs.Submit(
        loop, *dep, KindOf(task.type), std::move(body), idem,
        [self, &loop, task, hold, attempt, s](JobResult<JobState> r) mutable {
            if (!r) {
                self->FailAttempt(loop, std::move(task), r.error(), s);
                return;
            }
            JobState job = std::move(*r);
            std::string job_id = job.id.empty() ? std::string("sync") : job.id;
            self->Mutate(
                loop, task.id,
                [attempt, job_id, progress = job.progress](AsyncTask& t) {
                    if (t.state != TaskState::kRunning || t.attempt != attempt) {
                        return false;
                    }
                    t.upstream_job_id = job_id;
                    t.progress = progress;
                    t.message = "Generating";
                    return true;
                },
                [self, &loop, job = std::move(job), job_id, hold,
                 s](core::Result<Mutation> m) mutable {
                    if (!m) {
                        if (s) {
                            s->Retry(std::chrono::seconds(2), m.error().message);
                        }
                        return;
                    }
                    if (!m->applied) {
                        // Cancelled (or timed out) while the job was being started: stop
                        // it.
                        if (m->found && m->task.state == TaskState::kCancelled) {
                            const auto* running = hold->FindDeployment(m->task.mapping_id);
                            if (running != nullptr && job_id != "sync") {
                                self->d_.jobs.Cancel(loop, *running, KindOf(m->task.type), job_id,
                                                     [](JobResult<void>) {});
                            }
                        }
                        Settle(s);
                        return;
                    }
                    AsyncTask t = m->task;
                    self->Publish(t, "task.started");
                    if (job.phase == JobState::Phase::kSucceeded) {
                        self->Finish(loop, std::move(t), std::move(job), s);
                        return;
                    }
                    self->EnqueueThenSettle("poll", t, self->d_.options.poll_interval, s);
                });
        });
}

void TaskEngine::HandlePoll(core::Loop& loop, AsyncTask task, bus::SettlementPtr s) {
    int64_t now = d_.clock.NowUnixMs();
    if (domain::IsTerminal(task.state) || task.state != TaskState::kRunning ||
        task.upstream_job_id.empty()) {
        Settle(s);
        return;
    }
    if (TimedOut(task, now)) {
        TimeOut(loop, std::move(task), s);
        return;
    }
    domain::SnapshotPtr hold;
    const domain::Deployment* dep = DeploymentFor(task, hold);
    if (dep == nullptr) {
        CallError e;
        e.error = core::Error{ErrorCode::kModelNotFound,
                              "The model '" + task.model_alias + "' is no longer available.", ""};
        FailAttempt(loop, std::move(task), e, s);
        return;
    }
    auto self = shared_from_this();
    int64_t version = task.version;
    d_.jobs.Poll(
        loop, *dep, KindOf(task.type), task.upstream_job_id,
        [self, &loop, task, hold, version, s](JobResult<JobState> r) mutable {
            if (!r && !r.error().retryable) {
                self->FailAttempt(loop, std::move(task), r.error(), s);
                return;
            }
            if (r && r->phase == JobState::Phase::kSucceeded) {
                self->Finish(loop, std::move(task), std::move(*r), s);
                return;
            }
            if (r && r->phase == JobState::Phase::kFailed) {
                CallError e;
                e.error = core::Error{
                    ErrorCode::kUpstreamError,
                    r->error_message.empty() ? "The provider job failed." : r->error_message, ""};
                e.retryable = true;
                self->FailAttempt(loop, std::move(task), e, s);
                return;
            }
            if (r && r->phase == JobState::Phase::kCancelled) {
                int64_t now2 = self->d_.clock.NowUnixMs();
                self->Mutate(
                    loop, task.id,
                    [version, now2](AsyncTask& t) {
                        if (t.version != version || domain::IsTerminal(t.state)) {
                            return false;
                        }
                        t.state = TaskState::kCancelled;
                        t.error_message = "Cancelled by the provider";
                        t.error_code = "cancelled";
                        t.completed_at_ms = now2;
                        return true;
                    },
                    [self, s](core::Result<Mutation> m) {
                        if (m && m->applied) {
                            self->Notify(m->task, "task.cancelled", s);
                            return;
                        }
                        Settle(s);
                    });
                return;
            }
            // Still running (or a transient poll error): heartbeat + progress, next poll. The
            // update bumps the version, which retires any duplicate chain.
            int progress = r ? r->progress : task.progress;
            bool transient_error = !r;
            std::string error_text = r ? std::string() : r.error().error.message;
            self->Mutate(
                loop, task.id,
                [version, progress, transient_error](AsyncTask& t) {
                    if (t.version != version || t.state != TaskState::kRunning) {
                        return false;
                    }
                    t.progress = std::max(t.progress, std::min(progress, 99));
                    t.message = transient_error ? "Waiting for the provider" : "Generating";
                    return true;
                },
                [self, old_progress = task.progress, s](core::Result<Mutation> m) {
                    if (!m) {
                        if (s) {
                            s->Retry(std::chrono::seconds(2), m.error().message);
                        }
                        return;
                    }
                    if (!m->applied) {
                        Settle(s);
                        return;
                    }
                    const AsyncTask& t = m->task;
                    if (t.progress != old_progress) {
                        self->Publish(t, "task.progress");
                        // Progress webhooks at quarter marks only (not on every poll).
                        if (t.progress / 25 > old_progress / 25 && !t.webhook_url.empty() &&
                            self->d_.webhook) {
                            // The next poll is durable before this step is settled.
                            self->Enqueue("poll", t, self->d_.options.poll_interval,
                                          [self, t, s](core::Result<void> q) {
                                              if (!q) {
                                                  RetryStep(s, q.error());
                                                  return;
                                              }
                                              self->SendWebhook(t, "task.progress", s);
                                          });
                            return;
                        }
                    }
                    self->EnqueueThenSettle("poll", t, self->d_.options.poll_interval, s);
                });
        });
}

void TaskEngine::Finish(core::Loop& loop, AsyncTask task, JobState job, bus::SettlementPtr s) {
    domain::SnapshotPtr hold;
    const domain::Deployment* dep = DeploymentFor(task, hold);
    if (dep == nullptr) {
        CallError e;
        e.error = core::Error{ErrorCode::kModelNotFound, "The model is no longer available.", ""};
        FailAttempt(loop, std::move(task), e, s);
        return;
    }
    JobKind kind = KindOf(task.type);
    size_t count = kind == JobKind::kVideo ? 1 : job.outputs.size();
    if (count == 0) {
        CallError e;
        e.error = core::Error{ErrorCode::kUpstreamError, "The provider returned no output.", ""};
        e.retryable = true;
        FailAttempt(loop, std::move(task), e, s);
        return;
    }
    // Download the outputs one after the other into the media store.
    struct Fetching {
        std::vector<std::string> urls;
        size_t next = 0;
    };
    auto state = std::make_shared<Fetching>();
    auto self = shared_from_this();
    auto step = std::make_shared<std::function<void()>>();
    std::weak_ptr<std::function<void()>> weak_step = step;
    *step = [self, &loop, task, job, hold, dep, kind, count, state, weak_step, s]() mutable {
        auto again = weak_step.lock();
        if (state->next == count) {
            // All stored: complete the task (unless it was cancelled meanwhile).
            int64_t now = self->d_.clock.NowUnixMs();
            std::string data = "[";
            for (size_t i = 0; i < state->urls.size(); ++i) {
                data +=
                    (i == 0 ? "{\"url\":" : ",{\"url\":") + core::JsonQuote(state->urls[i]) + "}";
            }
            data += "]";
            double seconds = job.seconds > 0 ? job.seconds : RequestedSeconds(task);
            std::string result = "{\"created\":" + std::to_string(now / 1000) + ",\"data\":" + data;
            if (kind == JobKind::kVideo) {
                result += ",\"model\":" + core::JsonQuote(task.model_alias);
                result += ",\"usage\":{\"seconds\":" + std::to_string(seconds) + "}";
            }
            result += "}";
            // The bill (exact micro-units) is committed in the same transaction as the
            // completion: a crash can never leave a completed task unbilled, or bill it twice.
            domain::UsageAmounts usage;
            if (kind == JobKind::kVideo) {
                usage.video_seconds = seconds;
            } else {
                usage.images = static_cast<int64_t>(count);
            }
            Bill bill;
            domain::RequestLogRow& row = bill.row;
            row.request_id = task.id;
            row.virtual_key_id = task.virtual_key_id;
            row.group_id = task.group_id;
            row.model_alias = task.model_alias;
            row.provider_model = dep->mapping.provider_model_id;
            row.request_type = kind == JobKind::kVideo ? "video" : "image";
            row.status_code = 200;
            row.timestamp_ms = now;
            row.response_time_ms = now - task.created_at_ms;
            const domain::ModelCost* cost = dep->cost ? &*dep->cost : nullptr;
            row.cost = domain::ComputeCost(
                cost,
                kind == JobKind::kVideo ? domain::RequestKind::kVideo : domain::RequestKind::kImage,
                usage);
            bill.description = "Generation by virtual key #" + std::to_string(task.virtual_key_id) +
                               " (" + task.id + ")";
            int attempt = task.attempt;
            self->Mutate(
                loop, task.id,
                [result, now, attempt](AsyncTask& t) {
                    if (t.state != TaskState::kRunning || t.attempt != attempt) {
                        return false;
                    }
                    t.state = TaskState::kCompleted;
                    t.progress = 100;
                    t.message = "Completed";
                    t.result_json = result;
                    t.error_message.clear();
                    t.error_code.clear();
                    t.completed_at_ms = now;
                    return true;
                },
                [self, hold, s](core::Result<Mutation> m) {
                    if (!m) {
                        if (s) {
                            s->Retry(std::chrono::seconds(2), m.error().message);
                        }
                        return;
                    }
                    if (m->applied) {
                        self->Notify(m->task, "task.completed", s);
                        return;
                    }
                    Settle(s);
                },
                std::move(bill));
            return;
        }
        size_t i = state->next;
        std::string ext = kind == JobKind::kVideo ? "mp4" : "png";
        // One flat directory: a directory per task would cost an inode allocation per task.
        std::string key = "tasks/" + task.id + "-" + std::to_string(task.attempt) + "-" +
                          std::to_string(i) + "." + ext;
        auto writer =
            self->d_.media.Create(key, kind == JobKind::kVideo ? "video/mp4" : "image/png");
        if (!writer) {
            CallError e;
            e.error = writer.error();
            e.retryable = true;
            self->FailAttempt(loop, std::move(task), e, s);
            return;
        }
        std::shared_ptr<media::MediaWriter> w(std::move(*writer));
        self->d_.jobs.Fetch(
            loop, *dep, kind, job, i, w,
            [self, &loop, task, state, w, again, key, s](core::Result<void> r) mutable {
                if (r) {
                    auto info = w->Commit();
                    if (!info) {
                        r = tl::unexpected(info.error());
                    }
                }
                if (!r) {
                    CallError e;
                    e.error = r.error();
                    e.retryable = true;
                    self->FailAttempt(loop, std::move(task), e, s);
                    return;
                }
                state->urls.push_back(self->d_.media.PublicUrl(key));
                state->next += 1;
                if (again) {
                    (*again)();
                }
            });
    };
    (*step)();
}

void TaskEngine::FailAttempt(core::Loop& loop,
                             AsyncTask task,
                             CallError error,
                             bus::SettlementPtr s) {
    int64_t now = d_.clock.NowUnixMs();
    // Automatic retries: at most max_retries per task (manual retries do not refill them).
    bool retry = error.retryable && task.attempt <= task.max_retries;
    auto delay = std::chrono::milliseconds(0);
    if (retry) {
        double jitter = static_cast<double>(core::RandomU64() % 10000) / 10000.0;
        delay = http_client::BackoffDelay(task.retry_count + 1, d_.options.retry_base,
                                          d_.options.retry_max, jitter);
        if (error.retry_after.count() > delay.count()) {
            delay = error.retry_after;
        }
    }
    int attempt = task.attempt;
    std::string message = error.error.message;
    auto self = shared_from_this();
    Mutate(
        loop, task.id,
        [retry, delay, now, attempt, message, retryable = error.retryable](AsyncTask& t) {
            if (t.state != TaskState::kRunning || t.attempt != attempt) {
                return false;
            }
            if (retry) {
                t.state = TaskState::kPending;
                t.retry_count += 1;
                t.next_attempt_at_ms = now + delay.count();
                t.upstream_job_id.clear();
                t.message = "Retry " + std::to_string(t.retry_count) + "/" +
                            std::to_string(t.max_retries) + " scheduled: " + message;
            } else {
                t.state = TaskState::kFailed;
                t.error_message = message;
                t.error_code = "generation_failed";
                t.retryable = retryable;
                t.message = "Failed";
                t.completed_at_ms = now;
            }
            return true;
        },
        [self, retry, delay, s](core::Result<Mutation> m) {
            if (!m) {
                if (s) {
                    s->Retry(std::chrono::seconds(2), m.error().message);
                }
                return;
            }
            if (!m->applied) {
                Settle(s);
                return;
            }
            const AsyncTask& t = m->task;
            if (retry) {
                self->Publish(t, "task.progress");
                self->EnqueueThenSettle("start", t, delay, s);
            } else {
                self->Notify(t, "task.failed", s);
            }
        });
}

void TaskEngine::TimeOut(core::Loop& loop, AsyncTask task, bus::SettlementPtr s) {
    int64_t now = d_.clock.NowUnixMs();
    auto self = shared_from_this();
    Mutate(
        loop, task.id,
        [now](AsyncTask& t) {
            if (domain::IsTerminal(t.state)) {
                return false;
            }
            t.state = TaskState::kTimedOut;
            t.error_message =
                "The task did not finish within " + std::to_string(t.timeout_seconds) + " s.";
            t.error_code = "timeout";
            t.retryable = false;
            t.message = "Timed out";
            t.completed_at_ms = now;
            return true;
        },
        [self, s](core::Result<Mutation> m) {
            if (m && m->applied) {
                const AsyncTask& t = m->task;
                if (!t.upstream_job_id.empty()) {
                    self->Enqueue("cancel_upstream", t, std::chrono::milliseconds(0), nullptr);
                }
                self->Notify(t, "task.timedout", s);
                return;
            }
            Settle(s);
        });
}

void TaskEngine::HandleCancelUpstream(core::Loop& loop, AsyncTask task, bus::SettlementPtr s) {
    if (task.upstream_job_id.empty() || task.upstream_job_id == "sync") {
        Settle(s);
        return;
    }
    domain::SnapshotPtr hold;
    const domain::Deployment* dep = DeploymentFor(task, hold);
    if (dep == nullptr) {
        Settle(s);
        return;
    }
    d_.jobs.Cancel(loop, *dep, KindOf(task.type), task.upstream_job_id,
                   [s, hold](JobResult<void> r) {
                       if (!r && r.error().retryable && s) {
                           s->Retry(std::chrono::seconds(2), r.error().error.message);
                           return;
                       }
                       Settle(s);
                   });
}

void TaskEngine::Sweep() {
    if (stopping_ || sweeping_) {
        return;
    }
    sweeping_ = true;
    core::Loop& loop = any_loop_();
    auto self = shared_from_this();
    auto& store = d_.store;
    store::TaskQuery q;
    q.non_terminal_only = true;
    q.limit = 1000;
    d_.executor.Call(
        loop, [&store, q]() { return store.ListTasks(q); },
        [self, &loop](core::Result<std::vector<AsyncTask>> r) {
            self->sweeping_ = false;
            if (r) {
                int64_t now = self->d_.clock.NowUnixMs();
                int64_t stale_ms =
                    std::max<int64_t>(30000, 10 * Ms(self->d_.options.poll_interval));
                for (auto& t : *r) {
                    if (TimedOut(t, now)) {
                        self->TimeOut(loop, std::move(t), nullptr);
                    } else if (t.state == TaskState::kRunning && !t.upstream_job_id.empty() &&
                               now - t.updated_at_ms > stale_ms) {
                        // Its poll chain was lost (a crash between two steps): restart it.
                        self->Enqueue("poll", t, std::chrono::milliseconds(0), nullptr);
                    } else if (t.state == TaskState::kPending && now - t.updated_at_ms > stale_ms &&
                               now >= t.next_attempt_at_ms) {
                        self->Enqueue("start", t, std::chrono::milliseconds(0), nullptr);
                    }
                }
            }
            if (!self->stopping_) {
                std::weak_ptr<TaskEngine> weak = self;
                self->sweep_timer_ = loop.StartTimer(self->d_.options.sweep_interval, [weak] {
                    if (auto s = weak.lock()) {
                        s->Sweep();
                    }
                });
            }
        });
}

}  // namespace conduit::tasks
