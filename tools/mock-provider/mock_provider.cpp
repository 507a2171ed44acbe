#include "mock-provider/mock_provider.hpp"

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "json/helpers.hpp"
#include "json/json_peek.hpp"
#include "mock-provider/mock_content.hpp"
#include "net/http_server.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <future>
#include <mutex>
#include <unordered_map>

namespace conduit::mock {

namespace {

using namespace std::string_view_literals;

enum Route : size_t {
    kChat,
    kCompletions,
    kEmbeddings,
    kModels,
    kModel,
    kImages,
    kFiles,
    kVideos,
    kVideo,
    kVideoContent,
    kImageJobs,
    kImageJob,
    kMessages,
    kOtherV1,
    kRouteCount,
};
constexpr std::string_view kRouteLabels[kRouteCount] = {
    "/v1/chat/completions", "/v1/completions",
    "/v1/embeddings",       "/v1/models",
    "/v1/models/{id}",      "/v1/images/generations",
    "/mock/files",          "/v1/videos",
    "/v1/videos/{id}",      "/v1/videos/{id}/content",
    "/v1/images/jobs",      "/v1/images/jobs/{id}",
    "/v1/messages",         "/v1/other",
};

enum Counter : size_t {
    kRequests,
    kStreamsStarted,
    kStreamsCompleted,
    kStreamsAborted,
    kStreamsCut,
    kAuthFailures,
    kRateLimited,
    kErrorsInjected,
    kVideoJobsStarted,
    kImageJobsStarted,
    kJobsCancelled,
    kJobPolls,
    kPollsAfterCancel,
    kContentDownloads,
    kIdempotentReplays,
    kCounterCount,
};
enum Gauge : size_t { kActiveStreams, kHanging, kGaugeCount };

constexpr size_t kMaxLastBody = 64 * 1024;
constexpr int64_t kMaxChoices = 128;
constexpr int64_t kMaxChunks = 100000;
constexpr int64_t kMaxDims = 65536;
constexpr size_t kMaxPendingReleases = 10000;
constexpr int64_t kMaxJobDurationMs = int64_t{24} * 3600 * 1000;
constexpr int64_t kMaxVideoBytes = int64_t{256} << 20;
constexpr int64_t kMaxVideoSeconds = 600;
constexpr size_t kMaxIdempotencyKey = 255;

// Counters are written only by their shard's thread, so a relaxed load + store is enough (no
// locked read-modify-write on the hot path); other threads only read them.
void Bump(std::atomic<int64_t>& a, int64_t d = 1) {
    a.store(a.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
}

uint64_t SplitMix(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int64_t NowNs() { return core::SystemClock::SteadyNowNs(); }

// Body pieces, shared by the builders and the size estimate.
constexpr std::string_view kChatId = R"({"id":"chatcmpl-mock-)";
constexpr std::string_view kChatObject = R"(","object":"chat.completion","created":)";
constexpr std::string_view kCmplId = R"({"id":"cmpl-mock-)";
constexpr std::string_view kCmplObject = R"(","object":"text_completion","created":)";
constexpr std::string_view kModelKey = R"(,"model":)";
constexpr std::string_view kChoicesOpen = R"(,"choices":[)";
constexpr std::string_view kChatChoice1 = R"({"index":)";
constexpr std::string_view kChatChoice2 = R"(,"message":{"role":"assistant","content":")";
constexpr std::string_view kChatChoice3 = R"(","refusal":null},"logprobs":null,"finish_reason":")";
constexpr std::string_view kCmplChoice1 = R"({"text":")";
constexpr std::string_view kCmplChoice2 = R"(","index":)";
constexpr std::string_view kCmplChoice3 = R"(,"logprobs":null,"finish_reason":")";
constexpr std::string_view kChoiceEnd = R"("})";
constexpr std::string_view kUsage1 = R"(],"usage":{"prompt_tokens":)";
constexpr std::string_view kUsage2 = R"(,"completion_tokens":)";
constexpr std::string_view kUsage3 = R"(,"total_tokens":)";
constexpr std::string_view kUsageEnd = R"(},"system_fingerprint":"fp_mock"})";

size_t Digits(int64_t v) {
    size_t d = 1;
    while (v >= 10) {
        v /= 10;
        ++d;
    }
    return d;
}

void AppendUsage(std::string& out, int64_t prompt, int64_t completion) {
    out += R"("usage":{"prompt_tokens":)";
    AppendInt(out, prompt);
    out += kUsage2;
    AppendInt(out, completion);
    out += kUsage3;
    AppendInt(out, prompt + completion);
    out += '}';
}

int64_t CreatedNow() { return static_cast<int64_t>(std::time(nullptr)); }

int64_t UnixMsNow() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// Cuts a stream: aborts the connection when the Exchange API offers it, else terminates the
/// chunked response early (see MockProvider's doc comment).
template <class E>
void CutStream(E& ex) {
    if constexpr (requires { ex.Abort(); }) {
        ex.Abort();
    } else {
        ex.EndStream();
    }
}

class StreamJob;

/// The mock's output-token count of a tool call: a quarter of its input JSON's bytes, at least 1.
int64_t ToolOutputTokens(const ToolUse& tool) {
    return std::max<int64_t>(1, static_cast<int64_t>(tool.input_json.size() + 3) / 4);
}

/// Per-shard state. Counters and the config cache belong to the shard's thread; last_* are
/// guarded by last_mu (read by Stats() from other threads).
struct alignas(64) Shard {
    std::atomic<int64_t> counters[kCounterCount]{};
    std::atomic<int64_t> paths[kRouteCount]{};
    std::atomic<int64_t> gauges[kGaugeCount]{};

    std::mutex last_mu;
    int64_t last_ns = 0;
    std::string last_auth;
    std::string last_api_key;
    std::string last_anthropic_version;
    std::string last_model;
    std::string last_body;

    std::shared_ptr<const MockConfig> config;
    uint64_t config_version = ~uint64_t{0};
    uint64_t rng = 0;
    uint64_t next_id = 0;
    size_t index = 0;
    std::vector<float> floats;  // embeddings scratch
    std::vector<std::string_view> items;

    double Uniform() { return static_cast<double>(SplitMix(rng) >> 11) * 0x1.0p-53; }
};

/// Hold tokens: streams waiting at their hold point, releases that arrived early. Thread-safe.
class HoldRegistry {
public:
    /// A stream carrying `token` started (it will reach its hold point later).
    void Register(const std::string& token) {
        std::lock_guard l(mu_);
        ++entries_[token].inflight;
    }
    /// The stream reached its hold point: true = already released, go on; false = parked until
    /// Release() posts job->Resume() to the job's loop.
    bool Park(const std::string& token, const std::shared_ptr<StreamJob>& job) {
        std::lock_guard l(mu_);
        Entry& e = entries_[token];
        if (e.released) {
            return true;
        }
        e.waiting.push_back(job);
        return false;
    }
    /// The stream finished (any way).
    void Unregister(const std::string& token, const StreamJob* job) {
        std::lock_guard l(mu_);
        auto it = entries_.find(token);
        if (it == entries_.end()) {
            return;
        }
        Entry& e = it->second;
        std::erase_if(e.waiting, [job](const std::weak_ptr<StreamJob>& w) {
            auto p = w.lock();
            return !p || p.get() == job;
        });
        if (--e.inflight <= 0) {
            entries_.erase(it);
        }
    }
    bool Release(std::string_view token);
    void ReleaseAll();
    std::vector<std::string> Held() const {
        std::lock_guard l(mu_);
        std::vector<std::string> out;
        for (const auto& [token, e] : entries_) {
            if (!e.waiting.empty()) {
                out.push_back(token);
            }
        }
        std::sort(out.begin(), out.end());
        return out;
    }

private:
    struct Entry {
        int64_t inflight = 0;
        bool released = false;
        std::vector<std::weak_ptr<StreamJob>> waiting;
    };
    static void Wake(std::vector<std::weak_ptr<StreamJob>> waiting);

    mutable std::mutex mu_;
    std::unordered_map<std::string, Entry> entries_;
};

/// One parsed /v1 request, kept while its response is delayed.
struct Call {
    Route route = kOtherV1;
    json::PeekedRequest peek;
    BodyScan scan;
    std::string_view model_raw;  // the raw `model` JSON string literal (view into the body)
    std::shared_ptr<const MockConfig> cfg;
    std::string_view job_id;       // job routes: the {id} path segment (view into the request)
    std::shared_ptr<JobSpec> job;  // job submits: the validated job, id and times still unset
};

/// How much text a response carries.
struct Plan {
    uint64_t hash = 0;
    int64_t prompt_tokens = 1;
    int64_t choices = 1;
    size_t words = 1;  // per choice
    bool truncated = false;
};

std::string StatsToJson(const MockStats& s) {
    boost::json::object o;
    o["requests_total"] = s.requests_total;
    boost::json::object per_path;
    for (const auto& [label, count] : s.per_path) {
        per_path[label] = count;
    }
    o["per_path"] = std::move(per_path);
    o["streams_started"] = s.streams_started;
    o["streams_completed"] = s.streams_completed;
    o["streams_aborted"] = s.streams_aborted;
    o["streams_disconnected"] = s.streams_disconnected;
    o["active_streams"] = s.active_streams;
    o["hanging"] = s.hanging;
    o["auth_failures"] = s.auth_failures;
    o["rate_limited"] = s.rate_limited;
    o["errors_injected"] = s.errors_injected;
    o["video_jobs_started"] = s.video_jobs_started;
    o["image_jobs_started"] = s.image_jobs_started;
    o["jobs_started"] = s.jobs_started;
    o["jobs_cancelled"] = s.jobs_cancelled;
    o["jobs_completed"] = s.jobs_completed;
    o["jobs_failed"] = s.jobs_failed;
    o["jobs_active"] = s.jobs_active;
    o["job_polls"] = s.job_polls;
    o["polls_after_cancel"] = s.polls_after_cancel;
    o["content_downloads"] = s.content_downloads;
    o["idempotent_replays"] = s.idempotent_replays;
    o["last_authorization"] = s.last_authorization;
    o["last_api_key"] = s.last_api_key;
    o["last_anthropic_version"] = s.last_anthropic_version;
    o["last_model"] = s.last_model;
    o["last_body"] = s.last_body;
    boost::json::array held;
    for (const auto& token : s.held) {
        held.emplace_back(token);
    }
    o["held"] = std::move(held);
    return json::Serialize(o);
}

}  // namespace

