#include "bus/redis/redis_counters.hpp"

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "redis/client.hpp"
#include "redis/url.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace conduit::bus {
namespace {

using core::ErrorCode;
using core::Fail;

// The Lua scripts mirror bus::Gcra and the in-process adapter; the contract suite runs the same
// tests on both. Numbers in Redis Lua are doubles: microsecond timestamps (~1.8e15) and money in
// micro-units stay exact below 2^53, and TATs are written with %.0f (tostring would round them).

/// KEYS: buckets. ARGV[1]: "1" = force (Charge). Then per key: limit, window_ms, cost.
/// Returns {admitted, denied_index, retry_after_ms, (remaining, reset_ms) per key}.
constexpr std::string_view kRateScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local force = ARGV[1] == '1'
local n = #KEYS
local step, tau, ahead, after = {}, {}, {}, {}
local denied, retry = -1, 0
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i + 1])
  local s = math.floor(tonumber(ARGV[3 * i]) * 1000 / limit)
  if s < 1 then s = 1 end
  local ta = limit * s
  local cap = 1000 * ta
  local a = tonumber(redis.call('GET', KEYS[i]) or '0') - now
  if a < 0 then a = 0 end
  local need = cost * s
  if need > cap then need = cap end
  local na = a + need
  if na > cap then na = cap end
  step[i], tau[i], ahead[i], after[i] = s, ta, a, na
  if not force and denied < 0 and (cost > limit or na > ta) then
    denied = i - 1
    if cost > limit then retry = -1 else retry = math.ceil((na - ta) / 1000) end
  end
