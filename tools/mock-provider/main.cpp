// conduit-mock-provider: command-line entry point. Prints "listening on http://HOST:PORT" on
// stdout once bound (tests parse it when --listen uses port 0); logs go to stderr.

#include "core/strings.hpp"
#include "mock-provider/mock_provider.hpp"
#include "net/runtime.hpp"
#include "obs/logging.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <string>

namespace {

/// Splits "host:port", "[v6]:port", ":port" (all interfaces) or "port" (loopback).
bool ParseListen(const std::string& text, std::string& host, uint16_t& port) {
    std::string_view s = text;
    std::string_view port_text = s;
    host = "127.0.0.1";
    if (auto colon = s.rfind(':'); colon != std::string_view::npos) {
        std::string_view h = s.substr(0, colon);
        port_text = s.substr(colon + 1);
        if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
            h = h.substr(1, h.size() - 2);
        }
        host = h.empty() ? "0.0.0.0" : std::string(h);
    }
    auto p = conduit::core::ParseInt(port_text);
    if (!p || *p < 0 || *p > 65535) {
        return false;
    }
    port = static_cast<uint16_t>(*p);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace conduit;
    CLI::App app{"conduit-mock-provider: a deterministic, controllable OpenAI-compatible upstream"};
    mock::MockOptions opts;
    mock::MockConfig& cfg = opts.config;
    std::string listen = "127.0.0.1:8090";
    size_t threads = 0;
    std::string log_format = "text";
    std::string log_level = "info";
    app.add_option("--listen", listen, "host:port to listen on (port 0 = any free port)")
        ->capture_default_str();
    app.add_option("--threads", threads, "event-loop threads (0 = one per core)")
        ->capture_default_str();
    app.add_option("--latency-ms", cfg.latency_ms,
                   "delay before the response headers / first stream chunk")
        ->capture_default_str();
    app.add_option("--jitter-ms", cfg.jitter_ms, "uniform +/- added to the latency")
        ->capture_default_str();
    app.add_option("--tokens-per-second", cfg.tokens_per_second,
                   "stream pacing in generated words per second (0 = no pacing)")
        ->capture_default_str();
    app.add_option("--stream-chunks", cfg.stream_chunks, "content chunks per stream")
        ->capture_default_str();
    app.add_option("--response-bytes", cfg.response_bytes,
                   "approximate size of a non-stream completion body")
        ->capture_default_str();
    app.add_option("--error-rate", cfg.error_rate, "fraction (0..1) of requests that fail")
        ->capture_default_str();
    app.add_option("--error-status", cfg.error_status, "status of injected failures")
        ->capture_default_str();
    app.add_option("--rate-limit", cfg.rate_limit,
                   "requests per second across the process; excess gets 429 (0 = off)")
        ->capture_default_str();
    app.add_option("--require-key", cfg.require_key,
                   "API key required as 'Authorization: Bearer KEY' (empty = no auth)");
    app.add_option("--embedding-dims", cfg.embedding_dims, "default embedding size")
        ->capture_default_str();
    app.add_option("--job-duration-ms", cfg.job_duration_ms,
                   "time from an async job's submit to its end (0 = done at once)")
        ->capture_default_str();
    app.add_option("--job-failure-rate", cfg.job_failure_rate,
                   "fraction (0..1) of async jobs that end failed (chosen per job id)")
        ->capture_default_str();
    app.add_option("--video-bytes", cfg.video_bytes, "size of a completed video's content")
        ->capture_default_str();
    app.add_option("--max-body-bytes", opts.max_body_bytes, "largest accepted request body")
        ->capture_default_str();
    app.add_option("--log-format", log_format, "text or json")->capture_default_str();
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    if (!ParseListen(listen, opts.host, opts.port)) {
        std::fprintf(stderr, "invalid --listen '%s' (expected host:port)\n", listen.c_str());
        return 2;
    }
    if (std::string invalid = mock::ValidateConfig(cfg); !invalid.empty()) {
        std::fprintf(stderr, "invalid option: %s\n", invalid.c_str());
        return 2;
    }
    obs::InitLogging(obs::ParseLogFormat(log_format), log_level);

    net::Runtime runtime(threads);
    mock::MockProvider provider(opts);
    // Handle signals before announcing the port: a harness may stop us right after reading it.
    std::atomic<int> signals{0};
    runtime.OnSignal([&](int sig) {
        if (signals.fetch_add(1) > 0) {
            runtime.Stop();  // second signal: stop now
            return;
        }
        std::string s = std::to_string(sig);
        obs::LogEvent(spdlog::level::info, "shutting down", {{"signal", s}});
        provider.Stop(std::chrono::milliseconds(2000), [&runtime] { runtime.Stop(); });
    });
    auto port = provider.Start(runtime);
    if (!port) {
        obs::LogEvent(spdlog::level::err, "mock provider failed to start",
                      {{"error", port.error().message}});
        return 1;
    }
    std::string shown_host =
        opts.host.find(':') != std::string::npos ? "[" + opts.host + "]" : opts.host;
    std::string address = shown_host + ":" + std::to_string(*port);
    std::printf("listening on http://%s\n", address.c_str());
    std::fflush(stdout);
    std::string thread_count = std::to_string(runtime.size());
    obs::LogEvent(spdlog::level::info, "mock provider listening",
                  {{"address", address}, {"threads", thread_count}});

    runtime.Run();
    return 0;
}
