#include "webhooks/secrets.hpp"

#include "obs/cache_stats.hpp"
#include "webhooks/signing.hpp"

#include <mutex>
#include <unordered_map>

namespace conduit::webhooks {
namespace {

// Cache statistics of the signing keys cache (region webhook_secrets).
obs::CacheRegionStats& Stats() {
    return obs::CacheStats::Global().Region(obs::CacheRegion::kWebhookSecrets);
}

}  // namespace

std::vector<std::string_view> SigningKeys::ActiveAt(int64_t now_ms) const {
    std::vector<std::string_view> keys;
    if (!current.empty()) {
        keys.emplace_back(current);
    }
    if (!previous.empty() && now_ms < previous_valid_until_ms) {
        keys.emplace_back(previous);
    }
    return keys;
}

struct SecretService::Cache {
    struct Entry {
        SigningKeysPtr keys;
        int64_t fetched_ms = 0;
    };
    mutable std::mutex mu;  // guards entries
    std::unordered_map<int64_t, Entry> entries;
    int64_t ttl_ms = 0;
    size_t capacity = 0;
};

SecretService::SecretService(store::Store& store,
                             store::Executor& executor,
                             const core::SecretBox& box,
                             const core::Clock& clock,
                             const WebhookOptions& options)
    : store_(store),
      executor_(executor),
      box_(box),
      clock_(clock),
      grace_(options.secret_grace),
      cache_(std::make_shared<Cache>()) {
    cache_->ttl_ms = options.secret_cache_ttl.count();
    cache_->capacity = std::max<size_t>(options.secret_cache_capacity, 1);
}

core::Result<std::optional<Rotation>> SecretService::RotateOnExecutor(
    int64_t virtual_key_id, std::optional<std::chrono::milliseconds> grace) {
    auto key = store_.GetKey(virtual_key_id);
    if (!key) {
        return tl::unexpected(key.error());
    }
    if (!*key) {
        return std::optional<Rotation>();
    }
    auto existing = store_.GetWebhookSecret(virtual_key_id);
    if (!existing) {
        return tl::unexpected(existing.error());
    }
    const int64_t now = clock_.NowUnixMs();
    const int64_t grace_ms = std::max<int64_t>(grace.value_or(grace_).count(), 0);

    Rotation out;
    out.secret = signing::GenerateSecret();
    out.rotated_at_ms = now;

    store::WebhookSecret row;
    row.virtual_key_id = virtual_key_id;
    row.secret_sealed = box_.Seal(out.secret);
    row.created_at_ms = now;
    if (*existing && grace_ms > 0) {
        row.previous_sealed = (*existing)->secret_sealed;
        row.previous_valid_until_ms = now + grace_ms;
        out.previous_valid_until_ms = row.previous_valid_until_ms;
    }
    if (auto put = store_.PutWebhookSecret(row); !put) {
        return tl::unexpected(put.error());
    }
    Invalidate(virtual_key_id);
    return std::optional<Rotation>(std::move(out));
}

core::Result<SigningKeysPtr> SecretService::LoadOnExecutor(int64_t virtual_key_id) {
    auto row = store_.GetWebhookSecret(virtual_key_id);
    if (!row) {
        Stats().Error();
        return tl::unexpected(row.error());
    }
    auto keys = std::make_shared<SigningKeys>();
    if (*row) {
        auto open = [&](const std::string& sealed) -> core::Result<std::string> {
            auto plain = box_.Open(sealed);
            if (!plain) {
                return core::Fail(core::ErrorCode::kInternal,
                                  "the webhook secret of virtual key " +
                                      std::to_string(virtual_key_id) +
                                      " cannot be decrypted (was the encryption key changed?)");
            }
            return signing::SecretKeyBytes(*plain);
        };
        auto current = open((*row)->secret_sealed);
        if (!current) {
            Stats().Error();
            return tl::unexpected(current.error());
        }
        keys->current = std::move(*current);
        if (!(*row)->previous_sealed.empty()) {
            // A previous secret that cannot be opened only loses its grace period.
            if (auto previous = open((*row)->previous_sealed)) {
                keys->previous = std::move(*previous);
                keys->previous_valid_until_ms = (*row)->previous_valid_until_ms;
            }
        }
    }
    SigningKeysPtr result = keys;
    {
        std::lock_guard lock(cache_->mu);
        if (cache_->entries.size() >= cache_->capacity) {
            Stats().Evict(cache_->entries.size());
            cache_->entries.clear();  // crude but bounded; refills are one read per key
        }
        cache_->entries[virtual_key_id] = Cache::Entry{result, clock_.NowUnixMs()};
    }
    Stats().Set();
    return result;
}

void SecretService::Get(core::Loop& loop,
                        int64_t virtual_key_id,
                        std::function<void(core::Result<SigningKeysPtr>)> done) {
    if (auto cached = Cached(virtual_key_id)) {
        done(std::move(cached));
        return;
    }
    executor_.Call(
        loop, [this, virtual_key_id] { return LoadOnExecutor(virtual_key_id); },
        [done = std::move(done)](core::Result<SigningKeysPtr> r) { done(std::move(r)); });
}

SigningKeysPtr SecretService::Cached(int64_t virtual_key_id) const {
    const int64_t started_ns = core::SystemClock::SteadyNowNs();
    auto elapsed = [started_ns] {
        return static_cast<uint64_t>(core::SystemClock::SteadyNowNs() - started_ns);
    };
    std::lock_guard lock(cache_->mu);
    auto it = cache_->entries.find(virtual_key_id);
    if (it == cache_->entries.end()) {
        Stats().Miss(elapsed());
        return nullptr;
    }
    if (clock_.NowUnixMs() - it->second.fetched_ms >= cache_->ttl_ms) {
        cache_->entries.erase(it);  // expired: counted once, refilled by the caller's load
        Stats().Evict();
        Stats().Miss(elapsed());
        return nullptr;
    }
    Stats().Hit(elapsed());
    return it->second.keys;
}

void SecretService::Invalidate(int64_t virtual_key_id) {
    std::lock_guard lock(cache_->mu);
    if (cache_->entries.erase(virtual_key_id) > 0) {
        Stats().Remove();
    }
}

}  // namespace conduit::webhooks
