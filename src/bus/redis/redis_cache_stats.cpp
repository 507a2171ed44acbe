#include "bus/redis/redis_cache_stats.hpp"

#include "core/crypto.hpp"
#include "redis/client.hpp"
#include "redis/resp.hpp"
#include "redis/url.hpp"

#include <array>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace conduit::bus {
namespace {

using core::ErrorCode;
using core::Fail;

// The push script's parts: server time, parsing a stored record (counts and histogram buckets
// per region), moving the global hash by a difference, pruning stale instances. Numbers go to
// Redis through '%d' (exact up to 2^53; Lua's default formatting would switch to exponents).
constexpr std::string_view kCommon = R"lua(
local FIELDS = {'hits', 'misses', 'sets', 'removes', 'evictions', 'errors'}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parse(text)
  local out = {}
  if not text then return out end
  for line in string.gmatch(text, '[^\n]+') do
    local name, a, b, c, d, e, f, rest =
      string.match(line, '^([%w_]+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (.*)$')
    if name then
      local buckets = {}
      for i, n in string.gmatch(rest, ';(%d+):(%d+)') do
        buckets[i] = tonumber(n)
      end
      out[name] = {c = {tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e),
                        tonumber(f)}, b = buckets}
    end
  end
  return out
end
local function add(gkey, field, d)
  if d ~= 0 then
    redis.call('HINCRBY', gkey, field, string.format('%d', d))
  end
end
local EMPTY = {c = {0, 0, 0, 0, 0, 0}, b = {}}
local function move(gkey, new, old)
  for name, v in pairs(new) do
    local o = old[name] or EMPTY
    for i = 1, 6 do
      add(gkey, name .. ':' .. FIELDS[i], v.c[i] - o.c[i])
    end
    for i, n in pairs(v.b) do
      add(gkey, name .. ':lat:' .. i, n - (o.b[i] or 0))
    end
    for i, n in pairs(o.b) do
      if not v.b[i] then
        add(gkey, name .. ':lat:' .. i, -n)
      end
    end
  end
  for name, o in pairs(old) do
    if not new[name] then
      move(gkey, {[name] = EMPTY}, {[name] = o})
    end
  end
end
local function prune(zkey, rkey, hkey, gkey, cutoff)
  local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. string.format('%d', cutoff),
                         'LIMIT', 0, 100)
  for _, id in ipairs(ids) do
    move(gkey, {}, parse(redis.call('HGET', hkey, id)))
    redis.call('HDEL', rkey, id)
    redis.call('HDEL', hkey, id)
    redis.call('ZREM', zkey, id)
  end
  if #ids > 0 and redis.call('ZCARD', zkey) == 0 then
    redis.call('DEL', rkey, hkey, gkey)
  end
  return #ids
end
)lua";

// KEYS: registry, records (counts), histograms (full records), global. ARGV: instance id,
// stale ms, keys' ttl ms, full regions (obs::EncodeRegions), counts only (without buckets),
// the push sequence the instance believes is stored ('' = unknown), this push's sequence, then
// (field, difference) pairs against the believed one. When the stored sequence is the believed
// one, the differences are applied as they are (no record parsed); otherwise (first push, a
// lost or repeated push, pruned meanwhile) the difference is computed from the stored record.
constexpr std::string_view kPush = R"lua(
local now = now_ms()
local pruned = prune(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now - tonumber(ARGV[2]))
local lean = redis.call('HGET', KEYS[2], ARGV[1])
local stored_seq = lean and string.match(lean, '^hb %d+ (%w+)')
if ARGV[6] ~= '' and stored_seq == ARGV[6] then
  for i = 8, #ARGV, 2 do
    add(KEYS[4], ARGV[i], tonumber(ARGV[i + 1]))
  end
else
  move(KEYS[4], parse(ARGV[4]), parse(redis.call('HGET', KEYS[3], ARGV[1])))
end
local hb = 'hb ' .. string.format('%d', now) .. ' ' .. ARGV[7] .. '\n'
redis.call('HSET', KEYS[2], ARGV[1], hb .. ARGV[5])
redis.call('HSET', KEYS[3], ARGV[1], hb .. ARGV[4])
redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[1])
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return {now, pruned}
)lua";

struct Script {
    std::string text;
    std::string sha;
    explicit Script(std::string_view body)
        : text(std::string(kCommon) + std::string(body)), sha(core::Sha1Hex(text)) {}
};

core::Error BadReply(const redis::Reply& r) {
    return core::Error::Make(
        ErrorCode::kInternal,
        "unexpected Redis reply to a cache statistics script: " + r.Describe());
}

