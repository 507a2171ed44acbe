#include "fakes/test_support.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/spend_recorder.hpp"
#include "store/executor.hpp"
#include "store/sqlite/sqlite_store.hpp"

#include <gtest/gtest.h>

namespace conduit::gateway {
namespace {

class SpendTest : public ::testing::Test {
protected:
    void SetUp() override {
        store_ = std::move(*store::OpenSqliteStore(":memory:"));
        ASSERT_TRUE(store_->Migrate());
        domain::VirtualKeyGroup g;
        g.group_name = "team";
        g.balance = 1'000'000;  // $1
        group_ = *store_->CreateGroup(g, "test");
        book_.Sync(*store_->ListGroups());
    }
    domain::RequestLogRow Row(domain::Id group, domain::Micros cost, domain::Id key = 7) {
        domain::RequestLogRow r;
        r.group_id = group;
        r.virtual_key_id = key;
        r.cost = cost;
        r.model_alias = "m";
        r.status_code = 200;
        r.timestamp_ms = 1000;
        return r;
    }

    std::unique_ptr<store::Store> store_;
    store::Executor executor_;
    BalanceBook book_;
    domain::VirtualKeyGroup group_;
};

TEST_F(SpendTest, BookDebitsImmediatelyAndFlushWritesOneLedgerRowPerGroup) {
    SpendRecorder spend(*store_, executor_, book_, std::chrono::hours(1));
    EXPECT_EQ(book_.Available(group_.id), 1'000'000);
    spend.Record(Row(group_.id, 300'001));
    spend.Record(Row(group_.id, 0));  // free requests are still logged
    spend.Record(Row(group_.id, 99'999));
    EXPECT_EQ(book_.Available(group_.id), 600'000);  // before any database write
    EXPECT_EQ(spend.PendingRows(), 3u);
    ASSERT_TRUE(spend.FlushAndWait());
    EXPECT_EQ(spend.PendingRows(), 0u);
    EXPECT_EQ(book_.Pending(group_.id), 0);
    EXPECT_EQ(book_.Available(group_.id), 600'000);
    auto g = *store_->GetGroup(group_.id);
    EXPECT_EQ(g->balance, 600'000);
    EXPECT_EQ(g->lifetime_spent, 400'000);
    auto tx = *store_->ListTransactions(group_.id, 10, 0);
    ASSERT_EQ(tx.size(), 2u);  // the debit plus the initial credit
    EXPECT_EQ(tx[0].type, domain::TransactionType::kDebit);
    EXPECT_EQ(tx[0].amount, 400'000);
    EXPECT_EQ(tx[0].description, "API usage by virtual key #7");
    auto logs = *store_->ListRequestLogs({});
    EXPECT_EQ(logs.size(), 3u);
}

TEST_F(SpendTest, ExhaustedGroupIsVisibleAtOnce) {
    SpendRecorder spend(*store_, executor_, book_, std::chrono::hours(1));
    spend.Record(Row(group_.id, 1'000'000));
    EXPECT_LE(*book_.Available(group_.id), 0);
}

TEST_F(SpendTest, FailedFlushKeepsValidRowsForTheNextOne) {
    SpendRecorder spend(*store_, executor_, book_, std::chrono::hours(1));
    spend.Record(Row(group_.id, 10));
    spend.Record(Row(424242, 10));  // a group that does not exist: the batch fails once
    EXPECT_FALSE(spend.FlushAndWait());
    EXPECT_EQ(spend.failures(), 1u);
    EXPECT_EQ((*store_->GetGroup(group_.id))->balance, 1'000'000);  // all or nothing
    ASSERT_TRUE(spend.FlushAndWait());
    EXPECT_EQ((*store_->GetGroup(group_.id))->balance, 999'990);
    EXPECT_EQ(book_.Available(group_.id), 999'990);
}

TEST_F(SpendTest, PeriodicFlushAndFinalFlushOnStop) {
    {
        SpendRecorder spend(*store_, executor_, book_, std::chrono::milliseconds(20));
        spend.Start();
        spend.Record(Row(group_.id, 5));
        EXPECT_TRUE(conduit::testing::WaitFor([&] { return spend.flushes() >= 1; }));
        spend.Record(Row(group_.id, 7));
        spend.Stop();  // final flush
    }
    EXPECT_EQ((*store_->GetGroup(group_.id))->balance, 1'000'000 - 12);
}

TEST(BalanceBook, SyncRemovesDeletedGroupsAndAdjustmentsApply) {
    BalanceBook book;
    book.Sync({domain::VirtualKeyGroup{.id = 1, .balance = 100},
               domain::VirtualKeyGroup{.id = 2, .balance = 5}});
    book.AddPending(1, 30);
    EXPECT_EQ(book.Available(1), 70);
    book.SetPersisted(1, 1000);
    EXPECT_EQ(book.Available(1), 970);
    book.Sync({domain::VirtualKeyGroup{.id = 1, .balance = 1000}});
    EXPECT_FALSE(book.Available(2).has_value());
    EXPECT_EQ(book.Available(1), 970);  // pending survives a reload
    book.Flushed(1, 30);
    EXPECT_EQ(book.Available(1), 970);
    EXPECT_EQ(book.Pending(1), 0);
    book.AddPending(99, 1);  // unknown: ignored
    EXPECT_FALSE(book.Available(99).has_value());
}

}  // namespace
}  // namespace conduit::gateway
