// conduit-queue-bench: the raw publish/consume rate of a bus::WorkQueue adapter (embedded SQLite
// or RabbitMQ), with no task or webhook logic: the same-run reference of bench/tasks.sh.
// (This measurement used to be the ThroughputReport test of the WorkQueue contract suite;
// performance lives in bench/, not in tests.)
//
//   conduit-queue-bench --engine embedded|rabbitmq [--amqp amqp://user:pass@host:port/vhost]
//       [--messages 20000] [--batch 1] [--window 32] [--partitions 30] [--keys 1000]
//       [--body-bytes 200] [--concurrency 50] [--prefetch 25] [--loops 1]
//       [--phases mixed,split] [--dir DIR]
//
// Phases (one JSON object per phase on stdout; a summary on stderr):
//  - mixed: the consumer runs while messages are published (what the gateway does): the publish
//    rate (all confirmed) and the end-to-end rate (published, delivered and acked);
//  - split: publish-only into a topic nobody consumes, then a fresh adapter over the same storage
//    drains that backlog: the publish-only and consume-only rates.
// A publish is one WorkQueue::Publish() call of --batch messages; at most --window messages are
// unconfirmed at any time (like --window concurrent API requests each queueing one message).
// Consumers ack at once, on --loops event loops.

#include "bus/embedded_queue.hpp"
#include "bus/rabbitmq/rabbitmq_queue.hpp"
#include "bus/work_queue.hpp"
#include "net/runtime.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace {

using namespace conduit;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr const char* kUsage =
    "Usage: conduit-queue-bench --engine embedded|rabbitmq [options]\n"
    "\n"
    "  --engine E          embedded (SQLite file in --dir) or rabbitmq\n"
    "  --amqp URL          broker for rabbitmq (default amqp://guest:guest@127.0.0.1:5672/)\n"
    "  --messages N        messages per phase (default 20000)\n"
    "  --batch B           messages per Publish() call (default 1)\n"
    "  --window W          unconfirmed messages allowed in flight (default 32)\n"
    "  --partitions P      partitions of the topic (default 30)\n"
    "  --keys K            distinct partition keys, used round-robin (default 1000)\n"
    "  --body-bytes S      message body size (default 200)\n"
    "  --concurrency C     unsettled deliveries allowed (default 50)\n"
    "  --prefetch F        prefetch (default 25)\n"
    "  --loops L           consumer event loops (default 1)\n"
    "  --phases LIST       comma-separated: mixed, split (default mixed,split)\n"
    "  --dir DIR           embedded: directory of the queue file (default: a fresh temp dir,\n"
    "                      removed at exit)\n"
    "  --timeout-s T       give up on a phase after T seconds (default 300)\n";

struct Args {
    std::string engine;
    std::string amqp = "amqp://guest:guest@127.0.0.1:5672/";
    int messages = 20000;
    int batch = 1;
    int window = 32;
    int partitions = 30;
    int keys = 1000;
    int body_bytes = 200;
    int concurrency = 50;
    int prefetch = 25;
    int loops = 1;
    std::vector<std::string> phases = {"mixed", "split"};
    std::string dir;
    int timeout_s = 300;
};

double CpuSeconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto s = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

/// Counts acked deliveries; wakes the waiter when `target` is reached.
struct Counter {
    std::mutex mu;
    std::condition_variable cv;
    std::atomic<int64_t> n{0};
    int64_t target = 0;
    Clock::time_point first{}, last{};

    void Hit() {
        auto now = Clock::now();
        int64_t v = n.fetch_add(1) + 1;
        if (v == 1 || v >= target) {
            std::lock_guard lock(mu);
            if (v == 1) {
                first = now;
            }
            if (v >= target) {
                last = now;
                cv.notify_all();
            }
        }
    }
    bool WaitAll(std::chrono::seconds timeout) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, timeout, [&] { return n.load() >= target; });
    }
};

class Bench {
public:
    explicit Bench(Args a) : a_(std::move(a)), runtime_(static_cast<size_t>(a_.loops)) {
        runtime_.Start();
        if (a_.engine == "embedded") {
            if (a_.dir.empty()) {
                char tmpl[] = "/tmp/conduit-queue-bench.XXXXXX";
                if (::mkdtemp(tmpl) == nullptr) {
                    std::perror("mkdtemp");
                    std::exit(1);
                }
                a_.dir = tmpl;
                remove_dir_ = true;
            }
        } else {
            std::random_device rd;
            prefix_ = "qb" + std::to_string(::getpid()) + "x" + std::to_string(rd() % 100000);
        }
        body_.assign(static_cast<size_t>(a_.body_bytes), 'x');
        for (int i = 0; i < a_.keys; ++i) {
            keys_.push_back("vk-" + std::to_string(i));
        }
    }

