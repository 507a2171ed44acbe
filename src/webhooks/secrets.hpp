#pragma once

#include "core/clock.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"
#include "core/secret_box.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"
#include "webhooks/options.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::webhooks {

/// A virtual key's signing keys (raw HMAC key bytes, already unsealed).
struct SigningKeys {
    std::string current;   // empty: the key has no webhook secret (deliveries go unsigned)
    std::string previous;  // empty: no rotation in progress
    int64_t previous_valid_until_ms = 0;

    /// The keys that sign at `now_ms`: current, then previous while its grace period lasts.
    std::vector<std::string_view> ActiveAt(int64_t now_ms) const;
};
using SigningKeysPtr = std::shared_ptr<const SigningKeys>;

/// What a create/rotate returns: the only time the secret is shown.
struct Rotation {
    std::string secret;  // "whsec_<base64>"
    int64_t rotated_at_ms = 0;
    std::optional<int64_t> previous_valid_until_ms;  // set when an earlier secret still signs
};

/// Per-virtual-key webhook signing secrets: creation and rotation (sealed with core::SecretBox,
/// stored with Store::PutWebhookSecret) and a read-through cache for the delivery worker, so that
/// deliveries do not read the store each time.
///
/// Threading: the cache is thread-safe. Methods named *OnExecutor run blocking store calls and
/// must run on the store executor — which also makes a rotation and a cache fill strictly
/// ordered (a fill never re-inserts a secret replaced by a rotation on this instance).
class SecretService {
public:
    SecretService(store::Store& store,
                  store::Executor& executor,
                  const core::SecretBox& box,
                  const core::Clock& clock,
                  const WebhookOptions& options);

    /// Creates the key's secret, or rotates it: the old secret keeps signing for `grace`
    /// (default options.secret_grace; zero = no overlap). nullopt when the virtual key does not
    /// exist. Invalidates the cached entry. Executor thread.
    core::Result<std::optional<Rotation>> RotateOnExecutor(
        int64_t virtual_key_id, std::optional<std::chrono::milliseconds> grace = std::nullopt);

    /// The key's signing keys from the store (and caches them). Executor thread.
    core::Result<SigningKeysPtr> LoadOnExecutor(int64_t virtual_key_id);

    /// The key's signing keys: from the cache (then `done` runs before Get returns), else read on
    /// the executor and delivered to `done` on `loop`'s thread. Loop thread.
    void Get(core::Loop& loop,
             int64_t virtual_key_id,
             std::function<void(core::Result<SigningKeysPtr>)> done);

    /// The cached entry, if fresh. Any thread.
    SigningKeysPtr Cached(int64_t virtual_key_id) const;
    /// Drops the cached entry. Any thread.
    void Invalidate(int64_t virtual_key_id);

private:
    struct Cache;
    store::Store& store_;
    store::Executor& executor_;
    const core::SecretBox& box_;
    const core::Clock& clock_;
    std::chrono::milliseconds grace_;
    std::shared_ptr<Cache> cache_;
};

}  // namespace conduit::webhooks
