#include "admin_fixture.hpp"

namespace conduit::admin::testing {
namespace {

TEST_F(AdminTest, GroupCrudRoundTrip) {
    auto created =
        Call("POST", "/api/VirtualKeyGroups",
             R"({"groupName":"Research","externalGroupId":"ext-1","initialBalance":12.5})");
    ASSERT_EQ(created.status, 201) << created.body;
    const auto& g = created.obj();
    const int64_t id = g.at("id").as_int64();
    EXPECT_GT(id, 0);
    EXPECT_EQ(g.at("groupName").as_string(), "Research");
    EXPECT_EQ(g.at("externalGroupId").as_string(), "ext-1");
    EXPECT_EQ(g.at("virtualKeyCount").as_int64(), 0);
    EXPECT_EQ(g.at("createdAt").as_string(), "2026-01-01T00:00:00.000Z");
    EXPECT_EQ(g.at("updatedAt").as_string(), "2026-01-01T00:00:00.000Z");
    EXPECT_NE(created.body.find(R"("balance":12.5,)"), std::string::npos) << created.body;
    EXPECT_NE(created.body.find(R"("lifetimeCreditsAdded":12.5,)"), std::string::npos);
    EXPECT_NE(created.body.find(R"("lifetimeSpent":0,)"), std::string::npos);
    // The book knows the new group's balance (snapshot reload synced it).
    EXPECT_EQ(book_.Available(id), 12'500000);

    auto got = Call("GET", "/api/VirtualKeyGroups/" + std::to_string(id));
    ASSERT_EQ(got.status, 200);
    EXPECT_EQ(got.body, created.body);

    auto list = Call("GET", "/api/VirtualKeyGroups");
    ASSERT_EQ(list.status, 200);
    ASSERT_EQ(list.arr().size(), 1u);
    EXPECT_EQ(list.arr()[0].at("id").as_int64(), id);

    clock_.now_ms += 60'000;
    auto updated =
        Call("PUT", "/api/VirtualKeyGroups/" + std::to_string(id), R"({"groupName":"Research 2"})");
    ASSERT_EQ(updated.status, 200) << updated.body;
    EXPECT_EQ(updated.obj().at("groupName").as_string(), "Research 2");
    EXPECT_EQ(updated.obj().at("externalGroupId").as_string(), "ext-1");  // untouched
    EXPECT_EQ(updated.obj().at("updatedAt").as_string(), "2026-01-01T00:01:00.000Z");
    EXPECT_EQ(updated.obj().at("createdAt").as_string(), "2026-01-01T00:00:00.000Z");

    auto cleared =
        Call("PUT", "/api/VirtualKeyGroups/" + std::to_string(id), R"({"externalGroupId":null})");
    ASSERT_EQ(cleared.status, 200);
    EXPECT_TRUE(cleared.obj().at("externalGroupId").is_null());
    EXPECT_EQ(cleared.obj().at("groupName").as_string(), "Research 2");

    auto deleted = Call("DELETE", "/api/VirtualKeyGroups/" + std::to_string(id));
    EXPECT_EQ(deleted.status, 204);
    EXPECT_TRUE(deleted.body.empty());
    EXPECT_EQ(Call("GET", "/api/VirtualKeyGroups/" + std::to_string(id)).status, 404);
    EXPECT_FALSE(book_.Available(id).has_value());
}

TEST_F(AdminTest, GroupInitialBalanceIsRecordedAsInitialCredit) {
    int64_t id = CreateGroup("g", "0.1");
    auto txns = Call("GET", "/api/VirtualKeyGroups/" + std::to_string(id) + "/transactions");
    ASSERT_EQ(txns.status, 200);
    ASSERT_EQ(txns.arr().size(), 1u);
    const auto& t = txns.arr()[0].as_object();
    EXPECT_EQ(t.at("transactionType").as_string(), "Credit");
    EXPECT_EQ(t.at("referenceType").as_string(), "Initial");
    EXPECT_EQ(t.at("virtualKeyGroupId").as_int64(), id);
    EXPECT_EQ(t.at("initiatedBy").as_string(), "admin");
    EXPECT_NE(txns.body.find(R"("amount":0.1,"balanceAfter":0.1,)"), std::string::npos)
        << txns.body;
}

TEST_F(AdminTest, GroupValidationNamesTheField) {
    auto missing = Call("POST", "/api/VirtualKeyGroups", R"({"externalGroupId":"x"})");
    EXPECT_EQ(missing.status, 400);
    EXPECT_EQ(missing.ErrorCode(), "invalid_request");
    EXPECT_EQ(missing.ErrorParam(), "groupName");
    EXPECT_EQ(missing.json.at("error").at("type").as_string(), "invalid_request_error");

    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups", R"({"groupName":"  "})").ErrorParam(),
              "groupName");
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups", R"({"groupName":null})").ErrorParam(),
              "groupName");
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups", R"({"groupName":5})").ErrorParam(),
              "groupName");
    std::string long_name(101, 'x');
    EXPECT_EQ(
        Call("POST", "/api/VirtualKeyGroups", R"({"groupName":")" + long_name + "\"}").ErrorParam(),
        "groupName");
    std::string max_name(100, 'x');
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups", R"({"groupName":")" + max_name + "\"}").status,
              201);

    auto negative =
        Call("POST", "/api/VirtualKeyGroups", R"({"groupName":"g","initialBalance":-1})");
    EXPECT_EQ(negative.status, 400);
    EXPECT_EQ(negative.ErrorParam(), "initialBalance");
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups", R"({"groupName":"g","initialBalance":"abc"})")
                  .ErrorParam(),
              "initialBalance");

    auto malformed = Call("POST", "/api/VirtualKeyGroups", "{\"groupName\":");
    EXPECT_EQ(malformed.status, 400);
    EXPECT_EQ(malformed.ErrorCode(), "invalid_request");
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups", "[1,2]").status, 400);
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups", "").status, 400);

    int64_t id = CreateGroup();
    auto null_name =
        Call("PUT", "/api/VirtualKeyGroups/" + std::to_string(id), R"({"groupName":null})");
    EXPECT_EQ(null_name.status, 400);
    EXPECT_EQ(null_name.ErrorParam(), "groupName");
}