struct MockProvider::Impl : std::enable_shared_from_this<MockProvider::Impl> {
    explicit Impl(MockOptions opts)
        : options(std::move(opts)),
          config(std::make_shared<const MockConfig>(options.config)),
          id_salt(core::RandomU64()),
          png_b64(core::Base64Encode(TinyPng())) {
        BuildModels();
    }

    MockOptions options;
    std::vector<std::unique_ptr<Shard>> shards;

    mutable std::mutex config_mu;
    std::shared_ptr<const MockConfig> config;
    std::atomic<uint64_t> config_version{0};

    std::atomic<int64_t> rl_window{-1};
    std::atomic<int64_t> rl_count{0};

    HoldRegistry holds;
    JobStore jobs;

    mutable std::mutex stats_mu;
    int64_t base_counters[kCounterCount]{};
    int64_t base_paths[kRouteCount]{};
    std::atomic<int64_t> reset_ns{0};

    uint64_t id_salt;
    std::string png_b64;
    std::string models_body;
    std::atomic<uint16_t> port{0};

    // --- request handling (loop threads) ---
    void Handle(const net::ExchangePtr& ex);
    void HandleV1(const net::ExchangePtr& ex, std::string_view path);
    void HandleControl(const net::ExchangePtr& ex, std::string_view path);
    void RespondNow(const net::ExchangePtr& ex, Call& call);
    bool InjectError(net::Exchange& ex, Shard& sh, const MockConfig& cfg, const BodyScan& scan);
    void Park(const net::ExchangePtr& ex, Shard& sh);

    std::string BuildText(const Call& call, Shard& sh);
    /// Anthropic Messages API response (text, or a tool_use per PlanToolUse).
    std::string BuildMessage(const Call& call, Shard& sh);
    bool BuildEmbeddings(const Call& call, Shard& sh, std::string& out, std::string& error);
    bool BuildImages(
        const Call& call, Shard& sh, std::string_view host, std::string& out, std::string& error);
    Plan PlanText(const Call& call) const;
    /// "http://host:port" of this mock as the client addressed it (JSON-escaped).
    void AppendFileBase(std::string& out, std::string_view host) const;

    // Async jobs.
    bool PrepareJob(Call& call,
                    const MockConfig& cfg,
                    const net::Request& req,
                    std::string& error,
                    std::string& param) const;
    void SubmitJob(net::Exchange& ex, Call& call, Shard& sh);
    void ReadJob(net::Exchange& ex, const Call& call, Shard& sh);
    void DownloadContent(net::Exchange& ex, const Call& call, Shard& sh);
    void RespondJob(net::Exchange& ex, const MockJob& job, int status = 200);

    Shard& ShardOf(net::Exchange& ex) { return *shards[ex.loop().Index()]; }
    const MockConfig& ConfigFor(Shard& sh) {
        uint64_t v = config_version.load(std::memory_order_acquire);
        if (v != sh.config_version) {
            std::lock_guard l(config_mu);
            sh.config = config;
            sh.config_version = config_version.load(std::memory_order_relaxed);
        }
        return *sh.config;
    }
    uint64_t NextId(Shard& sh) {
        return (id_salt ^ (static_cast<uint64_t>(sh.index) << 56)) + ++sh.next_id;
    }
    bool AdmitRate(int64_t limit) {
        int64_t second = NowNs() / 1000000000;
        int64_t w = rl_window.load(std::memory_order_relaxed);
        if (w != second && rl_window.compare_exchange_strong(w, second)) {
            rl_count.store(0, std::memory_order_relaxed);
        }
        return rl_count.fetch_add(1, std::memory_order_relaxed) < limit;
    }
    static void RecordLast(Shard& sh, const net::Request& req, std::string_view model) {
        std::lock_guard l(sh.last_mu);
        sh.last_ns = req.received_ns != 0 ? req.received_ns : NowNs();
        sh.last_auth.assign(req.headers.Get("authorization"));
        sh.last_api_key.assign(req.headers.Get("x-api-key"));
        sh.last_anthropic_version.assign(req.headers.Get("anthropic-version"));
        sh.last_model.assign(model);
        sh.last_body.assign(req.body.data(), std::min(req.body.size(), kMaxLastBody));
    }
    void BuildModels();
    void SumCounters(int64_t (&c)[kCounterCount], int64_t (&p)[kRouteCount]) const {
        for (const auto& sh : shards) {
            for (size_t i = 0; i < kCounterCount; ++i) {
                c[i] += sh->counters[i].load(std::memory_order_relaxed);
            }
            for (size_t i = 0; i < kRouteCount; ++i) {
                p[i] += sh->paths[i].load(std::memory_order_relaxed);
            }
        }
    }
    MockStats Stats() const;
    MockConfig CurrentConfig() const;
    void SetConfig(MockConfig c);
    void Reset();
};

namespace {

void RespondJson(net::Exchange& ex, int status, std::string body) {
    ex.Respond(net::Response::Json(status, std::move(body)));
}

/// True for requests to the Anthropic Messages endpoint (whose errors use Anthropic's shape).
bool IsAnthropic(net::Exchange& ex) { return ex.request().path() == kRouteLabels[kMessages]; }

void RespondError(net::Exchange& ex,
                  int status,
                  std::string_view message,
                  std::string_view param = {}) {
    net::Response r =
        net::Response::Json(status, IsAnthropic(ex) ? AnthropicErrorJson(status, message)
                                                    : ErrorJson(status, message, param));
    if (status == 429) {
        r.headers.Add("retry-after", "1");
        r.headers.Add("x-ratelimit-remaining-requests", "0");
        r.headers.Add("x-ratelimit-reset-requests", "1s");
    }
    ex.Respond(std::move(r));
}

/// A streaming chat or completions response. Lives while a timer, the exchange's close callback
/// or the hold registry references it; holds the exchange only weakly (the connection owns it).
/// Loop thread only, except that HoldRegistry::Wake posts Resume() to the loop.
class StreamJob : public std::enable_shared_from_this<StreamJob> {
public:
    StreamJob(std::shared_ptr<MockProvider::Impl> impl,
              const net::ExchangePtr& ex,
              Shard& sh,
              const Call& call,
              const Plan& plan,
              size_t chunks)
        : impl_(std::move(impl)),
          ex_(ex),
          loop_(&ex->loop()),
          shard_(&sh),
          chat_(call.route == kChat),
          anthropic_(call.route == kMessages),
          cfg_(call.cfg),
          mock_error_status_(call.scan.mock_error_status),
          plan_(plan),
          chunks_(chunks),
          include_usage_(call.peek.include_usage.value_or(false)),
          hold_(call.scan.mock_hold) {
        const Corpus& corpus = Corpus::Instance();
        starts_.reserve(static_cast<size_t>(plan.choices));
        for (int64_t c = 0; c < plan.choices; ++c) {
            starts_.push_back(corpus.StartFor(plan.hash + static_cast<uint64_t>(c) * 7919));
        }
        if (call.scan.mock_chunk_delay_ms && *call.scan.mock_chunk_delay_ms > 0) {
            chunk_delay_ns_ = *call.scan.mock_chunk_delay_ms * 1000000;
        } else {
            tokens_per_second_ = cfg_->tokens_per_second;
        }
        if (call.scan.mock_disconnect_after && *call.scan.mock_disconnect_after >= 0) {
            disconnect_after_ = *call.scan.mock_disconnect_after;
        }
        if (anthropic_) {
            if (call.scan.mock_stream_error_after && *call.scan.mock_stream_error_after >= 0) {
                stream_error_after_ = *call.scan.mock_stream_error_after;
            }
            msg_id_ = "msg_mock_";
            AppendHex16(msg_id_, impl_->NextId(sh));
            model_raw_ = call.model_raw;
            return;
        }
        head_.reserve(160 + call.model_raw.size());
        head_ += "data: ";
        head_ += chat_ ? kChatId : kCmplId;
        AppendHex16(head_, impl_->NextId(sh));
        head_ += chat_ ? R"(","object":"chat.completion.chunk","created":)"sv : kCmplObject;
        AppendInt(head_, CreatedNow());
        head_ += kModelKey;
        head_ += call.model_raw;
        head_ += chat_ ? R"(,"system_fingerprint":"fp_mock",)"sv : ","sv;
    }

    core::Loop& loop() { return *loop_; }

    /// Anthropic: the stream carries this tool call instead of text, its input JSON split into
    /// at most `chunks` input_json_delta pieces. Before Start().
    void SetTool(ToolUse tool, size_t chunks) {
        const std::string& in = tool.input_json;
        size_t pieces = std::clamp<size_t>(chunks, 1, in.size());
        for (size_t i = 0; i < pieces; ++i) {
            size_t b = i * in.size() / pieces;
            size_t e = (i + 1) * in.size() / pieces;
            pieces_.push_back(in.substr(b, e - b));
        }
        tool_ = std::move(tool);
        chunks_ = pieces_.size();
        plan_.words = chunks_;
        plan_.truncated = false;
    }

    /// Arms the close callback and the hold, then begins after `latency_ns`.
    void Start(const net::ExchangePtr& ex, int64_t latency_ns) {
        ex->SetOnClose([self = shared_from_this()] { self->Closed(); });
        if (!hold_.empty()) {
            impl_->holds.Register(hold_);
            hold_registered_ = true;
        }
        if (latency_ns > 0) {
            timer_ = loop_->StartTimer(std::chrono::nanoseconds(latency_ns),
                                       [self = shared_from_this()] { self->Begin(); });
        } else {
            Begin();
        }
    }

