// Task events on the Backplane (docs/task-events.md): the JSON schema, round trips and the
// event built from a task.

#include "tasks/task_events.hpp"

#include "json/helpers.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <set>
#include <string>

namespace conduit::tasks {
namespace {

namespace bj = boost::json;

bj::object Obj(std::string_view text) {
    auto o = json::ParseObject(text);
    EXPECT_TRUE(o.has_value()) << text;
    return o ? *o : bj::object();
}

TaskEvent FullEvent() {
    TaskEvent e;
    e.event = "task.completed";
    e.task_id = "task_0123456789abcdef0123456789abcdef";
    e.task_type = "video_generation";
    e.virtual_key_id = 42;
    e.state = "completed";
    e.progress = 100;
    e.message = "Done \"quoted\"\nnext line \xe2\x9c\x93";
    e.result_json =
        R"({"created":1795857706,"data":[{"url":"http://gw/v1/media/tasks/t/1-0.mp4"}],"model":"sora-mini","usage":{"seconds":4}})";
    e.error = "";
    e.retryable = false;
    e.model = "sora-mini";
    e.prompt = "a cat on a skateboard, \\ backslash";
    e.timeout_seconds = 600;
    e.attempt = 2;
    e.timestamp_ms = 1795857706123;
    return e;
}

TEST(TaskEventJsonTest, HasExactlyTheDocumentedFields) {
    bj::object o = Obj(ToJson(FullEvent()));
    std::set<std::string> keys;
    for (const auto& kv : o) {
        keys.insert(std::string(kv.key()));
    }
    EXPECT_EQ(keys,
              (std::set<std::string>{"event", "task_id", "task_type", "virtual_key_id", "state",
                                     "progress", "message", "result", "error", "retryable", "model",
                                     "prompt", "timeout_seconds", "attempt", "timestamp_ms"}));
    EXPECT_EQ(o["event"].as_string(), "task.completed");
    EXPECT_EQ(o["task_id"].as_string(), "task_0123456789abcdef0123456789abcdef");
    EXPECT_EQ(o["task_type"].as_string(), "video_generation");
    EXPECT_EQ(o["virtual_key_id"].as_int64(), 42);
    EXPECT_EQ(o["state"].as_string(), "completed");
    EXPECT_EQ(o["progress"].as_int64(), 100);
    EXPECT_EQ(o["message"].as_string(), "Done \"quoted\"\nnext line \xe2\x9c\x93");
    ASSERT_TRUE(o["result"].is_object()) << "result is embedded JSON, not a string";
    EXPECT_EQ(o["result"].as_object().at("model").as_string(), "sora-mini");
    EXPECT_EQ(o["result"].as_object().at("data").as_array().size(), 1u);
    EXPECT_TRUE(o["error"].is_null()) << "no error: null";
    EXPECT_EQ(o["retryable"].as_bool(), false);
    EXPECT_EQ(o["model"].as_string(), "sora-mini");
    EXPECT_EQ(o["prompt"].as_string(), "a cat on a skateboard, \\ backslash");
    EXPECT_EQ(o["timeout_seconds"].as_int64(), 600);
    EXPECT_EQ(o["attempt"].as_int64(), 2);
    EXPECT_EQ(o["timestamp_ms"].as_int64(), 1795857706123);
}

TEST(TaskEventJsonTest, NullResultAndStringError) {
    TaskEvent e = FullEvent();
    e.event = "task.failed";
    e.state = "failed";
    e.result_json.clear();
    e.error = "provider returned HTTP 500: \"boom\"";
    e.retryable = true;
    bj::object o = Obj(ToJson(e));
    EXPECT_TRUE(o["result"].is_null());
    EXPECT_EQ(o["error"].as_string(), "provider returned HTTP 500: \"boom\"");
    EXPECT_EQ(o["retryable"].as_bool(), true);
}

TEST(TaskEventJsonTest, RoundTrip) {
    const TaskEvent e = FullEvent();
    auto back = ParseTaskEvent(ToJson(e));
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(back->event, e.event);
    EXPECT_EQ(back->task_id, e.task_id);
    EXPECT_EQ(back->task_type, e.task_type);
    EXPECT_EQ(back->virtual_key_id, e.virtual_key_id);
    EXPECT_EQ(back->state, e.state);
    EXPECT_EQ(back->progress, e.progress);
    EXPECT_EQ(back->message, e.message);
    EXPECT_EQ(bj::parse(back->result_json), bj::parse(e.result_json));
    EXPECT_EQ(back->error, e.error);
    EXPECT_EQ(back->retryable, e.retryable);
    EXPECT_EQ(back->model, e.model);
    EXPECT_EQ(back->prompt, e.prompt);
    EXPECT_EQ(back->timeout_seconds, e.timeout_seconds);
    EXPECT_EQ(back->attempt, e.attempt);
    EXPECT_EQ(back->timestamp_ms, e.timestamp_ms);
    // And once more: a parsed event serialises to the same document.
    EXPECT_EQ(bj::parse(ToJson(*back)), bj::parse(ToJson(e)));

    TaskEvent failed = e;
    failed.result_json.clear();
    failed.error = "nope";
    failed.retryable = true;
    auto f = ParseTaskEvent(ToJson(failed));
    ASSERT_TRUE(f.has_value());
    EXPECT_TRUE(f->result_json.empty()) << "null result parses back to empty";
    EXPECT_EQ(f->error, "nope");
    EXPECT_TRUE(f->retryable);
}

TEST(TaskEventJsonTest, ParseRejectsWhatIsNotATaskEvent) {
    EXPECT_FALSE(ParseTaskEvent("").has_value());
    EXPECT_FALSE(ParseTaskEvent("not json").has_value());
    EXPECT_FALSE(ParseTaskEvent("[1,2]").has_value());
    EXPECT_FALSE(ParseTaskEvent("{}").has_value());
    EXPECT_FALSE(ParseTaskEvent(R"({"event":"task.progress"})").has_value()) << "no task_id";
    EXPECT_FALSE(ParseTaskEvent(R"({"task_id":"task_x"})").has_value()) << "no event";
    EXPECT_FALSE(ParseTaskEvent(R"({"event":1,"task_id":"task_x"})").has_value());
    // Minimal and loosely typed events parse with defaults (best-effort channel).
    auto m = ParseTaskEvent(R"({"event":"task.progress","task_id":"task_x","progress":"40",
                                "retryable":"yes","extra":{"ignored":true}})");
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->progress, 0);
    EXPECT_FALSE(m->retryable);
    EXPECT_TRUE(m->result_json.empty());
}

