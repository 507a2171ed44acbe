#pragma once

#include "bus/backplane.hpp"
#include "bus/work_queue.hpp"
#include "core/clock.hpp"
#include "core/loop.hpp"
#include "domain/task.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/config_state.hpp"
#include "gateway/spend_recorder.hpp"
#include "media/media_store.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"
#include "tasks/provider_jobs.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace conduit::tasks {

/// Queue topic of task work.
inline constexpr std::string_view kTasksTopic = "tasks";

struct TaskOptions {
    std::chrono::milliseconds poll_interval{1000};  // provider job polling
    std::chrono::milliseconds retry_base{2000};     // first automatic retry delay
    std::chrono::milliseconds retry_max{60000};
    int max_retries = 3;                                 // automatic retries of failed attempts
    std::chrono::milliseconds sweep_interval{2000};      // timeout sweeper period
    std::chrono::milliseconds poll_wait_interval{1000};  // /v1/tasks/{id}/poll re-check period
};

/// What the engine needs (composition root wires it).
struct TaskEngineDeps {
    store::Store& store;
    store::Executor& executor;
    gateway::ConfigState& config;
    gateway::SpendRecorder& spend;
    bus::WorkQueue& queue;
    bus::Backplane& backplane;
    media::MediaStore& media;
    ProviderJobs& jobs;
    const core::Clock& clock;
    TaskOptions options;
    /// Sends a webhook for a task event (the webhooks component); may be empty.
    /// Queues a webhook for a task event; `done` reports when it is durably queued.
    std::function<void(const domain::AsyncTask& task,
                       std::string_view event_type,
                       std::string delivery_id,
                       std::string payload,
                       std::function<void(core::Result<void>)> done)>
        webhook;
};

/// A task submission, already authenticated and validated by the route.
struct SubmitRequest {
    std::string type;  // domain::kImageTask | kVideoTask
    domain::Id virtual_key_id = 0;
    domain::Id group_id = 0;
    domain::Id mapping_id = 0;
    std::string model_alias;
    std::string request_json;  // forwarded to the provider (model not yet rewritten)
    std::string request_hash;  // of the client's body, for Idempotency-Key conflicts
    std::string webhook_url;
    std::string webhook_headers_json;
    int64_t timeout_seconds = 0;
    std::string idempotency_key;
};

struct SubmitOutcome {
    domain::AsyncTask task;
    bool created = true;
};

/// The async image/video task engine: the API-side operations (submit, status, cancel, retry,
/// wait) and the worker that runs tasks from the queue (start provider job → record its id →
/// poll with progress → store media → complete, with retries, cancellation and timeouts).
///
/// The store is the source of truth; every state change goes through an optimistic update, so
/// API instances and workers anywhere agree (e.g. a cancel wins over a completion racing it).
/// Every state change and progress update is published on the Backplane as a TaskEvent.
///
/// Threading: API methods are called on a loop thread and answer on the same loop. Worker
/// callbacks run on the loop the queue assigns; store calls run on the executor.
class TaskEngine : public std::enable_shared_from_this<TaskEngine> {
public:
    explicit TaskEngine(TaskEngineDeps deps);

    // --- API side ---
    void Submit(core::Loop& loop,
                SubmitRequest req,
                std::function<void(core::Result<SubmitOutcome>)> done);
    /// The task if it belongs to `virtual_key_id`, else kNotFound.
    void Get(core::Loop& loop,
             std::string task_id,
             domain::Id virtual_key_id,
             std::function<void(core::Result<domain::AsyncTask>)> done);
    /// Cancels a non-terminal task (kConflict if it is terminal); the provider job is stopped.
    void Cancel(core::Loop& loop,
                std::string task_id,
                domain::Id virtual_key_id,
                std::function<void(core::Result<domain::AsyncTask>)> done);
    /// Re-queues a failed, retryable task (kConflict otherwise).
    void Retry(core::Loop& loop,
               std::string task_id,
               domain::Id virtual_key_id,
               std::function<void(core::Result<domain::AsyncTask>)> done);
    /// Answers as soon as the task is terminal, or after `timeout` with its current state.
    void WaitTerminal(core::Loop& loop,
                      std::string task_id,
                      domain::Id virtual_key_id,
                      std::chrono::milliseconds timeout,
                      std::chrono::milliseconds interval,
                      std::function<void(core::Result<domain::AsyncTask>)> done);