    /// The hold was released (posted by HoldRegistry).
    void Resume() {
        if (done_ || !waiting_) {
            return;
        }
        waiting_ = false;
        passed_hold_ = true;
        Pump();
    }

private:
    void Begin() {
        timer_.reset();
        auto ex = ex_.lock();
        if (done_ || !ex || ex->closed()) {
            Closed();
            return;
        }
        if (impl_->InjectError(*ex, *shard_, *cfg_, MockErrorScan())) {
            Done();
            return;
        }
        net::Headers h;
        h.reserve(2);
        h.Add("Content-Type", "text/event-stream");
        h.Add("Cache-Control", "no-cache");
        ex->BeginStream(200, std::move(h));
        begun_ = true;
        Bump(shard_->counters[kStreamsStarted]);
        Bump(shard_->gauges[kActiveStreams]);
        t0_ns_ = NowNs();
        if (anthropic_) {
            WriteAnthropicStart(*ex);
        } else if (chat_) {
            for (int64_t c = 0; c < plan_.choices; ++c) {
                std::string chunk = ChunkStart(c);
                chunk += R"(,"delta":{"role":"assistant","content":"","refusal":null},)"
                         R"("logprobs":null,"finish_reason":null}]})"
                         "\n\n";
                ex->Write(std::move(chunk));
            }
        }
        Pump();
    }

    BodyScan MockErrorScan() const {
        BodyScan s;
        s.mock_error_status = mock_error_status_;
        return s;
    }

    /// Writes content chunks until a pacing delay, the hold point, the cut or the end.
    void Pump() {
        timer_.reset();
        auto ex = ex_.lock();
        if (done_ || !ex || ex->closed()) {
            Closed();
            return;
        }
        while (next_ < chunks_) {
            if (disconnect_after_ >= 0 && next_ >= static_cast<size_t>(disconnect_after_)) {
                Cut(*ex);
                return;
            }
            if (stream_error_after_ >= 0 && next_ >= static_cast<size_t>(stream_error_after_)) {
                StreamError(*ex);
                return;
            }
            if (!hold_.empty() && !passed_hold_ && next_ + 1 == chunks_) {
                if (!impl_->holds.Park(hold_, shared_from_this())) {
                    waiting_ = true;
                    return;
                }
                passed_hold_ = true;
            }
            if (next_ > 0) {
                int64_t due = DueNs(next_);
                int64_t now = NowNs();
                if (due > now) {
                    timer_ = loop_->StartTimer(std::chrono::nanoseconds(due - now),
                                               [self = shared_from_this()] { self->Pump(); });
                    return;
                }
            }
            WriteContent(*ex, next_);
            ++next_;
        }
        if (disconnect_after_ >= 0) {
            Cut(*ex);
            return;
        }
        Finish(*ex);
    }

    /// Steady-clock deadline of content chunk i (i ≥ 1).
    int64_t DueNs(size_t i) const {
        if (chunk_delay_ns_ > 0) {
            return t0_ns_ + static_cast<int64_t>(i) * chunk_delay_ns_;
        }
        if (tokens_per_second_ > 0) {
            double words_before = static_cast<double>(WordBegin(i));
            return t0_ns_ + static_cast<int64_t>(words_before * 1e9 / tokens_per_second_);
        }
        return 0;
    }

    size_t WordBegin(size_t i) const { return i * plan_.words / chunks_; }

    std::string ChunkStart(int64_t choice) const {
        std::string chunk;
        chunk.reserve(head_.size() + 160);
        chunk += head_;
        if (chat_) {
            chunk += R"("choices":[{"index":)";
            AppendInt(chunk, choice);
        }
        return chunk;
    }

    void WriteContent(net::Exchange& ex, size_t i) {
        const Corpus& corpus = Corpus::Instance();
        size_t begin = WordBegin(i);
        size_t end = WordBegin(i + 1);
        if (anthropic_) {
            std::string ev;
            ev.reserve(160 + (end - begin) * 12);
            ev +=
                "event: content_block_delta\n"
                R"(data: {"type":"content_block_delta","index":0,"delta":{"type":)";
            if (tool_) {
                ev += R"("input_json_delta","partial_json":")";
                core::AppendJsonEscaped(ev, pieces_[i]);
            } else {
                ev += R"("text_delta","text":")";
                if (begin > 0) {
                    ev += ' ';
                }
                corpus.Append(ev, starts_[0] + begin, end - begin);
            }
            ev += "\"}}\n\n";
            ex.Write(std::move(ev));
            return;
        }
        for (int64_t c = 0; c < plan_.choices; ++c) {
            std::string chunk = ChunkStart(c);
            chunk += chat_ ? R"(,"delta":{"content":")"sv : R"("choices":[{"text":")"sv;
            if (begin > 0) {
                chunk += ' ';
            }
            corpus.Append(chunk, starts_[static_cast<size_t>(c)] + begin, end - begin);
            if (chat_) {
                chunk += R"("},"logprobs":null,"finish_reason":null}]})"
                         "\n\n";
            } else {
                chunk += R"(","index":)";
                AppendInt(chunk, c);
                chunk += R"(,"logprobs":null,"finish_reason":null}]})"
                         "\n\n";
            }
            ex.Write(std::move(chunk));
        }
    }

    void Finish(net::Exchange& ex) {
        if (anthropic_) {
            std::string ev =
                "event: content_block_stop\n"
                R"(data: {"type":"content_block_stop","index":0})"
                "\n\nevent: message_delta\n"
                R"(data: {"type":"message_delta","delta":{"stop_reason":")";
            ev += tool_ ? "tool_use"sv : plan_.truncated ? "max_tokens"sv : "end_turn"sv;
            ev += R"(","stop_sequence":null},"usage":{"output_tokens":)";
            AppendInt(ev, OutputTokens());
            ev +=
                "}}\n\nevent: message_stop\n"
                R"(data: {"type":"message_stop"})"
                "\n\n";
            ex.Write(std::move(ev));
            ex.EndStream();
            Bump(shard_->counters[kStreamsCompleted]);
            Bump(shard_->gauges[kActiveStreams], -1);
            Done();
            return;
        }
        std::string_view reason = plan_.truncated ? "length" : "stop";
        for (int64_t c = 0; c < plan_.choices; ++c) {
            std::string chunk = ChunkStart(c);
            if (chat_) {
                chunk += R"(,"delta":{},"logprobs":null,"finish_reason":")";
            } else {
                chunk += R"("choices":[{"text":"","index":)";
                AppendInt(chunk, c);
                chunk += R"(,"logprobs":null,"finish_reason":")";
            }
            chunk += reason;
            chunk += R"("}]})"
                     "\n\n";
            ex.Write(std::move(chunk));
        }
        if (include_usage_) {
            std::string chunk;
            chunk.reserve(head_.size() + 100);
            chunk += head_;
            chunk += R"("choices":[],)";
            AppendUsage(chunk, plan_.prompt_tokens,
                        static_cast<int64_t>(plan_.words) * plan_.choices);
            chunk += "}\n\n";
            ex.Write(std::move(chunk));
        }
        ex.Write("data: [DONE]\n\n");
        ex.EndStream();
        Bump(shard_->counters[kStreamsCompleted]);
        Bump(shard_->gauges[kActiveStreams], -1);
        Done();
    }

    int64_t OutputTokens() const {
        return tool_ ? ToolOutputTokens(*tool_) : static_cast<int64_t>(plan_.words);
    }

    /// Anthropic: message_start, the content block's start and a ping.
    void WriteAnthropicStart(net::Exchange& ex) {
        std::string ev;
        ev.reserve(400 + model_raw_.size());
        ev +=
            "event: message_start\n"
            R"(data: {"type":"message_start","message":{"id":")";
        ev += msg_id_;
        ev += R"(","type":"message","role":"assistant","model":)";
        ev += model_raw_;
        ev += R"(,"content":[],"stop_reason":null,"stop_sequence":null,)"
              R"("usage":{"input_tokens":)";
        AppendInt(ev, plan_.prompt_tokens);
        ev += R"(,"output_tokens":1}}})"
              "\n\nevent: content_block_start\n"
              R"(data: {"type":"content_block_start","index":0,"content_block":)";
        if (tool_) {
            ev += R"({"type":"tool_use","id":"toolu_)";
            ev += msg_id_.substr(4);
            ev += R"(","name":")";
            core::AppendJsonEscaped(ev, tool_->name);
            ev += R"(","input":{}}})";
        } else {
            ev += R"({"type":"text","text":""}})";
        }
        ev +=
            "\n\nevent: ping\n"
            R"(data: {"type": "ping"})"
            "\n\n";
        ex.Write(std::move(ev));
    }

    /// Anthropic: an `error` event (mock_stream_error_after), then the end of the response.
    void StreamError(net::Exchange& ex) {
        ex.Write(
            "event: error\n"
            R"(data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})"
            "\n\n");
        ex.EndStream();
        Bump(shard_->counters[kErrorsInjected]);
        Bump(shard_->counters[kStreamsCompleted]);
        Bump(shard_->gauges[kActiveStreams], -1);
        Done();
    }

    void Cut(net::Exchange& ex) {
        Bump(shard_->counters[kStreamsCut]);
        Bump(shard_->gauges[kActiveStreams], -1);
        Done();
        CutStream(ex);
    }

    /// The client went away (or the exchange is gone).
    void Closed() {
        if (done_) {
            return;
        }
        if (begun_) {
            Bump(shard_->counters[kStreamsAborted]);
            Bump(shard_->gauges[kActiveStreams], -1);
        }
        Done();
    }

    void Done() {
        if (done_) {
            return;
        }
        done_ = true;
        waiting_ = false;
        if (timer_) {
            timer_->Cancel();
            timer_.reset();
        }
        if (hold_registered_) {
            hold_registered_ = false;
            impl_->holds.Unregister(hold_, this);
        }
    }

    std::shared_ptr<MockProvider::Impl> impl_;
    std::weak_ptr<net::Exchange> ex_;
    core::Loop* loop_;
    Shard* shard_;
    bool chat_;
    bool anthropic_;
    std::shared_ptr<const MockConfig> cfg_;
    std::optional<int64_t> mock_error_status_;
    Plan plan_;
    size_t chunks_;
    bool include_usage_;
    std::string hold_;
    std::string head_;  // `data: {"id":…,"model":…,` shared by every chunk
    std::vector<size_t> starts_;
    int64_t chunk_delay_ns_ = 0;
    double tokens_per_second_ = 0;
    int64_t disconnect_after_ = -1;
    int64_t stream_error_after_ = -1;
    // Anthropic streams.
    std::string msg_id_;
    std::string model_raw_;
    std::optional<ToolUse> tool_;
    std::vector<std::string> pieces_;

    size_t next_ = 0;
    int64_t t0_ns_ = 0;
    bool begun_ = false;
    bool done_ = false;
    bool waiting_ = false;
    bool passed_hold_ = false;
    bool hold_registered_ = false;
    core::TimerPtr timer_;
};

}  // namespace

