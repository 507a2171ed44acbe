// The Store contract suite against PostgreSQL, plus PostgreSQL-specific tests (concurrent
// migrations, an unreachable server, a connection killed under the adapter, the pool) and the
// store factory. The PostgreSQL tests need CONDUIT_TEST_PG (e.g. from
// `scripts/engines.sh start postgres`); without it they report themselves skipped. Every test
// works in a fresh schema of that database, dropped afterwards.

#include "store/postgres/postgres_store.hpp"

#include "contract/store_contract.hpp"
#include "fakes/test_support.hpp"
#include "store/migrations/migrations.hpp"
#include "store/postgres/pg_conn.hpp"
#include "store/store_factory.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace conduit::store {
namespace {

constexpr const char* kSkipMessage =
    "CONDUIT_TEST_PG is unset: PostgreSQL store tests skipped (run `scripts/engines.sh start "
    "postgres` and export what it prints)";

std::string TestUrl() {
    const char* url = std::getenv("CONDUIT_TEST_PG");
    return url != nullptr ? url : "";
}

/// `url` with one more query parameter.
std::string WithParam(const std::string& url, const std::string& param) {
    return url + (url.find('?') == std::string::npos ? "?" : "&") + param;
}

/// A fresh schema in the test database, dropped on destruction; the URL selects it (search_path)
/// and names the connections after it (application_name), so a test can find its backends.
class Schema {
public:
    Schema() {
        base_ = TestUrl();
        if (base_.empty()) {
            return;
        }
        static std::atomic<int> counter{0};
        name_ = "conduit_t" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
        auto admin = pg::Conn::Connect(base_);
        if (!admin) {
            ADD_FAILURE() << admin.error().message;
            name_.clear();
            return;
        }
        admin_ = std::move(*admin);
        Exec("DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
        Exec("CREATE SCHEMA " + name_);
    }
    ~Schema() {
        if (admin_) {
            Exec("DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
        }
    }
    Schema(const Schema&) = delete;
    Schema& operator=(const Schema&) = delete;

    bool ok() const { return admin_ != nullptr; }
    const std::string& name() const { return name_; }
    std::string url() const {
        return WithParam(WithParam(base_, "options=-csearch_path%3D" + name_),
                         "application_name=" + name_);
    }

    /// Runs `sql` on the admin connection (not in the schema).
    void Exec(const std::string& sql) {
        auto r = admin_->Simple(sql);
        EXPECT_TRUE(r.has_value()) << sql << ": " << r.error().message;
    }
    /// First column of every row of `sql` (run in this schema), as text.
    std::vector<std::string> Column(const std::string& sql) {
        std::vector<std::string> out;
        if (auto r = admin_->Simple("SET search_path TO " + name_); !r) {
            ADD_FAILURE() << r.error().message;
            return out;
        }
        auto rows = admin_->Exec(sql);
        (void)admin_->Simple("RESET search_path");
        if (!rows) {
            ADD_FAILURE() << sql << ": " << rows.error().message;
            return out;
        }
        for (int i = 0; i < rows->size(); ++i) {
            out.push_back(rows->Text(i, 0));
        }
        return out;
    }
    /// Backend pids of the connections of stores opened on url().
    std::vector<std::string> Backends() {
        return Column("SELECT pid::text FROM pg_stat_activity WHERE application_name = '" + name_ +
                      "' ORDER BY pid");
    }

private:
    std::string base_;
    std::string name_;
    std::unique_ptr<pg::Conn> admin_;
};

std::unique_ptr<Store> MustOpen(const std::string& url, const PostgresOptions& options = {}) {
    auto opened = OpenPostgresStore(url, options);
    if (!opened) {
        ADD_FAILURE() << "OpenPostgresStore: " << opened.error().message;
        return nullptr;
    }
    return std::move(*opened);
}

/// Contract traits: every test gets a fresh schema.
struct PostgresTraits {
    Schema schema;

    std::unique_ptr<Store> Make() {
        if (TestUrl().empty()) {
            static bool said = false;
            if (!said) {
                std::fprintf(stderr, "%s\n", kSkipMessage);
                said = true;
            }
            return nullptr;
        }
        if (!schema.ok()) {
            return nullptr;
        }
        return MustOpen(schema.url());
    }
};

}  // namespace

namespace contract {
INSTANTIATE_TYPED_TEST_SUITE_P(Postgres, StoreContract, PostgresTraits);
}  // namespace contract

namespace {

#define REQUIRE_PG()                  \
    if (TestUrl().empty()) {          \
        GTEST_SKIP() << kSkipMessage; \
    }

int LatestVersion() { return migrations::PostgresMigrations().back().version; }

/// Waits up to `ms` for `pred`, polling every 20 ms.
template <class Pred>
bool WaitFor(Pred pred, int ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

TEST(PostgresMigrations, MirrorTheSqliteSteps) {
    auto pg = migrations::PostgresMigrations();
    auto lite = migrations::SqliteMigrations();
    ASSERT_EQ(pg.size(), lite.size());
    for (size_t i = 0; i < pg.size(); ++i) {
        EXPECT_EQ(pg[i].version, static_cast<int>(i + 1));
        EXPECT_EQ(pg[i].name, lite[i].name);
        EXPECT_FALSE(pg[i].sql.empty());
    }
}

TEST(PostgresStore, RecordsEachMigrationOnceAndUsesExactIntegerTypes) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    auto store = MustOpen(schema.url());
    ASSERT_TRUE(store);
    EXPECT_EQ(store->Engine(), "postgresql");
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), 0);  // nothing applied before Migrate()
    STORE_OK(store->Migrate());
    EXPECT_EQ(STORE_OK(store->SchemaVersion()), LatestVersion());
    EXPECT_EQ(schema.Column("SELECT name FROM schema_migrations ORDER BY version"),
              (std::vector<std::string>{"0001_init", "0002_tasks_webhooks", "0003_key_budgets"}));
    auto applied_at = schema.Column("SELECT applied_at_ms FROM schema_migrations ORDER BY version");
    STORE_OK(store->Migrate());
    EXPECT_EQ(schema.Column("SELECT applied_at_ms FROM schema_migrations ORDER BY version"),
              applied_at);
    // Money is an exact 64-bit integer, never a float or numeric.
    const std::string money_types =
        "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = '" +
        schema.name() +
        "' AND column_name IN ('balance', 'lifetime_spent', 'lifetime_credits_added', "
        "'amount', 'balance_after', 'cost', 'input_per_million', 'output_per_million')";
    EXPECT_EQ(schema.Column(money_types), std::vector<std::string>{"bigint"});
    // Exact at the edge of the range.
    auto g = STORE_OK(store->CreateGroup(contract::NewGroup("max", INT64_MAX - 1), "a"));
    EXPECT_EQ(STORE_OK(store->GetGroup(g.id))->balance, INT64_MAX - 1);
}

TEST(PostgresStore, ConcurrentMigrateAppliesEachStepOnce) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    constexpr int kInstances = 4;
    std::vector<std::unique_ptr<Store>> stores;
    for (int i = 0; i < kInstances; ++i) {
        stores.push_back(MustOpen(schema.url()));
        ASSERT_TRUE(stores.back());
    }
    // Every "instance" starts migrating at once.
    std::atomic<int> ready{0};
    std::vector<Result<void>> results(kInstances);
    std::vector<std::thread> threads;
    for (int i = 0; i < kInstances; ++i) {
        threads.emplace_back([&, i] {
            ++ready;
            while (ready.load() < kInstances) {
                std::this_thread::yield();
            }
            results[i] = stores[i]->Migrate();
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    for (int i = 0; i < kInstances; ++i) {
        EXPECT_TRUE(results[i].has_value()) << results[i].error().message;
        EXPECT_EQ(STORE_OK(stores[i]->SchemaVersion()), LatestVersion());
    }
    EXPECT_EQ(schema.Column("SELECT version::text FROM schema_migrations ORDER BY version"),
              (std::vector<std::string>{"1", "2", "3"}));
    EXPECT_EQ(schema.Column("SELECT COUNT(*)::text FROM pg_tables WHERE schemaname = '" +
                            schema.name() + "' AND tablename = 'async_tasks'"),
              std::vector<std::string>{"1"});
}

TEST(PostgresStore, RefusesSchemaNewerThanTheBinary) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    auto store = MustOpen(schema.url());
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    schema.Exec("INSERT INTO " + schema.name() +
                ".schema_migrations VALUES (999, '0999_future', 1)");
    auto r = store->Migrate();
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("newer"), std::string::npos) << r.error().message;
    // The advisory lock was released: another instance is not stuck behind it.
    auto other = MustOpen(schema.url());
    ASSERT_TRUE(other);
    EXPECT_FALSE(other->Migrate().has_value());
}

TEST(PostgresStore, UnreachableServerIsUnavailableAndThePasswordStaysSecret) {
    // Nothing listens on port 1; no server is needed for this test.
    auto r =
        OpenPostgresStore("postgresql://conduit:s3cr3t-pw@127.0.0.1:1/conduit?connect_timeout=5");
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, core::ErrorCode::kUnavailable) << r.error().message;
    EXPECT_EQ(r.error().message.find("s3cr3t-pw"), std::string::npos) << r.error().message;
}

