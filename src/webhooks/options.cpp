#include "webhooks/options.hpp"

#include <algorithm>

namespace conduit::webhooks {

bus::QueueOptions WebhookQueueOptions(const WebhookOptions& options, bus::QueueOptions base) {
    base.max_attempts = 1 + std::max(options.max_retries, 0);
    return base;
}

http_client::PoolOptions WebhookPoolOptions() {
    http_client::PoolOptions pool;
    pool.max_connections_per_host = 50;
    pool.max_total_connections = 1024;
    pool.max_cached_connections = 256;
    return pool;
}

}  // namespace conduit::webhooks
