#include "store/sqlite/sqlite_store.hpp"

#include "contract/store_contract.hpp"
#include "fakes/test_support.hpp"
#include "store/migrations/migrations.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace conduit::store {
namespace {

/// Contract traits: every test gets a fresh database file in its own temp directory.
struct SqliteTraits {
    conduit::testing::TempDir dir;

    std::unique_ptr<Store> Make() {
        auto opened = OpenSqliteStore((dir.path() / "conduit.db").string());
        if (!opened) {
            ADD_FAILURE() << "OpenSqliteStore: " << opened.error().message;
            return nullptr;
        }
        return std::move(*opened);
    }
};

}  // namespace

namespace contract {
INSTANTIATE_TYPED_TEST_SUITE_P(Sqlite, StoreContract, SqliteTraits);
}  // namespace contract

namespace {

/// A second, raw connection to inspect the file behind the adapter's back.
class RawDb {
public:
    explicit RawDb(const std::filesystem::path& path) {
        int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr);
        EXPECT_EQ(rc, SQLITE_OK) << path;
    }
    ~RawDb() { sqlite3_close_v2(db_); }
    RawDb(const RawDb&) = delete;
    RawDb& operator=(const RawDb&) = delete;

    /// First column of every row of `sql`, as text.
    std::vector<std::string> Column(const std::string& sql) {
        std::vector<std::string> out;
        sqlite3_stmt* stmt = nullptr;
        int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr);
        EXPECT_EQ(rc, SQLITE_OK) << sqlite3_errmsg(db_);
        while (rc == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
            const auto* text = sqlite3_column_text(stmt, 0);
            out.emplace_back(text != nullptr ? reinterpret_cast<const char*>(text) : "");
        }
        sqlite3_finalize(stmt);
        return out;
    }

    int Exec(const std::string& sql) {
        return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    }

private:
    sqlite3* db_ = nullptr;
};

std::unique_ptr<Store> MustOpen(const std::filesystem::path& path,
                                const SqliteOptions& options = {}) {
    auto opened = OpenSqliteStore(path.string(), options);
    if (!opened) {
        ADD_FAILURE() << opened.error().message;
        return nullptr;
    }
    return std::move(*opened);
}

int LatestVersion() { return migrations::SqliteMigrations().back().version; }

TEST(SqliteMigrations, AreNumberedOneToNInOrder) {
    auto steps = migrations::SqliteMigrations();
    ASSERT_FALSE(steps.empty());
    for (size_t i = 0; i < steps.size(); ++i) {
        EXPECT_EQ(steps[i].version, static_cast<int>(i + 1));
        EXPECT_FALSE(steps[i].name.empty());
        EXPECT_FALSE(steps[i].sql.empty());
    }
    EXPECT_EQ(steps[0].name, "0001_init");
    ASSERT_GE(steps.size(), 2u);
    EXPECT_EQ(steps[1].name, "0002_tasks_webhooks");
}

TEST(SqliteStore, CreatesFileAndParentDirectoriesOnFirstStart) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "nested" / "deeper" / "conduit.db";
    ASSERT_FALSE(std::filesystem::exists(path));
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    EXPECT_TRUE(std::filesystem::exists(path));
    EXPECT_EQ(store->Engine(), "sqlite");
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), 0);  // nothing applied before Migrate()
    STORE_OK(store->Migrate());
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), LatestVersion());
}

TEST(SqliteStore, UsesWalJournalMode) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    STORE_OK(store->PutSetting("k", "v"));
    // journal_mode=WAL is persistent: another connection sees it, and the -wal file exists.
    RawDb raw(path);
    EXPECT_EQ(raw.Column("PRAGMA journal_mode"), std::vector<std::string>{"wal"});
    EXPECT_TRUE(std::filesystem::exists(path.string() + "-wal"));
}

TEST(SqliteStore, RecordsEachMigrationOnce) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    RawDb raw(path);
    std::vector<std::string> versions;
    for (int v = 1; v <= LatestVersion(); ++v) {
        versions.push_back(std::to_string(v));
    }
    EXPECT_EQ(raw.Column("SELECT version FROM schema_migrations ORDER BY version"), versions);
    EXPECT_EQ(raw.Column("SELECT name FROM schema_migrations WHERE version = 1"),
              std::vector<std::string>{"0001_init"});
    auto applied_at = raw.Column("SELECT applied_at_ms FROM schema_migrations");
    ASSERT_FALSE(applied_at.empty());
    EXPECT_GT(std::stoll(applied_at[0]), 1'600'000'000'000LL);

    STORE_OK(store->Migrate());
    EXPECT_EQ(raw.Column("SELECT version FROM schema_migrations ORDER BY version"), versions);
    EXPECT_EQ(raw.Column("SELECT applied_at_ms FROM schema_migrations"), applied_at);
}

