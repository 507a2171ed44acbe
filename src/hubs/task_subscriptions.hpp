#pragma once

#include "domain/task.hpp"
#include "hubs/hub_events.hpp"
#include "tasks/task_events.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace conduit::hubs {

/// The task subscriptions of one hub's local connections, and the delivery of task events to
/// them: to every connection subscribed to the task (ownership checked before it counts), and to
/// every connection of the owning key subscribed to the task's type. A connection gets each event
/// once even when both match; another key's events never reach it.
///
/// Subscribing to a task is two steps because ownership is checked asynchronously: Begin (events
/// of the task are buffered for the connection), then Confirm (the task as read from the store:
/// events the connection missed before Begin are synthesized from it, then the buffer is flushed)
/// or Abort. So an event is never lost between the check and the subscription, and nothing is
/// sent before ownership is known.
///
/// Thread-safe; `send` is called with the internal lock held (keeps per-connection order), so it
/// must not call back into this object.
class TaskSubscriptions {
public:
    using Mapper = std::function<std::optional<HubMessage>(const tasks::TaskEvent&)>;
    using Sender = std::function<void(const std::string& connection_id, const HubMessage& msg)>;

    /// Most task + type subscriptions of one connection (bounds memory per connection).
    static constexpr size_t kMaxPerConnection = 1000;
    /// Events buffered per pending subscription (the ownership check takes one store read).
    static constexpr size_t kMaxBuffered = 64;

    TaskSubscriptions(Mapper mapper, Sender send);

    /// Starts a task subscription (pending). False when the connection has too many.
    bool Begin(const std::string& connection_id, const std::string& task_id, int64_t key_id);
    /// Ownership confirmed: `task` is the store copy read after Begin; `now_ms` stamps the
    /// synthesized events.
    void Confirm(const std::string& connection_id, const domain::AsyncTask& task, int64_t now_ms);
    /// Removes a task subscription (pending or confirmed).
    void Remove(const std::string& connection_id, const std::string& task_id);
    /// Type subscription (image_generation / video_generation) limited to `key_id`'s tasks.
    bool AddType(const std::string& connection_id, int64_t key_id, const std::string& type);
    void RemoveType(const std::string& connection_id, int64_t key_id, const std::string& type);
    /// Drops everything of a connection (on disconnect).
    void RemoveConnection(const std::string& connection_id);

    /// Delivers one task event. Any thread.
    void OnEvent(const tasks::TaskEvent& e);

    /// Subscriptions of one connection (tasks + types), for tests and limits.
    size_t CountFor(const std::string& connection_id) const;

private:
    struct TaskSub {
        int64_t key_id = 0;
        bool pending = true;
        std::vector<tasks::TaskEvent> buffered;
        // Events synthesized by Confirm from the store copy: the live event may still follow
        // (the store write precedes its publication), so it is dropped once, by (event, attempt).
        std::vector<std::pair<std::string, int64_t>> synthesized;
    };
    struct ConnSubs {
        std::set<std::string> tasks;
        std::set<std::pair<int64_t, std::string>> types;
        size_t size() const { return tasks.size() + types.size(); }
    };
    void SendEvent(const std::string& connection_id, const tasks::TaskEvent& e);

    Mapper mapper_;
    Sender send_;
    mutable std::mutex mu_;
    std::unordered_map<std::string, std::map<std::string, TaskSub>> by_task_;   // task → conn
    std::map<std::pair<int64_t, std::string>, std::set<std::string>> by_type_;  // (key, type)
    std::unordered_map<std::string, ConnSubs> by_conn_;
};

}  // namespace conduit::hubs
