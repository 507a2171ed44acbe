#include "store/sqlite/sqlite_db.hpp"

#include <sqlite3.h>

#include <utility>

namespace conduit::store::sqlite {

namespace {

// sqlite3 takes lengths as int; anything larger than this is refused with SQLITE_TOOBIG anyway.
int ClampLength(size_t n) {
    constexpr size_t kMax = 0x7fffffff;
    return static_cast<int>(n > kMax ? kMax : n);
}

}  // namespace

core::ErrorCode MapResultCode(int rc) {
    switch (rc) {
        case SQLITE_CONSTRAINT_UNIQUE:
        case SQLITE_CONSTRAINT_PRIMARYKEY:
        case SQLITE_CONSTRAINT_ROWID:
        case SQLITE_CONSTRAINT_FOREIGNKEY:
            return core::ErrorCode::kConflict;
        case SQLITE_CONSTRAINT_CHECK:
        case SQLITE_CONSTRAINT_NOTNULL:
        case SQLITE_CONSTRAINT_DATATYPE:
            return core::ErrorCode::kInvalidRequest;
        default:
            break;
    }
    switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
        case SQLITE_CANTOPEN:
        case SQLITE_IOERR:
        case SQLITE_FULL:
        case SQLITE_PROTOCOL:
            return core::ErrorCode::kUnavailable;
        case SQLITE_TOOBIG:
        case SQLITE_RANGE:
        case SQLITE_MISMATCH:
            return core::ErrorCode::kInvalidRequest;
        case SQLITE_CONSTRAINT:
            return core::ErrorCode::kConflict;
        default:
            return core::ErrorCode::kInternal;
    }
}

// --- Statement ---

Statement::~Statement() { sqlite3_finalize(stmt_); }

void Statement::NoteBindResult(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == 0) {
        bind_rc_ = rc;
    }
}

Statement& Statement::BindInt(int index, int64_t value) {
    NoteBindResult(sqlite3_bind_int64(stmt_, index, value));
    return *this;
}

Statement& Statement::BindBool(int index, bool value) { return BindInt(index, value ? 1 : 0); }

Statement& Statement::BindText(int index, std::string_view value) {
    // A non-null pointer even for empty text, so that "" is stored as '' and not NULL.
    NoteBindResult(sqlite3_bind_text(stmt_, index, value.empty() ? "" : value.data(),
                                     ClampLength(value.size()), SQLITE_TRANSIENT));
    return *this;
}

Statement& Statement::BindTextNoCopy(int index, std::string_view value) {
    NoteBindResult(sqlite3_bind_text(stmt_, index, value.empty() ? "" : value.data(),
                                     ClampLength(value.size()), SQLITE_STATIC));
    return *this;
}

Statement& Statement::BindBlob(int index, std::string_view value) {
    NoteBindResult(sqlite3_bind_blob(stmt_, index, value.empty() ? "" : value.data(),
                                     ClampLength(value.size()), SQLITE_TRANSIENT));
    return *this;
}

Statement& Statement::BindNull(int index) {
    NoteBindResult(sqlite3_bind_null(stmt_, index));
    return *this;
}

Statement& Statement::BindOptInt(int index, const std::optional<int64_t>& value) {
    return value ? BindInt(index, *value) : BindNull(index);
}

Statement& Statement::BindOptText(int index, const std::optional<std::string>& value) {
    return value ? BindText(index, *value) : BindNull(index);
}

Result<bool> Statement::Step() {
    if (bind_rc_ != 0) {
        return tl::unexpected(core::Error::Make(
            MapResultCode(bind_rc_), std::string("sqlite bind: ") + sqlite3_errstr(bind_rc_)));
    }
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) {
        return true;
    }
    if (rc == SQLITE_DONE) {
        return false;
    }
    core::Error error;
    error.code = MapResultCode(rc);
    error.message = std::string("sqlite: ") + sqlite3_errmsg(db_);
    // Leave the statement reusable (a failed step must be reset before the next use).
    sqlite3_reset(stmt_);
    return tl::unexpected(std::move(error));
}

Result<void> Statement::Run() {
    for (;;) {
        auto row = Step();
        if (!row) {
            return tl::unexpected(std::move(row.error()));
        }
        if (!*row) {
            return {};
        }
    }
}

