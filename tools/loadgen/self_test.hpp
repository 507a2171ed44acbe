#pragma once

namespace conduit::loadgen {

/// Checks the response parser on canned responses (Content-Length, chunked and close-delimited
/// bodies, each split at every byte boundary and fed byte by byte) and the histogram's
/// percentiles against exact ones. Prints each failure to stderr; returns 0 when all pass.
int RunSelfTest();

}  // namespace conduit::loadgen