bool HoldRegistry::Release(std::string_view token) {
    std::vector<std::weak_ptr<StreamJob>> waiting;
    {
        std::lock_guard l(mu_);
        auto it = entries_.find(std::string(token));
        if (it != entries_.end() && it->second.inflight > 0) {
            it->second.released = true;
            waiting.swap(it->second.waiting);
        } else {
            if (entries_.size() >= kMaxPendingReleases) {
                std::erase_if(entries_, [](const auto& kv) { return kv.second.inflight <= 0; });
            }
            entries_[std::string(token)].released = true;
            return false;
        }
    }
    Wake(std::move(waiting));
    return true;
}

void HoldRegistry::ReleaseAll() {
    std::vector<std::weak_ptr<StreamJob>> waiting;
    {
        std::lock_guard l(mu_);
        for (auto& [token, e] : entries_) {
            e.released = true;
            for (auto& w : e.waiting) {
                waiting.push_back(std::move(w));
            }
            e.waiting.clear();
        }
    }
    Wake(std::move(waiting));
}

void HoldRegistry::Wake(std::vector<std::weak_ptr<StreamJob>> waiting) {
    for (auto& w : waiting) {
        if (auto job = w.lock()) {
            job->loop().Post([job] { job->Resume(); });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling

void MockProvider::Impl::Handle(const net::ExchangePtr& ex) {
    std::string_view path = ex->request().path();
    if (path.starts_with("/v1/")) {
        HandleV1(ex, path);
    } else if (path.starts_with("/mock/")) {
        HandleControl(ex, path);
    } else if (path == "/health" || path == "/healthz") {
        RespondJson(*ex, 200, R"({"status":"ok"})");
    } else {
        RespondError(*ex, 404, "Unknown path " + std::string(path) + ".");
    }
}

void MockProvider::Impl::HandleV1(const net::ExchangePtr& ex, std::string_view path) {
    net::Request& req = ex->request();
    Shard& sh = ShardOf(*ex);
    Route route = kOtherV1;
    std::string_view method = "POST";
    std::string_view alt_method;  // a second method the route accepts
    std::string_view job_id;
    if (path == "/v1/chat/completions") {
        route = kChat;
    } else if (path == "/v1/completions") {
        route = kCompletions;
    } else if (path == "/v1/embeddings") {
        route = kEmbeddings;
    } else if (path == "/v1/images/generations") {
        route = kImages;
    } else if (path == kRouteLabels[kMessages]) {
        route = kMessages;
    } else if (path == "/v1/models") {
        route = kModels;
        method = "GET";
    } else if (path.starts_with("/v1/models/") && path.size() > 11) {
        route = kModel;
        method = "GET";
    } else if (path == "/v1/videos") {
        route = kVideos;
    } else if (path.starts_with("/v1/videos/")) {
        job_id = path.substr(11);
        route = kVideo;
        method = "GET";
        alt_method = "DELETE";
        if (job_id.ends_with("/content")) {
            job_id.remove_suffix(8);
            route = kVideoContent;
            alt_method = "HEAD";
        }
    } else if (path == "/v1/images/jobs") {
        route = kImageJobs;
    } else if (path.starts_with("/v1/images/jobs/")) {
        job_id = path.substr(16);
        route = kImageJob;
        method = "GET";
        alt_method = "DELETE";
    }
    if (!job_id.empty() && job_id.find('/') != std::string_view::npos) {
        route = kOtherV1;
    } else if ((route == kVideo || route == kVideoContent || route == kImageJob) &&
               job_id.empty()) {
        route = kOtherV1;
    }
    Bump(sh.counters[kRequests]);
    Bump(sh.paths[route]);

    Call call;
    call.route = route;
    call.job_id = job_id;
    const MockConfig& cfg = ConfigFor(sh);
    const bool method_ok =
        req.method == method || (!alt_method.empty() && req.method == alt_method);
    std::optional<core::Error> parse_error;
    if (req.method == "POST" && method_ok && route != kOtherV1) {
        auto peeked = json::PeekRequest(req.body);
        if (!peeked) {
            parse_error = std::move(peeked.error());
        } else {
            call.peek = std::move(*peeked);
            if (!ScanBody(req.body, call.scan)) {
                parse_error =
                    core::Error::Make(core::ErrorCode::kInvalidRequest,
                                      "We could not parse the JSON body of your request.");
            }
            if (call.peek.model_length > 0 && call.peek.model) {
                call.model_raw = std::string_view(req.body).substr(call.peek.model_offset,
                                                                   call.peek.model_length);
            }
        }
    }
    RecordLast(sh, req, call.peek.model ? std::string_view(*call.peek.model) : std::string_view());

    if (route == kMessages) {
        // Anthropic: the key comes in x-api-key, and anthropic-version is mandatory.
        if (!cfg.require_key.empty() && req.headers.Get("x-api-key") != cfg.require_key) {
            Bump(sh.counters[kAuthFailures]);
            RespondError(*ex, 401, "invalid x-api-key");
            return;
        }
        if (req.headers.Get("anthropic-version").empty()) {
            RespondError(*ex, 400, "anthropic-version: header is required");
            return;
        }
    } else if (!cfg.require_key.empty() && req.BearerToken() != cfg.require_key) {
        Bump(sh.counters[kAuthFailures]);
        RespondError(*ex, 401,
                     "Incorrect API key provided. You can find your API key at "
                     "https://platform.openai.com/account/api-keys.");
        return;
    }
    if (cfg.rate_limit > 0 && !AdmitRate(cfg.rate_limit)) {
        Bump(sh.counters[kRateLimited]);
        RespondError(*ex, 429,
                     "Rate limit reached for requests (mock limit " +
                         std::to_string(cfg.rate_limit) + " per second). Please try again in 1s.");
        return;
    }
    if (route == kOtherV1) {
        RespondError(*ex, 404, "Invalid URL (" + req.method + " " + std::string(path) + ").");
        return;
    }
    if (!method_ok) {
        RespondError(*ex, 405,
                     "Invalid method for URL (" + req.method + " " + std::string(path) + ").");
        return;
    }
    if (parse_error) {
        RespondError(*ex, 400, parse_error->message, parse_error->param);
        return;
    }
    if (route == kModels) {
        RespondJson(*ex, 200, models_body);
        return;
    }
    if (route == kModel) {
        std::string id = core::UrlDecode(path.substr(11));
        std::string body = R"({"id":")";
        core::AppendJsonEscaped(body, id);
        body += R"(","object":"model","created":1700000000,"owned_by":"conduit-mock"})";
        RespondJson(*ex, 200, std::move(body));
        return;
    }

    // POST endpoints: validate what every one of them needs before any delay.
    if (route == kVideos || route == kImageJobs) {
        std::string error;
        std::string param;
        if (!PrepareJob(call, cfg, req, error, param)) {
            RespondError(*ex, 400, error, param);
            return;
        }
    } else if (route == kMessages) {
        if (!call.peek.model) {
            RespondError(*ex, 400, "model: Field required");
            return;
        }
        if (call.scan.messages.empty() || call.scan.messages.front() != '[') {
            RespondError(*ex, 400, "messages: Input should be a valid list");
            return;
        }
        if (!call.peek.max_tokens) {
            RespondError(*ex, 400, "max_tokens: Field required");
            return;
        }
        if (*call.peek.max_tokens < 1) {
            RespondError(*ex, 400, "max_tokens: Input should be greater than or equal to 1");
            return;
        }
    } else if (route != kVideo && route != kVideoContent && route != kImageJob) {
        if (route != kImages && !call.peek.model) {
            RespondError(*ex, 400, "you must provide a model parameter", "model");
            return;
        }
        if (route == kChat && call.scan.messages.empty()) {
            RespondError(*ex, 400, "Missing required parameter: 'messages'.", "messages");
            return;
        }
        if (route == kEmbeddings && call.scan.input.empty()) {
            RespondError(*ex, 400, "Missing required parameter: 'input'.", "input");
            return;
        }
        if (route == kImages && call.scan.prompt.empty()) {
            RespondError(*ex, 400, "Missing required parameter: 'prompt'.", "prompt");
            return;
        }
        int64_t n = call.peek.n.value_or(1);
        if (n < 1 || n > (route == kImages ? 10 : kMaxChoices)) {
            RespondError(*ex, 400, "Invalid value for 'n': out of range.", "n");
            return;
        }
    }

    if (call.scan.mock_hang) {
        Park(ex, sh);
        return;
    }
    int64_t latency_ns = 0;
    if (call.scan.mock_latency_ms) {
        latency_ns = std::max<int64_t>(*call.scan.mock_latency_ms, 0) * 1000000;
    } else if (cfg.latency_ms > 0 || cfg.jitter_ms > 0) {
        double jitter = (sh.Uniform() * 2 - 1) * static_cast<double>(cfg.jitter_ms) * 1e6;
        latency_ns = std::max<int64_t>(
            cfg.latency_ms * 1000000 + static_cast<int64_t>(std::llround(jitter)), 0);
    }
    call.cfg = sh.config;

    const bool stream = (route == kChat || route == kCompletions || route == kMessages) &&
                        call.peek.stream.value_or(false);
    if (stream) {
        int64_t chunks =
            std::clamp<int64_t>(call.scan.mock_chunks.value_or(cfg.stream_chunks), 1, kMaxChunks);
        Plan plan = PlanText(call);
        // At least one word per chunk; max_tokens wins over the chunk count.
        size_t words = std::max(plan.words, static_cast<size_t>(chunks));
        if (call.peek.max_tokens && *call.peek.max_tokens > 0 &&
            static_cast<size_t>(*call.peek.max_tokens) < words) {
            words = static_cast<size_t>(*call.peek.max_tokens);
            plan.truncated = true;
        }
        plan.words = words;
        auto job = std::make_shared<StreamJob>(shared_from_this(), ex, sh, call, plan,
                                               std::min(words, static_cast<size_t>(chunks)));
        if (route == kMessages) {
            if (auto tool = PlanToolUse(call.scan)) {
                job->SetTool(std::move(*tool), static_cast<size_t>(chunks));
            }
        }
        job->Start(ex, latency_ns);
        return;
    }
    if (latency_ns > 0) {
        auto held = std::make_shared<Call>(std::move(call));
        ex->loop().StartTimer(
            std::chrono::nanoseconds(latency_ns),
            [self = shared_from_this(), ex, held] { self->RespondNow(ex, *held); });
        return;
    }
    RespondNow(ex, call);
}

