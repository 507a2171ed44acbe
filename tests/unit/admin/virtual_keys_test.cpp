#include "admin_fixture.hpp"
#include "domain/keys.hpp"

namespace conduit::admin::testing {
namespace {

TEST_F(AdminTest, VirtualKeyIsShownOnceAndStoredOnlyAsHash) {
    int64_t group = CreateGroup();
    auto created = Call("POST", "/api/VirtualKeys",
                        R"({"keyName":"ci","virtualKeyGroupId":)" + std::to_string(group) +
                            R"(,"allowedModels":"gpt-4*, claude","description":"for CI",)"
                            R"("rateLimitRpm":60,"rateLimitRpd":1000,)"
                            R"("expiresAt":"2027-06-01T12:00:00Z","metadata":{"isAdmin":true}})");
    ASSERT_EQ(created.status, 201) << created.body;
    const std::string key(created.obj().at("virtualKey").as_string());
    EXPECT_TRUE(domain::LooksLikeVirtualKey(key)) << key;
    const auto& info = created.obj().at("keyInfo").as_object();
    const int64_t id = info.at("id").as_int64();
    EXPECT_EQ(info.at("keyName").as_string(), "ci");
    EXPECT_EQ(info.at("keyPrefix").as_string(), domain::KeyDisplayPrefix(key));
    EXPECT_EQ(info.at("allowedModels").as_string(), "gpt-4*,claude");
    EXPECT_EQ(info.at("virtualKeyGroupId").as_int64(), group);
    EXPECT_TRUE(info.at("isEnabled").as_bool());
    EXPECT_EQ(info.at("expiresAt").as_string(), "2027-06-01T12:00:00.000Z");
    EXPECT_EQ(info.at("metadata").as_string(), R"({"isAdmin":true})");
    EXPECT_EQ(info.at("rateLimitRpm").as_int64(), 60);
    EXPECT_EQ(info.at("rateLimitRpd").as_int64(), 1000);
    EXPECT_EQ(info.at("description").as_string(), "for CI");
    EXPECT_EQ(info.at("createdAt").as_string(), "2026-01-01T00:00:00.000Z");
    EXPECT_FALSE(info.contains("keyHash"));

    // Only the hash is stored.
    auto stored = store_->GetKey(id);
    ASSERT_TRUE(stored && *stored);
    EXPECT_EQ((*stored)->key_hash, domain::HashVirtualKey(key));
    EXPECT_EQ((*stored)->key_prefix, domain::KeyDisplayPrefix(key));

    // Never shown again, and the hash never leaves either.
    for (const std::string& path :
         {"/api/VirtualKeys/" + std::to_string(id), std::string("/api/VirtualKeys"),
          "/api/VirtualKeyGroups/" + std::to_string(group) + "/keys"}) {
        auto r = Call("GET", path);
        ASSERT_EQ(r.status, 200) << path;
        EXPECT_EQ(r.body.find(key), std::string::npos) << path;
        EXPECT_EQ(r.body.find((*stored)->key_hash), std::string::npos) << path;
        EXPECT_EQ(r.body.find("virtualKey\""), std::string::npos) << path;
    }
    auto got = Call("GET", "/api/VirtualKeys/" + std::to_string(id));
    EXPECT_EQ(boost::json::serialize(got.json), boost::json::serialize(info));
}

TEST_F(AdminTest, NewKeyAuthenticatesAsSoonAsTheCreateResponds) {
    int64_t group = CreateGroup("g", "5");
    auto [key, id] = CreateKey(group);
    auto snap = config_->Get();
    auto entry = snap->Authenticate(key, clock_.NowUnixMs());
    ASSERT_TRUE(entry.has_value()) << entry.error().message;
    EXPECT_EQ((*entry)->key.id, id);
    EXPECT_EQ((*entry)->key.group_id, group);
    ASSERT_NE(snap->FindGroup(group), nullptr);
}

TEST_F(AdminTest, DeletedOrDisabledKeyStopsAuthenticatingImmediately) {
    int64_t group = CreateGroup();
    auto [key, id] = CreateKey(group);
    const std::string path = "/api/VirtualKeys/" + std::to_string(id);
    ASSERT_TRUE(config_->Get()->Authenticate(key, clock_.NowUnixMs()).has_value());

    auto disabled = Call("PUT", path, R"({"isEnabled":false})");
    ASSERT_EQ(disabled.status, 200) << disabled.body;
    EXPECT_FALSE(disabled.obj().at("isEnabled").as_bool());
    EXPECT_EQ(disabled.obj().at("keyName").as_string(), "k");  // untouched
    EXPECT_FALSE(config_->Get()->Authenticate(key, clock_.NowUnixMs()).has_value());

    ASSERT_EQ(Call("PUT", path, R"({"isEnabled":true})").status, 200);
    ASSERT_TRUE(config_->Get()->Authenticate(key, clock_.NowUnixMs()).has_value());

    auto deleted = Call("DELETE", path);
    EXPECT_EQ(deleted.status, 204);
    EXPECT_TRUE(deleted.body.empty());
    EXPECT_FALSE(config_->Get()->Authenticate(key, clock_.NowUnixMs()).has_value());
    EXPECT_EQ(Call("GET", path).status, 404);
    EXPECT_EQ(Call("DELETE", path).status, 404);
}

TEST_F(AdminTest, VirtualKeyPartialUpdateAndNullClears) {
    int64_t group = CreateGroup("a");
    int64_t other = CreateGroup("b");
    auto [key, id] =
        CreateKey(group, R"(,"allowedModels":"gpt-4o","expiresAt":"2030-01-01T00:00:00Z",)"
                         R"("rateLimitRpm":5,"metadata":"plain text","description":"d")");
    const std::string path = "/api/VirtualKeys/" + std::to_string(id);
    auto before = Call("GET", path);
    ASSERT_EQ(before.status, 200);
    EXPECT_EQ(before.obj().at("metadata").as_string(), "plain text");

    clock_.now_ms += 1000;
    auto r = Call("PUT", path,
                  R"({"allowedModels":null,"expiresAt":null,"rateLimitRpm":null,)"
                  R"("metadata":null,"keyName":"renamed","virtualKeyGroupId":)" +
                      std::to_string(other) + "}");
    ASSERT_EQ(r.status, 200) << r.body;
    const auto& k = r.obj();
    EXPECT_TRUE(k.at("allowedModels").is_null());
    EXPECT_TRUE(k.at("expiresAt").is_null());
    EXPECT_TRUE(k.at("rateLimitRpm").is_null());
    EXPECT_TRUE(k.at("metadata").is_null());
    EXPECT_EQ(k.at("keyName").as_string(), "renamed");
    EXPECT_EQ(k.at("virtualKeyGroupId").as_int64(), other);
    EXPECT_EQ(k.at("description").as_string(), "d");  // absent = unchanged
    EXPECT_EQ(k.at("keyPrefix").as_string(), before.obj().at("keyPrefix").as_string());
    EXPECT_EQ(k.at("createdAt").as_string(), before.obj().at("createdAt").as_string());
    EXPECT_EQ(k.at("updatedAt").as_string(), "2026-01-01T00:00:01.000Z");

    // The key itself keeps working and now belongs to the other group.
    auto entry = config_->Get()->Authenticate(key, clock_.NowUnixMs());
    ASSERT_TRUE(entry.has_value());
    EXPECT_EQ((*entry)->key.group_id, other);
    EXPECT_TRUE((*entry)->allow.AllowsAll());

    // Allowed models as an array.
    auto arr = Call("PUT", path, R"({"allowedModels":["a"," b* ",""]})");
    ASSERT_EQ(arr.status, 200);
    EXPECT_EQ(arr.obj().at("allowedModels").as_string(), "a,b*");
}

TEST_F(AdminTest, VirtualKeyValidation) {
    int64_t group = CreateGroup();
    const std::string g = std::to_string(group);
    struct Case {
        std::string body;
        const char* param;
    };
    const Case cases[] = {
        {R"({"virtualKeyGroupId":)" + g + "}", "keyName"},
        {R"({"keyName":"","virtualKeyGroupId":)" + g + "}", "keyName"},
        {R"({"keyName":"k"})", "virtualKeyGroupId"},
        {R"({"keyName":"k","virtualKeyGroupId":"1"})", "virtualKeyGroupId"},
        {R"({"keyName":"k","virtualKeyGroupId":0})", "virtualKeyGroupId"},
        {R"({"keyName":"k","virtualKeyGroupId":999})", "virtualKeyGroupId"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"expiresAt":"2020-01-01T00:00:00Z"})",
         "expiresAt"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"expiresAt":"tomorrow"})", "expiresAt"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"expiresAt":12345})", "expiresAt"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"rateLimitRpm":0})", "rateLimitRpm"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"rateLimitRpd":-5})", "rateLimitRpd"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"rateLimitRpd":1.5})", "rateLimitRpd"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"isEnabled":"yes"})", "isEnabled"},
        {R"({"keyName":"k","virtualKeyGroupId":)" + g + R"(,"allowedModels":5})", "allowedModels"},
    };
    for (const auto& c : cases) {
        auto r = Call("POST", "/api/VirtualKeys", c.body);
        EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
        EXPECT_EQ(r.ErrorParam(), c.param) << c.body;
    }
    auto keys = store_->ListKeys(std::nullopt);
    ASSERT_TRUE(keys.has_value());
    EXPECT_TRUE(keys->empty());

    // Update validation: unknown group, null for non-nullable fields.
    auto [key, id] = CreateKey(group);
    const std::string path = "/api/VirtualKeys/" + std::to_string(id);
    EXPECT_EQ(Call("PUT", path, R"({"virtualKeyGroupId":999})").ErrorParam(), "virtualKeyGroupId");
    EXPECT_EQ(Call("PUT", path, R"({"keyName":null})").ErrorParam(), "keyName");
    EXPECT_EQ(Call("PUT", path, R"({"isEnabled":null})").ErrorParam(), "isEnabled");
    EXPECT_EQ(Call("PUT", "/api/VirtualKeys/999", R"({"keyName":"x"})").status, 404);
    EXPECT_EQ(Call("GET", "/api/VirtualKeys/abc").ErrorCode(), "not_found");
}

