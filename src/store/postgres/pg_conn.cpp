#include "store/postgres/pg_conn.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <poll.h>
#include <utility>

namespace conduit::store::pg {

using core::ErrorCode;

core::ErrorCode MapSqlState(std::string_view s) {
    if (s == "23505" || s == "23503") {
        return ErrorCode::kConflict;
    }
    if (s.size() != 5) {
        return ErrorCode::kInternal;
    }
    std::string_view cls = s.substr(0, 2);
    if (cls == "23" || cls == "22") {
        return ErrorCode::kInvalidRequest;
    }
    if (cls == "08" || cls == "53" || cls == "57" || cls == "40") {
        return ErrorCode::kUnavailable;
    }
    return ErrorCode::kInternal;
}

// --- Params ---

Params& Params::Int(int64_t v) {
    values_.push_back(std::to_string(v));
    null_.push_back(0);
    formats_.push_back(0);
    return *this;
}

Params& Params::Bool(bool v) {
    values_.emplace_back(v ? "t" : "f");
    null_.push_back(0);
    formats_.push_back(0);
    return *this;
}

Params& Params::Text(std::string_view v) {
    has_nul_ = has_nul_ || v.find('\0') != std::string_view::npos;
    values_.emplace_back(v);
    null_.push_back(0);
    formats_.push_back(0);
    return *this;
}

Params& Params::Bytes(std::string_view v) {
    values_.emplace_back(v);
    null_.push_back(0);
    formats_.push_back(1);
    return *this;
}

Params& Params::OptInt(const std::optional<int64_t>& v) { return v ? Int(*v) : Null(); }

Params& Params::OptText(const std::optional<std::string>& v) { return v ? Text(*v) : Null(); }

Params& Params::Null() {
    values_.emplace_back();
    null_.push_back(1);
    formats_.push_back(0);
    return *this;
}

// --- Rows ---

Rows::Rows(pg_result* res) : res_(res) {}

Rows::Rows(Rows&& other) noexcept : res_(std::exchange(other.res_, nullptr)) {}

Rows& Rows::operator=(Rows&& other) noexcept {
    if (this != &other) {
        if (res_ != nullptr) {
            PQclear(res_);
        }
        res_ = std::exchange(other.res_, nullptr);
    }
    return *this;
}

Rows::~Rows() {
    if (res_ != nullptr) {
        PQclear(res_);
    }
}

int Rows::size() const { return res_ != nullptr ? PQntuples(res_) : 0; }

int64_t Rows::Affected() const {
    if (res_ == nullptr) {
        return 0;
    }
    const char* n = PQcmdTuples(res_);
    int64_t v = 0;
    std::from_chars(n, n + std::strlen(n), v);
    return v;
}

bool Rows::IsNull(int row, int col) const { return PQgetisnull(res_, row, col) != 0; }

int64_t Rows::Int(int row, int col) const {
    const char* p = PQgetvalue(res_, row, col);
    int64_t v = 0;
    std::from_chars(p, p + PQgetlength(res_, row, col), v);
    return v;
}

bool Rows::Bool(int row, int col) const { return PQgetvalue(res_, row, col)[0] == 't'; }

std::string Rows::Text(int row, int col) const {
    return std::string(PQgetvalue(res_, row, col), PQgetlength(res_, row, col));
}

std::string Rows::Bytes(int row, int col) const {
    // bytea_output = hex: "\x" followed by two hex digits per byte.
    std::string_view hex(PQgetvalue(res_, row, col), PQgetlength(res_, row, col));
    if (hex.size() >= 2 && hex[0] == '\\' && hex[1] == 'x') {
        hex.remove_prefix(2);
    }
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return 0;
    };
    std::string out;
    out.reserve(hex.size() / 2);
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back(static_cast<char>((nibble(hex[i]) << 4) | nibble(hex[i + 1])));
    }
    return out;
}

std::optional<int64_t> Rows::OptInt(int row, int col) const {
    if (IsNull(row, col)) {
        return std::nullopt;
    }
    return Int(row, col);
}

std::optional<std::string> Rows::OptText(int row, int col) const {
    if (IsNull(row, col)) {
        return std::nullopt;
    }
    return Text(row, col);
}