    // --- Worker side ---
    /// Registers the queue consumer and the timeout sweeper. Call before the queue starts.
    void StartWorker(std::function<core::Loop&()> any_loop);
    /// Stops the sweeper (in-flight steps finish or are redelivered later).
    void StopWorker();

    /// Backplane subscription feeding WaitTerminal (call once at start-up).
    void SubscribeEvents();

private:
    struct Mutation {
        domain::AsyncTask task;  // after the change (or as found when not applied)
        bool applied = false;
        bool found = false;
    };
    using Mutator = std::function<bool(domain::AsyncTask&)>;  // false = leave unchanged
    /// Spend committed together with a task change (Store::UpdateTaskWithSpend).
    struct Bill {
        domain::RequestLogRow row;
        std::string description;
    };
    void Mutate(core::Loop& loop,
                std::string task_id,
                Mutator m,
                std::function<void(core::Result<Mutation>)> done,
                std::optional<Bill> bill = std::nullopt);
    void Enqueue(std::string op,
                 const domain::AsyncTask& task,
                 std::chrono::milliseconds delay,
                 std::function<void(core::Result<void>)> done);
    /// Enqueue, then settle `s` once the message is durable (retry the step if it is not).
    void EnqueueThenSettle(std::string op,
                           const domain::AsyncTask& task,
                           std::chrono::milliseconds delay,
                           bus::SettlementPtr s);
    void Publish(const domain::AsyncTask& task, std::string_view event);
    /// Publishes the event and queues its webhook; settles `s` (may be null) afterwards.
    void Notify(const domain::AsyncTask& task,
                std::string_view event,
                bus::SettlementPtr s = nullptr);
    void SendWebhook(const domain::AsyncTask& task, std::string_view event, bus::SettlementPtr s);

    void OnMessage(bus::Delivery delivery, bus::SettlementPtr settlement);
    void HandleStart(core::Loop& loop, domain::AsyncTask task, bus::SettlementPtr s);
    void HandlePoll(core::Loop& loop, domain::AsyncTask task, bus::SettlementPtr s);
    void HandleCancelUpstream(core::Loop& loop, domain::AsyncTask task, bus::SettlementPtr s);
    void SubmitJob(core::Loop& loop, domain::AsyncTask task, bus::SettlementPtr s);
    void Finish(core::Loop& loop, domain::AsyncTask task, JobState job, bus::SettlementPtr s);
    void FailAttempt(core::Loop& loop,
                     domain::AsyncTask task,
                     CallError error,
                     bus::SettlementPtr s);
    void TimeOut(core::Loop& loop, domain::AsyncTask task, bus::SettlementPtr s);
    void Sweep();

    const domain::Deployment* DeploymentFor(const domain::AsyncTask& task,
                                            domain::SnapshotPtr& hold) const;
    std::string WebhookPayload(const domain::AsyncTask& task, std::string_view type) const;

    TaskEngineDeps d_;
    std::function<core::Loop&()> any_loop_;
    core::TimerPtr sweep_timer_;
    bool sweeping_ = false;
    std::atomic<bool> stopping_{false};

    // Waiters of WaitTerminal, by task id (woken by every Backplane event of the task). A waiter
    // stays registered until its wait ends (terminal, timeout, unknown task), then is removed,
    // so ids that never see another event do not pile up.
    std::mutex waiters_mu_;
    uint64_t next_waiter_ = 0;
    std::unordered_map<std::string, std::vector<std::pair<uint64_t, std::function<void()>>>>
        waiters_;
    void ForgetWaiter(const std::string& task_id, uint64_t token);
};

/// JobKind of a task type.
JobKind KindOf(std::string_view task_type);

/// The webhook-id of a task event: stable for the same event of the same attempt.
std::string WebhookIdFor(const domain::AsyncTask& task, std::string_view event);
/// "task.completed" etc. for a terminal state; empty otherwise.
std::string_view TerminalEvent(domain::TaskState state);

}  // namespace conduit::tasks
