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
#include <deque>
#include <iterator>
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

/// Every call is this one script: deferred changes ride along with the next decisions, and the
/// admissions waiting while earlier scripts were in flight go together (each still atomic and
/// all-or-nothing on its own; they run one after another, so each sees the ones before it).
/// ARGV[1..3]: number of charges, adds, admissions. KEYS in order: charged buckets, added
/// counters, then per admission its limited buckets and reserved counters.
/// ARGV per charge: limit, window_ms, cost; per add: amount, init ("" = none), ttl_ms; per
/// admission: number of limits, number of reservations, the reservations' ttl_ms (0 = keep),
/// then per limit: limit, window_ms, cost, and per reservation: amount, cap, floor, init.
/// 1. Charges (forced GCRA) and adds happen unconditionally, first.
/// 2. Per admission: the limits are checked; when they admit, the reservations are checked
///    (creating missing counters from their init); when both admit, tokens are taken and
///    amounts added.
/// Returns {(remaining, reset_ms) per charge, value per add, then per admission: admitted,
/// rate_denied, retry_after_ms, reserve_denied, (remaining, reset_ms) per limit, value per
/// reservation}.
constexpr std::string_view kScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nc, na, nk = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local k, p = 0, 3
local out = {}
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
local function state(s, ta, a)
  local rem = math.floor((ta - a) / s)
  if rem < 0 then rem = 0 end
  out[#out + 1] = rem
  out[#out + 1] = math.ceil(a / 1000)
end
for i = 1, nc do
  local s, ta, a, after = bucket(KEYS[k + i], tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]),
                                 tonumber(ARGV[p + 3]))
  store(KEYS[k + i], after)
  state(s, ta, after)
  p = p + 3