TEST(TaskEventJsonTest, EventForCopiesTheTask) {
    domain::AsyncTask t;
    t.id = "task_abc";
    t.type = std::string(domain::kImageTask);
    t.state = domain::TaskState::kRunning;
    t.progress = 40;
    t.message = "Generating";
    t.virtual_key_id = 7;
    t.model_alias = "img-alias";
    t.request_json = R"({"model":"img-alias","prompt":"a \"red\" fox","n":2})";
    t.timeout_seconds = 30;
    t.attempt = 1;
    t.retryable = true;
    TaskEvent e = EventFor(t, "task.progress", 1234);
    EXPECT_EQ(e.event, "task.progress");
    EXPECT_EQ(e.task_id, "task_abc");
    EXPECT_EQ(e.task_type, "image_generation");
    EXPECT_EQ(e.virtual_key_id, 7);
    EXPECT_EQ(e.state, "running");
    EXPECT_EQ(e.progress, 40);
    EXPECT_EQ(e.message, "Generating");
    EXPECT_TRUE(e.result_json.empty());
    EXPECT_TRUE(e.error.empty());
    EXPECT_TRUE(e.retryable);
    EXPECT_EQ(e.model, "img-alias");
    EXPECT_EQ(e.prompt, "a \"red\" fox") << "the prompt comes from the request";
    EXPECT_EQ(e.timeout_seconds, 30);
    EXPECT_EQ(e.attempt, 1);
    EXPECT_EQ(e.timestamp_ms, 1234);

    t.state = domain::TaskState::kTimedOut;
    t.error_message = "The task did not finish within 30 s.";
    t.request_json = "not json";
    TaskEvent to = EventFor(t, "task.timedout", 99);
    EXPECT_EQ(to.state, "timedout");
    EXPECT_EQ(to.error, "The task did not finish within 30 s.");
    EXPECT_TRUE(to.prompt.empty()) << "an unreadable request yields no prompt, not a failure";
    auto parsed = ParseTaskEvent(ToJson(to));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(parsed->state, "timedout");
}

TEST(TaskEventJsonTest, EveryStateSerialisesAsTheSpecString) {
    const std::pair<domain::TaskState, const char*> states[] = {
        {domain::TaskState::kPending, "pending"},     {domain::TaskState::kRunning, "running"},
        {domain::TaskState::kCompleted, "completed"}, {domain::TaskState::kFailed, "failed"},
        {domain::TaskState::kCancelled, "cancelled"}, {domain::TaskState::kTimedOut, "timedout"}};
    for (const auto& [state, name] : states) {
        domain::AsyncTask t;
        t.id = "task_s";
        t.state = state;
        bj::object o = Obj(ToJson(EventFor(t, "task.progress", 1)));
        EXPECT_EQ(o["state"].as_string(), name);
    }
}

}  // namespace
}  // namespace conduit::tasks
