#include "bus/redis/redis_cache_stats.hpp"

#include "core/crypto.hpp"
#include "redis/client.hpp"
#include "redis/resp.hpp"
#include "redis/url.hpp"

#include <array>
#include <mutex>
#include <utility>
#include <vector>

namespace conduit::bus {
namespace {

using core::ErrorCode;
using core::Fail;

// Shared by both scripts: server time, parsing a stored record's counts, moving the global
// hash by a difference, pruning stale instances. Numbers go to Redis through '%d' (exact up to
// 2^53; Lua's default number formatting would switch to exponents).
constexpr std::string_view kCommon = R"lua(
local FIELDS = {'hits', 'misses', 'sets', 'removes', 'evictions', 'errors'}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function counts(text)
  local out = {}
  if not text then return out end
  for line in string.gmatch(text, '[^\n]+') do
    local name, a, b, c, d, e, f =
      string.match(line, '^([%w_]+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)')
    if name then
      out[name] = {tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e), tonumber(f)}
    end
  end
  return out
end
local function move(gkey, new, old)
  for name, v in pairs(new) do
    local o = old[name]
    for i = 1, 6 do
      local d = v[i] - (o and o[i] or 0)
      if d ~= 0 then
        redis.call('HINCRBY', gkey, name .. ':' .. FIELDS[i], string.format('%d', d))
      end
    end
  end
  for name, o in pairs(old) do
    if not new[name] then
      for i = 1, 6 do
        if o[i] ~= 0 then
          redis.call('HINCRBY', gkey, name .. ':' .. FIELDS[i], string.format('%d', -o[i]))
        end
      end
    end
  end
end
local function prune(zkey, gkey, prefix, cutoff)
  local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. string.format('%d', cutoff),
                         'LIMIT', 0, 100)
  for _, id in ipairs(ids) do
    local key = prefix .. id
    move(gkey, {}, counts(redis.call('GET', key)))
    redis.call('DEL', key)
    redis.call('ZREM', zkey, id)
  end
  if #ids > 0 and redis.call('ZCARD', zkey) == 0 then
    redis.call('DEL', gkey)
  end
  return #ids
end
)lua";

// KEYS: registry, global, this instance's record.
// ARGV: instance id, stale ms, record ttl ms, record key prefix, regions (obs::EncodeRegions).
constexpr std::string_view kPush = R"lua(
local now = now_ms()
local pruned = prune(KEYS[1], KEYS[2], ARGV[4], now - tonumber(ARGV[2]))
move(KEYS[2], counts(ARGV[5]), counts(redis.call('GET', KEYS[3])))
redis.call('SET', KEYS[3], 'hb ' .. string.format('%d', now) .. '\n' .. ARGV[5], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[1])
return {now, pruned}
)lua";