TEST_F(AdminTest, GroupNotFound) {
    for (const char* path :
         {"/api/VirtualKeyGroups/999", "/api/VirtualKeyGroups/abc", "/api/VirtualKeyGroups/-1",
          "/api/VirtualKeyGroups/0", "/api/VirtualKeyGroups/1.5", "/api/VirtualKeyGroups/999/keys",
          "/api/VirtualKeyGroups/999/transactions"}) {
        auto r = Call("GET", path);
        EXPECT_EQ(r.status, 404) << path;
        EXPECT_EQ(r.ErrorCode(), "not_found") << path;
    }
    EXPECT_EQ(Call("PUT", "/api/VirtualKeyGroups/999", R"({"groupName":"x"})").status, 404);
    EXPECT_EQ(Call("DELETE", "/api/VirtualKeyGroups/999").status, 404);
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups/999/adjust-balance", R"({"amount":1})").status,
              404);
    EXPECT_EQ(Call("POST", "/api/VirtualKeyGroups/x/adjust-balance", R"({"amount":1})").status,
              404);
}

TEST_F(AdminTest, DeletingAGroupWithKeysIsAConflict) {
    int64_t group = CreateGroup();
    auto [key, key_id] = CreateKey(group);
    auto r = Call("DELETE", "/api/VirtualKeyGroups/" + std::to_string(group));
    EXPECT_EQ(r.status, 409);
    EXPECT_EQ(r.ErrorCode(), "conflict");
    EXPECT_EQ(Call("GET", "/api/VirtualKeyGroups/" + std::to_string(group)).status, 200);

    ASSERT_EQ(Call("DELETE", "/api/VirtualKeys/" + std::to_string(key_id)).status, 204);
    EXPECT_EQ(Call("DELETE", "/api/VirtualKeyGroups/" + std::to_string(group)).status, 204);
}