/// What callbacks share with the adapter (they may run after it is gone).
struct Shared {
    std::recursive_mutex mu;          // guards client (a failing Command calls back inside)
    redis::Client* client = nullptr;  // null once the adapter is being destroyed

    /// Per instance: the sequence and figures of its last push Redis confirmed.
    struct Acked {
        std::string seq;
        std::vector<obs::RegionSnapshot> regions;
    };
    std::mutex acked_mu;  // guards acked
    std::unordered_map<std::string, Acked> acked;

    static void Send(const std::shared_ptr<Shared>& s,
                     std::vector<std::string> args,
                     std::function<void(core::Result<redis::Reply>)> done) {
        std::vector<std::string_view> views(args.begin(), args.end());
        std::lock_guard lock(s->mu);
        if (s->client == nullptr) {
            done(Fail(ErrorCode::kUnavailable, "Redis cache statistics are shutting down"));
            return;
        }
        s->client->Command(std::span<const std::string_view>(views), std::move(done));
    }
};

/// (global hash field, difference) pairs from `before` to `after`, for the push's fast path.
void AppendDifferences(const std::vector<obs::RegionSnapshot>& after,
                       const std::vector<obs::RegionSnapshot>& before,
                       std::vector<std::string>& out) {
    auto find = [](const std::vector<obs::RegionSnapshot>& v, obs::CacheRegion r) {
        for (const auto& x : v) {
            if (x.region == r) {
                return &x;
            }
        }
        return static_cast<const obs::RegionSnapshot*>(nullptr);
    };
    auto diff = [&out](std::string field, uint64_t a, uint64_t b) {
        if (a != b) {
            out.push_back(std::move(field));
            out.push_back(std::to_string(static_cast<int64_t>(a - b)));
        }
    };
    static const obs::RegionSnapshot kEmpty;
    for (size_t i = 0; i < obs::kCacheRegionCount; ++i) {
        const auto region = static_cast<obs::CacheRegion>(i);
        const auto* a = find(after, region);
        const auto* b = find(before, region);
        if (a == nullptr && b == nullptr) {
            continue;
        }
        const auto& na = a != nullptr ? *a : kEmpty;
        const auto& nb = b != nullptr ? *b : kEmpty;
        const std::string name(obs::CacheRegionName(region));
        diff(name + ":hits", na.counts.hits, nb.counts.hits);
        diff(name + ":misses", na.counts.misses, nb.counts.misses);
        diff(name + ":sets", na.counts.sets, nb.counts.sets);
        diff(name + ":removes", na.counts.removes, nb.counts.removes);
        diff(name + ":evictions", na.counts.evictions, nb.counts.evictions);
        diff(name + ":errors", na.counts.errors, nb.counts.errors);
        for (size_t k = 0; k < obs::kLatencyBuckets; ++k) {
            if (na.latency.BucketCount(k) != nb.latency.BucketCount(k)) {  // name only then
                diff(name + ":lat:" + std::to_string(k), na.latency.BucketCount(k),
                     nb.latency.BucketCount(k));
            }
        }
    }
}

/// The global hash: "{region}:{field}" counts and "{region}:lat:{bucket}" merged histograms.
struct Global {
    std::array<obs::CacheCounts, obs::kCacheRegionCount> counts{};
    std::array<obs::LatencyHistogram, obs::kCacheRegionCount> latency{};

    void Add(std::string_view field, const std::string& value) {
        int64_t v = 0;
        try {
            v = std::stoll(value);
        } catch (...) {
            return;
        }
        const size_t colon = field.find(':');
        if (colon == std::string_view::npos) {
            return;
        }
        auto region = obs::ParseCacheRegion(field.substr(0, colon));
        if (!region) {
            return;
        }
        const auto r = static_cast<size_t>(*region);
        const std::string_view name = field.substr(colon + 1);
        if (name.starts_with("lat:")) {
            size_t bucket = 0;
            try {
                bucket = std::stoul(std::string(name.substr(4)));
            } catch (...) {
                return;
            }
            if (bucket < obs::kLatencyBuckets && v > 0) {
                latency[r].AddBucket(bucket, static_cast<uint64_t>(v));
            }
            return;
        }
        auto u = static_cast<uint64_t>(v);  // a negative total wraps; drift shows it
        auto& c = counts[r];
        if (name == "hits") {
            c.hits = u;
        } else if (name == "misses") {
            c.misses = u;
        } else if (name == "sets") {
            c.sets = u;
        } else if (name == "removes") {
            c.removes = u;
        } else if (name == "evictions") {
            c.evictions = u;
        } else if (name == "errors") {
            c.errors = u;
        }
    }
};

