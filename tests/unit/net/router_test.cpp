#include "net/router.hpp"

#include <gtest/gtest.h>

#include <tuple>

namespace conduit::net {
namespace {

Handler Tag(int* hit, int value) {
    return [hit, value](const ExchangePtr&) { *hit = value; };
}

TEST(Router, MatchesLiteralsCaseInsensitivelyAndCapturesParams) {
    Router r;
    int hit = 0;
    r.Add("GET", "/api/VirtualKeys/{id}", Tag(&hit, 1));
    std::vector<std::string> params;
    auto m = r.Match("GET", "/api/virtualkeys/42", params);
    ASSERT_NE(m.handler, nullptr);
    (*m.handler)(nullptr);
    EXPECT_EQ(hit, 1);
    ASSERT_EQ(params.size(), 1u);
    EXPECT_EQ(params[0], "42");
    EXPECT_EQ(m.name, "/api/VirtualKeys/{id}");
}

TEST(Router, LiteralBeatsParameter) {
    Router r;
    int hit = 0;
    r.Add("GET", "/v1/tasks/{id}", Tag(&hit, 1));
    r.Add("GET", "/v1/tasks/stats", Tag(&hit, 2));
    std::vector<std::string> params;
    auto m = r.Match("GET", "/v1/tasks/stats", params);
    ASSERT_NE(m.handler, nullptr);
    (*m.handler)(nullptr);
    EXPECT_EQ(hit, 2);
    EXPECT_TRUE(params.empty());
}

TEST(Router, MethodMismatchReportsAllowedMethods) {
    Router r;
    int hit = 0;
    r.Add("GET", "/x", Tag(&hit, 1));
    r.Add("DELETE", "/x", Tag(&hit, 2));
    std::vector<std::string> params;
    auto m = r.Match("POST", "/x", params);
    EXPECT_EQ(m.handler, nullptr);
    EXPECT_TRUE(m.path_matched);
    EXPECT_EQ(m.allowed_methods, "GET, DELETE");
    auto none = r.Match("GET", "/y", params);
    EXPECT_EQ(none.handler, nullptr);
    EXPECT_FALSE(none.path_matched);
}

TEST(Router, HeadFallsBackToGet) {
    Router r;
    int hit = 0;
    r.Add("GET", "/x", Tag(&hit, 1));
    std::vector<std::string> params;
    EXPECT_NE(r.Match("HEAD", "/x", params).handler, nullptr);
}

TEST(Router, RestParameterCapturesRemainderDecoded) {
    Router r;
    int hit = 0;
    r.Add("GET", "/v1/media/{key*}", Tag(&hit, 1));
    std::vector<std::string> params;
    auto m = r.Match("GET", "/v1/media/a/b%20c/d.png", params);
    ASSERT_NE(m.handler, nullptr);
    ASSERT_EQ(params.size(), 1u);
    EXPECT_EQ(params[0], "a/b c/d.png");
    EXPECT_EQ(r.Match("GET", "/v1/media", params).handler, nullptr);
}

TEST(Router, SegmentCountMustMatchAndSlashesAreNormalised) {
    Router r;
    int hit = 0;
    r.Add("POST", "/v1/chat/completions", Tag(&hit, 1));
    std::vector<std::string> params;
    EXPECT_NE(r.Match("POST", "/v1/chat/completions/", params).handler, nullptr);
    EXPECT_NE(r.Match("POST", "//v1//chat/completions", params).handler, nullptr);
    EXPECT_EQ(r.Match("POST", "/v1/chat", params).handler, nullptr);
    EXPECT_EQ(r.Match("POST", "/v1/chat/completions/x", params).handler, nullptr);
}

TEST(Router, WrapRoutesWrapsOnlyTheSelectedRoutes) {
    Router r;
    int hit = 0;
    r.Add("POST", "/v1/chat/completions", Tag(&hit, 1));
    r.Add("GET", "/v1/media/{key*}", Tag(&hit, 2));
    r.Add("GET", "/health", Tag(&hit, 3));
    int wrapped_calls = 0;
    size_t n = r.WrapRoutes(
        [](std::string_view, std::string_view pattern) {
            return pattern.starts_with("/v1/") && !pattern.starts_with("/v1/media/");
        },
        [&wrapped_calls](Handler inner) -> Handler {
            return [&wrapped_calls, inner = std::move(inner)](const ExchangePtr& ex) {
                ++wrapped_calls;
                inner(ex);
            };
        });
    EXPECT_EQ(n, 1u);
    std::vector<std::string> params;
    for (auto [method, path, value] :
         {std::tuple{"POST", "/v1/chat/completions", 1}, std::tuple{"GET", "/v1/media/a.png", 2},
          std::tuple{"GET", "/health", 3}}) {
        auto m = r.Match(method, path, params);
        ASSERT_NE(m.handler, nullptr) << path;
        (*m.handler)(nullptr);
        EXPECT_EQ(hit, value) << path;
    }
    EXPECT_EQ(wrapped_calls, 1);
}

}  // namespace
}  // namespace conduit::net