TEST_F(AdminTest, AdjustBalanceIsExactDecimalArithmetic) {
    int64_t id = CreateGroup("g", "0");
    const std::string base = "/api/VirtualKeyGroups/" + std::to_string(id);

    auto first = Call("POST", base + "/adjust-balance", R"({"amount":0.1,"description":"top-up"})");
    ASSERT_EQ(first.status, 200) << first.body;
    EXPECT_NE(first.body.find(R"("balance":0.1,)"), std::string::npos) << first.body;

    auto second = Call("POST", base + "/adjust-balance", R"({"amount":0.2})");
    ASSERT_EQ(second.status, 200) << second.body;
    // 0.1 + 0.2 is exactly 0.3 (no 0.30000000000000004).
    EXPECT_NE(second.body.find(R"("balance":0.3,)"), std::string::npos) << second.body;
    EXPECT_NE(second.body.find(R"("lifetimeCreditsAdded":0.3,)"), std::string::npos);
    EXPECT_EQ(second.obj().at("id").as_int64(), id);
    EXPECT_EQ(second.obj().at("groupName").as_string(), "g");
    const auto& txn = second.obj().at("transaction").as_object();
    EXPECT_EQ(txn.at("transactionType").as_string(), "Credit");
    EXPECT_EQ(txn.at("referenceType").as_string(), "Manual");
    EXPECT_EQ(txn.at("initiatedBy").as_string(), "admin");
    EXPECT_TRUE(txn.at("description").is_null());
    EXPECT_NE(second.body.find(R"("amount":0.2,"balanceAfter":0.3,)"), std::string::npos);
    EXPECT_EQ(book_.Available(id), 300000);

    // A debit as a decimal string: Adjustment, amount positive, balance may go negative.
    auto debit =
        Call("POST", base + "/adjust-balance", R"({"amount":"-0.45","description":"correction"})");
    ASSERT_EQ(debit.status, 200) << debit.body;
    EXPECT_NE(debit.body.find(R"("balance":-0.15,)"), std::string::npos) << debit.body;
    EXPECT_NE(debit.body.find(R"("lifetimeSpent":0.45,)"), std::string::npos) << debit.body;
    const auto& dt = debit.obj().at("transaction").as_object();
    EXPECT_EQ(dt.at("transactionType").as_string(), "Adjustment");
    EXPECT_EQ(dt.at("description").as_string(), "correction");
    EXPECT_NE(debit.body.find(R"("amount":0.45,"balanceAfter":-0.15,)"), std::string::npos);
    EXPECT_EQ(book_.Available(id), -150000);

    auto stored = store_->GetGroup(id);
    ASSERT_TRUE(stored && *stored);
    EXPECT_EQ((*stored)->balance, -150000);

    // Ledger: newest first, paged.
    auto all = Call("GET", base + "/transactions");
    ASSERT_EQ(all.status, 200);
    ASSERT_EQ(all.arr().size(), 3u);
    EXPECT_EQ(all.arr()[0].at("transactionType").as_string(), "Adjustment");
    EXPECT_EQ(all.arr()[2].at("description").as_string(), "top-up");
    auto page = Call("GET", base + "/transactions?limit=1&offset=1");
    ASSERT_EQ(page.status, 200);
    ASSERT_EQ(page.arr().size(), 1u);
    EXPECT_EQ(page.arr()[0].at("id").as_int64(), all.arr()[1].at("id").as_int64());
    EXPECT_EQ(Call("GET", base + "/transactions?LIMIT=2").arr().size(), 2u);
}

TEST_F(AdminTest, AdjustBalanceValidation) {
    int64_t id = CreateGroup();
    const std::string path = "/api/VirtualKeyGroups/" + std::to_string(id) + "/adjust-balance";
    for (const char* body : {R"({})", R"({"amount":0})", R"({"amount":"0.0000001"})",
                             R"({"amount":"x"})", R"({"amount":true})", R"({"amount":null})"}) {
        auto r = Call("POST", path, body);
        EXPECT_EQ(r.status, 400) << body;
        EXPECT_EQ(r.ErrorParam(), "amount") << body;
    }
    auto long_desc =
        Call("POST", path, R"({"amount":1,"description":")" + std::string(501, 'd') + "\"}");
    EXPECT_EQ(long_desc.ErrorParam(), "description");
}

TEST_F(AdminTest, TransactionPagingValidation) {
    int64_t id = CreateGroup();
    const std::string path = "/api/VirtualKeyGroups/" + std::to_string(id) + "/transactions";
    EXPECT_EQ(Call("GET", path + "?limit=0").ErrorParam(), "limit");
    EXPECT_EQ(Call("GET", path + "?limit=x").ErrorParam(), "limit");
    EXPECT_EQ(Call("GET", path + "?offset=-1").ErrorParam(), "offset");
    EXPECT_EQ(Call("GET", path + "?limit=100000").status, 200);  // clamped to 1000
}

TEST_F(AdminTest, GroupKeysListsItsKeysOnly) {
    int64_t a = CreateGroup("a");
    int64_t b = CreateGroup("b");
    auto [ka, ida] = CreateKey(a);
    auto [kb, idb] = CreateKey(b);
    auto r = Call("GET", "/api/VirtualKeyGroups/" + std::to_string(a) + "/keys");
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.arr().size(), 1u);
    EXPECT_EQ(r.arr()[0].at("id").as_int64(), ida);
    EXPECT_EQ(r.body.find(ka), std::string::npos);

    auto list = Call("GET", "/api/VirtualKeyGroups");
    ASSERT_EQ(list.arr().size(), 2u);
    EXPECT_EQ(list.arr()[0].at("virtualKeyCount").as_int64(), 1);
    EXPECT_EQ(Call("GET", "/api/VirtualKeyGroups/" + std::to_string(b))
                  .obj()
                  .at("virtualKeyCount")
                  .as_int64(),
              1);
    (void)idb;
    (void)kb;
}

}  // namespace
}  // namespace conduit::admin::testing