TEST(PostgresStore, WrongCredentialsOrDatabaseAreUnavailable) {
    REQUIRE_PG();
    auto r = OpenPostgresStore(WithParam(TestUrl(), "dbname=conduit_no_such_database"));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, core::ErrorCode::kUnavailable);
    EXPECT_NE(r.error().message.find("conduit_no_such_database"), std::string::npos)
        << r.error().message;
}

TEST(PostgresStore, KilledConnectionIsReplacedOnTheNextCall) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    PostgresOptions options;
    options.pool_max = 1;  // one connection: the next call must use the killed one's slot
    auto store = MustOpen(schema.url(), options);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    Id gid = STORE_OK(store->CreateGroup(contract::NewGroup("survivor", 10), "a")).id;
    auto before = schema.Backends();
    ASSERT_EQ(before.size(), 1u);

    for (int round = 0; round < 2; ++round) {
        auto victims = schema.Backends();
        ASSERT_EQ(victims.size(), 1u);
        schema.Column("SELECT pg_terminate_backend(" + victims[0] + ")");
        ASSERT_TRUE(WaitFor([&] { return schema.Backends().empty(); }))
            << "backend " << victims[0] << " did not exit";
        if (round == 0) {
            // A read reconnects transparently.
            EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, 10);
        } else {
            // So does a write that starts a transaction (nothing was sent before the loss).
            EXPECT_TRUE(STORE_OK(store->AdjustBalance(gid, 5, domain::TransactionType::kCredit,
                                                      domain::ReferenceType::kManual, "", "", "a",
                                                      contract::kT0)));
        }
        auto after = schema.Backends();
        ASSERT_EQ(after.size(), 1u);
        EXPECT_NE(after[0], victims[0]);
    }
    EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, 15);
    STORE_OK(store->Ping());
}

