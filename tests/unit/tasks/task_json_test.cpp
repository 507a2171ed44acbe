// Pure task helpers: the status JSON views of specs/api.md §4 (TaskJson), webhook ids,
// terminal events and job kinds.

#include "core/clock.hpp"
#include "json/helpers.hpp"
#include "tasks/task_engine.hpp"
#include "tasks/task_routes.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <set>
#include <string>

namespace conduit::tasks {
namespace {

namespace bj = boost::json;
using domain::AsyncTask;
using domain::TaskState;

bj::object Obj(std::string_view text) {
    auto o = json::ParseObject(text);
    EXPECT_TRUE(o.has_value()) << text;
    return o ? *o : bj::object();
}

AsyncTask Completed() {
    AsyncTask t;
    t.id = "task_0123456789abcdef0123456789abcdef";
    t.type = std::string(domain::kVideoTask);
    t.state = TaskState::kCompleted;
    t.progress = 100;
    t.message = "Completed";
    t.virtual_key_id = 3;
    t.model_alias = "sora-mini";
    t.result_json =
        R"({"created":1767225600,"data":[{"url":"http://gw/v1/media/tasks/x/1-0.mp4"}],"model":"sora-mini","usage":{"seconds":4.000000}})";
    t.retry_count = 1;
    t.max_retries = 3;
    t.retryable = true;
    t.created_at_ms = 1767225600000;
    t.updated_at_ms = 1767225601500;
    t.completed_at_ms = 1767225601500;
    return t;
}

AsyncTask Pending() {
    AsyncTask t;
    t.id = "task_ffffffffffffffffffffffffffffffff";
    t.type = std::string(domain::kImageTask);
    t.state = TaskState::kPending;
    t.message = "Queued";
    t.model_alias = "img";
    t.created_at_ms = 1767225600000;
    t.updated_at_ms = 1767225600000;
    t.max_retries = 3;
    return t;
}

TEST(TaskJsonTest, GenericViewHasEveryDocumentedField) {
    bj::object o = Obj(TaskJson(Completed(), TaskView::kGeneric));
    // specs/api.md §4: {"task_id","task_type","status","progress","message","result","error",
    // "created_at","updated_at","completed_at","retry_count","max_retries"}.
    for (const char* k :
         {"task_id", "task_type", "status", "progress", "message", "result", "error", "created_at",
          "updated_at", "completed_at", "retry_count", "max_retries"}) {
        EXPECT_TRUE(o.contains(k)) << k;
    }
    EXPECT_EQ(o["task_id"].as_string(), "task_0123456789abcdef0123456789abcdef");
    EXPECT_EQ(o["task_type"].as_string(), "video_generation");
    EXPECT_EQ(o["status"].as_string(), "completed");
    EXPECT_EQ(o["progress"].as_int64(), 100);
    EXPECT_EQ(o["message"].as_string(), "Completed");
    ASSERT_TRUE(o["result"].is_object());
    EXPECT_EQ(o["result"].as_object().at("data").as_array()[0].as_object().at("url").as_string(),
              "http://gw/v1/media/tasks/x/1-0.mp4");
    EXPECT_TRUE(o["error"].is_null());
    EXPECT_EQ(o["created_at"].as_string(), core::FormatIso8601(1767225600000));
    EXPECT_EQ(o["created_at"].as_string(), "2026-01-01T00:00:00.000Z");
    EXPECT_EQ(o["updated_at"].as_string(), "2026-01-01T00:00:01.500Z");
    EXPECT_EQ(o["completed_at"].as_string(), "2026-01-01T00:00:01.500Z");
    EXPECT_EQ(o["retry_count"].as_int64(), 1);
    EXPECT_EQ(o["max_retries"].as_int64(), 3);
    EXPECT_FALSE(o.contains("model")) << "the generic view has no model";
}

TEST(TaskJsonTest, GenericViewOfAnOpenTaskHasNulls) {
    bj::object o = Obj(TaskJson(Pending(), TaskView::kGeneric));
    EXPECT_EQ(o["status"].as_string(), "pending");
    EXPECT_EQ(o["task_type"].as_string(), "image_generation");
    EXPECT_TRUE(o["result"].is_null());
    EXPECT_TRUE(o["error"].is_null());
    EXPECT_TRUE(o["completed_at"].is_null());
    EXPECT_EQ(o["progress"].as_int64(), 0);
}

TEST(TaskJsonTest, ImageAndVideoViewsOmitAbsentResultAndError) {
    for (TaskView view : {TaskView::kImage, TaskView::kVideo}) {
        bj::object o = Obj(TaskJson(Pending(), view));
        // {"task_id","status","progress","message"?,"created_at","updated_at","result"?,"error"?}
        for (const char* k :
             {"task_id", "status", "progress", "message", "created_at", "updated_at"}) {
            EXPECT_TRUE(o.contains(k)) << k;
        }
        EXPECT_FALSE(o.contains("result"));
        EXPECT_FALSE(o.contains("error"));
        EXPECT_FALSE(o.contains("task_type")) << "only the generic view names the type";
        EXPECT_EQ(o["model"].as_string(), "img");
    }
}

TEST(TaskJsonTest, VideoViewCarriesTheResultObject) {
    bj::object o = Obj(TaskJson(Completed(), TaskView::kVideo));
    ASSERT_TRUE(o["result"].is_object());
    const auto& r = o["result"].as_object();
    // result = {"created","data":[{"url"}],"model","usage"?}
    EXPECT_TRUE(r.contains("created"));
    EXPECT_EQ(r.at("data").as_array().size(), 1u);
    EXPECT_EQ(r.at("model").as_string(), "sora-mini");
    EXPECT_EQ(r.at("usage").as_object().at("seconds").to_number<double>(), 4.0);
    EXPECT_FALSE(o.contains("error"));
    EXPECT_EQ(o["status"].as_string(), "completed");
}

TEST(TaskJsonTest, FailedTaskCarriesItsError) {
    AsyncTask t = Pending();
    t.state = TaskState::kFailed;
    t.error_message = "provider returned HTTP 400: \"bad\"";
    t.retryable = false;
    t.completed_at_ms = 1767225602000;
    for (TaskView view : {TaskView::kImage, TaskView::kVideo, TaskView::kGeneric}) {
        bj::object o = Obj(TaskJson(t, view));
        EXPECT_EQ(o["status"].as_string(), "failed");
        EXPECT_EQ(o["error"].as_string(), "provider returned HTTP 400: \"bad\"");
        EXPECT_EQ(o["retryable"].as_bool(), false);
        EXPECT_EQ(o["completed_at"].as_string(), "2026-01-01T00:00:02.000Z");
    }
}

TEST(TaskJsonTest, TextIsEscaped) {
    AsyncTask t = Pending();
    t.message = "line1\nline2 \"q\" \\ \x01";
    t.model_alias = "m\"odel";
    bj::object o = Obj(TaskJson(t, TaskView::kVideo));
    EXPECT_EQ(o["message"].as_string(), "line1\nline2 \"q\" \\ \x01");
    EXPECT_EQ(o["model"].as_string(), "m\"odel");
}

// --- Webhook ids, terminal events, kinds ---------------------------------------------------

TEST(WebhookIdTest, DerivedFromTaskRetryAndEvent) {
    AsyncTask t = Completed();
    t.retry_count = 0;
    EXPECT_EQ(WebhookIdFor(t, "task.completed"), "msg_" + t.id + "_0_completed");
    EXPECT_EQ(WebhookIdFor(t, "task.failed"), "msg_" + t.id + "_0_failed");
    EXPECT_EQ(WebhookIdFor(t, "task.cancelled"), "msg_" + t.id + "_0_cancelled");
    EXPECT_EQ(WebhookIdFor(t, "task.timedout"), "msg_" + t.id + "_0_timedout");
}

TEST(WebhookIdTest, StableForTheSameEventOfTheSameAttempt) {
    AsyncTask a = Completed();
    AsyncTask b = a;
    // Everything that changes between two sends of one event (a redelivered step) is ignored.
    b.updated_at_ms += 5000;
    b.version += 3;
    b.message = "something else";
    b.result_json = "{}";
    EXPECT_EQ(WebhookIdFor(a, "task.completed"), WebhookIdFor(b, "task.completed"));
    EXPECT_EQ(WebhookIdFor(a, "task.completed"), WebhookIdFor(a, "task.completed"));
}

TEST(WebhookIdTest, DiffersAcrossEventsTasksAndRetries) {
    AsyncTask t = Completed();
    std::set<std::string> ids;
    for (const char* e :
         {"task.completed", "task.failed", "task.cancelled", "task.timedout", "task.progress"}) {
        ids.insert(WebhookIdFor(t, e));
    }
    EXPECT_EQ(ids.size(), 5u);
    AsyncTask retried = t;
    retried.retry_count += 1;
    EXPECT_NE(WebhookIdFor(t, "task.failed"), WebhookIdFor(retried, "task.failed"));
    AsyncTask other = t;
    other.id = "task_11111111111111111111111111111111";
    EXPECT_NE(WebhookIdFor(t, "task.completed"), WebhookIdFor(other, "task.completed"));
}

TEST(WebhookIdTest, ProgressIdsAreOnePerQuarter) {
    AsyncTask t = Pending();
    t.state = TaskState::kRunning;
    auto at = [&](int p) {
        t.progress = p;
        return WebhookIdFor(t, "task.progress");
    };
    const std::string base = "msg_" + t.id + "_0_progress_";
    EXPECT_EQ(at(0), base + "0");
    EXPECT_EQ(at(24), base + "0");
    EXPECT_EQ(at(25), base + "1");
    EXPECT_EQ(at(30), at(49)) << "same quarter, same id";
    EXPECT_EQ(at(50), base + "2");
    EXPECT_EQ(at(75), base + "3");
    EXPECT_EQ(at(99), base + "3");
    EXPECT_EQ(at(100), base + "4");
    EXPECT_NE(at(49), at(50));
}

TEST(TerminalEventTest, NamesTheEventOfEachFinalState) {
    EXPECT_EQ(TerminalEvent(TaskState::kCompleted), "task.completed");
    EXPECT_EQ(TerminalEvent(TaskState::kFailed), "task.failed");
    EXPECT_EQ(TerminalEvent(TaskState::kCancelled), "task.cancelled");
    EXPECT_EQ(TerminalEvent(TaskState::kTimedOut), "task.timedout");
    EXPECT_TRUE(TerminalEvent(TaskState::kPending).empty());
    EXPECT_TRUE(TerminalEvent(TaskState::kRunning).empty());
}

TEST(KindOfTest, VideoTasksAreVideoJobsEverythingElseImages) {
    EXPECT_EQ(KindOf(domain::kVideoTask), JobKind::kVideo);
    EXPECT_EQ(KindOf(domain::kImageTask), JobKind::kImage);
    EXPECT_EQ(KindOf("video"), JobKind::kImage);
    EXPECT_EQ(KindOf(""), JobKind::kImage);
}

}  // namespace
}  // namespace conduit::tasks
