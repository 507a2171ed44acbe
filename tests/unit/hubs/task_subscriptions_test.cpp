#include "hubs/task_subscriptions.hpp"

#include "hubs/hubs.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace conduit::hubs {
namespace {

struct Sent {
    std::string conn;
    std::string target;
};

class TaskSubscriptionsTest : public ::testing::Test {
protected:
    std::vector<Sent> sent;
    TaskSubscriptions subs{TaskHubMessage, [this](const std::string& c, const HubMessage& m) {
                               sent.push_back({c, m.target});
                           }};

    static tasks::TaskEvent Ev(std::string ev,
                               std::string task = "t1",
                               int64_t key = 1,
                               std::string type = "video_generation") {
        tasks::TaskEvent e;
        e.event = std::move(ev);
        e.task_id = std::move(task);
        e.virtual_key_id = key;
        e.task_type = std::move(type);
        return e;
    }
    static domain::AsyncTask Task(domain::TaskState state,
                                  int progress = 0,
                                  std::string id = "t1",
                                  int64_t key = 1) {
        domain::AsyncTask t;
        t.id = std::move(id);
        t.type = "video_generation";
        t.virtual_key_id = key;
        t.state = state;
        t.progress = progress;
        if (state != domain::TaskState::kPending) {
            t.upstream_job_id = "job-1";
        }
        return t;
    }
    std::vector<std::string> Targets(const std::string& conn) const {
        std::vector<std::string> out;
        for (const auto& s : sent) {
            if (s.conn == conn) {
                out.push_back(s.target);
            }
        }
        return out;
    }
};

using V = std::vector<std::string>;

TEST_F(TaskSubscriptionsTest, NothingBeforeConfirmThenBufferedInOrder) {
    ASSERT_TRUE(subs.Begin("c1", "t1", 1));
    subs.OnEvent(Ev("task.started"));
    subs.OnEvent(Ev("task.progress"));
    EXPECT_TRUE(sent.empty());  // ownership not yet known
    subs.Confirm("c1", Task(domain::TaskState::kRunning, 10), 0);
    subs.OnEvent(Ev("task.completed"));
    EXPECT_EQ(Targets("c1"), (V{"TaskStarted", "TaskProgress", "TaskCompleted"}));
}

TEST_F(TaskSubscriptionsTest, LateSubscriberGetsStartedAndProgressSynthesized) {
    subs.Begin("c1", "t1", 1);
    subs.Confirm("c1", Task(domain::TaskState::kRunning, 30), 0);
    subs.OnEvent(Ev("task.progress"));
    EXPECT_EQ(Targets("c1"), (V{"TaskStarted", "TaskProgress", "TaskProgress"}));
}

TEST_F(TaskSubscriptionsTest, RunningWithoutJobYetWaitsForTheLiveStarted) {
    subs.Begin("c1", "t1", 1);
    auto t = Task(domain::TaskState::kRunning);
    t.upstream_job_id.clear();  // the provider job is being submitted
    subs.Confirm("c1", t, 0);
    EXPECT_TRUE(sent.empty());
    subs.OnEvent(Ev("task.started"));
    subs.OnEvent(Ev("task.progress"));
    EXPECT_EQ(Targets("c1"), (V{"TaskStarted", "TaskProgress"}));
}

TEST_F(TaskSubscriptionsTest, LiveEventPublishedAfterTheStoreReadIsNotSentTwice) {
    subs.Begin("c1", "t1", 1);
    subs.Confirm("c1", Task(domain::TaskState::kRunning), 0);  // job recorded, not yet published
    subs.OnEvent(Ev("task.started"));                          // the same attempt: dropped
    subs.OnEvent(Ev("task.progress"));
    auto retry = Ev("task.started");
    retry.attempt = 2;  // a later attempt starts again: delivered
    subs.OnEvent(retry);
    EXPECT_EQ(Targets("c1"), (V{"TaskStarted", "TaskProgress", "TaskStarted"}));
    subs.Begin("c2", "t1", 1);
    subs.Confirm("c2", Task(domain::TaskState::kCompleted), 0);
    subs.OnEvent(Ev("task.completed"));
    EXPECT_EQ(Targets("c2"), (V{"TaskCompleted"}));
}

TEST_F(TaskSubscriptionsTest, TypeAndPendingTaskSubscriptionDeliverOnce) {
    subs.AddType("c1", 1, "video_generation");
    subs.Begin("c1", "t1", 1);
    subs.OnEvent(Ev("task.started"));  // delivered through the type subscription
    subs.Confirm("c1", Task(domain::TaskState::kRunning, 20), 0);
    subs.OnEvent(Ev("task.progress"));
    EXPECT_EQ(Targets("c1"), (V{"TaskStarted", "TaskProgress"}));
}

TEST_F(TaskSubscriptionsTest, PendingTaskGetsNothingSynthesized) {
    subs.Begin("c1", "t1", 1);
    subs.Confirm("c1", Task(domain::TaskState::kPending), 0);
    EXPECT_TRUE(sent.empty());
    subs.OnEvent(Ev("task.created"));  // no hub method
    subs.OnEvent(Ev("task.started"));
    EXPECT_EQ(Targets("c1"), (V{"TaskStarted"}));
}

TEST_F(TaskSubscriptionsTest, TerminalTaskGetsItsOutcomeOnce) {
    subs.Begin("c1", "t1", 1);
    subs.OnEvent(Ev("task.cancelled"));  // raced the store read
    subs.Confirm("c1", Task(domain::TaskState::kCancelled), 0);
    EXPECT_EQ(Targets("c1"), (V{"TaskCancelled"}));
    subs.Begin("c2", "t1", 1);
    subs.Confirm("c2", Task(domain::TaskState::kCompleted), 0);
    EXPECT_EQ(Targets("c2"), (V{"TaskCompleted"}));
}

TEST_F(TaskSubscriptionsTest, AbortedSubscriptionNeverSends) {
    subs.Begin("c1", "t1", 2);  // key 2 asked for key 1's task: lookup failed → Remove
    subs.OnEvent(Ev("task.started"));
    subs.Remove("c1", "t1");
    subs.OnEvent(Ev("task.progress"));
    subs.Confirm("c1", Task(domain::TaskState::kRunning), 0);  // late: ignored
    EXPECT_TRUE(sent.empty());
    EXPECT_EQ(subs.CountFor("c1"), 0u);
}

TEST_F(TaskSubscriptionsTest, EventsOfAnotherKeyNeverReachASubscription) {
    subs.Begin("c1", "t1", 1);
    subs.Confirm("c1", Task(domain::TaskState::kPending), 0);
    subs.OnEvent(Ev("task.started", "t1", /*key=*/2));
    EXPECT_TRUE(sent.empty());
}

TEST_F(TaskSubscriptionsTest, TypeSubscriptionsAreLimitedToTheOwnKey) {
    ASSERT_TRUE(subs.AddType("mine", 1, "video_generation"));
    ASSERT_TRUE(subs.AddType("other", 2, "video_generation"));
    subs.OnEvent(Ev("task.started", "t9", 1));
    subs.OnEvent(Ev("task.started", "t8", 1, "image_generation"));
    EXPECT_EQ(Targets("mine"), (V{"TaskStarted"}));
    EXPECT_TRUE(Targets("other").empty());
    subs.RemoveType("mine", 1, "video_generation");
    subs.OnEvent(Ev("task.progress", "t9", 1));
    EXPECT_EQ(Targets("mine"), (V{"TaskStarted"}));
}

TEST_F(TaskSubscriptionsTest, TaskAndTypeSubscriptionDeliverOnce) {
    subs.AddType("c1", 1, "video_generation");
    subs.Begin("c1", "t1", 1);
    subs.Confirm("c1", Task(domain::TaskState::kPending), 0);
    subs.OnEvent(Ev("task.started"));
    EXPECT_EQ(Targets("c1"), (V{"TaskStarted"}));
}

TEST_F(TaskSubscriptionsTest, DisconnectDropsEverything) {
    subs.AddType("c1", 1, "video_generation");
    subs.Begin("c1", "t1", 1);
    subs.Confirm("c1", Task(domain::TaskState::kPending), 0);
    EXPECT_EQ(subs.CountFor("c1"), 2u);
    subs.RemoveConnection("c1");
    EXPECT_EQ(subs.CountFor("c1"), 0u);
    subs.OnEvent(Ev("task.started"));
    EXPECT_TRUE(sent.empty());
}

TEST_F(TaskSubscriptionsTest, PerConnectionLimit) {
    for (size_t i = 0; i < TaskSubscriptions::kMaxPerConnection; ++i) {
        ASSERT_TRUE(subs.Begin("c1", "t" + std::to_string(i), 1));
    }
    EXPECT_FALSE(subs.Begin("c1", "another", 1));
    EXPECT_FALSE(subs.AddType("c1", 1, "image_generation"));
    EXPECT_TRUE(subs.Begin("c1", "t0", 1));  // already counted
    EXPECT_TRUE(subs.Begin("c2", "another", 1));
}

TEST(KeyConnectionLimiter, CountsPerKeyAndReleasesOnce) {
    KeyConnectionLimiter l(2);
    EXPECT_TRUE(l.Acquire("a", 1));
    EXPECT_TRUE(l.Acquire("b", 1));
    EXPECT_FALSE(l.Acquire("c", 1));
    EXPECT_TRUE(l.Acquire("d", 2));
    EXPECT_EQ(l.CountFor(1), 2);
    l.Release("c");  // never counted
    EXPECT_EQ(l.CountFor(1), 2);
    l.Release("a");
    l.Release("a");
    EXPECT_EQ(l.CountFor(1), 1);
    EXPECT_TRUE(l.Acquire("c", 1));
}

TEST(HubsNames, KeyGroupAndPrincipal) {
    EXPECT_EQ(KeyGroup(42), "vkey-42");
    realtime::Principal p;
    EXPECT_EQ(KeyOf(p), 0);
    p.data = std::make_shared<const KeyPrincipal>(KeyPrincipal{7});
    EXPECT_EQ(KeyOf(p), 7);
}

}  // namespace
}  // namespace conduit::hubs
