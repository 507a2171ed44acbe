#pragma once

#include "core/error.hpp"
#include "net/http_types.hpp"

#include <string>
#include <string_view>

namespace conduit::gateway {

/// HTTP status for an error code (the one mapping of specs/api.md §2).
int HttpStatus(core::ErrorCode code);
/// OpenAI `type` for an error code.
std::string_view ErrorType(core::ErrorCode code);
/// OpenAI `code` for an error code.
std::string_view ErrorCodeName(core::ErrorCode code);
/// `{"error":{"message","type","param","code"}}`.
std::string ErrorBody(const core::Error& error);
/// A complete JSON error response.
net::Response ErrorResponse(const core::Error& error);
/// The error code for an HTTP status the server produces itself (400, 408, 413, ...).
core::ErrorCode CodeForStatus(int status);

}  // namespace conduit::gateway
