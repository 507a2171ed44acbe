#pragma once

// A thin blocking wrapper over one libpq connection (PGconn), used only by the PostgreSQL Store
// adapter: text-format parameters and results, per-connection prepared statements cached by SQL
// text, SQLSTATE → core::ErrorCode mapping, pipelined batches, and a small bounded pool.
// Every call blocks; it runs on store::Executor threads, never on an event loop.

#include "core/error.hpp"

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct pg_conn;
struct pg_result;

namespace conduit::store::pg {

using core::Result;

/// Maps a SQLSTATE to the Store port's error codes: 23505/23503 (unique, foreign key) →
/// kConflict; other integrity and data errors (23xxx, 22xxx) → kInvalidRequest; connection,
/// resource, shutdown, serialization and deadlock errors (08, 53, 57, 40) → kUnavailable;
/// anything else → kInternal.
core::ErrorCode MapSqlState(std::string_view sqlstate);

/// Statement parameters, all sent in text format except byte strings (binary, for bytea).
class Params {
public:
    Params& Int(int64_t v);
    Params& Bool(bool v);
    Params& Text(std::string_view v);
    Params& Bytes(std::string_view v);
    Params& OptInt(const std::optional<int64_t>& v);
    Params& OptText(const std::optional<std::string>& v);
    Params& Null();

    int size() const { return static_cast<int>(values_.size()); }
    /// True if a Text() value held a NUL byte (PostgreSQL text cannot; libpq would cut it).
    bool has_nul() const { return has_nul_; }

private:
    friend class Conn;
    bool has_nul_ = false;
    std::vector<std::string> values_;
    std::vector<char> null_;
    std::vector<int> formats_;
};

/// An owned result set (text format). Column accessors take (row, column).
class Rows {
public:
    Rows() = default;
    explicit Rows(pg_result* res);
    Rows(Rows&& other) noexcept;
    Rows& operator=(Rows&& other) noexcept;
    Rows(const Rows&) = delete;
    Rows& operator=(const Rows&) = delete;
    ~Rows();

    int size() const;
    bool empty() const { return size() == 0; }
    /// Rows changed by an INSERT/UPDATE/DELETE (PQcmdTuples), 0 otherwise.
    int64_t Affected() const;

    bool IsNull(int row, int col) const;
    int64_t Int(int row, int col) const;
    bool Bool(int row, int col) const;
    std::string Text(int row, int col) const;
    /// A bytea column (hex text output) as raw bytes.
    std::string Bytes(int row, int col) const;
    std::optional<int64_t> OptInt(int row, int col) const;
    std::optional<std::string> OptText(int row, int col) const;

private:
    pg_result* res_ = nullptr;
};

/// One connection. Not thread-safe: a Pool lease gives it to one thread at a time.
class Conn {
public:
    /// Connects (blocking). kUnavailable when the server cannot be reached or refuses the login;
    /// the message never contains the password.
    static Result<std::unique_ptr<Conn>> Connect(const std::string& url);
    ~Conn();
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    /// Runs `sql` ($1, $2, … placeholders) as a prepared statement, preparing it on this
    /// connection the first time it is seen.
    Result<Rows> Exec(const std::string& sql, const Params& params = {});
    /// Runs `sql` with the simple query protocol (no parameters; may hold several statements).
    Result<void> Simple(const std::string& sql);

    /// Prepares `sql` now if it is not prepared yet (for use inside a pipeline).
    Result<void> Prepare(const std::string& sql);
    /// Runs the statements of `batch` (each already Prepare()d) pipelined, in chunks, and
    /// returns their results in order. Stops at the first failing statement (its error). The
    /// caller opens and ends any transaction around it.
    Result<std::vector<Rows>> Pipeline(
        const std::vector<std::pair<const std::string*, Params>>& batch);

    /// False once the connection is known to be broken.
    bool Healthy();
    /// Reconnects with the same parameters (prepared statements are forgotten).
    Result<void> Reset();
    /// Set when a statement that may have changed data outside a still-open transaction was
    /// sent since the last ClearRetryState(): retrying the whole operation could apply it twice.
    bool unsafe_to_retry() const { return unsafe_to_retry_; }
    void ClearRetryState() { unsafe_to_retry_ = false; }
    /// True while a transaction block is open (or failed) on the server.
    bool InTransaction() const;
    /// SQLSTATE of the last failed statement ("" if it had none, e.g. a lost connection).
    const std::string& last_sqlstate() const { return last_sqlstate_; }

private:
    explicit Conn(pg_conn* conn);
    core::Error LastError(pg_result* res, std::string_view context) const;
    void NoteSent(const std::string& sql);
    Result<std::string> StatementName(const std::string& sql);

    pg_conn* conn_ = nullptr;
    std::unordered_map<std::string, std::string> prepared_;  // SQL text → statement name
    int next_statement_ = 0;
    bool unsafe_to_retry_ = false;
    bool poisoned_ = false;
    mutable std::string
        last_sqlstate_;  // left in an unknown protocol state (e.g. a pipeline that failed)
};

/// A bounded pool of connections, opened on demand up to `max_size`. Acquire() waits for a free
/// one when all are in use. Broken connections are reset once when taken from the pool.
class Pool {
public:
    Pool(std::string url, int max_size);
    ~Pool();

    class Lease {
    public:
        Lease(Pool* pool, std::unique_ptr<Conn> conn) : pool_(pool), conn_(std::move(conn)) {}
        Lease(Lease&& other) noexcept;
        Lease& operator=(Lease&&) = delete;
        ~Lease();
        Conn& operator*() { return *conn_; }
        Conn* operator->() { return conn_.get(); }

    private:
        Pool* pool_;
        std::unique_ptr<Conn> conn_;
    };

    Result<Lease> Acquire();
    int max_size() const { return max_size_; }

private:
    /// Takes a connection back (a broken one, or nullptr, is closed and frees its slot).
    void Release(std::unique_ptr<Conn> conn);

    std::string url_;
    int max_size_;
    std::mutex mu_;  // guards idle_, open_
    std::condition_variable cv_;
    std::vector<std::unique_ptr<Conn>> idle_;
    int open_ = 0;  // connections in existence (idle or leased) or being opened
};

/// `url` with any password replaced by "***" (userinfo and a password= query parameter), for
/// logs and error messages.
std::string RedactUrl(std::string_view url);

}  // namespace conduit::store::pg