// --- Conn ---

namespace {

/// Message of a failed connection attempt, first line only and without a trailing newline.
std::string ConnMessage(pg_conn* conn) {
    std::string m = conn != nullptr ? PQerrorMessage(conn) : "out of memory";
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) {
        m.pop_back();
    }
    // Several lines (e.g. "…failed: Connection refused\n\tIs the server running…") become one.
    std::string out;
    for (char ch : m) {
        if (ch == '\n') {
            out += "; ";
        } else if (ch != '\t') {
            out += ch;
        }
    }
    return out;
}

void LogNotice(void*, const char* message) {
    std::string_view m(message);
    while (!m.empty() && m.back() == '\n') {
        m.remove_suffix(1);
    }
    spdlog::debug("store: postgresql notice: {}", m);
}

bool IsReadOnlyOrBegin(const std::string& sql) {
    return sql.rfind("SELECT", 0) == 0 || sql.rfind("BEGIN", 0) == 0 ||
           sql.rfind("ROLLBACK", 0) == 0;
}

}  // namespace

Conn::Conn(pg_conn* conn) : conn_(conn) {}

Conn::~Conn() {
    if (conn_ != nullptr) {
        PQfinish(conn_);
    }
}

Result<std::unique_ptr<Conn>> Conn::Connect(const std::string& url) {
    // Defaults first: values expanded from the URL (dbname) override them. Keepalives notice a
    // server that vanished without closing the connection within about a minute.
    const char* keys[] = {"connect_timeout",
                          "fallback_application_name",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "dbname",
                          nullptr};
    const char* values[] = {"10", "conduit", "30", "10", "3", url.c_str(), nullptr};
    pg_conn* conn = PQconnectdbParams(keys, values, 1);
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
        std::string message = ConnMessage(conn);
        if (conn != nullptr) {
            PQfinish(conn);
        }
        return core::Fail(ErrorCode::kUnavailable,
                          fmt::format("postgresql: cannot connect: {}", message));
    }
    // Timestamps and money are integers; only the text encoding matters for strings.
    PQsetClientEncoding(conn, "UTF8");
    // Server notices (e.g. "drop cascades to …") go to the debug log, not to stderr.
    PQsetNoticeProcessor(conn, LogNotice, nullptr);
    return std::unique_ptr<Conn>(new Conn(conn));
}

core::Error Conn::LastError(pg_result* res, std::string_view context) const {
    const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    const char* primary =
        res != nullptr ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    ErrorCode code = ErrorCode::kInternal;
    std::string message;
    last_sqlstate_ = state != nullptr ? state : "";
    if (state != nullptr) {
        code = MapSqlState(state);
    }
    if (PQstatus(conn_) != CONNECTION_OK) {
        code = ErrorCode::kUnavailable;
    }
    if (primary != nullptr) {
        message = primary;
    } else {
        message = ConnMessage(conn_);
        if (message.empty()) {
            message = "no result";
        }
    }
    return core::Error::Make(code, fmt::format("postgresql {}: {}", context, message));
}

bool Conn::InTransaction() const {
    auto s = PQtransactionStatus(conn_);
    return s == PQTRANS_INTRANS || s == PQTRANS_INERROR || s == PQTRANS_ACTIVE;
}

void Conn::NoteSent(const std::string& sql) {
    if (sql.rfind("COMMIT", 0) == 0 ||
        (PQtransactionStatus(conn_) == PQTRANS_IDLE && !IsReadOnlyOrBegin(sql))) {
        unsafe_to_retry_ = true;
    }
}