bool MockProvider::Impl::InjectError(net::Exchange& ex,
                                     Shard& sh,
                                     const MockConfig& cfg,
                                     const BodyScan& scan) {
    int status = 0;
    if (scan.mock_error_status && *scan.mock_error_status >= 400 &&
        *scan.mock_error_status <= 599) {
        status = static_cast<int>(*scan.mock_error_status);
    } else if (cfg.error_rate > 0 && sh.Uniform() < cfg.error_rate) {
        status = cfg.error_status;
    }
    if (status == 0) {
        return false;
    }
    Bump(sh.counters[kErrorsInjected]);
    RespondError(ex, status,
                 "The mock provider injected this error (status " + std::to_string(status) + ").");
    return true;
}

void MockProvider::Impl::Park(const net::ExchangePtr& ex, Shard& sh) {
    Bump(sh.gauges[kHanging]);
    // The connection keeps the exchange alive; it ends only when the client (or a server
    // shutdown) closes it.
    ex->SetOnClose([s = &sh, self = shared_from_this()] { Bump(s->gauges[kHanging], -1); });
}

void MockProvider::Impl::RespondNow(const net::ExchangePtr& ex, Call& call) {
    if (ex->closed()) {
        return;
    }
    Shard& sh = ShardOf(*ex);
    if (InjectError(*ex, sh, *call.cfg, call.scan)) {
        return;
    }
    std::string body;
    std::string error;
    switch (call.route) {
        case kChat:
        case kCompletions:
            body = BuildText(call, sh);
            break;
        case kMessages:
            body = BuildMessage(call, sh);
            break;
        case kEmbeddings:
            if (!BuildEmbeddings(call, sh, body, error)) {
                RespondError(*ex, 400, error, "input");
                return;
            }
            break;
        case kImages:
            if (!BuildImages(call, sh, ex->request().headers.Get("host"), body, error)) {
                RespondError(*ex, 400, error, "response_format");
                return;
            }
            break;
        case kVideos:
        case kImageJobs:
            SubmitJob(*ex, call, sh);
            return;
        case kVideo:
        case kImageJob:
            ReadJob(*ex, call, sh);
            return;
        case kVideoContent:
            DownloadContent(*ex, call, sh);
            return;
        default:
            RespondError(*ex, 404, "Not found.");
            return;
    }
    RespondJson(*ex, 200, std::move(body));
}

Plan MockProvider::Impl::PlanText(const Call& call) const {
    Plan plan;
    const bool chat = call.route == kChat || call.route == kMessages;
    std::string_view source = chat ? call.scan.messages : call.scan.prompt;
    plan.hash = Fnv1a64(source);
    plan.prompt_tokens =
        CountPromptTokens(source, chat ? CountMode::kContentStrings : CountMode::kAllStrings);
    plan.choices = call.route == kMessages ? 1 : call.peek.n.value_or(1);
    if (call.route == kMessages && !call.scan.system.empty()) {
        // Anthropic's system prompt: a string or an array of text blocks.
        plan.prompt_tokens += CountPromptTokens(call.scan.system, call.scan.system.front() == '"'
                                                                      ? CountMode::kAllStrings
                                                                      : CountMode::kContentStrings);
    }
    const auto n = static_cast<size_t>(plan.choices);
    // Everything but the generated text of a non-stream body, so it lands close to
    // response_bytes (streams carry the same text).
    size_t envelope =
        (chat ? kChatId.size() + kChatObject.size() : kCmplId.size() + kCmplObject.size()) + 16 +
        10 + kModelKey.size() + call.model_raw.size() + kChoicesOpen.size() +
        n * (chat ? kChatChoice1.size() + kChatChoice2.size() + kChatChoice3.size()
                  : kCmplChoice1.size() + kCmplChoice2.size() + kCmplChoice3.size()) +
        n * (kChoiceEnd.size() + 4 + Digits(plan.choices)) + kUsage1.size() + kUsage2.size() +
        kUsage3.size() + kUsageEnd.size() + Digits(plan.prompt_tokens) + 8;
    const auto target = static_cast<size_t>(std::max<int64_t>(call.cfg->response_bytes, 0));
    size_t per_choice = target > envelope ? (target - envelope) / n : 1;
    const Corpus& corpus = Corpus::Instance();
    plan.words = corpus.WordsForChars(corpus.StartFor(plan.hash), std::max<size_t>(per_choice, 1));
    if (call.peek.max_tokens && *call.peek.max_tokens > 0 &&
        static_cast<size_t>(*call.peek.max_tokens) < plan.words) {
        plan.words = static_cast<size_t>(*call.peek.max_tokens);
        plan.truncated = true;
    }
    return plan;
}

std::string MockProvider::Impl::BuildText(const Call& call, Shard& sh) {
    const bool chat = call.route == kChat;
    const int64_t n = call.peek.n.value_or(1);
    Plan plan = PlanText(call);
    const Corpus& corpus = Corpus::Instance();
    std::string body;
    size_t content = 0;
    for (int64_t c = 0; c < n; ++c) {
        content +=
            corpus.Chars(corpus.StartFor(plan.hash + static_cast<uint64_t>(c) * 7919), plan.words);
    }
    body.reserve(content + call.model_raw.size() + 256 + static_cast<size_t>(n) * 160);
    body += chat ? kChatId : kCmplId;
    AppendHex16(body, NextId(sh));
    body += chat ? kChatObject : kCmplObject;
    AppendInt(body, CreatedNow());
    body += kModelKey;
    body += call.model_raw;
    body += kChoicesOpen;
    std::string_view reason = plan.truncated ? "length" : "stop";
    for (int64_t c = 0; c < n; ++c) {
        if (c > 0) {
            body += ',';
        }
        size_t start = corpus.StartFor(plan.hash + static_cast<uint64_t>(c) * 7919);
        if (chat) {
            body += kChatChoice1;
            AppendInt(body, c);
            body += kChatChoice2;
            corpus.Append(body, start, plan.words);
            body += kChatChoice3;
        } else {
            body += kCmplChoice1;
            corpus.Append(body, start, plan.words);
            body += kCmplChoice2;
            AppendInt(body, c);
            body += kCmplChoice3;
        }
        body += reason;
        body += kChoiceEnd;
    }
    body += kUsage1;
    AppendInt(body, plan.prompt_tokens);
    body += kUsage2;
    int64_t completion = static_cast<int64_t>(plan.words) * n;
    AppendInt(body, completion);
    body += kUsage3;
    AppendInt(body, plan.prompt_tokens + completion);
    body += kUsageEnd;
    return body;
}

std::string MockProvider::Impl::BuildMessage(const Call& call, Shard& sh) {
    Plan plan = PlanText(call);
    std::optional<ToolUse> tool = PlanToolUse(call.scan);
    const Corpus& corpus = Corpus::Instance();
    std::string id = "msg_mock_";
    AppendHex16(id, NextId(sh));
    std::string body;
    body.reserve(corpus.Chars(corpus.StartFor(plan.hash), plan.words) + call.model_raw.size() +
                 320);
    body += R"({"id":")";
    body += id;
    body += R"(","type":"message","role":"assistant","model":)";
    body += call.model_raw;
    body += R"(,"content":[)";
    int64_t output_tokens = 0;
    if (tool) {
        body += R"({"type":"tool_use","id":"toolu_)";
        body += std::string_view(id).substr(4);
        body += R"(","name":")";
        core::AppendJsonEscaped(body, tool->name);
        body += R"(","input":)";
        body += tool->input_json;
        body += R"(}],"stop_reason":"tool_use")";
        output_tokens = ToolOutputTokens(*tool);
    } else {
        body += R"({"type":"text","text":")";
        corpus.Append(body, corpus.StartFor(plan.hash), plan.words);
        body += R"("}],"stop_reason":")";
        body += plan.truncated ? "max_tokens" : "end_turn";
        body += '"';
        output_tokens = static_cast<int64_t>(plan.words);
    }
    body += R"(,"stop_sequence":null,"usage":{"input_tokens":)";
    AppendInt(body, plan.prompt_tokens);
    body += R"(,"output_tokens":)";
    AppendInt(body, output_tokens);
    body += "}}";
    return body;
}

