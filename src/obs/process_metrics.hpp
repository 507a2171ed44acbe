#pragma once

#include "obs/metrics.hpp"

#include <cstdint>

namespace conduit::obs {

/// Adds the standard process_* callback metrics (read from /proc at scrape time) to `registry`:
/// resident and virtual memory, open and max fds, CPU seconds (TYPE counter), start time and
/// thread count. Idempotent. Linux only; values are NaN where /proc cannot be read.
void RegisterProcessMetrics(Registry& registry);

/// Resident set size of this process in bytes, or -1 when unavailable. Any thread.
int64_t ReadRssBytes();
/// Number of open file descriptors of this process, or -1 when unavailable. Any thread.
int ReadOpenFds();

}  // namespace conduit::obs