bool Conn::Healthy() {
    if (poisoned_ || PQstatus(conn_) != CONNECTION_OK) {
        return false;
    }
    // An idle connection has nothing to read; if it does, the server said something (e.g. a
    // FATAL before closing it) or closed it: consume that, which marks a closed one bad.
    for (int i = 0; i < 3; ++i) {
        pollfd pfd{PQsocket(conn_), POLLIN, 0};
        if (pfd.fd < 0 || ::poll(&pfd, 1, 0) <= 0) {
            break;
        }
        if (PQconsumeInput(conn_) == 0) {
            return false;
        }
    }
    return PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

Result<void> Conn::Reset() {
    prepared_.clear();
    poisoned_ = false;
    PQreset(conn_);
    if (PQstatus(conn_) != CONNECTION_OK) {
        return core::Fail(ErrorCode::kUnavailable,
                          fmt::format("postgresql: cannot reconnect: {}", ConnMessage(conn_)));
    }
    PQsetClientEncoding(conn_, "UTF8");
    PQsetNoticeProcessor(conn_, LogNotice, nullptr);
    return {};
}

Result<std::string> Conn::StatementName(const std::string& sql) {
    if (auto it = prepared_.find(sql); it != prepared_.end()) {
        return it->second;
    }
    std::string name = fmt::format("s{}", next_statement_++);
    pg_result* res = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    if (res == nullptr || PQresultStatus(res) != PGRES_COMMAND_OK) {
        auto err = LastError(res, "prepare");
        PQclear(res);
        return tl::unexpected(std::move(err));
    }
    PQclear(res);
    prepared_.emplace(sql, name);
    return name;
}

Result<void> Conn::Prepare(const std::string& sql) {
    auto name = StatementName(sql);
    if (!name) {
        return tl::unexpected(std::move(name.error()));
    }
    return {};
}

namespace {

struct RawParams {
    std::vector<const char*> values;
    std::vector<int> lengths;
};

template <class P>
RawParams Raw(const P& values, const std::vector<char>& nulls) {
    RawParams raw;
    raw.values.reserve(values.size());
    raw.lengths.reserve(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
        raw.values.push_back(nulls[i] != 0 ? nullptr : values[i].data());
        raw.lengths.push_back(static_cast<int>(values[i].size()));
    }
    return raw;
}

}  // namespace

namespace {

core::Error NulError() {
    return core::Error::Make(ErrorCode::kInvalidRequest,
                             "postgresql query: text must not contain a NUL byte");
}

}  // namespace

Result<Rows> Conn::Exec(const std::string& sql, const Params& params) {
    if (params.has_nul()) {
        return tl::unexpected(NulError());
    }
    auto name = StatementName(sql);
    if (!name) {
        return tl::unexpected(std::move(name.error()));
    }
    NoteSent(sql);
    RawParams raw = Raw(params.values_, params.null_);
    pg_result* res = PQexecPrepared(conn_, name->c_str(), params.size(), raw.values.data(),
                                    raw.lengths.data(), params.formats_.data(), 0);
    auto status = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        auto err = LastError(res, "query");
        PQclear(res);
        return tl::unexpected(std::move(err));
    }
    return Rows(res);
}

Result<void> Conn::Simple(const std::string& sql) {
    NoteSent(sql);
    pg_result* res = PQexec(conn_, sql.c_str());
    auto status = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        auto err = LastError(res, "exec");
        PQclear(res);
        return tl::unexpected(std::move(err));
    }
    PQclear(res);
    return {};
}