TEST(SqliteStore, ReopeningKeepsDataAndDoesNotReapplyMigrations) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    Id group_id = 0;
    std::vector<std::string> applied_at;
    {
        auto store = MustOpen(path);
        ASSERT_TRUE(store);
        STORE_OK(store->Migrate());
        group_id =
            STORE_OK(store->CreateGroup(contract::NewGroup("persisted", 4'200'000), "admin")).id;
        STORE_OK(store->PutSetting("instance", "one"));
        RawDb raw(path);
        applied_at = raw.Column("SELECT applied_at_ms FROM schema_migrations ORDER BY version");
    }
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), LatestVersion());  // before Migrate, too
    STORE_OK(store->Migrate());
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), LatestVersion());
    auto g = STORE_OK(store->GetGroup(group_id));
    ASSERT_TRUE(g);
    EXPECT_EQ(g->group_name, "persisted");
    EXPECT_EQ(g->balance, 4'200'000);
    EXPECT_EQ(STORE_OK(store->ListTransactions(group_id, 10, 0)).size(), 1u);
    EXPECT_EQ(STORE_OK(store->GetSetting("instance")), std::optional<std::string>("one"));
    RawDb raw(path);
    EXPECT_EQ(raw.Column("SELECT applied_at_ms FROM schema_migrations ORDER BY version"),
              applied_at);
}

TEST(SqliteStore, RefusesSchemaNewerThanTheBinary) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    {
        RawDb raw(path);
        ASSERT_EQ(raw.Exec("INSERT INTO schema_migrations VALUES (999, '0999_future', 1)"),
                  SQLITE_OK);
    }
    auto r = store->Migrate();
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("newer"), std::string::npos) << r.error().message;
}

TEST(SqliteStore, LockedDatabaseIsUnavailable) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    SqliteOptions options;
    options.busy_timeout_ms = 50;
    auto store = MustOpen(path, options);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    Id gid = STORE_OK(store->CreateGroup(contract::NewGroup("g", 100), "admin")).id;

    RawDb raw(path);
    ASSERT_EQ(raw.Exec("BEGIN IMMEDIATE"), SQLITE_OK);  // another writer holds the lock
    STORE_EXPECT_ERROR(store->AdjustBalance(gid, 5, domain::TransactionType::kCredit,
                                            domain::ReferenceType::kManual, "", "", "a", 1),
                       core::ErrorCode::kUnavailable);
    STORE_EXPECT_ERROR(store->ApplySpend({{gid, 1, 1, "x"}}, {}, 1), core::ErrorCode::kUnavailable);
    STORE_EXPECT_ERROR(store->PutSetting("k", "v"), core::ErrorCode::kUnavailable);
    // Readers are not blocked by a WAL writer.
    EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, 100);
    STORE_OK(store->Ping());
    ASSERT_EQ(raw.Exec("ROLLBACK"), SQLITE_OK);

    // Once the lock is gone everything works again.
    EXPECT_TRUE(STORE_OK(store->AdjustBalance(gid, 5, domain::TransactionType::kCredit,
                                              domain::ReferenceType::kManual, "", "", "a", 1)));
    EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, 105);
}

TEST(SqliteStore, UnopenablePathIsUnavailable) {
    conduit::testing::TempDir dir;
    // The "file" is a directory.
    auto opened = OpenSqliteStore(dir.path().string());
    if (opened) {
        // Some SQLite builds open lazily; the first statement must fail then.
        auto r = (*opened)->Ping();
        ASSERT_FALSE(r.has_value());
        EXPECT_EQ(r.error().code, core::ErrorCode::kUnavailable);
    } else {
        EXPECT_EQ(opened.error().code, core::ErrorCode::kUnavailable);
    }
    EXPECT_FALSE(OpenSqliteStore("").has_value());
}

TEST(SqliteStore, InMemoryDatabaseWorks) {
    auto opened = OpenSqliteStore(":memory:");
    ASSERT_TRUE(opened.has_value()) << opened.error().message;
    auto& store = **opened;
    STORE_OK(store.Migrate());
    auto g = STORE_OK(store.CreateGroup(contract::NewGroup("mem", 1), "a"));
    EXPECT_EQ(STORE_OK(store.GetGroup(g.id))->group_name, "mem");
}

