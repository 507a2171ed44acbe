#include "gateway/errors.hpp"

#include "core/strings.hpp"

namespace conduit::gateway {

using core::ErrorCode;

int HttpStatus(ErrorCode code) {
    switch (code) {
        case ErrorCode::kInvalidRequest:
            return 400;
        case ErrorCode::kUnauthorized:
            return 401;
        case ErrorCode::kInsufficientBalance:
        case ErrorCode::kBudgetExceeded:
            return 402;
        case ErrorCode::kModelNotAllowed:
        case ErrorCode::kForbidden:
            return 403;
        case ErrorCode::kModelNotFound:
        case ErrorCode::kNotFound:
            return 404;
        case ErrorCode::kMethodNotAllowed:
            return 405;
        case ErrorCode::kRequestTimeout:
            return 408;
        case ErrorCode::kConflict:
            return 409;
        case ErrorCode::kRequestTooLarge:
            return 413;
        case ErrorCode::kRateLimited:
            return 429;
        case ErrorCode::kInternal:
            return 500;
        case ErrorCode::kUpstreamError:
            return 502;
        case ErrorCode::kUnavailable:
            return 503;
        case ErrorCode::kUpstreamTimeout:
            return 504;
    }
    return 500;
}

std::string_view ErrorType(ErrorCode code) {
    switch (code) {
        case ErrorCode::kUnauthorized:
            return "authentication_error";
        case ErrorCode::kInsufficientBalance:
        case ErrorCode::kBudgetExceeded:
            return "insufficient_quota";
        case ErrorCode::kModelNotAllowed:
        case ErrorCode::kForbidden:
            return "permission_error";
        case ErrorCode::kRateLimited:
            return "rate_limit_error";
        case ErrorCode::kInternal:
        case ErrorCode::kUpstreamError:
        case ErrorCode::kUnavailable:
        case ErrorCode::kUpstreamTimeout:
            return "api_error";
        default:
            return "invalid_request_error";
    }
}

std::string_view ErrorCodeName(ErrorCode code) {
    switch (code) {
        case ErrorCode::kInvalidRequest:
            return "invalid_request";
        case ErrorCode::kUnauthorized:
            return "invalid_api_key";
        case ErrorCode::kInsufficientBalance:
            return "insufficient_balance";
        case ErrorCode::kBudgetExceeded:
            return "budget_exceeded";
        case ErrorCode::kModelNotAllowed:
            return "model_not_allowed";
        case ErrorCode::kForbidden:
            return "forbidden";
        case ErrorCode::kModelNotFound:
            return "model_not_found";
        case ErrorCode::kNotFound:
            return "not_found";
        case ErrorCode::kMethodNotAllowed:
            return "method_not_allowed";
        case ErrorCode::kRequestTimeout:
            return "request_timeout";
        case ErrorCode::kConflict:
            return "conflict";
        case ErrorCode::kRequestTooLarge:
            return "request_too_large";
        case ErrorCode::kRateLimited:
            return "rate_limit_exceeded";
        case ErrorCode::kInternal:
            return "internal_error";
        case ErrorCode::kUpstreamError:
            return "upstream_error";
        case ErrorCode::kUnavailable:
            return "service_unavailable";
        case ErrorCode::kUpstreamTimeout:
            return "upstream_timeout";
    }
    return "internal_error";
}

std::string ErrorBody(const core::Error& error) {
    std::string out;
    out.reserve(128 + error.message.size());
    out += "{\"error\":{\"message\":";
    out += core::JsonQuote(error.message);
    out += ",\"type\":";
    out += core::JsonQuote(ErrorType(error.code));
    out += ",\"param\":";
    out += error.param.empty() ? std::string("null") : core::JsonQuote(error.param);
    out += ",\"code\":";
    out += core::JsonQuote(ErrorCodeName(error.code));
    out += "}}";
    return out;
}

net::Response ErrorResponse(const core::Error& error) {
    return net::Response::Json(HttpStatus(error.code), ErrorBody(error));
}

ErrorCode CodeForStatus(int status) {
    switch (status) {
        case 400:
            return ErrorCode::kInvalidRequest;
        case 401:
            return ErrorCode::kUnauthorized;
        case 402:
            return ErrorCode::kInsufficientBalance;
        case 403:
            return ErrorCode::kForbidden;
        case 404:
            return ErrorCode::kNotFound;
        case 405:
            return ErrorCode::kMethodNotAllowed;
        case 408:
            return ErrorCode::kRequestTimeout;
        case 409:
            return ErrorCode::kConflict;
        case 413:
            return ErrorCode::kRequestTooLarge;
        case 429:
            return ErrorCode::kRateLimited;
        case 502:
            return ErrorCode::kUpstreamError;
        case 503:
            return ErrorCode::kUnavailable;
        case 504:
            return ErrorCode::kUpstreamTimeout;
        case 431:
            return ErrorCode::kInvalidRequest;
        default:
            return status >= 500 ? ErrorCode::kInternal : ErrorCode::kInvalidRequest;
    }
}

}  // namespace conduit::gateway