class RedisCacheStats final : public CacheStatsSink {
public:
    RedisCacheStats(RedisCacheStatsOptions options, redis::Endpoint endpoint)
        : options_(std::move(options)),
          push_(kPush),
          registry_key_(options_.key_prefix + "cache:stats:instances"),
          records_key_(options_.key_prefix + "cache:stats:records"),
          histograms_key_(options_.key_prefix + "cache:stats:histograms"),
          global_key_(options_.key_prefix + "cache:stats:global") {
        redis::ClientOptions co;
        co.endpoint = std::move(endpoint);
        co.connect_timeout = options_.connect_timeout;
        co.command_timeout = options_.command_timeout;
        co.callback_loop = options_.loop;
        co.name = "redis-cache-stats";
        client_ = std::make_unique<redis::Client>(std::move(co));
        shared_->client = client_.get();
    }

    ~RedisCacheStats() override {
        {
            std::lock_guard lock(shared_->mu);
            shared_->client = nullptr;
        }
        client_.reset();
    }

    void Push(const obs::InstanceSnapshot& snapshot, PushCallback done) override {
        if (snapshot.instance_id.empty()) {
            done(Fail(ErrorCode::kInvalidRequest, "cache statistics: empty instance id"));
            return;
        }
        const int64_t stale = options_.stats.stale_after.count();
        // A fresh sequence per push (random: never reused, even by another process that gets
        // the same instance id), and the differences to the last confirmed push.
        std::string seq = core::HexEncode(core::RandomBytes(8));
        std::vector<std::string> argv = {snapshot.instance_id,
                                         std::to_string(stale),
                                         std::to_string(stale * 3),
                                         obs::EncodeRegions(snapshot.regions),
                                         obs::EncodeRegions(snapshot.regions, false),
                                         "",
                                         seq};
        {
            std::lock_guard lock(shared_->acked_mu);
            if (auto it = shared_->acked.find(snapshot.instance_id); it != shared_->acked.end()) {
                argv[5] = it->second.seq;
                AppendDifferences(snapshot.regions, it->second.regions, argv);
            }
        }
        Eval(push_, {registry_key_, records_key_, histograms_key_, global_key_}, std::move(argv),
             [s = shared_, id = snapshot.instance_id, regions = snapshot.regions,
              seq = std::move(seq), done = std::move(done)](core::Result<redis::Reply> r) mutable {
                 if (!r) {
                     done(tl::unexpected(r.error()));
                     return;
                 }
                 if (r->type != redis::Reply::Type::kArray) {
                     done(tl::unexpected(BadReply(*r)));
                     return;
                 }
                 {
                     std::lock_guard lock(s->acked_mu);
                     s->acked[id] = Shared::Acked{std::move(seq), std::move(regions)};
                 }
                 done({});
             });
    }

    void Collect(bool with_instances, CollectCallback done) override {
        const auto started = std::chrono::steady_clock::now();
        // One atomic read in one round trip: MULTI ... EXEC written back to back (nothing of
        // this adapter comes in between: every command is issued under Shared::mu).
        std::lock_guard lock(shared_->mu);
        if (shared_->client == nullptr) {
            done(Fail(ErrorCode::kUnavailable, "Redis cache statistics are shutting down"));
            return;
        }
        auto& client = *shared_->client;
        client.Command({"MULTI"}, nullptr);
        client.Command({"TIME"}, nullptr);
        // The per-instance views need every histogram; the cluster view only the counts (and
        // the merged histograms the pushes keep in the global hash).
        client.Command({"HGETALL", with_instances ? histograms_key_ : records_key_}, nullptr);
        client.Command({"HGETALL", global_key_}, nullptr);
        client.Command(
            {"EXEC"}, [started, with_instances, stale = options_.stats.stale_after.count(),
                       tolerance = options_.stats.drift_tolerance_percent,
                       done = std::move(done)](core::Result<redis::Reply> r) {
                if (!r) {
                    done(tl::unexpected(r.error()));
                    return;
                }
                auto parsed = Parse(*r, with_instances, stale, tolerance);
                if (parsed) {
                    parsed->aggregation_ms = std::chrono::duration<double, std::milli>(
                                                 std::chrono::steady_clock::now() - started)
                                                 .count();
                }
                done(std::move(parsed));
            });
    }

