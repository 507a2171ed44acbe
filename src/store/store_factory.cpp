#include "store/store_factory.hpp"

#include "store/postgres/pg_conn.hpp"
#include "store/postgres/postgres_store.hpp"
#include "store/sqlite/sqlite_store.hpp"

#include <filesystem>
#include <string_view>

namespace conduit::store {

namespace {

std::string SqlitePath(const StoreTarget& target) {
    return (std::filesystem::path(target.data_dir) / "conduit.db").string();
}

bool IsPostgresUrl(std::string_view url) {
    return url.rfind("postgres://", 0) == 0 || url.rfind("postgresql://", 0) == 0;
}

}  // namespace

Result<std::unique_ptr<Store>> OpenStore(const StoreTarget& target) {
    if (target.database_url.empty()) {
        return OpenSqliteStore(SqlitePath(target));
    }
    if (IsPostgresUrl(target.database_url)) {
        return OpenPostgresStore(target.database_url);
    }
    auto colon = target.database_url.find("://");
    std::string scheme =
        colon == std::string::npos ? std::string() : target.database_url.substr(0, colon);
    return core::Fail(core::ErrorCode::kInvalidRequest,
                      "DATABASE_URL must be a postgres:// or postgresql:// URL" +
                          (scheme.empty() ? std::string(" (no scheme given)")
                                          : " (scheme '" + scheme + "' is not supported)") +
                          "; leave it unset for the embedded SQLite store");
}

std::string DescribeStoreTarget(const StoreTarget& target) {
    if (target.database_url.empty()) {
        return "sqlite " + SqlitePath(target);
    }
    return "postgresql " + pg::RedactUrl(target.database_url);
}

}  // namespace conduit::store