    ~Bench() {
        runtime_.Stop();
        if (a_.engine == "rabbitmq" && !topics_.empty()) {
            auto o = RabbitOptions();
            auto r = bus::DeleteRabbitMqTopology(o, topics_);
            if (!r) {
                std::fprintf(stderr, "warning: could not delete the RabbitMQ topology: %s\n",
                             r.error().message.c_str());
            }
        }
        if (remove_dir_) {
            std::error_code ec;
            fs::remove_all(a_.dir, ec);
        }
    }

    /// Publish and consume at the same time.
    bool Mixed() {
        std::string topic = "bench-mixed";
        auto counter = std::make_shared<Counter>();
        counter->target = a_.messages;
        auto q = Make(topic, counter);
        if (!q) {
            return false;
        }
        double cpu0 = CpuSeconds();
        auto t0 = Clock::now();
        auto pub = PublishAll(*q, topic);
        if (!pub.ok) {
            q->Stop();
            return false;
        }
        bool all = counter->WaitAll(std::chrono::seconds(a_.timeout_s));
        auto t1 = all ? counter->last : Clock::now();
        double cpu = CpuSeconds() - cpu0;
        q->Stop();
        if (!all) {
            std::fprintf(stderr, "mixed: consumed %lld of %d within %d s\n",
                         static_cast<long long>(counter->n.load()), a_.messages, a_.timeout_s);
            return false;
        }
        double pub_s = Seconds(pub.done - t0);
        double e2e_s = Seconds(t1 - t0);
        Report("mixed", pub_s, pub, e2e_s, "e2e", cpu);
        return true;
    }

    /// Publish into an unconsumed topic, then drain it with a fresh adapter.
    bool Split() {
        std::string topic = "bench-split";
        double cpu0 = CpuSeconds();
        auto t0 = Clock::now();
        PublishResult pub;
        {
            auto q = Make(topic, nullptr);
            if (!q) {
                return false;
            }
            pub = PublishAll(*q, topic);
            q->Stop();
            if (!pub.ok) {
                return false;
            }
        }
        double pub_cpu = CpuSeconds() - cpu0;
        double pub_s = Seconds(pub.done - t0);

        auto counter = std::make_shared<Counter>();
        counter->target = a_.messages;
        double cpu1 = CpuSeconds();
        auto t1 = Clock::now();
        auto q = Make(topic, counter);
        if (!q) {
            return false;
        }
        bool all = counter->WaitAll(std::chrono::seconds(a_.timeout_s));
        auto t2 = all ? counter->last : Clock::now();
        double cons_cpu = CpuSeconds() - cpu1;
        q->Stop();
        if (!all) {
            std::fprintf(stderr, "split: consumed %lld of %d within %d s\n",
                         static_cast<long long>(counter->n.load()), a_.messages, a_.timeout_s);
            return false;
        }
        Report("publish-only", pub_s, pub, 0, "", pub_cpu);
        // Drain time from the adapter's creation (Start() included) to the last ack.
        PublishResult none;
        Report("consume-only", 0, none, Seconds(t2 - t1), "consume", cons_cpu);
        return true;
    }

private:
    struct PublishResult {
        bool ok = false;
        Clock::time_point done{};
        std::vector<double> batch_ms;  // publish → confirmed, per call
    };

    bus::RabbitMqQueueOptions RabbitOptions() const {
        bus::RabbitMqQueueOptions o;
        if (!bus::ParseAmqpUrl(a_.amqp, o)) {
            std::fprintf(stderr, "bad --amqp URL %s\n", a_.amqp.c_str());
            std::exit(2);
        }
        o.prefix = prefix_;
        o.defaults = QueueOpts();
        o.publish_timeout = std::chrono::seconds(60);
        return o;
    }

    bus::QueueOptions QueueOpts() const {
        bus::QueueOptions q;
        q.partitions = a_.partitions;
        q.prefetch = a_.prefetch;
        q.concurrency = a_.concurrency;
        q.max_attempts = 5;
        return q;
    }