TEST(PostgresStore, PoolRunsCallsConcurrentlyWithinItsBound) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    PostgresOptions options;
    options.pool_max = 3;
    auto store = MustOpen(schema.url(), options);
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    Id gid = STORE_OK(store->CreateGroup(contract::NewGroup("shared", 0), "a")).id;

    constexpr int kThreads = 6;
    constexpr int kEach = 50;
    std::atomic<int> failures{0};
    std::atomic<size_t> most_backends{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                auto r = store->AdjustBalance(gid, t + 1, domain::TransactionType::kCredit,
                                              domain::ReferenceType::kManual, "", "", "a", i);
                if (!r || !*r) {
                    ++failures;
                }
                if (t == 0 && i % 10 == 0) {
                    size_t n = schema.Backends().size();
                    size_t seen = most_backends.load();
                    while (n > seen && !most_backends.compare_exchange_weak(seen, n)) {
                    }
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    EXPECT_EQ(failures.load(), 0);
    // Exact: every credit applied once, whatever the interleaving.
    int64_t expected = 0;
    for (int t = 0; t < kThreads; ++t) {
        expected += static_cast<int64_t>(t + 1) * kEach;
    }
    EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, expected);
    EXPECT_EQ(STORE_OK(store->ListTransactions(gid, 1000, 0)).size(),
              static_cast<size_t>(kThreads * kEach));
    EXPECT_LE(most_backends.load(), 3u);
    EXPECT_LE(schema.Backends().size(), 3u);
}