TEST_F(AdminTest, ExpiredKeyIsRejectedByTheSnapshot) {
    int64_t group = CreateGroup();
    auto [key, id] = CreateKey(group, R"(,"expiresAt":"2026-01-01T00:10:00Z","isEnabled":true)");
    ASSERT_TRUE(config_->Get()->Authenticate(key, clock_.NowUnixMs()).has_value());
    EXPECT_FALSE(
        config_->Get()->Authenticate(key, clock_.NowUnixMs() + 11 * 60 * 1000).has_value());
    (void)id;
}

TEST_F(AdminTest, VirtualKeyListFiltersByGroup) {
    int64_t a = CreateGroup("a");
    int64_t b = CreateGroup("b");
    CreateKey(a);
    CreateKey(a);
    auto [kb, idb] = CreateKey(b);
    EXPECT_EQ(Call("GET", "/api/VirtualKeys").arr().size(), 3u);
    auto only_b = Call("GET", "/api/VirtualKeys?virtualKeyGroupId=" + std::to_string(b));
    ASSERT_EQ(only_b.status, 200);
    ASSERT_EQ(only_b.arr().size(), 1u);
    EXPECT_EQ(only_b.arr()[0].at("id").as_int64(), idb);
    EXPECT_EQ(Call("GET", "/api/VirtualKeys?virtualkeygroupid=" + std::to_string(a)).arr().size(),
              2u);
    EXPECT_EQ(Call("GET", "/api/VirtualKeys?virtualKeyGroupId=999").arr().size(), 0u);
    EXPECT_EQ(Call("GET", "/api/VirtualKeys?virtualKeyGroupId=x").ErrorParam(),
              "virtualKeyGroupId");
}

TEST_F(AdminTest, EveryCreatedKeyIsDistinct) {
    int64_t group = CreateGroup();
    auto [k1, id1] = CreateKey(group);
    auto [k2, id2] = CreateKey(group);
    EXPECT_NE(k1, k2);
    EXPECT_NE(id1, id2);
    EXPECT_TRUE(config_->Get()->Authenticate(k1, clock_.NowUnixMs()).has_value());
    EXPECT_TRUE(config_->Get()->Authenticate(k2, clock_.NowUnixMs()).has_value());
}

}  // namespace
}  // namespace conduit::admin::testing
