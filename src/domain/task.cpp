#include "domain/task.hpp"

#include "core/crypto.hpp"

namespace conduit::domain {

std::string_view ToString(TaskState s) {
    switch (s) {
        case TaskState::kPending:
            return "pending";
        case TaskState::kRunning:
            return "running";
        case TaskState::kCompleted:
            return "completed";
        case TaskState::kFailed:
            return "failed";
        case TaskState::kCancelled:
            return "cancelled";
        case TaskState::kTimedOut:
            return "timedout";
    }
    return "pending";
}

std::optional<TaskState> ParseTaskState(std::string_view s) {
    for (auto st : {TaskState::kPending, TaskState::kRunning, TaskState::kCompleted,
                    TaskState::kFailed, TaskState::kCancelled, TaskState::kTimedOut}) {
        if (ToString(st) == s) {
            return st;
        }
    }
    return std::nullopt;
}

bool IsTerminal(TaskState s) {
    return s == TaskState::kCompleted || s == TaskState::kFailed || s == TaskState::kCancelled ||
           s == TaskState::kTimedOut;
}

bool CanTransition(TaskState from, TaskState to) {
    switch (from) {
        case TaskState::kPending:
            return to == TaskState::kRunning || to == TaskState::kCancelled ||
                   to == TaskState::kTimedOut || to == TaskState::kFailed;
        case TaskState::kRunning:
            return to == TaskState::kCompleted || to == TaskState::kFailed ||
                   to == TaskState::kCancelled || to == TaskState::kTimedOut ||
                   to == TaskState::kPending || to == TaskState::kRunning;
        case TaskState::kFailed:
            return to == TaskState::kPending;
        default:
            return false;
    }
}

std::string NewTaskId() { return "task_" + core::HexEncode(core::RandomBytes(16)); }

}  // namespace conduit::domain
