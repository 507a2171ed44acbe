#pragma once

#include "core/clock.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/config_state.hpp"
#include "media/media_store.hpp"
#include "net/router.hpp"
#include "tasks/task_engine.hpp"

#include <memory>
#include <string>

namespace conduit::tasks {

struct TaskRoutesDeps {
    std::shared_ptr<TaskEngine> engine;
    gateway::ConfigState& config;
    gateway::BalanceBook& book;
    media::MediaStore& media;
    const core::Clock& clock;
    std::string public_base_url;  // for check_status_url; empty = from the Host header
};

/// Registers the task routes of specs/api.md §4 (image and video async submit, status, cancel,
/// retry; /v1/tasks/{id}, /cancel, /poll) and GET/HEAD /v1/media/{key}. Handlers translate HTTP
/// into TaskEngine calls and back; every task route checks ownership (another key's task is 404).
void RegisterTaskRoutes(net::Router& router, std::shared_ptr<TaskRoutesDeps> deps);

/// Status JSON views of a task.
enum class TaskView { kImage, kVideo, kGeneric };
std::string TaskJson(const domain::AsyncTask& t, TaskView view);

}  // namespace conduit::tasks
