#pragma once

#include "core/error.hpp"
#include "store/store.hpp"

#include <memory>
#include <string>

namespace conduit::store {

/// Tuning for the PostgreSQL adapter.
struct PostgresOptions {
    /// Most connections open at once; calls beyond it wait for a free connection. A
    /// `pool_max_conns=N` parameter in the URL overrides it (and is not passed to libpq).
    int pool_max = 8;
};

/// Connects to the PostgreSQL database named by `url` (postgres:// or postgresql://, any libpq
/// URI parameter allowed) — the distributed Store adapter (DESIGN §1). One connection is opened
/// to prove the server answers; the schema is NOT touched here: call Migrate() once after
/// opening (several instances may do so at the same time).
///
/// Threading: every call is blocking and runs on a store::Executor thread, never on an event
/// loop. Calls from several threads run concurrently on a bounded connection pool.
///
/// Errors: kUnavailable when the server cannot be reached or refuses the login; kInvalidRequest
/// for a malformed URL or pool size. Messages never contain the password.
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url,
                                                 const PostgresOptions& options = {});

}  // namespace conduit::store
