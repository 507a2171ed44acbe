#pragma once

#include "tasks/task_events.hpp"

#include <boost/json/array.hpp>

#include <optional>
#include <string>

/// Conduit's real-time hubs (specs/api.md §5): task events from the Backplane turned into
/// SignalR invocations, with ownership-checked subscriptions.
namespace conduit::hubs {

/// One server→client invocation: the client method and its positional arguments.
struct HubMessage {
    std::string target;
    boost::json::array args;
};

/// `/hubs/tasks`: TaskStarted(taskId, taskType, metadata), TaskProgress(taskId, progress,
/// message), TaskCompleted(taskId, result), TaskFailed(taskId, error, isRetryable),
/// TaskCancelled(taskId, reason), TaskTimedOut(taskId, timeoutSeconds). nullopt for events the
/// hub does not forward (task.created). Pure; any thread.
std::optional<HubMessage> TaskHubMessage(const tasks::TaskEvent& e);

/// `/hubs/image-generation`: ImageGeneration{Started,Progress,Completed,Failed}; nullopt for
/// non-image tasks and events without a counterpart. Pure; any thread.
std::optional<HubMessage> ImageHubMessage(const tasks::TaskEvent& e);

/// `/hubs/video-generation`: VideoGeneration{Started,Progress,Completed,Failed}; nullopt for
/// non-video tasks and events without a counterpart. Pure; any thread.
std::optional<HubMessage> VideoHubMessage(const tasks::TaskEvent& e);

}  // namespace conduit::hubs
