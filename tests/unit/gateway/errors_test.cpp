#include "gateway/errors.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace conduit::gateway {
namespace {

using core::ErrorCode;

TEST(Errors, StatusTypeAndCodeFollowTheContract) {
    struct Row {
        ErrorCode code;
        int status;
        const char* type;
        const char* name;
    };
    const Row rows[] = {
        {ErrorCode::kInvalidRequest, 400, "invalid_request_error", "invalid_request"},
        {ErrorCode::kUnauthorized, 401, "authentication_error", "invalid_api_key"},
        {ErrorCode::kInsufficientBalance, 402, "insufficient_quota", "insufficient_balance"},
        {ErrorCode::kModelNotAllowed, 403, "permission_error", "model_not_allowed"},
        {ErrorCode::kForbidden, 403, "permission_error", "forbidden"},
        {ErrorCode::kModelNotFound, 404, "invalid_request_error", "model_not_found"},
        {ErrorCode::kNotFound, 404, "invalid_request_error", "not_found"},
        {ErrorCode::kConflict, 409, "invalid_request_error", "conflict"},
        {ErrorCode::kRequestTooLarge, 413, "invalid_request_error", "request_too_large"},
        {ErrorCode::kRateLimited, 429, "rate_limit_error", "rate_limit_exceeded"},
        {ErrorCode::kUpstreamError, 502, "api_error", "upstream_error"},
        {ErrorCode::kUnavailable, 503, "api_error", "service_unavailable"},
        {ErrorCode::kUpstreamTimeout, 504, "api_error", "upstream_timeout"},
    };
    for (const auto& r : rows) {
        EXPECT_EQ(HttpStatus(r.code), r.status);
        EXPECT_EQ(ErrorType(r.code), r.type);
        EXPECT_EQ(ErrorCodeName(r.code), r.name);
    }
}

TEST(Errors, BodyIsTheOpenAIShapeWithNullOrNamedParam) {
    auto v = boost::json::parse(ErrorBody({ErrorCode::kModelNotFound, "no \"x\"", "model"}));
    const auto& e = v.at("error").as_object();
    EXPECT_EQ(e.at("message").as_string(), "no \"x\"");
    EXPECT_EQ(e.at("type").as_string(), "invalid_request_error");
    EXPECT_EQ(e.at("param").as_string(), "model");
    EXPECT_EQ(e.at("code").as_string(), "model_not_found");
    auto v2 = boost::json::parse(ErrorBody({ErrorCode::kUnauthorized, "m", ""}));
    EXPECT_TRUE(v2.at("error").at("param").is_null());
    auto resp = ErrorResponse({ErrorCode::kRequestTooLarge, "big", ""});
    EXPECT_EQ(resp.status, 413);
    EXPECT_EQ(resp.headers.Get("content-type"), "application/json");
}

TEST(Errors, ServerStatusesMapBack) {
    EXPECT_EQ(CodeForStatus(413), ErrorCode::kRequestTooLarge);
    EXPECT_EQ(CodeForStatus(408), ErrorCode::kRequestTimeout);
    EXPECT_EQ(CodeForStatus(400), ErrorCode::kInvalidRequest);
    EXPECT_EQ(HttpStatus(CodeForStatus(431)), 400);
}

}  // namespace
}  // namespace conduit::gateway
