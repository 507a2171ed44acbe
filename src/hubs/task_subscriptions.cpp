#include "hubs/task_subscriptions.hpp"

#include "tasks/task_engine.hpp"

#include <algorithm>

namespace conduit::hubs {

TaskSubscriptions::TaskSubscriptions(Mapper mapper, Sender send)
    : mapper_(std::move(mapper)), send_(std::move(send)) {}

bool TaskSubscriptions::Begin(const std::string& connection_id,
                              const std::string& task_id,
                              int64_t key_id) {
    std::lock_guard lock(mu_);
    auto& conn = by_conn_[connection_id];
    if (conn.tasks.count(task_id) == 0 && conn.size() >= kMaxPerConnection) {
        return false;
    }
    auto& sub = by_task_[task_id][connection_id];
    if (conn.tasks.insert(task_id).second) {
        sub.key_id = key_id;
        sub.pending = true;
    }
    // A repeated subscribe keeps the existing (confirmed) subscription: Confirm finds it
    // non-pending and sends nothing again.
    return true;
}

void TaskSubscriptions::SendEvent(const std::string& connection_id, const tasks::TaskEvent& e) {
    if (auto msg = mapper_(e)) {
        send_(connection_id, *msg);
    }
}

void TaskSubscriptions::Confirm(const std::string& connection_id,
                                const domain::AsyncTask& task,
                                int64_t now_ms) {
    std::lock_guard lock(mu_);
    auto t = by_task_.find(task.id);
    if (t == by_task_.end()) {
        return;  // unsubscribed or disconnected meanwhile
    }
    auto s = t->second.find(connection_id);
    if (s == t->second.end() || !s->second.pending) {
        return;
    }
    TaskSub& sub = s->second;
    if (auto ty = by_type_.find({sub.key_id, task.type});
        ty != by_type_.end() && ty->second.count(connection_id) != 0) {
        // A type subscription of the same connection already delivers every live event of this
        // task: nothing to catch up without sending something twice.
        sub.buffered.clear();
        sub.pending = false;
        return;
    }
    auto synthesize = [&](std::string_view event) {
        SendEvent(connection_id, tasks::EventFor(task, event, now_ms));
        sub.synthesized.emplace_back(std::string(event), task.attempt);
    };
    auto has = [&](std::string_view ev) {
        return std::any_of(sub.buffered.begin(), sub.buffered.end(),
                           [&](const tasks::TaskEvent& e) { return e.event == ev; });
    };
    std::string_view terminal = tasks::TerminalEvent(task.state);
    if (!terminal.empty()) {
        // Already over: the live terminal event when it was buffered (with what preceded it),
        // else the outcome as stored.
        if (has(terminal)) {
            for (const auto& e : sub.buffered) {
                SendEvent(connection_id, e);
            }
        } else {
            synthesize(terminal);
        }
    } else {
        // task.started is published once the provider job of the attempt is recorded (the
        // task is `running` a little earlier, while the job is being submitted): a job id
        // read after Begin means the event was published before the subscription existed.
        const bool started =
            task.state == domain::TaskState::kRunning && !task.upstream_job_id.empty();
        if (started && !has("task.started")) {
            // A late subscriber still sees TaskStarted first, then the progress so far.
            synthesize("task.started");
            if (task.progress > 0 && !has("task.progress")) {
                // A live progress repeating this value is harmless: not suppressed.
                SendEvent(connection_id, tasks::EventFor(task, "task.progress", now_ms));
            }
        }
        for (const auto& e : sub.buffered) {
            SendEvent(connection_id, e);
        }
    }
    sub.buffered.clear();
    sub.pending = false;
}

void TaskSubscriptions::Remove(const std::string& connection_id, const std::string& task_id) {
    std::lock_guard lock(mu_);
    if (auto t = by_task_.find(task_id); t != by_task_.end()) {
        t->second.erase(connection_id);
        if (t->second.empty()) {
            by_task_.erase(t);
        }
    }
    if (auto c = by_conn_.find(connection_id); c != by_conn_.end()) {
        c->second.tasks.erase(task_id);
        if (c->second.size() == 0) {
            by_conn_.erase(c);
        }
    }
}

bool TaskSubscriptions::AddType(const std::string& connection_id,
                                int64_t key_id,
                                const std::string& type) {
    std::lock_guard lock(mu_);
    auto& conn = by_conn_[connection_id];
    auto k = std::make_pair(key_id, type);
    if (conn.types.count(k) == 0 && conn.size() >= kMaxPerConnection) {
        return false;
    }
    conn.types.insert(k);
    by_type_[k].insert(connection_id);
    return true;
}

void TaskSubscriptions::RemoveType(const std::string& connection_id,
                                   int64_t key_id,
                                   const std::string& type) {
    std::lock_guard lock(mu_);
    auto k = std::make_pair(key_id, type);
    if (auto t = by_type_.find(k); t != by_type_.end()) {
        t->second.erase(connection_id);
        if (t->second.empty()) {
            by_type_.erase(t);
        }
    }
    if (auto c = by_conn_.find(connection_id); c != by_conn_.end()) {
        c->second.types.erase(k);
        if (c->second.size() == 0) {
            by_conn_.erase(c);
        }
    }
}

void TaskSubscriptions::RemoveConnection(const std::string& connection_id) {
    std::lock_guard lock(mu_);
    auto c = by_conn_.find(connection_id);
    if (c == by_conn_.end()) {
        return;
    }
    for (const auto& task_id : c->second.tasks) {
        if (auto t = by_task_.find(task_id); t != by_task_.end()) {
            t->second.erase(connection_id);
            if (t->second.empty()) {
                by_task_.erase(t);
            }
        }
    }
    for (const auto& k : c->second.types) {
        if (auto t = by_type_.find(k); t != by_type_.end()) {
            t->second.erase(connection_id);
            if (t->second.empty()) {
                by_type_.erase(t);
            }
        }
    }
    by_conn_.erase(c);
}

void TaskSubscriptions::OnEvent(const tasks::TaskEvent& e) {
    std::optional<HubMessage> msg;
    bool mapped = false;
    std::lock_guard lock(mu_);
    std::set<std::string> targets;
    if (auto t = by_type_.find({e.virtual_key_id, e.task_type}); t != by_type_.end()) {
        targets.insert(t->second.begin(), t->second.end());
    }
    if (auto t = by_task_.find(e.task_id); t != by_task_.end()) {
        for (auto& [conn, sub] : t->second) {
            if (sub.key_id != e.virtual_key_id || targets.count(conn) != 0) {
                // Never another key's task (ownership was checked at subscribe); a connection
                // also subscribed to the type gets the event through that subscription.
                continue;
            }
            auto synth = std::find(sub.synthesized.begin(), sub.synthesized.end(),
                                   std::make_pair(e.event, e.attempt));
            if (synth != sub.synthesized.end()) {
                sub.synthesized.erase(synth);  // already sent by Confirm
                continue;
            }
            if (sub.pending) {
                if (sub.buffered.size() < kMaxBuffered) {
                    sub.buffered.push_back(e);
                }
                continue;
            }
            targets.insert(conn);
        }
    }
    for (const auto& conn : targets) {
        if (!mapped) {
            msg = mapper_(e);
            mapped = true;
        }
        if (!msg) {
            return;
        }
        send_(conn, *msg);
    }
}

size_t TaskSubscriptions::CountFor(const std::string& connection_id) const {
    std::lock_guard lock(mu_);
    auto c = by_conn_.find(connection_id);
    return c == by_conn_.end() ? 0 : c->second.size();
}

}  // namespace conduit::hubs
