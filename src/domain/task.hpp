#pragma once

#include "domain/entities.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace conduit::domain {

/// Task states (specs/api.md §4), everywhere the same strings.
enum class TaskState { kPending, kRunning, kCompleted, kFailed, kCancelled, kTimedOut };

std::string_view ToString(TaskState s);
std::optional<TaskState> ParseTaskState(std::string_view s);
/// Completed, failed, cancelled and timed out are final.
bool IsTerminal(TaskState s);
/// Whether `from → to` is a legal transition: pending → running | cancelled | timedout | failed;
/// running → completed | failed | cancelled | timedout | pending (a retry); failed → pending
/// (operator retry of a retryable task). Terminal states are otherwise final.
bool CanTransition(TaskState from, TaskState to);

/// Kinds of task.
inline constexpr std::string_view kImageTask = "image_generation";
inline constexpr std::string_view kVideoTask = "video_generation";

/// An asynchronous image or video generation task (the store is its source of truth).
struct AsyncTask {
    std::string id;    // "task_" + 32 hex
    std::string type;  // kImageTask | kVideoTask
    TaskState state = TaskState::kPending;
    int progress = 0;  // 0..100
    std::string message;
    Id virtual_key_id = 0;
    Id group_id = 0;
    std::string model_alias;
    std::string request_json;   // the submitted request, without webhook/idempotency fields
    std::string result_json;    // set when completed
    std::string error_message;  // set when failed / timed out / cancelled (reason)
    std::string error_code;
    bool retryable = true;
    std::string webhook_url;
    std::string webhook_headers_json;  // {"Name":"value",...} or empty
    int64_t timeout_seconds = 0;       // 0 = no timeout
    std::string idempotency_key;
    std::string request_hash;  // SHA-256 of the canonical request, for idempotency conflicts
    int attempt = 0;           // provider attempts started so far
    int retry_count = 0;       // automatic + manual retries so far
    int max_retries = 3;
    std::string upstream_job_id;  // provider job of `attempt` (empty before it is started)
    Id mapping_id = 0;            // deployment used by the current attempt
    int64_t created_at_ms = 0;
    int64_t updated_at_ms = 0;
    int64_t started_at_ms = 0;    // first time running
    int64_t completed_at_ms = 0;  // when terminal
    int64_t next_attempt_at_ms = 0;
    int64_t version = 0;  // optimistic concurrency: bumped by every update
};

/// A new task id: "task_" + 32 lowercase hex characters (random).
std::string NewTaskId();

}  // namespace conduit::domain