int64_t Statement::Int(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string Statement::Text(int col) const {
    const auto* text = sqlite3_column_text(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    if (text == nullptr || n <= 0) {
        return {};
    }
    return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(n));
}

std::string Statement::Blob(int col) const {
    const void* data = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    if (data == nullptr || n <= 0) {
        return {};
    }
    return std::string(static_cast<const char*>(data), static_cast<size_t>(n));
}

bool Statement::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

std::optional<int64_t> Statement::OptInt(int col) const {
    if (IsNull(col)) {
        return std::nullopt;
    }
    return Int(col);
}

std::optional<std::string> Statement::OptText(int col) const {
    if (IsNull(col)) {
        return std::nullopt;
    }
    return Text(col);
}

void Statement::Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    bind_rc_ = 0;
}

// --- StatementLease ---

StatementLease::StatementLease(Statement* cached, std::unique_ptr<Statement> owned)
    : stmt_(owned ? owned.get() : cached), owned_(std::move(owned)) {
    if (!owned_) {
        stmt_->set_leased(true);
    }
}

StatementLease::StatementLease(StatementLease&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)), owned_(std::move(other.owned_)) {}

StatementLease::~StatementLease() {
    if (stmt_ == nullptr) {
        return;
    }
    if (!owned_) {
        stmt_->Reset();
        stmt_->set_leased(false);
    }
}

// --- Db ---

Result<std::unique_ptr<Db>> Db::Open(const std::string& path) {
    sqlite3* handle = nullptr;
    // NOMUTEX: the owner serialises access; SQLite's own per-call mutex would be redundant.
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path.c_str(), &handle, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string message = "cannot open database: ";
        message += handle != nullptr ? sqlite3_errmsg(handle) : sqlite3_errstr(rc);
        sqlite3_close_v2(handle);
        return tl::unexpected(core::Error::Make(core::ErrorCode::kUnavailable, message));
    }
    sqlite3_extended_result_codes(handle, 1);
    return std::unique_ptr<Db>(new Db(handle));
}

Db::~Db() {
    cache_.clear();  // finalize every statement before closing
    sqlite3_close_v2(db_);
}

Result<void> Db::Exec(std::string_view sql) {
    std::string text(sql);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string message = "sqlite: ";
        message += err != nullptr ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        return tl::unexpected(core::Error::Make(MapResultCode(rc), message));
    }
    return {};
}

Result<StatementLease> Db::Prepare(const std::string& sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end() && !it->second->leased()) {
        return StatementLease(it->second.get(), nullptr);
    }
    bool cache_it = it == cache_.end();
    sqlite3_stmt* raw = nullptr;
    unsigned prep_flags = cache_it ? SQLITE_PREPARE_PERSISTENT : 0;
    int rc = sqlite3_prepare_v3(db_, sql.c_str(), ClampLength(sql.size() + 1), prep_flags, &raw,
                                nullptr);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(raw);
        return tl::unexpected(ErrorFrom(rc, "prepare"));
    }
    auto stmt = std::make_unique<Statement>(db_, raw);
    if (!cache_it) {
        return StatementLease(nullptr, std::move(stmt));
    }
    Statement* cached = stmt.get();
    cache_.emplace(sql, std::move(stmt));
    return StatementLease(cached, nullptr);
}

int64_t Db::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

int Db::Changes() const { return sqlite3_changes(db_); }

core::Error Db::ErrorFrom(int rc, std::string_view context) const {
    std::string message = "sqlite ";
    message += context;
    message += ": ";
    message += sqlite3_errmsg(db_);
    return core::Error::Make(MapResultCode(rc), std::move(message));
}

// --- Transaction ---

Result<Transaction> Transaction::Begin(Db& db, Mode mode) {
    auto stmt = db.Prepare(mode == Mode::kImmediate ? "BEGIN IMMEDIATE" : "BEGIN");
    if (!stmt) {
        return tl::unexpected(std::move(stmt.error()));
    }
    if (auto r = (*stmt)->Run(); !r) {
        return tl::unexpected(std::move(r.error()));
    }
    return Transaction(db);
}

Transaction::~Transaction() {
    if (!active_) {
        return;
    }
    // Best effort: after some errors SQLite has already rolled back, and then this is a no-op
    // that fails harmlessly.
    if (sqlite3_get_autocommit(db_->handle()) == 0) {
        auto stmt = db_->Prepare("ROLLBACK");
        if (stmt) {
            (void)(*stmt)->Run();
        }
    }
}

Result<void> Transaction::Commit() {
    auto stmt = db_->Prepare("COMMIT");
    if (!stmt) {
        return tl::unexpected(std::move(stmt.error()));
    }
    auto r = (*stmt)->Run();
    if (!r) {
        return r;  // still active: the destructor rolls back
    }
    active_ = false;
    return {};
}

}  // namespace conduit::store::sqlite
