#pragma once

#include "core/error.hpp"
#include "store/store.hpp"

#include <memory>
#include <string>

namespace conduit::store {

/// Tuning for the SQLite adapter.
struct SqliteOptions {
    /// How long a statement waits for another connection's lock before failing with kUnavailable.
    int busy_timeout_ms = 5000;
};

/// Opens (creating it and its parent directory if needed) the SQLite database at `path` — the
/// embedded Store adapter (DESIGN §1). ":memory:" opens a private in-memory database.
///
/// The connection uses WAL journaling, synchronous=NORMAL, enforced foreign keys and the given
/// busy timeout; prepared statements are cached per SQL text. The schema is NOT touched here:
/// call Migrate() once after opening.
///
/// Threading: every call is blocking; calls are serialised by an internal mutex, so the store may
/// be shared, but it is meant to be driven by one store::Executor thread at a time.
///
/// Errors: kUnavailable when the file cannot be opened or created.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               const SqliteOptions& options = {});

}  // namespace conduit::store