TEST(SqliteStore, SchemaUsesStrictTablesAndForeignKeys) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    RawDb raw(path);
    // Every application table is STRICT.
    auto non_strict = raw.Column(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
        "AND strict = 0 AND name NOT LIKE 'sqlite_%'");
    EXPECT_TRUE(non_strict.empty()) << non_strict.front();
    // A money column refuses a float.
    ASSERT_EQ(raw.Exec("PRAGMA foreign_keys = ON"), SQLITE_OK);
    EXPECT_NE(raw.Exec("INSERT INTO virtual_key_groups (group_name, balance, created_at_ms, "
                       "updated_at_ms) VALUES ('x', 1.5, 0, 0)"),
              SQLITE_OK);
    auto fks = raw.Column("SELECT \"table\" FROM pragma_foreign_key_list('virtual_keys')");
    EXPECT_EQ(fks, std::vector<std::string>{"virtual_key_groups"});
}

TEST(SqliteStore, TaskAndWebhookSchema) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    RawDb raw(path);
    auto indexes = raw.Column(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
        "('async_tasks', 'webhook_secrets', 'webhook_deliveries') ORDER BY name");
    EXPECT_EQ(indexes, (std::vector<std::string>{
                           "async_tasks_by_key", "async_tasks_by_state", "async_tasks_by_time",
                           "async_tasks_idempotency", "async_tasks_open",
                           "webhook_deliveries_by_key", "webhook_deliveries_by_status",
                           "webhook_deliveries_by_task", "webhook_deliveries_by_time"}));
    // A secret belongs to its key; tasks and deliveries are history and outlive it.
    EXPECT_EQ(raw.Column("SELECT \"table\" || ':' || on_delete "
                         "FROM pragma_foreign_key_list('webhook_secrets')"),
              std::vector<std::string>{"virtual_keys:CASCADE"});
    EXPECT_TRUE(raw.Column("SELECT \"table\" FROM pragma_foreign_key_list('async_tasks')").empty());
    EXPECT_TRUE(
        raw.Column("SELECT \"table\" FROM pragma_foreign_key_list('webhook_deliveries')").empty());
    // The state is stored as its API string.
    auto t = contract::NewPendingTask("task_s", 1, contract::kT0);
    t.state = domain::TaskState::kTimedOut;
    STORE_OK(store->CreateTask(t));
    EXPECT_EQ(raw.Column("SELECT state FROM async_tasks"), std::vector<std::string>{"timedout"});
    EXPECT_NE(raw.Exec("UPDATE async_tasks SET state = 'timed_out'"), SQLITE_OK);
}

TEST(SqliteStore, UpgradeFromVersionOneAddsTaskTablesAndKeepsData) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    Id group_id = 0;
    {
        auto store = MustOpen(path);
        ASSERT_TRUE(store);
        STORE_OK(store->Migrate());
        group_id = STORE_OK(store->CreateGroup(contract::NewGroup("old", 7), "admin")).id;
    }
    {
        // Turn the file back into a version-1 database.
        RawDb raw(path);
        ASSERT_EQ(
            raw.Exec("DROP TABLE webhook_deliveries; DROP TABLE webhook_secrets; "
                     "DROP TABLE async_tasks; ALTER TABLE virtual_keys DROP COLUMN rate_limit_tpm; "
                     "ALTER TABLE virtual_keys DROP COLUMN max_budget; "
                     "ALTER TABLE virtual_keys DROP COLUMN budget_duration; "
                     "DELETE FROM schema_migrations WHERE version >= 2"),
            SQLITE_OK);
    }
    auto store = MustOpen(path);
    ASSERT_TRUE(store);
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), 1);
    STORE_OK(store->Migrate());
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), LatestVersion());
    EXPECT_EQ(STORE_OK(store->GetGroup(group_id))->balance, 7);
    EXPECT_TRUE(
        STORE_OK(store->CreateTask(contract::NewPendingTask("task_new", 1, contract::kT0))).second);
    RawDb raw(path);
    EXPECT_EQ(raw.Column("SELECT name FROM schema_migrations WHERE version = 2"),
              std::vector<std::string>{"0002_tasks_webhooks"});
}