TEST(PostgresStore, IdempotentCreateIsAtomicAcrossInstances) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    auto first = MustOpen(schema.url());
    ASSERT_TRUE(first);
    STORE_OK(first->Migrate());
    auto second = MustOpen(schema.url());
    ASSERT_TRUE(second);

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
    EXPECT_EQ(schema.Column("SELECT COUNT(*)::text FROM async_tasks"),
              std::vector<std::string>{std::to_string(kKeys)});
}

TEST(PostgresStore, LargeSpendBatchIsPipelinedAllOrNothing) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    auto store = MustOpen(schema.url());
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    Id gid = STORE_OK(store->CreateGroup(contract::NewGroup("big", 1'000'000), "a")).id;
    std::vector<domain::RequestLogRow> logs;
    for (int i = 0; i < 1500; ++i) {  // several pipeline chunks
        logs.push_back(contract::NewLog(contract::Num("req-", i), 1, gid, contract::kT0 + i));
    }
    // A debit of a missing group last: nothing of the batch is kept.
    STORE_EXPECT_ERROR(
        store->ApplySpend({{gid, 7, 1, "ok"}, {gid + 99, 1, 1, "missing"}}, logs, contract::kT0),
        core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, 1'000'000);
    EXPECT_EQ(schema.Column("SELECT COUNT(*)::text FROM request_logs"),
              std::vector<std::string>{"0"});
    // A failing log row in the last chunk (invalid UTF-8) also undoes it all.
    auto bad = logs;
    bad.back().client_ip = std::string("1.2.3.4\xff", 8);
    STORE_EXPECT_ERROR(store->ApplySpend({{gid, 7, 1, "ok"}}, bad, contract::kT0),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, 1'000'000);
    // The connection is usable afterwards, and the whole batch goes through.
    STORE_OK(store->ApplySpend({{gid, 7, 1, "ok"}}, logs, contract::kT0));
    EXPECT_EQ(STORE_OK(store->GetGroup(gid))->balance, 1'000'000 - 7);
    EXPECT_EQ(schema.Column("SELECT COUNT(*)::text FROM request_logs"),
              std::vector<std::string>{"1500"});
}

TEST(PostgresStore, TextWithANulByteIsRefusedNotCut) {
    REQUIRE_PG();
    Schema schema;
    ASSERT_TRUE(schema.ok());
    auto store = MustOpen(schema.url());
    ASSERT_TRUE(store);
    STORE_OK(store->Migrate());
    STORE_EXPECT_ERROR(store->PutSetting("k", std::string("before\0after", 12)),
                       core::ErrorCode::kInvalidRequest);
    EXPECT_FALSE(STORE_OK(store->GetSetting("k")).has_value());
    auto d = contract::NewDelivery("msg_nul", "task_nul", 1, "pending", contract::kT0);
    d.payload = std::string("{\0}", 3);
    STORE_EXPECT_ERROR(store->UpsertWebhookDeliveries({d}), core::ErrorCode::kInvalidRequest);
    EXPECT_FALSE(STORE_OK(store->GetWebhookDelivery("msg_nul")).has_value());
    // The store stays usable (sealed secrets, stored as bytea, may hold any byte: see the
    // contract suite).
    STORE_OK(store->PutSetting("k", "fine"));
    EXPECT_EQ(STORE_OK(store->GetSetting("k")), std::optional<std::string>("fine"));
}