// KEYS: registry, global. ARGV: record key prefix, stale ms.
// Returns {now, pruned, global hash (flat), ids, records (nil where a record is gone)}.
constexpr std::string_view kCollect = R"lua(
local now = now_ms()
local pruned = prune(KEYS[1], KEYS[2], ARGV[1], now - tonumber(ARGV[2]))
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local records = {}
for i = 1, #ids, 500 do
  local keys = {}
  for j = i, math.min(i + 499, #ids) do
    keys[#keys + 1] = ARGV[1] .. ids[j]
  end
  local vals = redis.call('MGET', unpack(keys))
  for j = 1, #vals do
    records[#records + 1] = vals[j]
  end
end
return {now, pruned, redis.call('HGETALL', KEYS[2]), ids, records}
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

/// Parses a "{region}:{field}" of the global hash into `global`.
void AddGlobalField(std::array<obs::CacheCounts, obs::kCacheRegionCount>& global,
                    std::string_view field,
                    const std::string& value) {
    const size_t colon = field.rfind(':');
    if (colon == std::string_view::npos) {
        return;
    }
    auto region = obs::ParseCacheRegion(field.substr(0, colon));
    if (!region) {
        return;
    }
    int64_t v = 0;
    try {
        v = std::stoll(value);
    } catch (...) {
        return;
    }
    auto u = static_cast<uint64_t>(v);  // a negative total wraps; drift shows it
    auto& c = global[static_cast<size_t>(*region)];
    const std::string_view name = field.substr(colon + 1);
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

class RedisCacheStats final : public CacheStatsSink {
public:
    RedisCacheStats(RedisCacheStatsOptions options, redis::Endpoint endpoint)
        : options_(std::move(options)),
          push_(kPush),
          collect_(kCollect),
          registry_key_(options_.key_prefix + "cache:stats:instances"),
          global_key_(options_.key_prefix + "cache:stats:global"),
          record_prefix_(options_.key_prefix + "cache:stats:inst:") {
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
        Eval(push_, {registry_key_, global_key_, record_prefix_ + snapshot.instance_id},
             {snapshot.instance_id, std::to_string(stale), std::to_string(stale * 3),
              record_prefix_, obs::EncodeRegions(snapshot.regions)},
             [done = std::move(done)](core::Result<redis::Reply> r) {
                 if (!r) {
                     done(tl::unexpected(r.error()));
                     return;
                 }
                 if (r->type != redis::Reply::Type::kArray) {
                     done(tl::unexpected(BadReply(*r)));
                     return;
                 }
                 done({});
             });
    }

    void Collect(bool with_instances, CollectCallback done) override {
        const auto started = std::chrono::steady_clock::now();
        Eval(collect_, {registry_key_, global_key_},
             {record_prefix_, std::to_string(options_.stats.stale_after.count())},
             [started, with_instances, tolerance = options_.stats.drift_tolerance_percent,
              done = std::move(done)](core::Result<redis::Reply> r) {
                 if (!r) {
                     done(tl::unexpected(r.error()));
                     return;
                 }
                 auto parsed = Parse(*r, with_instances, tolerance);
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
    static core::Result<obs::ClusterCacheStats> Parse(const redis::Reply& r,
                                                      bool with_instances,
                                                      double tolerance) {
        using Type = redis::Reply::Type;
        if (r.type != Type::kArray || r.elements.size() != 5 ||
            r.elements[0].type != Type::kInteger || r.elements[1].type != Type::kInteger ||
            r.elements[2].type != Type::kArray || r.elements[3].type != Type::kArray ||
            r.elements[4].type != Type::kArray ||
            r.elements[3].elements.size() != r.elements[4].elements.size()) {
            return tl::unexpected(BadReply(r));
        }
        obs::ClusterCacheStats out;
        out.mode = "redis";
        out.generated_ms = r.elements[0].integer;
        out.pruned_instances = static_cast<size_t>(r.elements[1].integer);
        out.tolerance_percent = tolerance;
        std::array<obs::CacheCounts, obs::kCacheRegionCount> global{};
        const auto& g = r.elements[2].elements;
        for (size_t i = 0; i + 1 < g.size(); i += 2) {
            AddGlobalField(global, g[i].str, g[i + 1].str);
        }
        const auto& ids = r.elements[3].elements;
        const auto& records = r.elements[4].elements;
        std::vector<obs::InstanceSnapshot> instances;
        instances.reserve(ids.size());
        for (size_t i = 0; i < ids.size(); ++i) {
            if (records[i].type != Type::kString) {
                continue;  // registered, but its record is gone (expired or evicted)
            }
            if (auto inst = obs::DecodeInstance(ids[i].str, records[i].str)) {
                instances.push_back(std::move(*inst));
            }
        }
        out.active_instances = instances.size();
        out.regions = obs::AggregateRegions(instances, global, tolerance);
        if (with_instances) {
            out.instances = std::move(instances);
        }
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
    Script push_, collect_;
    std::string registry_key_, global_key_, record_prefix_;
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
