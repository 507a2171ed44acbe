#include "bus/redis/redis_counters.hpp"

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "redis/client.hpp"
#include "redis/url.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace conduit::bus {
namespace {

using core::ErrorCode;
using core::Fail;

// The Lua script mirrors bus::Gcra and the in-process adapter; the contract suite runs the same
// tests on both. Numbers in Redis Lua are doubles: microsecond timestamps (~1.8e15) and money in
// micro-units stay exact below 2^53, and TATs are written with %.0f (tostring would round them).

/// Every call is this one script, so deferred changes ride along with the next decision.
/// ARGV[1..5]: number of charges, adds, limits, reservations; the reservations' ttl_ms (0 = keep).
/// KEYS, in that order: charged buckets, added counters, limited buckets, reserved counters.
/// Then ARGV per charge: limit, window_ms, cost; per add: amount, init ("" = none), ttl_ms; per
/// limit: limit, window_ms, cost; per reservation: amount, cap, floor, init.
/// 1. Charges (forced GCRA) and adds happen unconditionally, first.
/// 2. The limits are checked; when they admit, the reservations are checked (creating missing
///    counters from their init); when both admit, tokens are taken and amounts added.
/// Returns {admitted, rate_denied, retry_after_ms, reserve_denied, (remaining, reset_ms) per
/// limit, value per reservation, (remaining, reset_ms) per charge, value per add}.
constexpr std::string_view kScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nc, na, nq, nr = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rttl = tonumber(ARGV[5])
local k, p = 0, 5
local function bucket(key, limit, window, cost)
  local s = math.floor(window * 1000 / limit)
  if s < 1 then s = 1 end
  local ta = limit * s
  local cap = 1000 * ta
  local a = tonumber(redis.call('GET', key) or '0') - now
  if a < 0 then a = 0 end
  local need = cost * s
  if need > cap then need = cap end
  local after = a + need
  if after > cap then after = cap end
  return s, ta, a, after
end
local function store(key, a)
  if a > 0 then
    redis.call('SET', key, string.format('%.0f', now + a), 'PX', math.ceil(a / 1000))
  end
end
local function state(out, s, ta, a)
  local rem = math.floor((ta - a) / s)
  if rem < 0 then rem = 0 end
  out[#out + 1] = rem
  out[#out + 1] = math.ceil(a / 1000)
end
local charged, added = {}, {}
for i = 1, nc do
  local s, ta, a, after = bucket(KEYS[k + i], tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]),
                                 tonumber(ARGV[p + 3]))
  store(KEYS[k + i], after)
  charged[i] = {s, ta, after}
  p = p + 3
end
k = k + nc
for i = 1, na do
  local key, ttl = KEYS[k + i], tonumber(ARGV[p + 3])
  if ARGV[p + 2] ~= '' and redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, ARGV[p + 2])
  end
  added[i] = redis.call('INCRBY', key, ARGV[p + 1])
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  p = p + 3
end
k = k + na
local denied, retry = -1, 0
local limits = {}
for i = 1, nq do
  local limit, cost = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 3])
  local s, ta, a, after = bucket(KEYS[k + i], limit, tonumber(ARGV[p + 2]), cost)
  limits[i] = {s, ta, a, after}
  if denied < 0 and (cost > limit or after > ta) then
    denied = i - 1
    if cost > limit then retry = -1 else retry = math.ceil((after - ta) / 1000) end
  end
  p = p + 3
end
local kq = k
k = k + nq
local rdenied = -1
local vals = {}
for i = 1, nr do
  vals[i] = 0
  if denied < 0 then
    local key = KEYS[k + i]
    local raw = redis.call('GET', key)
    if not raw and ARGV[p + 4] ~= '' then
      raw = ARGV[p + 4]
      if rttl > 0 then
        redis.call('SET', key, raw, 'PX', rttl)
      else
        redis.call('SET', key, raw)
      end
    end
    vals[i] = tonumber(raw or '0')
    local after = vals[i] + tonumber(ARGV[p + 1])
    if rdenied < 0 and (after > tonumber(ARGV[p + 2]) or after < tonumber(ARGV[p + 3])) then
      rdenied = i - 1
    end
  end
  p = p + 4