    std::vector<core::Loop*> Loops() {
        std::vector<core::Loop*> loops;
        for (size_t i = 0; i < runtime_.size(); ++i) {
            loops.push_back(&runtime_.loop(i));
        }
        return loops;
    }

    /// A started adapter; consumes `topic` into `counter` when given.
    std::unique_ptr<bus::WorkQueue> Make(const std::string& topic,
                                         std::shared_ptr<Counter> counter) {
        std::unique_ptr<bus::WorkQueue> q;
        if (a_.engine == "embedded") {
            bus::EmbeddedQueueOptions o;
            o.path = (fs::path(a_.dir) / "queue.db").string();
            o.loops = Loops();
            o.defaults = QueueOpts();
            q = bus::MakeEmbeddedQueue(std::move(o));
        } else {
            auto o = RabbitOptions();
            o.loops = Loops();
            q = bus::MakeRabbitMqQueue(std::move(o));
            if (std::find(topics_.begin(), topics_.end(), topic) == topics_.end()) {
                topics_.push_back(topic);
            }
        }
        if (counter) {
            q->Consume(topic, [counter](bus::Delivery, bus::SettlementPtr s) {
                s->Ack();
                counter->Hit();
            });
        }
        if (auto r = q->Start(); !r) {
            std::fprintf(stderr, "%s: Start() failed: %s\n", a_.engine.c_str(),
                         r.error().message.c_str());
            return nullptr;
        }
        return q;
    }

    PublishResult PublishAll(bus::WorkQueue& q, const std::string& topic) {
        struct Window {
            std::mutex mu;
            std::condition_variable cv;
            int64_t unconfirmed = 0;
            int64_t confirmed = 0;
            int64_t failed = 0;
            std::string error;
            std::vector<double> batch_ms;
            Clock::time_point last_confirm{};
        };
        auto w = std::make_shared<Window>();
        w->batch_ms.reserve(static_cast<size_t>(a_.messages / a_.batch + 1));
        int next = 0;
        while (next < a_.messages) {
            int n = std::min(a_.batch, a_.messages - next);
            {
                std::unique_lock lock(w->mu);
                w->cv.wait(lock, [&] { return w->unconfirmed + n <= std::max(a_.window, n); });
                w->unconfirmed += n;
            }
            std::vector<bus::OutgoingMessage> batch;
            batch.reserve(static_cast<size_t>(n));
            for (int j = next; j < next + n; ++j) {
                bus::OutgoingMessage m;
                m.topic = topic;
                m.partition_key = keys_[static_cast<size_t>(j) % keys_.size()];
                m.body = body_;
                batch.push_back(std::move(m));
            }
            next += n;
            auto sent = Clock::now();
            q.Publish(std::move(batch), [w, n, sent](core::Result<void> r) {
                auto now = Clock::now();
                std::lock_guard lock(w->mu);
                w->unconfirmed -= n;
                w->confirmed += n;
                w->last_confirm = now;
                w->batch_ms.push_back(
                    std::chrono::duration<double, std::milli>(now - sent).count());
                if (!r) {
                    w->failed += n;
                    if (w->error.empty()) {
                        w->error = r.error().message;
                    }
                }
                w->cv.notify_all();
            });
        }
        std::unique_lock lock(w->mu);
        bool done = w->cv.wait_for(lock, std::chrono::seconds(a_.timeout_s),
                                   [&] { return w->confirmed == a_.messages; });
        PublishResult out;
        if (!done || w->failed > 0) {
            std::fprintf(stderr, "publish: %lld of %d confirmed, %lld failed (%s)\n",
                         static_cast<long long>(w->confirmed), a_.messages,
                         static_cast<long long>(w->failed), w->error.c_str());
            return out;
        }
        out.ok = true;
        out.done = w->last_confirm;
        out.batch_ms = std::move(w->batch_ms);
        return out;
    }

    static double Pct(std::vector<double> v, double p) {
        if (v.empty()) {
            return 0;
        }
        std::sort(v.begin(), v.end());
        size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
        return v[std::min(i, v.size() - 1)];
    }