Result<std::vector<Rows>> Conn::Pipeline(
    const std::vector<std::pair<const std::string*, Params>>& batch) {
    std::vector<Rows> out;
    out.reserve(batch.size());
    if (batch.empty()) {
        return out;
    }
    // Resolve every statement name first (prepares outside the pipeline).
    std::vector<std::string> names;
    names.reserve(batch.size());
    for (const auto& [sql, params] : batch) {
        if (params.has_nul()) {
            return tl::unexpected(NulError());
        }
        auto name = StatementName(*sql);
        if (!name) {
            return tl::unexpected(std::move(name.error()));
        }
        names.push_back(std::move(*name));
        NoteSent(*sql);
    }
    if (PQenterPipelineMode(conn_) != 1) {
        return tl::unexpected(LastError(nullptr, "pipeline"));
    }
    // Chunks keep what is in flight small, so neither side blocks on a full socket buffer while
    // the other waits (libpq is in blocking mode). A Sync inside an explicit transaction block
    // does not end it.
    constexpr size_t kChunk = 256;
    std::optional<core::Error> failure;
    for (size_t start = 0; start < batch.size() && !failure; start += kChunk) {
        size_t end = std::min(batch.size(), start + kChunk);
        for (size_t i = start; i < end; ++i) {
            const Params& p = batch[i].second;
            RawParams raw = Raw(p.values_, p.null_);
            if (PQsendQueryPrepared(conn_, names[i].c_str(), p.size(), raw.values.data(),
                                    raw.lengths.data(), p.formats_.data(), 0) != 1) {
                poisoned_ = true;
                return tl::unexpected(LastError(nullptr, "pipeline send"));
            }
        }
        if (PQpipelineSync(conn_) != 1) {
            poisoned_ = true;
            return tl::unexpected(LastError(nullptr, "pipeline sync"));
        }
        for (size_t i = start; i < end; ++i) {
            pg_result* res = PQgetResult(conn_);
            if (res == nullptr) {
                poisoned_ = true;
                return tl::unexpected(LastError(nullptr, "pipeline result"));
            }
            auto status = PQresultStatus(res);
            if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
                out.emplace_back(res);
            } else {
                if (!failure && status != PGRES_PIPELINE_ABORTED) {
                    failure = LastError(res, "query");
                }
                PQclear(res);
            }
            // Each statement's results end with a null.
            while ((res = PQgetResult(conn_)) != nullptr) {
                PQclear(res);
            }
        }
        pg_result* sync = PQgetResult(conn_);
        bool synced = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
        PQclear(sync);
        if (!synced) {
            poisoned_ = true;
            return tl::unexpected(failure ? *failure : LastError(nullptr, "pipeline sync"));
        }
    }
    if (PQexitPipelineMode(conn_) != 1) {
        poisoned_ = true;
        return tl::unexpected(failure ? *failure : LastError(nullptr, "pipeline exit"));
    }
    if (failure) {
        return tl::unexpected(std::move(*failure));
    }
    return out;
}

// --- Pool ---

Pool::Pool(std::string url, int max_size)
    : url_(std::move(url)), max_size_(std::max(1, max_size)) {}

Pool::~Pool() = default;

Pool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}

Pool::Lease::~Lease() {
    if (pool_ != nullptr) {
        pool_->Release(std::move(conn_));
    }
}

Result<Pool::Lease> Pool::Acquire() {
    std::unique_ptr<Conn> conn;
    {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !idle_.empty() || open_ < max_size_; });
        if (!idle_.empty()) {
            conn = std::move(idle_.back());
            idle_.pop_back();
        } else {
            ++open_;
        }
    }
    if (conn) {
        if (!conn->Healthy()) {
            // One reconnect attempt for a connection that broke while idle.
            if (auto r = conn->Reset(); !r) {
                Release(nullptr);
                return tl::unexpected(std::move(r.error()));
            }
        }
        return Lease(this, std::move(conn));
    }
    auto opened = Conn::Connect(url_);
    if (!opened) {
        Release(nullptr);
        return tl::unexpected(std::move(opened.error()));
    }
    return Lease(this, std::move(*opened));
}

void Pool::Release(std::unique_ptr<Conn> conn) {
    {
        std::lock_guard lock(mu_);
        if (conn && conn->Healthy()) {
            idle_.push_back(std::move(conn));
        } else {
            --open_;
        }
    }
    cv_.notify_one();
    // A dropped connection closes here, outside the lock.
}

// --- URL redaction ---

std::string RedactUrl(std::string_view url) {
    std::string out(url);
    // userinfo: scheme://user:password@host
    auto scheme = out.find("://");
    if (scheme != std::string::npos) {
        size_t start = scheme + 3;
        size_t end = out.find_first_of("/?#", start);
        if (end == std::string::npos) {
            end = out.size();
        }
        size_t at = out.rfind('@', end == 0 ? 0 : end - 1);
        if (at != std::string::npos && at >= start) {
            size_t colon = out.find(':', start);
            if (colon != std::string::npos && colon < at) {
                out.replace(colon + 1, at - colon - 1, "***");
            }
        }
    }
    // password=… as a query parameter or a key=value conninfo word.
    for (size_t pos = 0; (pos = out.find("password=", pos)) != std::string::npos;) {
        size_t value = pos + 9;
        size_t end = out.find_first_of("& ", value);
        if (end == std::string::npos) {
            end = out.size();
        }
        out.replace(value, end - value, "***");
        pos = value + 3;
    }
    return out;
}

}  // namespace conduit::store::pg
