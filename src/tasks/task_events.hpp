#pragma once

#include "core/error.hpp"
#include "domain/task.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::tasks {

/// Backplane channel carrying every task event (all instances publish and subscribe).
inline constexpr std::string_view kTaskEventsChannel = "conduit.tasks";

/// A task state change or progress update, as published on the Backplane. The real-time hubs
/// turn these into SignalR invocations; the JSON schema is documented in docs/task-events.md.
struct TaskEvent {
    std::string event;  // task.started | task.progress | task.completed | task.failed |
                        // task.cancelled | task.timedout
    std::string task_id;
    std::string task_type;  // image_generation | video_generation
    int64_t virtual_key_id = 0;
    std::string state;  // pending | running | completed | failed | cancelled | timedout
    int progress = 0;
    std::string message;
    std::string result_json;  // completed: the task result object (JSON text)
    std::string error;        // failed / timedout / cancelled: reason
    bool retryable = false;
    std::string model;
    std::string prompt;
    int64_t timeout_seconds = 0;
    int64_t attempt = 0;
    int64_t timestamp_ms = 0;
};

/// One JSON object; `result` is embedded as JSON, not as a string.
std::string ToJson(const TaskEvent& e);
core::Result<TaskEvent> ParseTaskEvent(std::string_view json);

/// The event that describes `task` entering its current state (or a progress update).
TaskEvent EventFor(const domain::AsyncTask& task, std::string_view event, int64_t now_ms);

}  // namespace conduit::tasks