bool MockProvider::Impl::BuildEmbeddings(const Call& call,
                                         Shard& sh,
                                         std::string& out,
                                         std::string& error) {
    int64_t tokens = 0;
    if (!SplitEmbeddingInput(call.scan.input, sh.items, tokens, error)) {
        return false;
    }
    std::string_view format =
        call.peek.encoding_format ? std::string_view(*call.peek.encoding_format) : "float"sv;
    if (format != "float" && format != "base64") {
        error = "Invalid value for 'encoding_format': expected 'float' or 'base64'.";
        return false;
    }
    const bool b64 = format == "base64";
    int64_t dims64 = call.cfg->embedding_dims;
    if (call.scan.dimensions) {
        dims64 = *call.scan.dimensions;
    }
    if (dims64 < 1 || dims64 > kMaxDims) {
        error = "Invalid value for 'dimensions': out of range.";
        return false;
    }
    const auto dims = static_cast<size_t>(dims64);
    sh.floats.resize(dims);
    out.reserve(64 + sh.items.size() * (dims * (b64 ? 6 : 12) + 48) + call.model_raw.size());
    out += R"({"object":"list","data":[)";
    for (size_t i = 0; i < sh.items.size(); ++i) {
        if (i > 0) {
            out += ',';
        }
        out += R"({"object":"embedding","index":)";
        AppendInt(out, static_cast<int64_t>(i));
        out += R"(,"embedding":)";
        MakeEmbedding(Fnv1a64(sh.items[i]), dims, sh.floats.data());
        if (b64) {
            // x86-64 and aarch64 are little-endian: the floats' bytes are the wire bytes.
            out += '"';
            out += core::Base64Encode(std::string_view(
                reinterpret_cast<const char*>(sh.floats.data()), dims * sizeof(float)));
            out += '"';
        } else {
            out += '[';
            char buf[32];
            for (size_t d = 0; d < dims; ++d) {
                if (d > 0) {
                    out += ',';
                }
                auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), sh.floats[d]);
                (void)ec;
                out.append(buf, static_cast<size_t>(p - buf));
            }
            out += ']';
        }
        out += '}';
    }
    out += "]";
    out += kModelKey;
    out += call.model_raw;
    out += R"(,"usage":{"prompt_tokens":)";
    AppendInt(out, tokens);
    out += R"(,"total_tokens":)";
    AppendInt(out, tokens);
    out += "}}";
    return true;
}

bool MockProvider::Impl::BuildImages(
    const Call& call, Shard& sh, std::string_view host, std::string& out, std::string& error) {
    std::string_view format =
        call.peek.response_format_str ? std::string_view(*call.peek.response_format_str) : "url"sv;
    if (format != "url" && format != "b64_json") {
        error = "Invalid value for 'response_format': expected 'url' or 'b64_json'.";
        return false;
    }
    const int64_t n = call.peek.n.value_or(1);
    const bool url = format == "url";
    const uint64_t hash = Fnv1a64(call.scan.prompt);
    out.reserve(64 + static_cast<size_t>(n) *
                         (call.scan.prompt.size() + (url ? 96 : png_b64.size() + 32)));
    out += R"({"created":)";
    AppendInt(out, CreatedNow());
    out += R"(,"data":[)";
    for (int64_t i = 0; i < n; ++i) {
        if (i > 0) {
            out += ',';
        }
        if (url) {
            out += R"({"url":")";
            AppendFileBase(out, host);
            out += "/mock/files/img-";
            AppendHex16(out, hash);
            out += '-';
            AppendInt(out, i);
            out += R"(.png")";
        } else {
            out += R"({"b64_json":")";
            out += png_b64;
            out += '"';
        }
        if (call.scan.prompt.front() == '"') {
            out += R"(,"revised_prompt":)";
            out += call.scan.prompt;
        }
        out += '}';
    }
    out += "]}";
    (void)sh;
    return true;
}

void MockProvider::Impl::AppendFileBase(std::string& out, std::string_view host) const {
    out += "http://";
    if (!host.empty()) {
        core::AppendJsonEscaped(out, host);
        return;
    }
    const bool v6 = options.host.find(':') != std::string::npos;
    if (v6) {
        out += '[';
    }
    core::AppendJsonEscaped(out, options.host);
    if (v6) {
        out += ']';
    }
    out += ':';
    AppendInt(out, port.load(std::memory_order_relaxed));
}

// ---------------------------------------------------------------------------------------------
// Async jobs

bool MockProvider::Impl::PrepareJob(Call& call,
                                    const MockConfig& cfg,
                                    const net::Request& req,
                                    std::string& error,
                                    std::string& param) const {
    const bool video = call.route == kVideos;
    const BodyScan& scan = call.scan;
    auto fail = [&](std::string message, std::string_view field) {
        error = std::move(message);
        param = field;
        return false;
    };
    if (scan.prompt.empty()) {
        return fail("Missing required parameter: 'prompt'.", "prompt");
    }
    if (scan.prompt.front() != '"') {
        return fail("Invalid type for 'prompt': expected a string.", "prompt");
    }
    auto spec = std::make_shared<JobSpec>();
    spec->kind = video ? JobKind::kVideo : JobKind::kImage;
    spec->model_json = call.model_raw.empty() ? (video ? R"("sora-2")" : R"("gpt-image-1")")
                                              : std::string(call.model_raw);
    spec->prompt_json.assign(scan.prompt);

    std::string_view size =
        call.peek.size ? std::string_view(*call.peek.size) : (video ? "1280x720"sv : "1024x1024"sv);
    const size_t x = size.find('x');
    auto dimension = [](std::string_view d) {
        auto v = core::ParseInt(d);
        return !d.empty() && d.front() != '-' && d.front() != '+' && v && *v > 0 && *v <= 16384;
    };
    if (!(size == "auto" && !video) &&
        (x == std::string_view::npos || !dimension(size.substr(0, x)) ||
         !dimension(size.substr(x + 1)))) {
        return fail("Invalid value for 'size': expected WIDTHxHEIGHT, e.g. '1280x720'.", "size");
    }
    spec->size.assign(size);

    if (video) {
        std::string_view seconds = scan.seconds.empty() ? "4"sv : scan.seconds;
        if (seconds.size() >= 2 && seconds.front() == '"' && seconds.back() == '"') {
            seconds = seconds.substr(1, seconds.size() - 2);
        }
        auto v = core::ParseInt(seconds);
        if (seconds.empty() || seconds.front() == '-' || seconds.front() == '+' || !v || *v < 1 ||
            *v > kMaxVideoSeconds) {
            return fail("Invalid value for 'seconds': expected a whole number of seconds (1 to " +
                            std::to_string(kMaxVideoSeconds) + ").",
                        "seconds");
        }
        spec->seconds = std::to_string(*v);
        int64_t bytes = scan.mock_video_bytes.value_or(cfg.video_bytes);
        if (bytes < 0 || bytes > kMaxVideoBytes) {
            return fail("Invalid value for 'mock_video_bytes': out of range.", "mock_video_bytes");
        }
        spec->content_bytes = bytes;
    } else {
        spec->n = call.peek.n.value_or(1);
        if (spec->n < 1 || spec->n > 10) {
            return fail("Invalid value for 'n': out of range.", "n");
        }
        std::string_view format = call.peek.response_format_str
                                      ? std::string_view(*call.peek.response_format_str)
                                      : "url"sv;
        if (format != "url" && format != "b64_json") {
            return fail("Invalid value for 'response_format': expected 'url' or 'b64_json'.",
                        "response_format");
        }
        spec->b64 = format == "b64_json";
    }

    spec->duration_ms = std::clamp<int64_t>(scan.mock_job_duration_ms.value_or(cfg.job_duration_ms),
                                            0, kMaxJobDurationMs);
    if (scan.mock_job_error_code.empty()) {
        spec->error_code = video ? "video_generation_failed" : "image_generation_failed";
    } else {
        spec->error_code.assign(scan.mock_job_error_code);
    }
    std::string_view key = core::Trim(req.headers.Get("idempotency-key"));
    if (key.size() > kMaxIdempotencyKey) {
        return fail("The Idempotency-Key header is longer than 255 characters.", "Idempotency-Key");
    }
    spec->idempotency_key.assign(key);
    // A failing submit is an injected error like mock_error_status (which wins when both are set).
    if (!call.scan.mock_error_status && scan.mock_job_fail_status) {
        call.scan.mock_error_status = scan.mock_job_fail_status;
    }
    call.job = std::move(spec);
    return true;
}

void MockProvider::Impl::SubmitJob(net::Exchange& ex, Call& call, Shard& sh) {
    JobSpec& spec = *call.job;
    const bool video = spec.kind == JobKind::kVideo;
    spec.id = video ? "video_" : "imgjob_";
    AppendHex16(spec.id, NextId(sh));
    spec.fails =
        call.scan.mock_job_fail.value_or(ChosenToFail(spec.id, call.cfg->job_failure_rate));
    spec.created_ns = NowNs();
    spec.created_unix_ms = UnixMsNow();
    JobStore::Submitted submitted = jobs.Submit(std::move(call.job), spec.created_ns);
    if (submitted.replay) {
        Bump(sh.counters[kIdempotentReplays]);
    } else {
        Bump(sh.counters[video ? kVideoJobsStarted : kImageJobsStarted]);
    }
    RespondJob(ex, submitted.job);
}

void MockProvider::Impl::ReadJob(net::Exchange& ex, const Call& call, Shard& sh) {
    const JobKind kind = call.route == kVideo ? JobKind::kVideo : JobKind::kImage;
    const bool cancel = ex.request().method == "DELETE";
    std::optional<MockJob> job;
    if (cancel) {
        auto cancelled = jobs.Cancel(call.job_id, kind, NowNs(), UnixMsNow());
        if (cancelled) {
            if (cancelled->cancelled_now) {
                Bump(sh.counters[kJobsCancelled]);
            }
            job = std::move(cancelled->job);
        }
    } else {
        job = jobs.Get(call.job_id, kind, NowNs(), JobStore::Access::kPoll);
        if (job) {
            Bump(sh.counters[kJobPolls]);
            if (job->status == JobStatus::kCancelled) {
                Bump(sh.counters[kPollsAfterCancel]);
            }
        }
    }
    if (!job) {
        RespondError(ex, 404,
                     std::string(kind == JobKind::kVideo ? "Video" : "Image job") + " with id '" +
                         std::string(call.job_id) + "' not found.");
        return;
    }
    RespondJob(ex, *job);
}

