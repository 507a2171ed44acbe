#pragma once

#include "core/error.hpp"
#include "store/store.hpp"

#include <memory>
#include <string>

namespace conduit::store {

/// Where the Store lives: `database_url` as configured (DATABASE_URL), `data_dir` for SQLite.
struct StoreTarget {
    std::string database_url;  // empty → SQLite; postgres:// or postgresql:// → PostgreSQL
    std::string data_dir;      // SQLite's directory (the file is data_dir/conduit.db)
};

/// Opens the Store the configuration names: the embedded SQLite database in `data_dir` when
/// `database_url` is empty, PostgreSQL for a postgres:// or postgresql:// URL (a
/// `pool_max_conns=N` URL parameter sizes its connection pool, default 8). Does not migrate.
///
/// Errors: kInvalidRequest for any other URL (the message names only the scheme, never the URL);
/// the adapter's errors otherwise (kUnavailable when the database cannot be reached).
Result<std::unique_ptr<Store>> OpenStore(const StoreTarget& target);

/// Human-readable location for logs: "sqlite <path>" or "postgresql <url without password>".
std::string DescribeStoreTarget(const StoreTarget& target);

}  // namespace conduit::store
