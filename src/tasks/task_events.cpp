#include "tasks/task_events.hpp"

#include "core/strings.hpp"
#include "json/helpers.hpp"

#include <boost/json.hpp>

namespace conduit::tasks {

std::string ToJson(const TaskEvent& e) {
    std::string out;
    out.reserve(256 + e.result_json.size() + e.prompt.size());
    out += "{\"event\":" + core::JsonQuote(e.event);
    out += ",\"task_id\":" + core::JsonQuote(e.task_id);
    out += ",\"task_type\":" + core::JsonQuote(e.task_type);
    out += ",\"virtual_key_id\":" + std::to_string(e.virtual_key_id);
    out += ",\"state\":" + core::JsonQuote(e.state);
    out += ",\"progress\":" + std::to_string(e.progress);
    out += ",\"message\":" + core::JsonQuote(e.message);
    out += ",\"result\":" + (e.result_json.empty() ? std::string("null") : e.result_json);
    out += ",\"error\":" + (e.error.empty() ? std::string("null") : core::JsonQuote(e.error));
    out += std::string(",\"retryable\":") + (e.retryable ? "true" : "false");
    out += ",\"model\":" + core::JsonQuote(e.model);
    out += ",\"prompt\":" + core::JsonQuote(e.prompt);
    out += ",\"timeout_seconds\":" + std::to_string(e.timeout_seconds);
    out += ",\"attempt\":" + std::to_string(e.attempt);
    out += ",\"timestamp_ms\":" + std::to_string(e.timestamp_ms);
    out += "}";
    return out;
}

core::Result<TaskEvent> ParseTaskEvent(std::string_view json) {
    auto obj = json::ParseObject(json);
    if (!obj) {
        return tl::unexpected(obj.error());
    }
    const auto& o = *obj;
    TaskEvent e;
    auto str = [&](const char* k) -> std::string {
        auto it = o.find(k);
        return it != o.end() && it->value().is_string() ? std::string(it->value().as_string())
                                                        : std::string();
    };
    auto num = [&](const char* k) -> int64_t {
        auto it = o.find(k);
        return it != o.end() && it->value().is_int64() ? it->value().as_int64() : 0;
    };
    e.event = str("event");
    e.task_id = str("task_id");
    e.task_type = str("task_type");
    e.virtual_key_id = num("virtual_key_id");
    e.state = str("state");
    e.progress = static_cast<int>(num("progress"));
    e.message = str("message");
    if (auto it = o.find("result"); it != o.end() && !it->value().is_null()) {
        e.result_json = json::Serialize(it->value());
    }
    e.error = str("error");
    if (auto it = o.find("retryable"); it != o.end() && it->value().is_bool()) {
        e.retryable = it->value().as_bool();
    }
    e.model = str("model");
    e.prompt = str("prompt");
    e.timeout_seconds = num("timeout_seconds");
    e.attempt = num("attempt");
    e.timestamp_ms = num("timestamp_ms");
    if (e.event.empty() || e.task_id.empty()) {
        return core::Fail(core::ErrorCode::kInvalidRequest, "not a task event");
    }
    return e;
}

TaskEvent EventFor(const domain::AsyncTask& task, std::string_view event, int64_t now_ms) {
    TaskEvent e;
    e.event = std::string(event);
    e.task_id = task.id;
    e.task_type = task.type;
    e.virtual_key_id = task.virtual_key_id;
    e.state = std::string(domain::ToString(task.state));
    e.progress = task.progress;
    e.message = task.message;
    e.result_json = task.result_json;
    e.error = task.error_message;
    e.retryable = task.retryable;
    e.model = task.model_alias;
    e.timeout_seconds = task.timeout_seconds;
    e.attempt = task.attempt;
    e.timestamp_ms = now_ms;
    // The prompt is part of the request; events carry it for the hubs' Started invocations.
    auto req = json::ParseObject(task.request_json);
    if (req) {
        if (auto it = req->find("prompt"); it != req->end() && it->value().is_string()) {
            e.prompt = std::string(it->value().as_string());
        }
    }
    return e;
}

}  // namespace conduit::tasks