void MockProvider::Impl::DownloadContent(net::Exchange& ex, const Call& call, Shard& sh) {
    net::Request& req = ex.request();
    auto job = jobs.Get(call.job_id, JobKind::kVideo, NowNs());
    if (!job) {
        RespondError(ex, 404, "Video with id '" + std::string(call.job_id) + "' not found.");
        return;
    }
    if (job->status != JobStatus::kCompleted) {
        RespondError(ex, 404,
                     "Video with id '" + std::string(call.job_id) + "' has no content: it is " +
                         std::string(JobStatusName(job->status)) + ".");
        return;
    }
    std::optional<std::string> variant = core::QueryParam(req.query(), "variant");
    if (variant && *variant != "video") {
        if (*variant != "thumbnail" && *variant != "spritesheet") {
            RespondError(ex, 400,
                         "Invalid value for 'variant': expected 'video', 'thumbnail' or "
                         "'spritesheet'.",
                         "variant");
            return;
        }
        ex.Respond(net::Response::Text(200, std::string(TinyPng()), "image/png"));
        return;
    }
    const JobSpec& spec = *job->spec;
    const int64_t total = spec.content_bytes;
    std::string sha = jobs.ContentSha256(spec);
    ByteRange range = ParseByteRange(req.headers.Get("range"), total);
    net::Response r;
    r.headers.reserve(5);
    r.headers.Add("Content-Type", "video/mp4");
    r.headers.Add("Accept-Ranges", "bytes");
    r.headers.Add("ETag", "\"" + sha + "\"");
    r.headers.Add("X-Content-Sha256", std::move(sha));
    if (range.kind == ByteRange::kUnsatisfiable) {
        r.status = 416;
        r.headers.Add("Content-Range", "bytes */" + std::to_string(total));
        r.headers.Set("Content-Type", "application/json");
        r.body = ErrorJson(416, "The requested range is not satisfiable.");
        ex.Respond(std::move(r));
        return;
    }
    if (range.kind == ByteRange::kPartial) {
        r.status = 206;
        r.headers.Add("Content-Range", "bytes " + std::to_string(range.begin) + "-" +
                                           std::to_string(range.end - 1) + "/" +
                                           std::to_string(total));
    } else {
        range.begin = 0;
        range.end = total;
    }
    if (req.method == "GET") {
        AppendVideoBytes(r.body, spec.id, total, range.begin, range.end);
        jobs.CountDownload(spec.id);
        Bump(sh.counters[kContentDownloads]);
    } else {
        // HEAD: the server sends no body, but the length must be the GET's.
        r.body.assign(static_cast<size_t>(range.end - range.begin), '\0');
    }
    ex.Respond(std::move(r));
}

void MockProvider::Impl::RespondJob(net::Exchange& ex, const MockJob& job, int status) {
    std::string body;
    std::string base;
    if (job.spec->kind == JobKind::kImage && job.status == JobStatus::kCompleted &&
        !job.spec->b64) {
        AppendFileBase(base, ex.request().headers.Get("host"));
    }
    AppendJobObject(body, job, base, png_b64);
    RespondJson(ex, status, std::move(body));
}

void MockProvider::Impl::BuildModels() {
    static constexpr std::string_view kModels[] = {
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "o3-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "dall-e-3",
        "gpt-image-1",
        "mock-model",
    };
    models_body = R"({"object":"list","data":[)";
    bool first = true;
    for (std::string_view id : kModels) {
        if (!first) {
            models_body += ',';
        }
        first = false;
        models_body += R"({"id":")";
        models_body += id;
        models_body += R"(","object":"model","created":1700000000,"owned_by":"conduit-mock"})";
    }
    models_body += "]}";
}

void MockProvider::Impl::HandleControl(const net::ExchangePtr& ex, std::string_view path) {
    net::Request& req = ex->request();
    if (path.starts_with("/mock/files/") && path.size() > 12) {
        Shard& sh = ShardOf(*ex);
        Bump(sh.paths[kFiles]);
        if (req.method != "GET" && req.method != "HEAD") {
            RespondError(*ex, 405, "Use GET.");
            return;
        }
        ex->Respond(net::Response::Text(200, std::string(TinyPng()), "image/png"));
        return;
    }
    if (path == "/mock/stats") {
        RespondJson(*ex, 200, StatsToJson(Stats()));
        return;
    }
    if (path == "/mock/jobs") {
        std::vector<MockJob> all = jobs.All(NowNs());
        std::string body;
        body.reserve(32 + all.size() * 512);
        body += R"({"object":"list","data":[)";
        for (size_t i = 0; i < all.size(); ++i) {
            if (i > 0) {
                body += ',';
            }
            AppendJobRecord(body, all[i]);
        }
        body += "]}";
        RespondJson(*ex, 200, std::move(body));
        return;
    }
    if (path.starts_with("/mock/jobs/") && path.size() > 11) {
        auto job = jobs.Get(path.substr(11), std::nullopt, NowNs());
        if (!job) {
            RespondError(*ex, 404, "No job with id '" + std::string(path.substr(11)) + "'.");
            return;
        }
        std::string body;
        AppendJobRecord(body, *job,
                        job->spec->kind == JobKind::kVideo ? jobs.ContentSha256(*job->spec) : "");
        RespondJson(*ex, 200, std::move(body));
        return;
    }
    if (path.starts_with("/mock/release/") && path.size() > 14) {
        if (req.method != "POST") {
            RespondError(*ex, 405, "Use POST.");
            return;
        }
        std::string token = core::UrlDecode(path.substr(14));
        bool released = holds.Release(token);
        std::string body = R"({"released":)";
        body += released ? "true" : "false";
        body += R"(,"token":")";
        core::AppendJsonEscaped(body, token);
        body += "\"}";
        RespondJson(*ex, released ? 200 : 404, std::move(body));
        return;
    }
    if (path == "/mock/config") {
        if (req.method == "GET") {
            RespondJson(*ex, 200, ConfigJson(CurrentConfig()));
            return;
        }
        if (req.method != "POST") {
            RespondError(*ex, 405, "Use GET or POST.");
            return;
        }
        auto updated = ApplyConfigJson(CurrentConfig(), req.body);
        if (!updated) {
            RespondError(*ex, 400, updated.error().message, updated.error().param);
            return;
        }
        SetConfig(*updated);
        RespondJson(*ex, 200, ConfigJson(*updated));
        return;
    }
    if (path == "/mock/reset") {
        if (req.method != "POST") {
            RespondError(*ex, 405, "Use POST.");
            return;
        }
        Reset();
        RespondJson(*ex, 200, R"({"ok":true})");
        return;
    }
    RespondError(*ex, 404, "Unknown path " + std::string(path) + ".");
}

MockConfig MockProvider::Impl::CurrentConfig() const {
    std::lock_guard l(config_mu);
    return *config;
}

void MockProvider::Impl::SetConfig(MockConfig c) {
    auto next = std::make_shared<const MockConfig>(std::move(c));
    std::lock_guard l(config_mu);
    config = std::move(next);
    config_version.fetch_add(1, std::memory_order_release);
}

void MockProvider::Impl::Reset() {
    int64_t c[kCounterCount]{};
    int64_t p[kRouteCount]{};
    std::lock_guard l(stats_mu);
    SumCounters(c, p);
    std::copy(std::begin(c), std::end(c), std::begin(base_counters));
    std::copy(std::begin(p), std::end(p), std::begin(base_paths));
    reset_ns.store(NowNs());
    jobs.Clear();
}

MockStats MockProvider::Impl::Stats() const {
    MockStats s;
    int64_t c[kCounterCount]{};
    int64_t p[kRouteCount]{};
    SumCounters(c, p);
    {
        std::lock_guard l(stats_mu);
        for (size_t i = 0; i < kCounterCount; ++i) {
            c[i] -= base_counters[i];
        }
        for (size_t i = 0; i < kRouteCount; ++i) {
            p[i] -= base_paths[i];
        }
    }
    s.requests_total = c[kRequests];
    s.streams_started = c[kStreamsStarted];
    s.streams_completed = c[kStreamsCompleted];
    s.streams_aborted = c[kStreamsAborted];
    s.streams_disconnected = c[kStreamsCut];
    s.auth_failures = c[kAuthFailures];
    s.rate_limited = c[kRateLimited];
    s.errors_injected = c[kErrorsInjected];
    s.video_jobs_started = c[kVideoJobsStarted];
    s.image_jobs_started = c[kImageJobsStarted];
    s.jobs_started = s.video_jobs_started + s.image_jobs_started;
    s.jobs_cancelled = c[kJobsCancelled];
    s.job_polls = c[kJobPolls];
    s.polls_after_cancel = c[kPollsAfterCancel];
    s.content_downloads = c[kContentDownloads];
    s.idempotent_replays = c[kIdempotentReplays];
    JobTally tally = jobs.Tally(NowNs());
    s.jobs_completed = tally.completed;
    s.jobs_failed = tally.failed;
    s.jobs_active = tally.queued + tally.in_progress;
    for (size_t i = 0; i < kRouteCount; ++i) {
        if (p[i] != 0) {
            s.per_path[std::string(kRouteLabels[i])] = p[i];
        }
    }
    int64_t newest = reset_ns.load();
    for (const auto& sh : shards) {
        s.active_streams += sh->gauges[kActiveStreams].load(std::memory_order_relaxed);
        s.hanging += sh->gauges[kHanging].load(std::memory_order_relaxed);
        std::lock_guard l(sh->last_mu);
        if (sh->last_ns > newest) {
            newest = sh->last_ns;
            s.last_authorization = sh->last_auth;
            s.last_api_key = sh->last_api_key;
            s.last_anthropic_version = sh->last_anthropic_version;
            s.last_model = sh->last_model;
            s.last_body = sh->last_body;
        }
    }
    s.held = holds.Held();
    return s;
}

