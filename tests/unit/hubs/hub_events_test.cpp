#include "hubs/hub_events.hpp"

#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

namespace conduit::hubs {
namespace {

tasks::TaskEvent Event(std::string ev, std::string type = "video_generation") {
    tasks::TaskEvent e;
    e.event = std::move(ev);
    e.task_id = "task_0123";
    e.task_type = std::move(type);
    e.virtual_key_id = 42;
    e.progress = 40;
    e.message = "Generating";
    e.model = "sora";
    e.prompt = "a red fox";
    e.timeout_seconds = 600;
    e.attempt = 1;
    e.retryable = true;
    return e;
}

std::string Args(const std::optional<HubMessage>& m) {
    return m ? boost::json::serialize(m->args) : "none";
}

TEST(HubEvents, TaskHubMapsEveryEventWithPositionalArguments) {
    auto started = TaskHubMessage(Event("task.started"));
    ASSERT_TRUE(started);
    EXPECT_EQ(started->target, "TaskStarted");
    EXPECT_EQ(Args(started),
              R"(["task_0123","video_generation",{"model":"sora","prompt":"a red fox","attempt":1,)"
              R"("timeoutSeconds":600,"virtualKeyId":42}])");
    auto progress = TaskHubMessage(Event("task.progress"));
    EXPECT_EQ(progress->target, "TaskProgress");
    EXPECT_EQ(Args(progress), R"(["task_0123",40,"Generating"])");

    auto done = Event("task.completed");
    done.result_json = R"({"created":1,"data":[{"url":"http://x/v1/media/a.mp4"}]})";
    auto completed = TaskHubMessage(done);
    EXPECT_EQ(completed->target, "TaskCompleted");
    EXPECT_EQ(Args(completed),
              R"(["task_0123",{"created":1,"data":[{"url":"http://x/v1/media/a.mp4"}]}])");

    auto failed = Event("task.failed");
    failed.error = "upstream 500";
    failed.retryable = false;
    EXPECT_EQ(TaskHubMessage(failed)->target, "TaskFailed");
    EXPECT_EQ(Args(TaskHubMessage(failed)), R"(["task_0123","upstream 500",false])");

    auto cancelled = Event("task.cancelled");
    EXPECT_EQ(TaskHubMessage(cancelled)->target, "TaskCancelled");
    EXPECT_EQ(Args(TaskHubMessage(cancelled)), R"(["task_0123","Task was cancelled"])");
    cancelled.error = "Cancelled by the client";
    EXPECT_EQ(Args(TaskHubMessage(cancelled)), R"(["task_0123","Cancelled by the client"])");

    auto timedout = TaskHubMessage(Event("task.timedout"));
    EXPECT_EQ(timedout->target, "TaskTimedOut");
    EXPECT_EQ(Args(timedout), R"(["task_0123",600])");

    EXPECT_FALSE(TaskHubMessage(Event("task.created")));
    EXPECT_FALSE(TaskHubMessage(Event("task.unknown")));
}

TEST(HubEvents, CompletedWithBrokenOrMissingResultSendsNull) {
    auto e = Event("task.completed");
    EXPECT_EQ(Args(TaskHubMessage(e)), R"(["task_0123",null])");
    e.result_json = "{broken";
    EXPECT_EQ(Args(TaskHubMessage(e)), R"(["task_0123",null])");
    EXPECT_EQ(Args(VideoHubMessage(e)), R"(["task_0123",null,null,null])");
}

TEST(HubEvents, ImageHubOnlyImageTasks) {
    EXPECT_FALSE(ImageHubMessage(Event("task.started", "video_generation")));
    auto started = ImageHubMessage(Event("task.started", "image_generation"));
    EXPECT_EQ(started->target, "ImageGenerationStarted");
    EXPECT_EQ(Args(started), R"(["task_0123","a red fox","sora"])");
    auto progress = ImageHubMessage(Event("task.progress", "image_generation"));
    EXPECT_EQ(progress->target, "ImageGenerationProgress");
    EXPECT_EQ(Args(progress), R"(["task_0123",40,"Generating"])");
    auto done = Event("task.completed", "image_generation");
    done.result_json = R"({"created":1,"data":[{"url":"u1"},{"url":"u2"}]})";
    auto completed = ImageHubMessage(done);
    EXPECT_EQ(completed->target, "ImageGenerationCompleted");
    EXPECT_EQ(Args(completed),
              R"(["task_0123","u1",{"created":1,"data":[{"url":"u1"},{"url":"u2"}]}])");
    auto failed = Event("task.failed", "image_generation");
    failed.error = "boom";
    EXPECT_EQ(ImageHubMessage(failed)->target, "ImageGenerationFailed");
    EXPECT_EQ(Args(ImageHubMessage(failed)), R"(["task_0123","boom",true])");
    // No Cancelled/TimedOut methods on the media hubs: they end as Failed.
    auto cancelled = ImageHubMessage(Event("task.cancelled", "image_generation"));
    EXPECT_EQ(cancelled->target, "ImageGenerationFailed");
    EXPECT_EQ(Args(cancelled), R"(["task_0123","Task was cancelled",false])");
    EXPECT_EQ(ImageHubMessage(Event("task.timedout", "image_generation"))->target,
              "ImageGenerationFailed");
    EXPECT_FALSE(ImageHubMessage(Event("task.created", "image_generation")));
}

TEST(HubEvents, VideoHubOnlyVideoTasks) {
    EXPECT_FALSE(VideoHubMessage(Event("task.started", "image_generation")));
    auto started = VideoHubMessage(Event("task.started"));
    EXPECT_EQ(started->target, "VideoGenerationStarted");
    EXPECT_EQ(Args(started), R"(["task_0123","a red fox",null])");
    auto progress = VideoHubMessage(Event("task.progress"));
    EXPECT_EQ(progress->target, "VideoGenerationProgress");
    EXPECT_EQ(Args(progress), R"(["task_0123",40,0,0,"Generating"])");
    auto done = Event("task.completed");
    done.result_json = R"({"created":1,"data":[{"url":"v.mp4","duration":5}]})";
    auto completed = VideoHubMessage(done);
    EXPECT_EQ(completed->target, "VideoGenerationCompleted");
    EXPECT_EQ(Args(completed),
              R"(["task_0123","v.mp4",5,{"created":1,"data":[{"url":"v.mp4","duration":5}]}])");
    auto timedout = Event("task.timedout");
    timedout.error = "Timed out after 600 s";
    timedout.retryable = false;
    EXPECT_EQ(VideoHubMessage(timedout)->target, "VideoGenerationFailed");
    EXPECT_EQ(Args(VideoHubMessage(timedout)), R"(["task_0123","Timed out after 600 s",false])");
}

}  // namespace
}  // namespace conduit::hubs
