// Micro-benchmarks for the json component's hot paths: peeking a request body, rewriting it for
// the upstream, and scanning an SSE stream. Reference point in the same run: a full Boost.JSON
// parse of the same body.

#include "json/json_peek.hpp"
#include "json/sse.hpp"

#include <benchmark/benchmark.h>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>

#include <string>

namespace {

using namespace conduit;

/// A chat body of roughly `content_bytes` of message text.
std::string ChatBody(size_t content_bytes) {
    std::string body = R"({"model":"gpt-4o-mini","temperature":0.7,"stream":true,"max_tokens":512,)"
                       R"("messages":[{"role":"system","content":"You are a helpful assistant."},)"
                       R"({"role":"user","content":")";
    body.append(content_bytes, 'a');
    body.append(R"("}],"tools":[{"type":"function","function":{"name":"lookup",)"
                R"("parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]})");
    return body;
}

void BM_PeekRequest(benchmark::State& state) {
    std::string body = ChatBody(static_cast<size_t>(state.range(0)));
    for (auto _ : state) {
        auto peek = json::PeekRequest(body);
        benchmark::DoNotOptimize(peek);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_PeekRequest)->Arg(200)->Arg(4 << 10)->Arg(64 << 10);

void BM_BoostJsonParse(benchmark::State& state) {
    const std::string body = ChatBody(static_cast<size_t>(state.range(0)));
    unsigned char buffer[16 << 10];
    for (auto _ : state) {
        boost::json::monotonic_resource mr(buffer, sizeof(buffer));
        boost::system::error_code ec;
        auto v = boost::json::parse(body, ec, &mr);
        benchmark::DoNotOptimize(v);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_BoostJsonParse)->Arg(200)->Arg(4 << 10)->Arg(64 << 10);

void BM_RewriteForUpstream(benchmark::State& state) {
    std::string body = ChatBody(static_cast<size_t>(state.range(0)));
    const json::PeekedRequest peek = json::PeekRequest(body).value();
    for (auto _ : state) {
        std::string out = json::RewriteForUpstream(body, peek, "gpt-4o-mini-2024-07-18", true);
        benchmark::DoNotOptimize(out);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_RewriteForUpstream)->Arg(200)->Arg(4 << 10);

void BM_SseScan(benchmark::State& state) {
    std::string stream;
    for (int i = 0; i < 100; ++i) {
        stream += R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,)"
                  R"("model":"m","choices":[{"index":0,"delta":{"content":"token"},)"
                  "\"finish_reason\":null}]}\n\n";
    }
    const size_t chunk = static_cast<size_t>(state.range(0));
    for (auto _ : state) {
        json::SseScanner scanner;
        size_t events = 0;
        for (size_t at = 0; at < stream.size(); at += chunk) {
            scanner.Feed(std::string_view(stream).substr(at, chunk),
                         [&events](const json::SseScanner::Event&) { ++events; });
        }
        benchmark::DoNotOptimize(events);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * stream.size()));
}
BENCHMARK(BM_SseScan)->Arg(64)->Arg(1 << 20);

void BM_ExtractUsage(benchmark::State& state) {
    const std::string chunk =
        R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",)"
        R"("choices":[],"usage":{"prompt_tokens":123,"completion_tokens":456,"total_tokens":579}})";
    for (auto _ : state) {
        auto usage = json::ExtractUsage(chunk);
        benchmark::DoNotOptimize(usage);
    }
}
BENCHMARK(BM_ExtractUsage);

}  // namespace

BENCHMARK_MAIN();
