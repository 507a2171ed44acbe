#include "net/http_types.hpp"

#include <gtest/gtest.h>

namespace conduit::net {
namespace {

TEST(Headers, CaseInsensitiveGetSetRemove) {
    Headers h;
    h.Add("Content-Type", "a");
    h.Add("X-Multi", "1");
    h.Add("x-multi", "2");
    EXPECT_EQ(h.Get("content-type"), "a");
    EXPECT_EQ(h.Get("X-MULTI"), "1");
    h.Set("X-Multi", "3");
    EXPECT_EQ(h.entries().size(), 2u);
    EXPECT_EQ(h.Get("x-multi"), "3");
    h.Remove("CONTENT-TYPE");
    EXPECT_FALSE(h.Has("content-type"));
    EXPECT_EQ(h.Get("missing"), "");
}

TEST(Request, PathQueryAndBearer) {
    Request r;
    r.target = "/v1/tasks/abc/poll?timeout=5&interval=1";
    EXPECT_EQ(r.path(), "/v1/tasks/abc/poll");
    EXPECT_EQ(r.query(), "timeout=5&interval=1");
    r.target = "/plain";
    EXPECT_EQ(r.query(), "");
    r.headers.Add("Authorization", "bearer  condt_x ");
    EXPECT_EQ(r.BearerToken(), "condt_x");
    Request basic;
    basic.headers.Add("Authorization", "Basic abc");
    EXPECT_EQ(basic.BearerToken(), "");
}

TEST(Request, PathSurvivesMove) {
    Request a;
    a.target = "/short";  // small-string optimisation: views into it would dangle after a move
    Request b = std::move(a);
    EXPECT_EQ(b.path(), "/short");
}

}  // namespace
}  // namespace conduit::net