TEST(PostgresStore, PoolSizeFromTheUrl) {
    REQUIRE_PG();
    auto bad = OpenPostgresStore(WithParam(TestUrl(), "pool_max_conns=0"));
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code, core::ErrorCode::kInvalidRequest);
    STORE_EXPECT_ERROR(OpenPostgresStore(WithParam(TestUrl(), "pool_max_conns=x")),
                       core::ErrorCode::kInvalidRequest);
    auto good = OpenPostgresStore(WithParam(TestUrl(), "pool_max_conns=2"));
    ASSERT_TRUE(good.has_value()) << good.error().message;
    STORE_OK((*good)->Ping());
}

// --- The factory (no server needed) ---

TEST(StoreFactory, EmptyUrlOpensSqliteInTheDataDirectory) {
    conduit::testing::TempDir dir;
    StoreTarget target{"", dir.path().string()};
    auto store = OpenStore(target);
    ASSERT_TRUE(store.has_value()) << store.error().message;
    EXPECT_EQ((*store)->Engine(), "sqlite");
    EXPECT_TRUE(std::filesystem::exists(dir.path() / "conduit.db"));
    EXPECT_EQ(DescribeStoreTarget(target), "sqlite " + (dir.path() / "conduit.db").string());
}

TEST(StoreFactory, OtherSchemesAreRefusedWithoutEchoingTheUrl) {
    for (std::string url :
         {"mysql://root:hunter2@db/conduit", "sqlite:///tmp/x.db", "hunter2@localhost"}) {
        auto r = OpenStore({url, "/nonexistent"});
        ASSERT_FALSE(r.has_value()) << url;
        EXPECT_EQ(r.error().code, core::ErrorCode::kInvalidRequest);
        EXPECT_NE(r.error().message.find("postgres://"), std::string::npos) << r.error().message;
        EXPECT_EQ(r.error().message.find("hunter2"), std::string::npos) << r.error().message;
    }
}

TEST(StoreFactory, PostgresUrlOpensPostgres) {
    REQUIRE_PG();
    auto store = OpenStore({TestUrl(), "/nonexistent"});
    ASSERT_TRUE(store.has_value()) << store.error().message;
    EXPECT_EQ((*store)->Engine(), "postgresql");
    STORE_OK((*store)->Ping());
    // postgres:// is accepted as well as postgresql://.
    std::string url = TestUrl();
    if (url.rfind("postgresql://", 0) == 0) {
        url = "postgres://" + url.substr(13);
    }
    auto alias = OpenStore({url, "/nonexistent"});
    ASSERT_TRUE(alias.has_value()) << alias.error().message;
    EXPECT_EQ((*alias)->Engine(), "postgresql");
}

TEST(StoreFactory, DescriptionsNeverShowThePassword) {
    EXPECT_EQ(DescribeStoreTarget({"postgresql://app:pa55@db.example:5432/conduit", "."}),
              "postgresql postgresql://app:***@db.example:5432/conduit");
    EXPECT_EQ(pg::RedactUrl("postgres://db/conduit?user=app&password=pa55&sslmode=require"),
              "postgres://db/conduit?user=app&password=***&sslmode=require");
    EXPECT_EQ(pg::RedactUrl("postgresql://app@db/conduit"), "postgresql://app@db/conduit");
    EXPECT_EQ(pg::RedactUrl("postgresql://db/x"), "postgresql://db/x");
}

}  // namespace
}  // namespace conduit::store
