#pragma once

// SignalR session mode of conduit-loadgen: holds N concurrent hub sessions (negotiate → transport
// → JSON handshake), answers pings, and records the fan-out latency of every received invocation
// of one target from a send stamp in its text. One thread, epoll, non-blocking sockets; a session
// costs one descriptor over WebSockets (two over SSE and long polling: stream + POST sends).

#include "loadgen/histogram.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace conduit::loadgen {

enum class HubTransport { kWebSockets, kServerSentEvents, kLongPolling };

struct HubOptions {
    std::string url;  // http://host:port/hubs/notifications
    HubTransport transport = HubTransport::kWebSockets;
    int sessions = 100;
    double ramp_rate = 1000.0;  // sessions started per second; 0 = as fast as max_pending allows
    int max_pending = 256;      // sessions connecting at once
    std::vector<std::string> headers;           // "Name: value" on every request
    std::vector<std::string> session_headers;   // session i also sends [i % size()]
    bool skip_negotiate = false;                // WebSockets only: upgrade without negotiate
    std::string target = "SystemAnnouncement";  // invocations measured
    std::string stamp_prefix = "bench:";        // stamp = digits after this in the record
    /// Hub method invoked once right after the handshake (empty = none), with this JSON array of
    /// arguments (e.g. SubscribeToTaskType ["image"] on /hubs/tasks).
    std::string invoke;
    std::string invoke_args = "[]";
    double hold_s = 30.0;  // after the ramp, stay connected at most this long
    int expect = 0;        // end early once every live session got this many target messages
    int64_t connect_timeout_ms = 30000;  // start → handshake response
    std::string samples_file;            // "stamp_ns kernel_latency_ns user_latency_ns" per message
    std::string ready_file;              // written (JSON) once every session is connected or failed
    bool realtime_clock = true;          // stamps are CLOCK_REALTIME (else CLOCK_MONOTONIC) ns
};

/// Results of a session run.
struct HubStats {
    uint64_t started = 0;
    uint64_t connected = 0;
    uint64_t failed = 0;   // never connected
    uint64_t dropped = 0;  // connected, then closed by the server or the network
    uint64_t pings_answered = 0;
    uint64_t messages = 0;       // target invocations received
    uint64_t other_records = 0;  // other records after the handshake (pings excluded)
    uint64_t stamp_missing = 0;  // target invocations without a stamp
    int64_t first_start_ns = 0;  // monotonic
    int64_t last_connected_ns = 0;
    Histogram connect;                // session start → handshake response
    Histogram latency;                // stamp → kernel receive time of the bytes (SO_TIMESTAMPNS)
    Histogram user_latency;           // stamp → the generator parsed the record
    std::vector<std::string> errors;  // first distinct failure texts
    std::vector<uint64_t> failures_by_kind;  // connect, negotiate, transport, handshake, timeout
};

/// Runs the sessions (blocking) and returns the results; `*error` on a setup failure.
bool RunHubSessions(const HubOptions& opts, HubStats* stats, std::string* error);

/// Results as one JSON object (latencies in µs).
std::string HubStatsJson(const HubOptions& opts, const HubStats& stats);

/// `conduit-loadgen hub ...` (argv without the program and the subcommand).
int HubMain(int argc, char** argv);
/// `conduit-loadgen hub-announce ...`: POSTs stamped messages.
int HubAnnounceMain(int argc, char** argv);
/// `conduit-loadgen hub-merge FILE...`: merges samples files into one JSON report.
int HubMergeMain(int argc, char** argv);

}  // namespace conduit::loadgen
