#pragma once

#include <tl/expected.hpp>

#include <string>
#include <utility>

namespace conduit::core {

/// Every failure the gateway reports to a client maps to one of these codes; the HTTP status and
/// the OpenAI error body are derived from the code in one place (gateway/error_mapping).
enum class ErrorCode {
    kInvalidRequest,       // 400 invalid_request_error / invalid_request
    kUnauthorized,         // 401 authentication_error / invalid_api_key
    kInsufficientBalance,  // 402 insufficient_quota / insufficient_balance
    kModelNotAllowed,      // 403 permission_error / model_not_allowed
    kForbidden,            // 403 permission_error / forbidden
    kModelNotFound,        // 404 invalid_request_error / model_not_found
    kNotFound,             // 404 invalid_request_error / not_found
    kMethodNotAllowed,     // 405
    kConflict,             // 409 invalid_request_error / conflict
    kRequestTooLarge,      // 413 invalid_request_error / request_too_large
    kRateLimited,          // 429 rate_limit_error / rate_limit_exceeded
    kInternal,             // 500 api_error / internal_error
    kUpstreamError,        // 502 api_error / upstream_error
    kUnavailable,          // 503 api_error / service_unavailable
    kUpstreamTimeout,      // 504 api_error / upstream_timeout
    kRequestTimeout,       // 408 invalid_request_error / request_timeout
    kBudgetExceeded,       // 402 insufficient_quota / budget_exceeded (a key's period budget)
};

/// A failure: a code plus a human-readable message (never containing a secret) and, for
/// validation errors, the offending parameter name.
struct Error {
    ErrorCode code = ErrorCode::kInternal;
    std::string message;
    std::string param;  // empty = null

    static Error Make(ErrorCode c, std::string msg, std::string p = {}) {
        return Error{c, std::move(msg), std::move(p)};
    }
};

template <class T>
using Result = tl::expected<T, Error>;

/// Shorthand for returning a failure: `return Fail(ErrorCode::kNotFound, "no such key");`.
inline tl::unexpected<Error> Fail(ErrorCode c, std::string msg, std::string param = {}) {
    return tl::unexpected<Error>(Error{c, std::move(msg), std::move(param)});
}

}  // namespace conduit::core
