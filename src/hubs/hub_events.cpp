#include "hubs/hub_events.hpp"

#include "domain/task.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>

#include <system_error>

namespace conduit::hubs {

namespace {

namespace bj = boost::json;

/// The task result object (null when absent or unparsable).
bj::value ResultValue(const tasks::TaskEvent& e) {
    if (e.result_json.empty()) {
        return nullptr;
    }
    std::error_code ec;
    bj::value v = bj::parse(e.result_json, ec);
    return ec ? bj::value(nullptr) : v;
}

/// The first media item of a result: `data[0]` (null when there is none).
const bj::object* FirstItem(const bj::value& result) {
    const auto* obj = result.if_object();
    if (obj == nullptr) {
        return nullptr;
    }
    auto it = obj->find("data");
    if (it == obj->end() || !it->value().is_array() || it->value().as_array().empty()) {
        return nullptr;
    }
    return it->value().as_array().front().if_object();
}

bj::value ItemField(const bj::object* item, std::string_view name) {
    if (item == nullptr) {
        return nullptr;
    }
    auto it = item->find(name);
    return it == item->end() ? bj::value(nullptr) : it->value();
}

bj::value StringOrNull(const std::string& s) {
    return s.empty() ? bj::value(nullptr) : bj::value(s);
}

/// The reason of a failure-like event (never empty: clients display it).
std::string Reason(const tasks::TaskEvent& e, std::string_view fallback) {
    return e.error.empty() ? std::string(fallback) : e.error;
}

/// Image/video hubs have no Cancelled or TimedOut method: both end as *Failed, not retryable
/// by a plain retry for a cancel, as the event says for a timeout.
std::optional<HubMessage> MediaFailed(const tasks::TaskEvent& e, const std::string& prefix) {
    if (e.event == "task.failed") {
        return HubMessage{prefix + "Failed", {e.task_id, Reason(e, "Task failed"), e.retryable}};
    }
    if (e.event == "task.cancelled") {
        return HubMessage{prefix + "Failed", {e.task_id, Reason(e, "Task was cancelled"), false}};
    }
    if (e.event == "task.timedout") {
        return HubMessage{prefix + "Failed", {e.task_id, Reason(e, "Task timed out"), e.retryable}};
    }
    return std::nullopt;
}

}  // namespace

std::optional<HubMessage> TaskHubMessage(const tasks::TaskEvent& e) {
    if (e.event == "task.started") {
        bj::object metadata;
        metadata["model"] = StringOrNull(e.model);
        metadata["prompt"] = StringOrNull(e.prompt);
        metadata["attempt"] = e.attempt;
        metadata["timeoutSeconds"] = e.timeout_seconds;
        metadata["virtualKeyId"] = e.virtual_key_id;
        return HubMessage{"TaskStarted", {e.task_id, e.task_type, std::move(metadata)}};
    }
    if (e.event == "task.progress") {
        return HubMessage{"TaskProgress", {e.task_id, e.progress, e.message}};
    }
    if (e.event == "task.completed") {
        return HubMessage{"TaskCompleted", {e.task_id, ResultValue(e)}};
    }
    if (e.event == "task.failed") {
        return HubMessage{"TaskFailed", {e.task_id, Reason(e, "Task failed"), e.retryable}};
    }
    if (e.event == "task.cancelled") {
        return HubMessage{"TaskCancelled", {e.task_id, Reason(e, "Task was cancelled")}};
    }
    if (e.event == "task.timedout") {
        return HubMessage{"TaskTimedOut", {e.task_id, e.timeout_seconds}};
    }
    return std::nullopt;  // task.created: no hub method
}

std::optional<HubMessage> ImageHubMessage(const tasks::TaskEvent& e) {
    if (e.task_type != domain::kImageTask) {
        return std::nullopt;
    }
    if (e.event == "task.started") {
        return HubMessage{"ImageGenerationStarted",
                          {e.task_id, StringOrNull(e.prompt), StringOrNull(e.model)}};
    }
    if (e.event == "task.progress") {
        return HubMessage{"ImageGenerationProgress", {e.task_id, e.progress, e.message}};
    }
    if (e.event == "task.completed") {
        bj::value result = ResultValue(e);
        bj::value url = ItemField(FirstItem(result), "url");
        // metadata: the whole OpenAI-shaped result (created, data[] with every url, model, usage).
        return HubMessage{"ImageGenerationCompleted",
                          {e.task_id, std::move(url), std::move(result)}};
    }
    return MediaFailed(e, "ImageGeneration");
}

std::optional<HubMessage> VideoHubMessage(const tasks::TaskEvent& e) {
    if (e.task_type != domain::kVideoTask) {
        return std::nullopt;
    }
    if (e.event == "task.started") {
        // estimatedSeconds: providers do not report an estimate; null until one does.
        return HubMessage{"VideoGenerationStarted", {e.task_id, StringOrNull(e.prompt), nullptr}};
    }
    if (e.event == "task.progress") {
        // currentFrame/totalFrames: provider jobs report a percentage only, so both are 0.
        return HubMessage{"VideoGenerationProgress", {e.task_id, e.progress, 0, 0, e.message}};
    }
    if (e.event == "task.completed") {
        bj::value result = ResultValue(e);
        const bj::object* item = FirstItem(result);
        bj::value url = ItemField(item, "url");
        // duration: when the stored result carries it (data[0].duration), else null.
        bj::value duration = ItemField(item, "duration");
        return HubMessage{"VideoGenerationCompleted",
                          {e.task_id, std::move(url), std::move(duration), std::move(result)}};
    }
    return MediaFailed(e, "VideoGeneration");
}

}  // namespace conduit::hubs
