#include "bus/rabbitmq/rabbitmq_queue.hpp"

#include <gtest/gtest.h>

namespace conduit::bus {
namespace {

TEST(ParseAmqpUrlTest, FullUrl) {
    RabbitMqQueueOptions o;
    ASSERT_TRUE(ParseAmqpUrl("amqp://alice:s%40cret@mq.example:5699/prod", o));
    EXPECT_EQ(o.user, "alice");
    EXPECT_EQ(o.password, "s@cret");
    EXPECT_EQ(o.host, "mq.example");
    EXPECT_EQ(o.port, 5699);
    EXPECT_EQ(o.vhost, "prod");
}

TEST(ParseAmqpUrlTest, DefaultsAndRootVhost) {
    RabbitMqQueueOptions o;
    ASSERT_TRUE(ParseAmqpUrl("amqp://guest:guest@127.0.0.1:5699/", o));
    EXPECT_EQ(o.vhost, "/");
    EXPECT_EQ(o.port, 5699);
    RabbitMqQueueOptions p;
    ASSERT_TRUE(ParseAmqpUrl("amqp://broker", p));
    EXPECT_EQ(p.host, "broker");
    EXPECT_EQ(p.port, 5672);
    EXPECT_EQ(p.vhost, "/");
    EXPECT_EQ(p.user, "guest");
    RabbitMqQueueOptions q;
    ASSERT_TRUE(ParseAmqpUrl("amqp://h/%2Fteam", q));
    EXPECT_EQ(q.vhost, "/team");
}

TEST(ParseAmqpUrlTest, RejectsMalformed) {
    RabbitMqQueueOptions o;
    o.host = "unchanged";
    EXPECT_FALSE(ParseAmqpUrl("http://h/", o));
    EXPECT_FALSE(ParseAmqpUrl("amqp://", o));
    EXPECT_FALSE(ParseAmqpUrl("amqp://h:notaport/", o));
    EXPECT_FALSE(ParseAmqpUrl("amqp://h:70000/", o));
    EXPECT_FALSE(ParseAmqpUrl("amqp://h/%zz", o));
    EXPECT_EQ(o.host, "unchanged");
}

}  // namespace
}  // namespace conduit::bus