end
local out = {0, denied, retry}
if denied < 0 then out[1] = 1 end
for i = 1, n do
  local a = ahead[i]
  if denied < 0 then
    a = after[i]
    if a > 0 then
      redis.call('SET', KEYS[i], string.format('%.0f', now + a), 'PX', math.ceil(a / 1000))
    end
  end
  local rem = math.floor((tau[i] - a) / step[i])
  if rem < 0 then rem = 0 end
  out[#out + 1] = rem
  out[#out + 1] = math.ceil(a / 1000)
end
return out
)lua";

/// KEYS: counters. ARGV[1]: ttl_ms (0 = keep). Then per key: amount, cap, floor, init ("" =
/// none: a missing counter is 0; else a missing counter is created with it).
/// Returns {admitted, denied_index, value per key}.
constexpr std::string_view kReserveScript = R"lua(
local n = #KEYS
local ttl = tonumber(ARGV[1])
local vals = {}
local denied = -1
for i = 1, n do
  local b = 4 * i - 2
  local raw = redis.call('GET', KEYS[i])
  if not raw and ARGV[b + 3] ~= '' then
    raw = ARGV[b + 3]
    if ttl > 0 then
      redis.call('SET', KEYS[i], raw, 'PX', ttl)
    else
      redis.call('SET', KEYS[i], raw)
    end
  end
  vals[i] = tonumber(raw or '0')
  local after = vals[i] + tonumber(ARGV[b])
  if denied < 0 and (after > tonumber(ARGV[b + 1]) or after < tonumber(ARGV[b + 2])) then
    denied = i - 1
  end
end
if denied < 0 then
  for i = 1, n do
    vals[i] = redis.call('INCRBY', KEYS[i], ARGV[4 * i - 2])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  end
end
local out = {0, denied}
if denied < 0 then out[1] = 1 end
for i = 1, n do out[#out + 1] = vals[i] end
return out
)lua";

/// KEYS: counters. ARGV[1]: ttl_ms (0 = keep). Then one delta per key. Returns the new values.
constexpr std::string_view kAddScript = R"lua(
local ttl = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('INCRBY', KEYS[i], ARGV[i + 1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return out
)lua";

struct Script {
    std::string_view text;
    std::string sha;
};

bool IntegerArray(const redis::Reply& r, size_t size) {
    if (r.type != redis::Reply::Type::kArray || r.elements.size() != size) {
        return false;
    }
    return std::all_of(r.elements.begin(), r.elements.end(), [](const redis::Reply& e) {
        return e.type == redis::Reply::Type::kInteger;
    });
}

core::Error BadReply(const redis::Reply& r) {
    return core::Error::Make(ErrorCode::kInternal, "unexpected Redis reply: " + r.Describe());
}

/// What the callbacks share with the adapter: they may run after it is gone (posted to a loop).
struct Shared {
    /// What the pre-check remembers of a refusal: cost `cost` does not fit before `until_us`
    /// (steady clock).
    struct Refusal {
        int64_t cost = 0;
        int64_t until_us = 0;
    };

    // Recursive: a command failing at once runs its callback inside Command(), and that callback
    // may issue the next command.
    std::recursive_mutex client_mu;   // guards client
    redis::Client* client = nullptr;  // null once the adapter is being destroyed
    std::mutex mu;                    // guards refusals
    std::unordered_map<std::string, Refusal> refusals;

    std::atomic<uint64_t> round_trips{0}, local_decisions{0}, script_reloads{0}, errors{0};

    /// One command; a Redis error reply (other than NOSCRIPT) becomes kInternal.
    static void Send(const std::shared_ptr<Shared>& s,
                     std::vector<std::string> args,
                     std::function<void(core::Result<redis::Reply>)> done) {
        std::vector<std::string_view> views(args.begin(), args.end());
        auto on_reply = [s, done = std::move(done)](core::Result<redis::Reply> r) {
            if (r && r->IsError() && !r->str.starts_with("NOSCRIPT")) {
                s->errors.fetch_add(1);
                done(Fail(ErrorCode::kInternal, "redis: " + r->str));
                return;
            }
            if (!r) {
                s->errors.fetch_add(1);
            }
            done(std::move(r));
        };
        std::lock_guard lock(s->client_mu);
        if (s->client == nullptr) {
            s->errors.fetch_add(1);
            on_reply(Fail(ErrorCode::kUnavailable, "Redis counters are shutting down"));
            return;
        }
        s->round_trips.fetch_add(1);
        s->client->Command(std::span<const std::string_view>(views), std::move(on_reply));
    }
};

class RedisCountersImpl final : public RedisCounters {
public:
    RedisCountersImpl(RedisCountersOptions options, redis::Endpoint endpoint)
        : options_(std::move(options)),
          rate_{kRateScript, core::Sha1Hex(kRateScript)},
          reserve_{kReserveScript, core::Sha1Hex(kReserveScript)},
          add_{kAddScript, core::Sha1Hex(kAddScript)} {
        redis::ClientOptions co;
        co.endpoint = std::move(endpoint);
        co.connect_timeout = options_.connect_timeout;
        co.command_timeout = options_.command_timeout;
        co.callback_loop = options_.loop;
        co.name = "redis-counters";
        client_ = std::make_unique<redis::Client>(std::move(co));
        shared_->client = client_.get();
    }

    ~RedisCountersImpl() override {
        {
            std::lock_guard lock(shared_->client_mu);
            shared_->client = nullptr;
        }
        client_.reset();  // joins the I/O thread; callbacks still queued on a loop find no client
    }
    RedisCountersImpl(const RedisCountersImpl&) = delete;
    RedisCountersImpl& operator=(const RedisCountersImpl&) = delete;

    void Acquire(std::vector<RateLimit> limits, RateCallback done) override {
        Rate(std::move(limits), false, std::move(done));
    }
    void Charge(std::vector<RateLimit> limits, RateCallback done) override {
        Rate(std::move(limits), true, std::move(done));
    }

    void Reserve(std::vector<Reservation> reservations,
                 int64_t ttl_ms,
                 ReserveCallback done) override {
        if (auto ok = ValidateReservations(reservations); !ok) {
            Finish(done, ok.error());
            return;
        }
        std::vector<std::string> keys, argv{std::to_string(std::max<int64_t>(0, ttl_ms))};
        for (const auto& r : reservations) {
            keys.push_back(options_.key_prefix + r.key);
            argv.push_back(std::to_string(r.amount));
            argv.push_back(std::to_string(r.cap));
            argv.push_back(std::to_string(r.floor));
            argv.push_back(r.init ? std::to_string(*r.init) : std::string());
        }
        const size_t n = reservations.size();
        Eval(reserve_, std::move(keys), std::move(argv),
             [s = shared_, n, done = std::move(done)](core::Result<redis::Reply> r) {
                 if (!r) {
                     done(tl::unexpected(r.error()));
                     return;
                 }
                 if (!IntegerArray(*r, 2 + n)) {
                     s->errors.fetch_add(1);
                     done(tl::unexpected(BadReply(*r)));
                     return;
                 }
                 ReserveDecision d;
                 d.admitted = r->elements[0].integer == 1;
                 d.denied_index = static_cast<int>(r->elements[1].integer);
                 for (size_t i = 0; i < n; ++i) {
                     d.values.push_back(r->elements[2 + i].integer);
                 }
                 done(std::move(d));
             });
    }

    void Add(std::vector<std::pair<std::string, int64_t>> deltas,
             int64_t ttl_ms,
             ValuesCallback done) override {
        if (deltas.empty() || std::any_of(deltas.begin(), deltas.end(),
                                          [](const auto& d) { return d.first.empty(); })) {
            Finish(done, core::Error::Make(ErrorCode::kInvalidRequest, "counter key is empty"));
            return;
        }
        std::vector<std::string> keys, argv{std::to_string(std::max<int64_t>(0, ttl_ms))};
        for (const auto& [key, delta] : deltas) {
            keys.push_back(options_.key_prefix + key);
            argv.push_back(std::to_string(delta));
        }
        const size_t n = deltas.size();
        Eval(add_, std::move(keys), std::move(argv),
             [s = shared_, n, done = std::move(done)](core::Result<redis::Reply> r) {
                 if (!r) {
                     done(tl::unexpected(r.error()));
                     return;
                 }
                 if (!IntegerArray(*r, n)) {
                     s->errors.fetch_add(1);
                     done(tl::unexpected(BadReply(*r)));
                     return;
                 }
                 std::vector<int64_t> values;
                 for (const auto& e : r->elements) {
                     values.push_back(e.integer);
                 }
                 done(std::move(values));
             });
    }

    void Get(std::vector<std::string> keys, ValuesCallback done) override {
        if (keys.empty()) {
            done(std::vector<int64_t>{});
            return;
        }
        std::vector<std::string> args{"MGET"};
        for (auto& k : keys) {
            args.push_back(options_.key_prefix + k);
        }
        const size_t n = keys.size();
        auto bad = [s = shared_](const redis::Reply& r) {
            s->errors.fetch_add(1);
            return tl::unexpected(BadReply(r));
        };
        Shared::Send(shared_, std::move(args),
                     [n, bad, done = std::move(done)](core::Result<redis::Reply> r) {
                         if (!r) {
                             done(tl::unexpected(r.error()));
                             return;
                         }
                         if (r->type != redis::Reply::Type::kArray || r->elements.size() != n) {
                             done(bad(*r));
                             return;
                         }
                         std::vector<int64_t> values;
                         for (const auto& e : r->elements) {
                             int64_t v = 0;
                             if (e.type == redis::Reply::Type::kString) {
                                 auto [p, ec] =
                                     std::from_chars(e.str.data(), e.str.data() + e.str.size(), v);
                                 if (ec != std::errc() || p != e.str.data() + e.str.size()) {
                                     done(bad(*r));
                                     return;
                                 }
                             } else if (e.type != redis::Reply::Type::kNil) {
                                 done(bad(*r));
                                 return;
                             }
                             values.push_back(v);
                         }
                         done(std::move(values));
                     });
    }

    std::string_view Engine() const override { return "redis"; }

    RedisCountersStats Stats() const override {
        RedisCountersStats s;
        s.connected = client_->Connected();
        s.round_trips = shared_->round_trips.load();
        s.local_decisions = shared_->local_decisions.load();
        s.script_reloads = shared_->script_reloads.load();
        s.errors = shared_->errors.load();
        return s;
    }

private:
    static int64_t NowUs() { return core::SystemClock::SteadyNowNs() / 1000; }

    void Rate(std::vector<RateLimit> limits, bool force, RateCallback done) {
        if (auto ok = ValidateLimits(limits); !ok) {
            Finish(done, ok.error());
            return;
        }
        if (!force) {
            if (auto local = LocalRefusal(limits)) {
                shared_->local_decisions.fetch_add(1);
                done(std::move(*local));
                return;
            }
        }
        std::vector<std::string> keys, argv{force ? "1" : "0"};
        for (const auto& l : limits) {
            keys.push_back(options_.key_prefix + l.key);
            argv.push_back(std::to_string(l.limit));
            argv.push_back(std::to_string(l.window_ms));
            argv.push_back(std::to_string(l.cost));
        }
        Eval(
            rate_, std::move(keys), std::move(argv),
            [s = shared_, limits = std::move(limits),
             done = std::move(done)](core::Result<redis::Reply> r) mutable {
                if (!r) {
                    done(tl::unexpected(r.error()));
                    return;
                }
                const size_t n = limits.size();
                if (!IntegerArray(*r, 3 + 2 * n)) {
                    s->errors.fetch_add(1);
                    done(tl::unexpected(BadReply(*r)));
                    return;
                }
                RateDecision d;
                d.admitted = r->elements[0].integer == 1;
                d.denied_index = static_cast<int>(r->elements[1].integer);
                d.retry_after_ms = r->elements[2].integer;
                for (size_t i = 0; i < n; ++i) {
                    d.states.push_back(RateLimitState{limits[i].limit,
                                                      r->elements[3 + 2 * i].integer,
                                                      r->elements[4 + 2 * i].integer});
                }
                if (!d.admitted && d.denied_index >= 0 && static_cast<size_t>(d.denied_index) < n) {
                    Remember(*s, limits[d.denied_index], d.retry_after_ms);
                }
                done(std::move(d));
            });
    }

    /// A certain refusal from what this instance already knows, or nullopt (ask Redis).
    std::optional<RateDecision> LocalRefusal(const std::vector<RateLimit>& limits) {
        const int64_t now = NowUs();
        std::lock_guard lock(shared_->mu);
        auto& refusals = shared_->refusals;
        for (size_t i = 0; i < limits.size(); ++i) {
            const auto& l = limits[i];
            int64_t retry_ms = 0;
            if (l.cost > l.limit) {
                retry_ms = -1;  // never fits, whatever the bucket holds
            } else if (auto it = refusals.find(l.key); l.cost > 0 && it != refusals.end() &&
                                                       now < it->second.until_us &&
                                                       l.cost >= it->second.cost) {
                retry_ms = (it->second.until_us - now + 999) / 1000;
            } else {
                continue;
            }
            RateDecision d;
            d.admitted = false;
            d.denied_index = static_cast<int>(i);
            d.retry_after_ms = retry_ms;
            d.local = true;
            for (size_t j = 0; j < limits.size(); ++j) {
                // Only the refusing limit's state is known without Redis.
                d.states.push_back(RateLimitState{limits[j].limit, j == i ? 0 : -1,
                                                  j == i ? std::max<int64_t>(0, retry_ms) : -1});
            }
            return d;
        }
        return std::nullopt;
    }

    static void Remember(Shared& s, const RateLimit& l, int64_t retry_after_ms) {
        if (retry_after_ms <= 0 || l.cost <= 0) {
            return;
        }
        const int64_t now = NowUs();
        const int64_t until = now + retry_after_ms * 1000;
        std::lock_guard lock(s.mu);
        if (s.refusals.size() >= 4096) {
            std::erase_if(s.refusals, [now](const auto& kv) { return kv.second.until_us <= now; });
        }
        // The newest refusal is the freshest fact; it replaces an older one unless that one
        // still covers smaller costs for at least as long.
        Shared::Refusal& r = s.refusals[l.key];
        if (now >= r.until_us || l.cost < r.cost || (l.cost == r.cost && until > r.until_us) ||
            r.cost == 0) {
            r.cost = l.cost;
            r.until_us = until;
        }
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
        auto retry_args = std::make_shared<std::vector<std::string>>(args);
        Shared::Send(shared_, std::move(args),
                     [s = shared_, text = script.text, retry_args,
                      done = std::move(done)](core::Result<redis::Reply> r) mutable {
                         if (r && r->IsError() && r->str.starts_with("NOSCRIPT")) {
                             s->script_reloads.fetch_add(1);
                             (*retry_args)[0] = "EVAL";
                             (*retry_args)[1] = std::string(text);
                             Shared::Send(s, std::move(*retry_args), std::move(done));
                             return;
                         }
                         done(std::move(r));
                     });
    }

    /// Reports an argument error (counted like every failed call).
    template <class Callback>
    void Finish(const Callback& done, core::Error e) {
        shared_->errors.fetch_add(1);
        done(tl::unexpected(std::move(e)));
    }

    RedisCountersOptions options_;
    Script rate_, reserve_, add_;
    std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
    std::unique_ptr<redis::Client> client_;
};

}  // namespace

core::Result<std::unique_ptr<RedisCounters>> MakeRedisCounters(RedisCountersOptions options) {
    auto endpoint = redis::ParseUrl(options.url);
    if (!endpoint) {
        return tl::unexpected(endpoint.error());
    }
    return std::make_unique<RedisCountersImpl>(std::move(options), std::move(*endpoint));
}

}  // namespace conduit::bus