    void Report(const char* phase,
                double pub_s,
                const PublishResult& pub,
                double cons_s,
                const char* cons_name,
                double cpu_s) {
        std::string out = "{\"engine\":\"" + a_.engine + "\",\"phase\":\"" + phase + "\"";
        char buf[512];
        std::snprintf(buf, sizeof(buf),
                      ",\"messages\":%d,\"batch\":%d,\"window\":%d,\"partitions\":%d,\"keys\":%d,"
                      "\"body_bytes\":%d,\"concurrency\":%d,\"prefetch\":%d,\"loops\":%d",
                      a_.messages, a_.batch, a_.window, a_.partitions, a_.keys, a_.body_bytes,
                      a_.concurrency, a_.prefetch, a_.loops);
        out += buf;
        if (pub_s > 0) {
            std::snprintf(buf, sizeof(buf),
                          ",\"publish_s\":%.4f,\"publish_per_s\":%.1f,\"confirm_ms_p50\":%.3f,"
                          "\"confirm_ms_p99\":%.3f",
                          pub_s, a_.messages / pub_s, Pct(pub.batch_ms, 0.5),
                          Pct(pub.batch_ms, 0.99));
            out += buf;
        }
        if (cons_s > 0) {
            std::snprintf(buf, sizeof(buf), ",\"%s_s\":%.4f,\"%s_per_s\":%.1f", cons_name, cons_s,
                          cons_name, a_.messages / cons_s);
            out += buf;
        }
        std::snprintf(buf, sizeof(buf), ",\"bench_cpu_s\":%.3f,\"cpu_us_per_msg\":%.2f}", cpu_s,
                      cpu_s * 1e6 / a_.messages);
        out += buf;
        std::printf("%s\n", out.c_str());
        std::fflush(stdout);
        std::fprintf(stderr, "%-8s %-13s %6d msgs  publish %9.0f/s  %s %9.0f/s  cpu %.1f us/msg\n",
                     a_.engine.c_str(), phase, a_.messages, pub_s > 0 ? a_.messages / pub_s : 0.0,
                     cons_s > 0 ? cons_name : "-", cons_s > 0 ? a_.messages / cons_s : 0.0,
                     cpu_s * 1e6 / a_.messages);
    }

    Args a_;
    net::Runtime runtime_;
    bool remove_dir_ = false;
    std::string prefix_;
    std::vector<std::string> topics_;
    std::string body_;
    std::vector<std::string> keys_;
};

bool ParseInt(const char* s, int lo, int* out) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > 100'000'000) {
        return false;
    }
    *out = static_cast<int>(v);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "missing value for %s\n\n%s", arg.c_str(), kUsage);
            return 2;
        }
        const char* v = argv[++i];
        bool ok = true;
        if (arg == "--engine") {
            a.engine = v;
            ok = a.engine == "embedded" || a.engine == "rabbitmq";
        } else if (arg == "--amqp") {
            a.amqp = v;
        } else if (arg == "--messages") {
            ok = ParseInt(v, 1, &a.messages);
        } else if (arg == "--batch") {
            ok = ParseInt(v, 1, &a.batch);
        } else if (arg == "--window") {
            ok = ParseInt(v, 1, &a.window);
        } else if (arg == "--partitions") {
            ok = ParseInt(v, 1, &a.partitions);
        } else if (arg == "--keys") {
            ok = ParseInt(v, 1, &a.keys);
        } else if (arg == "--body-bytes") {
            ok = ParseInt(v, 0, &a.body_bytes);
        } else if (arg == "--concurrency") {
            ok = ParseInt(v, 1, &a.concurrency);
        } else if (arg == "--prefetch") {
            ok = ParseInt(v, 1, &a.prefetch);
        } else if (arg == "--loops") {
            ok = ParseInt(v, 1, &a.loops);
        } else if (arg == "--timeout-s") {
            ok = ParseInt(v, 1, &a.timeout_s);
        } else if (arg == "--dir") {
            a.dir = v;
        } else if (arg == "--phases") {
            a.phases.clear();
            std::stringstream ss(v);
            for (std::string p; std::getline(ss, p, ',');) {
                ok = ok && (p == "mixed" || p == "split");
                a.phases.push_back(p);
            }
        } else {
            ok = false;
        }
        if (!ok) {
            std::fprintf(stderr, "bad argument %s %s\n\n%s", arg.c_str(), v, kUsage);
            return 2;
        }
    }
    if (a.engine.empty()) {
        std::fprintf(stderr, "--engine is required\n\n%s", kUsage);
        return 2;
    }
    Bench bench(a);
    for (const auto& p : a.phases) {
        bool ok = p == "mixed" ? bench.Mixed() : bench.Split();
        if (!ok) {
            return 1;
        }
    }
    return 0;
}
