#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace conduit::store::sqlite {

using core::Result;

/// A prepared statement. Bind* calls are chainable; the first bind failure is remembered and
/// reported by the next Step(). Column getters are valid only after Step() returned a row.
/// Not thread-safe (owned by one Db, used by one thread at a time).
class Statement {
public:
    Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
    ~Statement();
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;

    /// Binds an integer to the 1-based parameter `index`.
    Statement& BindInt(int index, int64_t value);
    /// Binds 0 or 1.
    Statement& BindBool(int index, bool value);
    /// Binds UTF-8 text (copied).
    /// Like BindText, but SQLite does not copy: `value` must stay alive and unchanged until the
    /// statement is reset (cheaper for bulk inserts).
    Statement& BindTextNoCopy(int index, std::string_view value);
    Statement& BindText(int index, std::string_view value);
    /// Binds raw bytes (copied).
    Statement& BindBlob(int index, std::string_view value);
    /// Binds SQL NULL.
    Statement& BindNull(int index);
    /// Binds the value, or NULL when empty.
    Statement& BindOptInt(int index, const std::optional<int64_t>& value);
    /// Binds the text, or NULL when empty.
    Statement& BindOptText(int index, const std::optional<std::string>& value);

    /// Advances the statement: true when a row is available, false when done.
    Result<bool> Step();
    /// Steps to completion, ignoring any rows (INSERT/UPDATE/DELETE).
    Result<void> Run();

    /// Integer value of column `col` (0-based); 0 for NULL.
    int64_t Int(int col) const;
    /// Column as bool (non-zero = true).
    bool Bool(int col) const { return Int(col) != 0; }
    /// Text value of column `col`; empty for NULL.
    std::string Text(int col) const;
    /// Blob value of column `col` as bytes; empty for NULL.
    std::string Blob(int col) const;
    /// True when column `col` is NULL.
    bool IsNull(int col) const;
    /// Integer, or nullopt for NULL.
    std::optional<int64_t> OptInt(int col) const;
    /// Text, or nullopt for NULL.
    std::optional<std::string> OptText(int col) const;

    /// Resets the statement and clears its bindings so it can be reused.
    void Reset();

    /// True while handed out by a StatementLease.
    bool leased() const { return leased_; }
    void set_leased(bool leased) { leased_ = leased; }

private:
    void NoteBindResult(int rc);

    sqlite3* db_;
    sqlite3_stmt* stmt_;
    int bind_rc_ = 0;  // first failing bind result code, 0 = ok
    bool leased_ = false;
};

/// Temporary exclusive use of a (usually cached) statement; resets it when destroyed.
class StatementLease {
public:
    StatementLease(Statement* cached, std::unique_ptr<Statement> owned);
    ~StatementLease();
    StatementLease(StatementLease&& other) noexcept;
    StatementLease& operator=(StatementLease&&) = delete;
    StatementLease(const StatementLease&) = delete;
    StatementLease& operator=(const StatementLease&) = delete;

    Statement* operator->() const { return stmt_; }
    Statement& operator*() const { return *stmt_; }

private:
    Statement* stmt_;
    std::unique_ptr<Statement> owned_;  // set when the cached statement was already in use
};

/// One SQLite connection with a prepared-statement cache keyed by SQL text.
///
/// Threading: not thread-safe; one thread at a time (the owner serialises calls).
/// Errors never throw: every failure becomes a core::Error (see ErrorFrom).
class Db {
public:
    /// Opens (creating if needed) the database file at `path` with extended result codes.
    static Result<std::unique_ptr<Db>> Open(const std::string& path);
    ~Db();
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    /// Runs one or more ';'-separated statements without parameters.
    Result<void> Exec(std::string_view sql);
    /// Returns the cached prepared statement for `sql` (preparing it on first use), leased until
    /// the returned handle dies. A statement already leased is prepared afresh, uncached.
    Result<StatementLease> Prepare(const std::string& sql);
    /// Row id of the most recent successful INSERT on this connection.
    int64_t LastInsertRowId() const;
    /// Rows changed by the most recent INSERT/UPDATE/DELETE.
    int Changes() const;
    /// Builds an Error from the result code `rc` and the connection's current message.
    core::Error ErrorFrom(int rc, std::string_view context) const;
    /// Raw handle, for the adapter's pragmas and tests.
    sqlite3* handle() const { return db_; }

private:
    explicit Db(sqlite3* db) : db_(db) {}

    sqlite3* db_;
    std::unordered_map<std::string, std::unique_ptr<Statement>> cache_;
};

/// Maps a SQLite (extended) result code to the Store error taxonomy: busy/locked/cannot-open/
/// I/O/full → kUnavailable; UNIQUE/PRIMARY KEY/FOREIGN KEY constraints → kConflict; CHECK/NOT
/// NULL/datatype constraints and too-big values → kInvalidRequest; anything else → kInternal.
core::ErrorCode MapResultCode(int rc);

/// A transaction that rolls back unless Commit() succeeded.
class Transaction {
public:
    enum class Mode { kDeferred, kImmediate };

    /// BEGIN (read) or BEGIN IMMEDIATE (takes the write lock now, so the transaction cannot
    /// fail later with a lock-upgrade deadlock).
    static Result<Transaction> Begin(Db& db, Mode mode);
    ~Transaction();
    Transaction(Transaction&& other) noexcept : db_(other.db_), active_(other.active_) {
        other.active_ = false;
    }
    Transaction& operator=(Transaction&&) = delete;
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

    /// COMMIT. On failure the transaction is rolled back.
    Result<void> Commit();

private:
    explicit Transaction(Db& db) : db_(&db), active_(true) {}

    Db* db_;
    bool active_;
};

}  // namespace conduit::store::sqlite