end
local ok = denied < 0 and rdenied < 0
if ok then
  p = 5 + 3 * (nc + na + nq)
  for i = 1, nr do
    vals[i] = redis.call('INCRBY', KEYS[k + i], ARGV[p + 1])
    if rttl > 0 then redis.call('PEXPIRE', KEYS[k + i], rttl) end
    p = p + 4
  end
end
local out = {0, denied, retry, rdenied}
if ok then out[1] = 1 end
for i = 1, nq do
  local l = limits[i]
  local a = l[3]
  if ok then
    a = l[4]
    store(KEYS[kq + i], a)
  end
  state(out, l[1], l[2], a)
end
for i = 1, nr do out[#out + 1] = vals[i] end
for i = 1, nc do state(out, charged[i][1], charged[i][2], charged[i][3]) end
for i = 1, na do out[#out + 1] = added[i] end
return out
)lua";

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

/// What one script call carries (see kScript).
struct Call {
    std::vector<RateLimit> charges;
    struct Add {
        std::string key;  // without the prefix
        int64_t amount = 0;
        std::optional<int64_t> init;
        int64_t ttl_ms = 0;
    };
    std::vector<Add> adds;
    std::vector<RateLimit> limits;
    std::vector<Reservation> reservations;
    int64_t reserve_ttl_ms = 0;
};

/// The script's answer, split.
struct Outcome {
    AdmitDecision decision;
    std::vector<RateLimitState> charged;  // per Call::charges
    std::vector<int64_t> added;           // per Call::adds
};

/// Add and Charge calls waiting to be sent (merged per counter), and who waits for them.
struct Deferred {
    std::vector<RateLimit> charges;
    std::unordered_map<std::string, size_t> charge_at;
    std::vector<Call::Add> adds;
    std::unordered_map<std::string, size_t> add_at;
    /// Run with the outcome of the script that carried them (or its error).
    std::vector<std::function<void(const core::Result<Outcome>&)>> waiters;
    std::chrono::steady_clock::time_point since;
    size_t ops = 0;  // calls merged in

    bool empty() const { return charges.empty() && adds.empty(); }
    size_t size() const { return charges.size() + adds.size(); }
};

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

    std::atomic<uint64_t> round_trips{0}, local_decisions{0}, script_reloads{0}, errors{0},
        deferred_ops{0}, deferred_flushes{0};

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

/// More deferred changes than this are sent at once rather than waiting for the interval.
constexpr size_t kMaxDeferred = 1024;

class RedisCountersImpl final : public RedisCounters {
public:
    RedisCountersImpl(RedisCountersOptions options, redis::Endpoint endpoint)
        : options_(std::move(options)), sha_(core::Sha1Hex(kScript)) {
        redis::ClientOptions co;
        co.endpoint = std::move(endpoint);
        co.connect_timeout = options_.connect_timeout;
        co.command_timeout = options_.command_timeout;
        co.callback_loop = options_.loop;
        co.name = "redis-counters";
        client_ = std::make_unique<redis::Client>(std::move(co));
        shared_->client = client_.get();
        if (options_.batch_interval.count() > 0) {
            flusher_ = std::thread([this] { FlushLoop(); });
        }
    }

    ~RedisCountersImpl() override {
        {
            std::lock_guard lock(deferred_mu_);
            stop_ = true;
        }
        deferred_cv_.notify_all();
        if (flusher_.joinable()) {
            flusher_.join();
        }
        // Best effort: what is still deferred goes out before the connection closes.
        FlushDeferred();
        {
            std::lock_guard lock(shared_->client_mu);
            shared_->client = nullptr;
        }
        client_.reset();  // joins the I/O thread; callbacks still queued on a loop find no client
    }
    RedisCountersImpl(const RedisCountersImpl&) = delete;
    RedisCountersImpl& operator=(const RedisCountersImpl&) = delete;

    void Acquire(std::vector<RateLimit> limits, RateCallback done) override {
        if (auto ok = ValidateLimits(limits); !ok) {
            Finish(done, ok.error());
            return;
        }
        Admit(std::move(limits), {}, 0, [done = std::move(done)](core::Result<AdmitDecision> r) {
            if (!r) {
                done(tl::unexpected(r.error()));
                return;
            }
            done(std::move(r->rate));
        });
    }

    void Charge(std::vector<RateLimit> limits, RateCallback done) override {
        if (auto ok = ValidateLimits(limits); !ok) {
            Finish(done, ok.error());
            return;
        }
        Defer([&](Deferred& d) {
            std::vector<size_t> at;
            for (auto& l : limits) {
                auto [it, fresh] = d.charge_at.try_emplace(l.key, d.charges.size());
                if (fresh) {
                    d.charges.push_back(l);
                } else {
                    // Same bucket: the newest limit and window, the costs summed.
                    RateLimit& m = d.charges[it->second];
                    const int64_t cost = m.cost + l.cost;
                    m = l;
                    m.cost = cost;
                }
                at.push_back(it->second);
            }
            d.waiters.push_back([at = std::move(at), limits = std::move(limits),
                                 done = std::move(done)](const core::Result<Outcome>& r) {
                if (!r) {
                    done(tl::unexpected(r.error()));
                    return;
                }
                RateDecision dec;
                dec.admitted = true;
                for (size_t i = 0; i < at.size(); ++i) {
                    RateLimitState st = r->charged[at[i]];
                    st.limit = limits[i].limit;
                    dec.states.push_back(st);
                }
                done(std::move(dec));
            });
        });
    }

    void Reserve(std::vector<Reservation> reservations,
                 int64_t ttl_ms,
                 ReserveCallback done) override {
        if (auto ok = ValidateReservations(reservations); !ok) {
            Finish(done, ok.error());
            return;
        }
        Admit({}, std::move(reservations), ttl_ms,
              [done = std::move(done)](core::Result<AdmitDecision> r) {
                  if (!r) {
                      done(tl::unexpected(r.error()));
                      return;
                  }
                  done(std::move(r->reserve));
              });
    }

    void Admit(std::vector<RateLimit> limits,
               std::vector<Reservation> reservations,
               int64_t ttl_ms,
               AdmitCallback done) override {
        if (limits.empty() && reservations.empty()) {
            Finish(done, core::Error::Make(ErrorCode::kInvalidRequest, "nothing to admit"));
            return;
        }
        if (!limits.empty()) {
            if (auto ok = ValidateLimits(limits); !ok) {
                Finish(done, ok.error());
                return;
            }
            if (auto local = LocalRefusal(limits)) {
                shared_->local_decisions.fetch_add(1);
                AdmitDecision d;
                d.rate = std::move(*local);
                done(std::move(d));
                return;
            }
        }
        if (!reservations.empty()) {
            if (auto ok = ValidateReservations(reservations); !ok) {
                Finish(done, ok.error());
                return;
            }
        }
        Call call;
        call.limits = std::move(limits);
        call.reservations = std::move(reservations);
        call.reserve_ttl_ms = std::max<int64_t>(0, ttl_ms);
        Run(std::move(call), [s = shared_, done = std::move(done)](core::Result<Outcome> r) {
            if (!r) {
                done(tl::unexpected(r.error()));
                return;
            }
            done(std::move(r->decision));
        });
    }

    void Add(std::vector<Delta> deltas, int64_t ttl_ms, ValuesCallback done) override {
        if (auto ok = ValidateDeltas(deltas); !ok) {
            Finish(done, ok.error());
            return;
        }
        const int64_t ttl = std::max<int64_t>(0, ttl_ms);
        Defer([&](Deferred& d) {
            std::vector<size_t> at;
            for (auto& delta : deltas) {
                auto [it, fresh] = d.add_at.try_emplace(delta.key, d.adds.size());
                if (fresh) {
                    d.adds.push_back(Call::Add{delta.key, delta.amount, delta.init, ttl});
                } else {
                    // Same counter: amounts summed; a missing counter is created from the newest
                    // view (its init is "the value before this delta").
                    Call::Add& m = d.adds[it->second];
                    m.amount += delta.amount;
                    if (delta.init) {
                        m.init = *delta.init + delta.amount - m.amount;
                    }
                    m.ttl_ms = ttl;
                }
                at.push_back(it->second);
            }
            d.waiters.push_back(
                [at = std::move(at), done = std::move(done)](const core::Result<Outcome>& r) {
                    if (!r) {
                        done(tl::unexpected(r.error()));
                        return;
                    }
                    std::vector<int64_t> values;
                    for (size_t i : at) {
                        values.push_back(r->added[i]);
                    }
                    done(std::move(values));
                });
        });
    }

    void Get(std::vector<std::string> keys, ValuesCallback done) override {
        FlushDeferred();  // this instance's own changes first (same connection: in order)
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
        s.deferred_ops = shared_->deferred_ops.load();
        s.deferred_flushes = shared_->deferred_flushes.load();
        return s;
    }

private:
    static int64_t NowUs() { return core::SystemClock::SteadyNowNs() / 1000; }

    /// Merges one Add/Charge call into the deferred set (`merge` runs under the lock); sends
    /// at once when deferral is off or the set is large.
    template <class Merge>
    void Defer(Merge&& merge) {
        shared_->deferred_ops.fetch_add(1);
        bool now = options_.batch_interval.count() <= 0;
        {
            std::lock_guard lock(deferred_mu_);
            const bool was_empty = deferred_.empty();
            merge(deferred_);
            ++deferred_.ops;
            if (was_empty) {
                deferred_.since = std::chrono::steady_clock::now();
                deferred_cv_.notify_one();
            }
            now = now || stop_ || deferred_.size() >= kMaxDeferred;
        }
        if (now) {
            FlushDeferred();
        }
    }

    /// Sends what is deferred, alone (no-op when nothing is).
    void FlushDeferred() {
        Deferred d = TakeDeferred();
        if (d.empty()) {
            return;
        }
        shared_->deferred_flushes.fetch_add(1);
        Send(Call{}, std::move(d), [](core::Result<Outcome>) {});
    }

    Deferred TakeDeferred() {
        std::lock_guard lock(deferred_mu_);
        Deferred out = std::move(deferred_);
        deferred_ = Deferred{};
        return out;
    }

    /// The flusher thread: sends deferred changes no call took within the batch interval.
    void FlushLoop() {
        std::unique_lock lock(deferred_mu_);
        while (!stop_) {
            deferred_cv_.wait(lock, [this] { return stop_ || !deferred_.empty(); });
            if (stop_) {
                return;
            }
            const auto deadline = deferred_.since + options_.batch_interval;
            const bool taken = deferred_cv_.wait_until(
                lock, deadline, [this] { return stop_ || deferred_.empty(); });
            if (stop_) {
                return;
            }
            if (taken) {
                continue;  // a call carried them
            }
            lock.unlock();
            FlushDeferred();
            lock.lock();
        }
    }

    /// One call, carrying whatever is deferred.
    void Run(Call call, std::function<void(core::Result<Outcome>)> done) {
        Send(std::move(call), TakeDeferred(), std::move(done));
    }

    void Send(Call call, Deferred deferred, std::function<void(core::Result<Outcome>)> done) {
        call.charges = std::move(deferred.charges);
        call.adds = std::move(deferred.adds);
        const size_t nc = call.charges.size(), na = call.adds.size(), nq = call.limits.size(),
                     nr = call.reservations.size();
        std::vector<std::string> keys;
        std::vector<std::string> argv{std::to_string(nc), std::to_string(na), std::to_string(nq),
                                      std::to_string(nr), std::to_string(call.reserve_ttl_ms)};
        keys.reserve(nc + na + nq + nr);
        argv.reserve(5 + 3 * (nc + na + nq) + 4 * nr);
        auto bucket = [&](const RateLimit& l) {
            keys.push_back(options_.key_prefix + l.key);
            argv.push_back(std::to_string(l.limit));
            argv.push_back(std::to_string(l.window_ms));
            argv.push_back(std::to_string(l.cost));
        };
        for (const auto& l : call.charges) {
            bucket(l);
        }
        for (const auto& a : call.adds) {
            keys.push_back(options_.key_prefix + a.key);
            argv.push_back(std::to_string(a.amount));
            argv.push_back(a.init ? std::to_string(*a.init) : std::string());
            argv.push_back(std::to_string(a.ttl_ms));
        }
        for (const auto& l : call.limits) {
            bucket(l);
        }
        for (const auto& r : call.reservations) {
            keys.push_back(options_.key_prefix + r.key);
            argv.push_back(std::to_string(r.amount));
            argv.push_back(std::to_string(r.cap));
            argv.push_back(std::to_string(r.floor));
            argv.push_back(r.init ? std::to_string(*r.init) : std::string());
        }
        Eval(std::move(keys), std::move(argv),
             [s = shared_, limits = std::move(call.limits), nc, na, nr,
              waiters = std::move(deferred.waiters),
              done = std::move(done)](core::Result<redis::Reply> reply) mutable {
                 core::Result<Outcome> r = Parse(*s, reply, limits, nc, na, nr);
                 for (auto& w : waiters) {
                     w(r);
                 }
                 if (r) {
                     const RateDecision& rate = r->decision.rate;
                     if (!rate.admitted && rate.denied_index >= 0 &&
                         static_cast<size_t>(rate.denied_index) < limits.size()) {
                         Remember(*s, limits[rate.denied_index], rate.retry_after_ms);
                     }
                 }
                 done(std::move(r));
             });
    }

    static core::Result<Outcome> Parse(Shared& s,
                                       const core::Result<redis::Reply>& reply,
                                       const std::vector<RateLimit>& limits,
                                       size_t nc,
                                       size_t na,
                                       size_t nr) {
        if (!reply) {
            return tl::unexpected(reply.error());
        }
        const size_t nq = limits.size();
        if (!IntegerArray(*reply, 4 + 2 * nq + nr + 2 * nc + na)) {
            s.errors.fetch_add(1);
            return tl::unexpected(BadReply(*reply));
        }
        const auto& e = reply->elements;
        Outcome o;
        AdmitDecision& d = o.decision;
        d.admitted = e[0].integer == 1;
        d.rate.denied_index = static_cast<int>(e[1].integer);
        d.rate.admitted = d.rate.denied_index < 0;
        d.rate.retry_after_ms = e[2].integer;
        d.reserve.denied_index = static_cast<int>(e[3].integer);
        d.reserve.admitted = d.rate.admitted && d.reserve.denied_index < 0;
        size_t i = 4;
        for (size_t q = 0; q < nq; ++q, i += 2) {
            d.rate.states.push_back(
                RateLimitState{limits[q].limit, e[i].integer, e[i + 1].integer});
        }
        for (size_t r = 0; r < nr; ++r, ++i) {
            if (d.rate.admitted) {
                d.reserve.values.push_back(e[i].integer);
            }
        }
        for (size_t c = 0; c < nc; ++c, i += 2) {
            o.charged.push_back(RateLimitState{0, e[i].integer, e[i + 1].integer});
        }
        for (size_t a = 0; a < na; ++a, ++i) {
            o.added.push_back(e[i].integer);
        }
        return o;
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
    void Eval(std::vector<std::string> keys,
              std::vector<std::string> argv,
              std::function<void(core::Result<redis::Reply>)> done) {
        std::vector<std::string> args{"EVALSHA", sha_, std::to_string(keys.size())};
        args.insert(args.end(), std::make_move_iterator(keys.begin()),
                    std::make_move_iterator(keys.end()));
        args.insert(args.end(), std::make_move_iterator(argv.begin()),
                    std::make_move_iterator(argv.end()));
        auto retry_args = std::make_shared<std::vector<std::string>>(args);
        Shared::Send(shared_, std::move(args),
                     [s = shared_, retry_args,
                      done = std::move(done)](core::Result<redis::Reply> r) mutable {
                         if (r && r->IsError() && r->str.starts_with("NOSCRIPT")) {
                             s->script_reloads.fetch_add(1);
                             (*retry_args)[0] = "EVAL";
                             (*retry_args)[1] = std::string(kScript);
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
    std::string sha_;
    std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
    std::unique_ptr<redis::Client> client_;
    std::mutex deferred_mu_;  // guards deferred_, stop_
    std::condition_variable deferred_cv_;
    Deferred deferred_;
    bool stop_ = false;
    std::thread flusher_;
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