    std::string_view Engine() const override { return "redis"; }

private:
    /// EXEC's reply: {TIME, HGETALL records (or histograms), HGETALL global}.
    static core::Result<obs::ClusterCacheStats> Parse(const redis::Reply& r,
                                                      bool with_instances,
                                                      int64_t stale_ms,
                                                      double tolerance) {
        using Type = redis::Reply::Type;
        if (r.IsError()) {
            return Fail(ErrorCode::kInternal, "redis: " + r.str);
        }
        if (r.type != Type::kArray || r.elements.size() != 3 ||
            r.elements[0].type != Type::kArray || r.elements[0].elements.size() != 2 ||
            r.elements[1].type != Type::kArray || r.elements[2].type != Type::kArray) {
            return tl::unexpected(BadReply(r));
        }
        obs::ClusterCacheStats out;
        out.mode = "redis";
        out.tolerance_percent = tolerance;
        try {
            out.generated_ms = std::stoll(r.elements[0].elements[0].str) * 1000 +
                               std::stoll(r.elements[0].elements[1].str) / 1000;
        } catch (...) {
            return tl::unexpected(BadReply(r));
        }
        Global global;
        const auto& g = r.elements[2].elements;
        for (size_t i = 0; i + 1 < g.size(); i += 2) {
            global.Add(g[i].str, g[i + 1].str);
        }
        obs::CacheAggregator agg(with_instances);
        const auto& records = r.elements[1].elements;
        for (size_t i = 0; i + 1 < records.size(); i += 2) {
            int64_t heartbeat = 0;
            if (!agg.AddRecord(records[i].str, records[i + 1].str, &heartbeat)) {
                continue;  // malformed: not counted (drift shows it)
            }
            if (out.generated_ms - heartbeat > stale_ms) {
                ++out.stale_instances;  // still in the global aggregate until pruned
            } else {
                ++out.active_instances;
            }
        }
        out.regions = agg.Finish(global.counts, tolerance);
        if (!with_instances) {
            // Counts-only records carry each instance's latency sum and max; the buckets merged
            // over every instance are in the global hash.
            for (auto& region : out.regions) {
                const auto& merged = global.latency[static_cast<size_t>(region.region)];
                for (size_t b = 0; b < obs::kLatencyBuckets; ++b) {
                    if (uint64_t n = merged.BucketCount(b)) {
                        region.latency.AddBucket(b, n);
                    }
                }
            }
        }
        out.instances = agg.TakeInstances();
        return out;
    }

    /// EVALSHA; on NOSCRIPT, EVAL with the script text (which also caches it again).
    void Eval(const Script& script,
              std::vector<std::string> keys,
              std::vector<std::string> argv,
              std::function<void(core::Result<redis::Reply>)> done) {
        std::vector<std::string> args{"EVALSHA", script.sha, std::to_string(keys.size())};
        args.insert(args.end(), std::make_move_iterator(keys.begin()),
                    std::make_move_iterator(keys.end()));
        args.insert(args.end(), std::make_move_iterator(argv.begin()),
                    std::make_move_iterator(argv.end()));
        auto retry = std::make_shared<std::vector<std::string>>(args);
        Shared::Send(shared_, std::move(args),
                     [s = shared_, text = script.text, retry,
                      done = std::move(done)](core::Result<redis::Reply> r) mutable {
                         if (r && r->IsError() && r->str.starts_with("NOSCRIPT")) {
                             (*retry)[0] = "EVAL";
                             (*retry)[1] = std::move(text);
                             Shared::Send(s, std::move(*retry),
                                          [done = std::move(done)](core::Result<redis::Reply> r2) {
                                              Finish(std::move(r2), done);
                                          });
                             return;
                         }
                         Finish(std::move(r), done);
                     });
    }

    /// A Redis error reply becomes kInternal.
    static void Finish(core::Result<redis::Reply> r,
                       const std::function<void(core::Result<redis::Reply>)>& done) {
        if (r && r->IsError()) {
            done(Fail(ErrorCode::kInternal, "redis: " + r->str));
            return;
        }
        done(std::move(r));
    }

    RedisCacheStatsOptions options_;
    Script push_;
    std::string registry_key_, records_key_, histograms_key_, global_key_;
    std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
    std::unique_ptr<redis::Client> client_;
};

}  // namespace

core::Result<std::unique_ptr<CacheStatsSink>> MakeRedisCacheStats(RedisCacheStatsOptions options) {
    auto endpoint = redis::ParseUrl(options.url);
    if (!endpoint) {
        return tl::unexpected(endpoint.error());
    }
    return std::unique_ptr<CacheStatsSink>(
        std::make_unique<RedisCacheStats>(std::move(options), std::move(*endpoint)));
}

}  // namespace conduit::bus