TEST(SqliteStore, IdempotentCreateIsAtomicAcrossConnections) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    auto first = MustOpen(path);
    ASSERT_TRUE(first);
    STORE_OK(first->Migrate());
    auto second = MustOpen(path);
    ASSERT_TRUE(second);

    // Two connections (as two instances would) submit the same 100 Idempotency-Keys at once.
    constexpr int kKeys = 100;
    using Outcome = std::vector<std::pair<std::string, bool>>;
    auto submit = [&](Store* store, std::string prefix, Outcome* out) {
        for (int k = 0; k < kKeys; ++k) {
            auto t = contract::NewPendingTask(contract::Num(prefix, k), 1, contract::kT0 + k);
            t.idempotency_key = contract::Num("key-", k);
            auto r = store->CreateTask(t);
            if (!r) {
                ADD_FAILURE() << r.error().message;
                out->emplace_back("", false);
                continue;
            }
            out->emplace_back(r->first.id, r->second);
        }
    };
    Outcome a;
    Outcome b;
    std::thread ta(submit, first.get(), "task_a", &a);
    std::thread tb(submit, second.get(), "task_b", &b);
    ta.join();
    tb.join();
    ASSERT_EQ(a.size(), static_cast<size_t>(kKeys));
    ASSERT_EQ(b.size(), static_cast<size_t>(kKeys));
    std::set<std::string> ids;
    for (int k = 0; k < kKeys; ++k) {
        EXPECT_EQ(a[k].first, b[k].first) << "key " << k;
        EXPECT_NE(a[k].second, b[k].second) << "key " << k;  // exactly one created it
        ids.insert(a[k].first);
    }
    EXPECT_EQ(ids.size(), static_cast<size_t>(kKeys));
    RawDb raw(path);
    EXPECT_EQ(raw.Column("SELECT COUNT(*) FROM async_tasks"),
              std::vector<std::string>{std::to_string(kKeys)});
}

TEST(SqliteStore, TaskAndWebhookWritesAreUnavailableWhileLocked) {
    conduit::testing::TempDir dir;
    auto path = dir.path() / "conduit.db";
    SqliteOptions options;
    options.busy_timeout_ms = 50;
    auto store = MustOpen(path, options);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    Id gid = STORE_OK(store->CreateGroup(contract::NewGroup("g"), "admin")).id;
    Id kid = STORE_OK(store->CreateKey(contract::NewKey(gid, 1))).id;
    auto task = STORE_OK(store->CreateTask(contract::NewPendingTask("task_l", kid, 1))).first;
    auto delivery = contract::NewDelivery("msg_l", "task_l", kid, "pending", 1);
    STORE_OK(store->UpsertWebhookDeliveries({delivery}));
    WebhookSecret secret;
    secret.virtual_key_id = kid;
    secret.secret_sealed = "v1:x";

    RawDb raw(path);
    ASSERT_EQ(raw.Exec("BEGIN IMMEDIATE"), SQLITE_OK);  // another writer holds the lock
    STORE_EXPECT_ERROR(store->CreateTask(contract::NewPendingTask("task_m", kid, 2)),
                       core::ErrorCode::kUnavailable);
    domain::AsyncTask moved = task;
    moved.state = domain::TaskState::kRunning;
    STORE_EXPECT_ERROR(store->UpdateTask(moved), core::ErrorCode::kUnavailable);
    delivery.status = "delivered";
    STORE_EXPECT_ERROR(store->UpsertWebhookDeliveries({delivery}), core::ErrorCode::kUnavailable);
    STORE_EXPECT_ERROR(store->PutWebhookSecret(secret), core::ErrorCode::kUnavailable);
    // Readers are not blocked by a WAL writer.
    EXPECT_TRUE(STORE_OK(store->GetTask("task_l")).has_value());
    EXPECT_EQ(STORE_OK(store->ListTasks({})).size(), 1u);
    EXPECT_EQ(STORE_OK(store->GetWebhookDelivery("msg_l"))->status, "pending");
    ASSERT_EQ(raw.Exec("ROLLBACK"), SQLITE_OK);

    EXPECT_EQ(STORE_OK(store->UpdateTask(moved))->version, 1);
    STORE_OK(store->UpsertWebhookDeliveries({delivery}));
    EXPECT_EQ(STORE_OK(store->GetWebhookDelivery("msg_l"))->status, "delivered");
    STORE_OK(store->PutWebhookSecret(secret));
}

}  // namespace
}  // namespace conduit::store