end
k = k + nc
for i = 1, na do
  local key, ttl = KEYS[k + i], tonumber(ARGV[p + 3])
  if ARGV[p + 2] ~= '' and redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, ARGV[p + 2])
  end
  out[#out + 1] = redis.call('INCRBY', key, ARGV[p + 1])
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  p = p + 3
end
k = k + na
for j = 1, nk do
  local nq, nr, rttl = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  p = p + 3
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
  local pr = p
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
    for i = 1, nr do
      vals[i] = redis.call('INCRBY', KEYS[k + i], ARGV[pr + 1])
      if rttl > 0 then redis.call('PEXPIRE', KEYS[k + i], rttl) end
      pr = pr + 4
    end
  end
  k = k + nr
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = denied
  out[#out + 1] = retry
  out[#out + 1] = rdenied
  for i = 1, nq do
    local l = limits[i]
    local a = l[3]
    if ok then
      a = l[4]
      store(KEYS[kq + i], a)
    end
    state(l[1], l[2], a)
  end
  for i = 1, nr do out[#out + 1] = vals[i] end
end
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

/// One Admit (Acquire and Reserve are Admits with one list empty) waiting for its script.
struct Admission {
    std::vector<RateLimit> limits;
    std::vector<Reservation> reservations;
    int64_t reserve_ttl_ms = 0;
    std::function<void(core::Result<AdmitDecision>)> done;
};

/// An added counter (deferred, merged per key).
struct AddOp {
    std::string key;  // without the prefix
    int64_t amount = 0;
    std::optional<int64_t> init;
    int64_t ttl_ms = 0;
};

/// What a script did to the deferred changes it carried.
struct Applied {
    std::vector<RateLimitState> charged;  // per Deferred::charges
    std::vector<int64_t> added;           // per Deferred::adds
};

/// Add and Charge calls waiting to be sent (merged per counter), and who waits for them.
struct Deferred {
    std::vector<RateLimit> charges;
    std::unordered_map<std::string, size_t> charge_at;
    std::vector<AddOp> adds;
    std::unordered_map<std::string, size_t> add_at;
    /// Run with what the script that carried them did (or its error).
    std::vector<std::function<void(const core::Result<Applied>&)>> waiters;
    std::chrono::steady_clock::time_point since;

    bool empty() const { return charges.empty() && adds.empty(); }
    size_t size() const { return charges.size() + adds.size(); }
};

/// More deferred changes than this are sent at once rather than waiting for the interval.
constexpr size_t kMaxDeferred = 1024;
/// Admissions per script at most.
constexpr size_t kMaxBatch = 64;

/// What the adapter and its callbacks share: callbacks may run after the adapter is gone
/// (posted to a loop), so everything they touch lives here.
struct Shared {
    /// What the pre-check remembers of a refusal: cost `cost` does not fit before `until_us`
    /// (steady clock).
    struct Refusal {
        int64_t cost = 0;
        int64_t until_us = 0;
    };

    std::string prefix;
    std::string sha;
    size_t max_in_flight = 2;

    // Recursive: a command failing at once runs its callback inside Command(), and that callback
    // may issue the next command.
    std::recursive_mutex client_mu;   // guards client
    redis::Client* client = nullptr;  // null once the adapter is being destroyed
    std::mutex mu;                    // guards refusals
    std::unordered_map<std::string, Refusal> refusals;

    std::mutex deferred_mu;  // guards deferred, stop
    std::condition_variable deferred_cv;
    Deferred deferred;
    bool stop = false;

    std::mutex run_mu;  // guards queued, in_flight
    std::deque<Admission> queued;
    size_t in_flight = 0;  // scripts sent and not answered yet

    std::atomic<uint64_t> round_trips{0}, local_decisions{0}, script_reloads{0}, errors{0},
        deferred_ops{0}, deferred_flushes{0}, admissions{0}, scripts{0};

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

    /// EVALSHA of kScript; on NOSCRIPT, EVAL with the text (which also caches it again).
    static void Eval(const std::shared_ptr<Shared>& s,
                     std::vector<std::string> args,
                     std::function<void(core::Result<redis::Reply>)> done) {
        auto retry_args = std::make_shared<std::vector<std::string>>(args);
        Send(s, std::move(args),
             [s, retry_args, done = std::move(done)](core::Result<redis::Reply> r) mutable {
                 if (r && r->IsError() && r->str.starts_with("NOSCRIPT")) {
                     s->script_reloads.fetch_add(1);
                     (*retry_args)[0] = "EVAL";
                     (*retry_args)[1] = std::string(kScript);
                     Send(s, std::move(*retry_args), std::move(done));
                     return;
                 }
                 done(std::move(r));
             });
    }

    Deferred TakeDeferred() {
        std::lock_guard lock(deferred_mu);
        Deferred out = std::move(deferred);
        deferred = Deferred{};
        return out;
    }

    /// Sends `a` now, or queues it behind the scripts in flight (it then goes with the next
    /// script, together with everything queued meanwhile).
    static void Run(const std::shared_ptr<Shared>& s, Admission a) {
        {
            std::lock_guard lock(s->run_mu);
            if (s->in_flight >= s->max_in_flight) {
                s->queued.push_back(std::move(a));
                return;
            }
            ++s->in_flight;
        }
        std::vector<Admission> batch;
        batch.push_back(std::move(a));
        SendBatch(s, std::move(batch));
    }

    /// Sends what is deferred, alone, unless a script is in flight (its successor carries it)
    /// or `force`. No-op when nothing is deferred.
    static void Flush(const std::shared_ptr<Shared>& s, bool force) {
        {
            std::lock_guard lock(s->run_mu);
            if (s->in_flight >= s->max_in_flight && !force) {
                return;
            }
            ++s->in_flight;
        }
        SendBatch(s, {});
    }

    /// After a script answered: the next batch, if admissions are waiting.
    static void Next(const std::shared_ptr<Shared>& s) {
        std::vector<Admission> batch;
        {
            std::lock_guard lock(s->run_mu);
            if (s->queued.empty()) {
                --s->in_flight;
                return;
            }
            while (!s->queued.empty() && batch.size() < kMaxBatch) {
                batch.push_back(std::move(s->queued.front()));
                s->queued.pop_front();
            }
        }
        SendBatch(s, std::move(batch));
    }

    /// One script: the deferred changes, then `batch` (one in-flight slot is held for it).
    static void SendBatch(const std::shared_ptr<Shared>& s, std::vector<Admission> batch) {
        Deferred d = s->TakeDeferred();
        if (batch.empty() && d.empty()) {
            Next(s);
            return;
        }
        if (batch.empty()) {
            s->deferred_flushes.fetch_add(1);
        }
        s->scripts.fetch_add(1);
        s->admissions.fetch_add(batch.size());
        const size_t nc = d.charges.size(), na = d.adds.size();
        std::vector<std::string> keys;
        std::vector<std::string> argv{std::to_string(nc), std::to_string(na),
                                      std::to_string(batch.size())};
        auto bucket = [&](const RateLimit& l) {
            keys.push_back(s->prefix + l.key);
            argv.push_back(std::to_string(l.limit));
            argv.push_back(std::to_string(l.window_ms));
            argv.push_back(std::to_string(l.cost));
        };
        for (const auto& l : d.charges) {
            bucket(l);
        }
        for (const auto& a : d.adds) {
            keys.push_back(s->prefix + a.key);
            argv.push_back(std::to_string(a.amount));
            argv.push_back(a.init ? std::to_string(*a.init) : std::string());
            argv.push_back(std::to_string(a.ttl_ms));
        }
        for (const auto& a : batch) {
            argv.push_back(std::to_string(a.limits.size()));
            argv.push_back(std::to_string(a.reservations.size()));
            argv.push_back(std::to_string(a.reserve_ttl_ms));
            for (const auto& l : a.limits) {
                bucket(l);
            }
            for (const auto& r : a.reservations) {
                keys.push_back(s->prefix + r.key);
                argv.push_back(std::to_string(r.amount));
                argv.push_back(std::to_string(r.cap));
                argv.push_back(std::to_string(r.floor));
                argv.push_back(r.init ? std::to_string(*r.init) : std::string());
            }
        }
        std::vector<std::string> args{"EVALSHA", s->sha, std::to_string(keys.size())};
        args.reserve(3 + keys.size() + argv.size());
        std::move(keys.begin(), keys.end(), std::back_inserter(args));
        std::move(argv.begin(), argv.end(), std::back_inserter(args));
        Eval(s, std::move(args),
             [s, nc, na, batch = std::move(batch),
              waiters = std::move(d.waiters)](core::Result<redis::Reply> reply) mutable {
                 Deliver(*s, reply, nc, na, batch, waiters);
                 Next(s);
             });
    }

    /// Splits a script's answer among the deferred calls' waiters and the admissions.
    static void Deliver(Shared& s,
                        const core::Result<redis::Reply>& reply,
                        size_t nc,
                        size_t na,
                        std::vector<Admission>& batch,
                        std::vector<std::function<void(const core::Result<Applied>&)>>& waiters) {
        auto fail_all = [&](const core::Error& e) {
            for (auto& w : waiters) {
                w(tl::unexpected(e));
            }
            for (auto& a : batch) {
                a.done(tl::unexpected(e));
            }
        };
        if (!reply) {
            fail_all(reply.error());
            return;
        }
        size_t size = 2 * nc + na;
        for (const auto& a : batch) {
            size += 4 + 2 * a.limits.size() + a.reservations.size();
        }
        if (!IntegerArray(*reply, size)) {
            s.errors.fetch_add(1);
            fail_all(BadReply(*reply));
            return;
        }
        const auto& e = reply->elements;
        size_t i = 0;
        Applied applied;
        for (size_t c = 0; c < nc; ++c, i += 2) {
            applied.charged.push_back(RateLimitState{0, e[i].integer, e[i + 1].integer});
        }
        for (size_t a = 0; a < na; ++a, ++i) {
            applied.added.push_back(e[i].integer);
        }
        const core::Result<Applied> result(std::move(applied));
        for (auto& w : waiters) {
            w(result);
        }
        for (auto& a : batch) {
            AdmitDecision d;
            d.admitted = e[i].integer == 1;
            d.rate.denied_index = static_cast<int>(e[i + 1].integer);
            d.rate.admitted = d.rate.denied_index < 0;
            d.rate.retry_after_ms = e[i + 2].integer;
            d.reserve.denied_index = static_cast<int>(e[i + 3].integer);
            d.reserve.admitted = d.rate.admitted && d.reserve.denied_index < 0;
            i += 4;
            for (const auto& l : a.limits) {
                d.rate.states.push_back(RateLimitState{l.limit, e[i].integer, e[i + 1].integer});
                i += 2;
            }
            for (size_t r = 0; r < a.reservations.size(); ++r, ++i) {
                if (d.rate.admitted) {
                    d.reserve.values.push_back(e[i].integer);
                }
            }
            if (!d.rate.admitted && d.rate.denied_index >= 0 &&
                static_cast<size_t>(d.rate.denied_index) < a.limits.size()) {
                Remember(s, a.limits[d.rate.denied_index], d.rate.retry_after_ms);
            }
            a.done(std::move(d));
        }
    }

    static int64_t NowUs() { return core::SystemClock::SteadyNowNs() / 1000; }

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
        Refusal& r = s.refusals[l.key];
        if (now >= r.until_us || l.cost < r.cost || (l.cost == r.cost && until > r.until_us) ||
            r.cost == 0) {
            r.cost = l.cost;
            r.until_us = until;
        }
    }
};

class RedisCountersImpl final : public RedisCounters {
public:
    RedisCountersImpl(RedisCountersOptions options, redis::Endpoint endpoint)
        : options_(std::move(options)) {
        shared_->prefix = options_.key_prefix;
        shared_->sha = core::Sha1Hex(kScript);
        shared_->max_in_flight = std::max<size_t>(1, options_.max_in_flight);
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
            std::lock_guard lock(shared_->deferred_mu);
            shared_->stop = true;
        }
        shared_->deferred_cv.notify_all();
        if (flusher_.joinable()) {
            flusher_.join();
        }
        // Best effort: what is still deferred goes out before the connection closes.
        Shared::Flush(shared_, /*force=*/true);
        {
            std::lock_guard lock(shared_->client_mu);
            shared_->client = nullptr;
        }
        std::deque<Admission> queued;
        {
            std::lock_guard lock(shared_->run_mu);
            queued.swap(shared_->queued);
        }
        for (auto& a : queued) {
            a.done(Fail(ErrorCode::kUnavailable, "Redis counters are shutting down"));
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
                                 done = std::move(done)](const core::Result<Applied>& r) {
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
        Shared::Run(shared_, Admission{std::move(limits), std::move(reservations),
                                       std::max<int64_t>(0, ttl_ms), std::move(done)});
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
                    d.adds.push_back(AddOp{delta.key, delta.amount, delta.init, ttl});
                } else {
                    // Same counter: amounts summed; a missing counter is created from the newest
                    // view (its init is "the value before this delta").
                    AddOp& m = d.adds[it->second];
                    m.amount += delta.amount;
                    if (delta.init) {
                        m.init = *delta.init + delta.amount - m.amount;
                    }
                    m.ttl_ms = ttl;
                }
                at.push_back(it->second);
            }
            d.waiters.push_back(
                [at = std::move(at), done = std::move(done)](const core::Result<Applied>& r) {
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
        // This instance's own deferred changes first (same connection: in order).
        Shared::Flush(shared_, /*force=*/true);
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
        s.admissions = shared_->admissions.load();
        s.scripts = shared_->scripts.load();
        return s;
    }

private:
    /// Merges one Add/Charge call into the deferred set (`merge` runs under the lock); sends
    /// at once when deferral is off or the set is large.
    template <class Merge>
    void Defer(Merge&& merge) {
        shared_->deferred_ops.fetch_add(1);
        bool now = options_.batch_interval.count() <= 0;
        {
            std::lock_guard lock(shared_->deferred_mu);
            auto& d = shared_->deferred;
            const bool was_empty = d.empty();
            merge(d);
            if (was_empty) {
                d.since = std::chrono::steady_clock::now();  // the flusher looks every interval
            }
            now = now || shared_->stop || d.size() >= kMaxDeferred;
        }
        if (now) {
            Shared::Flush(shared_, /*force=*/true);
        }
    }

    /// The flusher thread: every batch interval, sends deferred changes that no script carried
    /// within the interval (none was in flight or queued). It is never woken per change (that
    /// would cost a context switch per request); it only wakes to stop.
    void FlushLoop() {
        auto& s = *shared_;
        std::unique_lock lock(s.deferred_mu);
        while (!s.stop) {
            s.deferred_cv.wait_for(lock, options_.batch_interval, [&s] { return s.stop; });
            if (s.stop) {
                return;
            }
            if (s.deferred.empty() ||
                std::chrono::steady_clock::now() - s.deferred.since < options_.batch_interval) {
                continue;
            }
            lock.unlock();
            // Not while a script is in flight: the next one carries them.
            Shared::Flush(shared_, /*force=*/false);
            lock.lock();
        }
    }

    /// A certain refusal from what this instance already knows, or nullopt (ask Redis).
    std::optional<RateDecision> LocalRefusal(const std::vector<RateLimit>& limits) {
        const int64_t now = Shared::NowUs();
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

    /// Reports an argument error (counted like every failed call).
    template <class Callback>
    void Finish(const Callback& done, core::Error e) {
        shared_->errors.fetch_add(1);
        done(tl::unexpected(std::move(e)));
    }

    RedisCountersOptions options_;
    std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
    std::unique_ptr<redis::Client> client_;
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