// ---------------------------------------------------------------------------------------------
// Configuration

std::string ValidateConfig(const MockConfig& c) {
    if (c.latency_ms < 0) {
        return "latency_ms must be >= 0";
    }
    if (c.jitter_ms < 0) {
        return "jitter_ms must be >= 0";
    }
    if (!(c.tokens_per_second >= 0) || !std::isfinite(c.tokens_per_second)) {
        return "tokens_per_second must be >= 0";
    }
    if (c.stream_chunks < 1 || c.stream_chunks > kMaxChunks) {
        return "stream_chunks must be between 1 and " + std::to_string(kMaxChunks);
    }
    if (c.response_bytes < 0 || c.response_bytes > (int64_t{64} << 20)) {
        return "response_bytes must be between 0 and 67108864";
    }
    if (!(c.error_rate >= 0 && c.error_rate <= 1)) {
        return "error_rate must be between 0 and 1";
    }
    if (c.error_status < 400 || c.error_status > 599) {
        return "error_status must be between 400 and 599";
    }
    if (c.rate_limit < 0) {
        return "rate_limit must be >= 0";
    }
    if (c.embedding_dims < 1 || c.embedding_dims > kMaxDims) {
        return "embedding_dims must be between 1 and " + std::to_string(kMaxDims);
    }
    if (c.job_duration_ms < 0 || c.job_duration_ms > kMaxJobDurationMs) {
        return "job_duration_ms must be between 0 and " + std::to_string(kMaxJobDurationMs);
    }
    if (!(c.job_failure_rate >= 0 && c.job_failure_rate <= 1)) {
        return "job_failure_rate must be between 0 and 1";
    }
    if (c.video_bytes < 0 || c.video_bytes > kMaxVideoBytes) {
        return "video_bytes must be between 0 and " + std::to_string(kMaxVideoBytes);
    }
    return {};
}

core::Result<MockConfig> ApplyConfigJson(MockConfig c, std::string_view text) {
    auto parsed = json::ParseObject(text);
    if (!parsed) {
        return tl::unexpected(parsed.error());
    }
    const boost::json::object& o = *parsed;
    auto get_int = [&o](std::string_view key, int64_t& field) -> core::Result<void> {
        auto v = json::GetInt64(o, key);
        if (!v) {
            return tl::unexpected(v.error());
        }
        if (*v) {
            field = **v;
        }
        return {};
    };
    auto get_double = [&o](std::string_view key, double& field) -> core::Result<void> {
        const boost::json::value* v = o.if_contains(key);
        if (v == nullptr || v->is_null()) {
            return {};
        }
        if (!v->is_number()) {
            return core::Fail(core::ErrorCode::kInvalidRequest,
                              "Invalid type for '" + std::string(key) + "': expected a number.",
                              std::string(key));
        }
        boost::system::error_code ec;
        double d = v->to_number<double>(ec);
        if (ec) {
            return core::Fail(core::ErrorCode::kInvalidRequest,
                              "Invalid value for '" + std::string(key) + "'.", std::string(key));
        }
        field = d;
        return {};
    };
    for (const auto& kv : o) {
        std::string_view key = kv.key();
        core::Result<void> r;
        if (key == "latency_ms") {
            r = get_int(key, c.latency_ms);
        } else if (key == "jitter_ms") {
            r = get_int(key, c.jitter_ms);
        } else if (key == "tokens_per_second") {
            r = get_double(key, c.tokens_per_second);
        } else if (key == "stream_chunks") {
            r = get_int(key, c.stream_chunks);
        } else if (key == "response_bytes") {
            r = get_int(key, c.response_bytes);
        } else if (key == "error_rate") {
            r = get_double(key, c.error_rate);
        } else if (key == "error_status") {
            int64_t status = c.error_status;
            r = get_int(key, status);
            if (r) {
                if (status < 0 || status > 999) {
                    status = 0;  // rejected by ValidateConfig
                }
                c.error_status = static_cast<int>(status);
            }
        } else if (key == "rate_limit") {
            r = get_int(key, c.rate_limit);
        } else if (key == "embedding_dims") {
            r = get_int(key, c.embedding_dims);
        } else if (key == "job_duration_ms") {
            r = get_int(key, c.job_duration_ms);
        } else if (key == "job_failure_rate") {
            r = get_double(key, c.job_failure_rate);
        } else if (key == "video_bytes") {
            r = get_int(key, c.video_bytes);
        } else if (key == "require_key") {
            auto v = json::GetString(o, key);
            if (!v) {
                r = tl::unexpected(v.error());
            } else {
                c.require_key = v->value_or(std::string());
            }
        } else {
            return core::Fail(core::ErrorCode::kInvalidRequest,
                              "Unknown config field '" + std::string(key) + "'.", std::string(key));
        }
        if (!r) {
            return tl::unexpected(r.error());
        }
    }
    std::string invalid = ValidateConfig(c);
    if (!invalid.empty()) {
        return core::Fail(core::ErrorCode::kInvalidRequest, invalid);
    }
    return c;
}

std::string ConfigJson(const MockConfig& c) {
    boost::json::object o;
    o["latency_ms"] = c.latency_ms;
    o["jitter_ms"] = c.jitter_ms;
    o["tokens_per_second"] = c.tokens_per_second;
    o["stream_chunks"] = c.stream_chunks;
    o["response_bytes"] = c.response_bytes;
    o["error_rate"] = c.error_rate;
    o["error_status"] = c.error_status;
    o["rate_limit"] = c.rate_limit;
    o["require_key"] = c.require_key;
    o["embedding_dims"] = c.embedding_dims;
    o["job_duration_ms"] = c.job_duration_ms;
    o["job_failure_rate"] = c.job_failure_rate;
    o["video_bytes"] = c.video_bytes;
    return json::Serialize(o);
}

// ---------------------------------------------------------------------------------------------
// MockProvider

MockProvider::MockProvider(MockOptions options)
    : impl_(std::make_shared<Impl>(std::move(options))) {}

MockProvider::~MockProvider() {
    if (server_ && !stopped_.load()) {
        Stop();
    }
}

core::Result<uint16_t> MockProvider::Start(net::Runtime& runtime) {
    if (server_) {
        return core::Fail(core::ErrorCode::kConflict, "the mock provider is already started");
    }
    std::string invalid = ValidateConfig(impl_->options.config);
    if (!invalid.empty()) {
        return core::Fail(core::ErrorCode::kInvalidRequest, invalid);
    }
    (void)Corpus::Instance();  // build it now, not on the first request
    uint64_t seed = core::RandomU64();
    for (size_t i = 0; i < runtime.size(); ++i) {
        auto sh = std::make_unique<Shard>();
        sh->index = i;
        sh->rng = seed + i * 0x9e3779b97f4a7c15ULL;
        impl_->shards.push_back(std::move(sh));
    }
    net::ServerOptions so;
    so.host = impl_->options.host;
    so.port = impl_->options.port;
    so.max_body_bytes = impl_->options.max_body_bytes;
    so.error_response = [](int status, std::string_view message) {
        return net::Response::Json(status, ErrorJson(status, message));
    };
    auto impl = impl_;
    runtime_ = &runtime;
    server_ = std::make_unique<net::HttpServer>(
        runtime, std::move(so), [impl](const net::ExchangePtr& ex) { impl->Handle(ex); });
    auto port = server_->Start();
    if (!port) {
        return port;
    }
    impl_->port.store(*port);
    return port;
}

uint16_t MockProvider::port() const { return impl_->port.load(); }

namespace {

// Runs `done` once every loop of `rt` has run a posted task `rounds` times in a row, so whatever
// the server shutdown queued on the shards (accept loops and connections unwinding) has run.
void Barrier(net::Runtime& rt, int rounds, std::function<void()> done) {
    if (rounds <= 0) {
        if (done) {
            done();
        }
        return;
    }
    auto remaining = std::make_shared<std::atomic<size_t>>(rt.size());
    auto fn = std::make_shared<std::function<void()>>(std::move(done));
    for (size_t i = 0; i < rt.size(); ++i) {
        rt.loop(i).Post([&rt, remaining, fn, rounds] {
            if (remaining->fetch_sub(1) == 1) {
                Barrier(rt, rounds - 1, std::move(*fn));
            }
        });
    }
}

}  // namespace

void MockProvider::Stop(std::chrono::milliseconds grace, std::function<void()> done) {
    if (!server_ || stopped_.exchange(true)) {
        if (done) {
            done();
        }
        return;
    }
    impl_->holds.ReleaseAll();
    net::Runtime* rt = runtime_;
    server_->Shutdown(grace,
                      [rt, done = std::move(done)]() mutable { Barrier(*rt, 3, std::move(done)); });
}

bool MockProvider::StopAndWait(std::chrono::milliseconds grace) {
    auto stopped = std::make_shared<std::promise<void>>();
    auto future = stopped->get_future();
    Stop(grace, [stopped] { stopped->set_value(); });
    return future.wait_for(grace + std::chrono::seconds(5)) == std::future_status::ready;
}

MockStats MockProvider::Stats() const { return impl_->Stats(); }

std::string MockProvider::StatsJson() const { return StatsToJson(impl_->Stats()); }

void MockProvider::ResetStats() { impl_->Reset(); }

MockConfig MockProvider::Config() const { return impl_->CurrentConfig(); }

void MockProvider::UpdateOptions(MockConfig config) { impl_->SetConfig(std::move(config)); }

bool MockProvider::Release(std::string_view token) { return impl_->holds.Release(token); }

std::optional<MockJob> MockProvider::Job(std::string_view id) const {
    return impl_->jobs.Get(id, std::nullopt, NowNs());
}

std::vector<MockJob> MockProvider::Jobs() const { return impl_->jobs.All(NowNs()); }

}  // namespace conduit::mock
