#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

namespace conduit::http_client {

/// Exponential backoff with full jitter: attempt 1 waits about `base`, attempt k about
/// base·2^(k-1), capped at `max`; the result is uniformly spread over [50 %, 100 %] of that.
/// `random01` is a uniform value in [0, 1) supplied by the caller (testable, no global RNG).
std::chrono::milliseconds BackoffDelay(int attempt,
                                       std::chrono::milliseconds base,
                                       std::chrono::milliseconds max,
                                       double random01);

/// Parses a Retry-After header value (delta-seconds; HTTP dates are not accepted) into a delay.
/// Returns a negative duration when absent or malformed.
std::chrono::milliseconds ParseRetryAfter(std::string_view value);

}  // namespace conduit::http_client
