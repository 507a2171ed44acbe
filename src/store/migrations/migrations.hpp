#pragma once

#include <span>
#include <string_view>

namespace conduit::store::migrations {

/// One schema step. Versions start at 1 and increase by one; a step is applied at most once, in
/// its own transaction, and recorded in `schema_migrations`.
struct Migration {
    int version = 0;
    std::string_view name;  // e.g. "0001_init"
    std::string_view sql;   // ';'-separated statements; no BEGIN/COMMIT (the runner adds them)
};

/// The SQLite schema, oldest first. Never edit a released step: append a new one.
std::span<const Migration> SqliteMigrations();

/// The PostgreSQL schema (same versions, names and meaning as SqliteMigrations()), oldest first.
/// Applied under a per-schema advisory lock, so instances starting together migrate once.
std::span<const Migration> PostgresMigrations();

}  // namespace conduit::store::migrations
