// The admin hooks of the real-time hubs: POST /api/notifications/announcements and the
// configuration-change reports of mapping/provider writes.
#include "admin_fixture.hpp"

#include <gtest/gtest.h>

#include <mutex>

namespace conduit::admin::testing {
namespace {

class AdminNotificationsTest : public AdminTest {
protected:
    AdminNotificationsTest() {
        deps_->announce = [this](const std::string& message, const std::string& severity) {
            announced.emplace_back(message, severity);
        };
        deps_->on_config_change = [this](const ConfigChange& c) {
            std::lock_guard lock(mu);  // store executor thread
            changes.push_back(c);
        };
    }
    std::vector<ConfigChange> Changes() {
        std::lock_guard lock(mu);
        return changes;
    }

    std::vector<std::pair<std::string, std::string>> announced;
    std::mutex mu;
    std::vector<ConfigChange> changes;
};

TEST_F(AdminNotificationsTest, AnnouncementPassedThroughVerbatim) {
    const std::string message = "Réseau \"down\" <b>\\n</b> ✓";
    auto r = Call("POST", "/api/notifications/announcements",
                  R"({"message":"Réseau \"down\" <b>\\n</b> ✓","severity":"critical"})");
    EXPECT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(r.obj().at("accepted"), true);
    EXPECT_EQ(r.obj().at("severity"), "critical");
    ASSERT_EQ(announced.size(), 1u);
    EXPECT_EQ(announced[0].first, message);
    EXPECT_EQ(announced[0].second, "critical");

    EXPECT_EQ(Call("POST", "/api/notifications/announcements", R"({"message":"m"})").status, 202);
    EXPECT_EQ(announced.back().second, "info");
}

TEST_F(AdminNotificationsTest, AnnouncementBadInput) {
    for (std::string body :
         {std::string("{}"), std::string(R"({"message":""})"), std::string(R"({"message":3})"),
          std::string(R"({"message":"x","severity":"loud"})"),
          std::string(R"({"message":"x","severity":1})"), std::string("[1]"), std::string("{"),
          R"({"message":")" + std::string(17 * 1024, 'a') + R"("})"}) {
        auto r = Call("POST", "/api/notifications/announcements", body);
        EXPECT_EQ(r.status, 400) << body.substr(0, 60) << " → " << r.body;
        EXPECT_FALSE(r.ErrorCode().empty()) << r.body;
    }
    EXPECT_TRUE(announced.empty());
    auto unauth = CallWith("POST", "/api/notifications/announcements", R"({"message":"x"})", {});
    EXPECT_EQ(unauth.status, 401);
    EXPECT_TRUE(announced.empty());

    deps_->announce = nullptr;
    EXPECT_EQ(Call("POST", "/api/notifications/announcements", R"({"message":"x"})").status, 503);
}

TEST_F(AdminNotificationsTest, MappingAndProviderWritesReportChanges) {
    int64_t provider = CreateProvider(
        R"({"providerType":"openai-compatible","providerName":"p","baseUrl":"http://127.0.0.1:9/v1"})");
    int64_t mapping = CreateMapping(provider, "gpt-x");
    EXPECT_EQ(Call("PUT", "/api/ModelProviderMapping/" + std::to_string(mapping),
                   R"({"isEnabled":false})")
                  .status,
              200);
    EXPECT_EQ(Call("DELETE", "/api/ModelProviderMapping/" + std::to_string(mapping)).status, 204);
    EXPECT_EQ(Call("PUT", "/api/ProviderCredentials/" + std::to_string(provider),
                   R"({"isEnabled":false})")
                  .status,
              200);
    auto changes = Changes();
    ASSERT_EQ(changes.size(), 5u);
    EXPECT_EQ(changes[0].entity, "Provider");
    EXPECT_EQ(changes[0].change_type, "Created");
    EXPECT_EQ(changes[0].id, provider);
    for (int i = 1; i <= 3; ++i) {
        EXPECT_EQ(changes[i].entity, "ModelMapping");
        EXPECT_EQ(changes[i].id, mapping);
        EXPECT_EQ(changes[i].model_alias, "gpt-x");  // also for the deletion
    }
    EXPECT_EQ(changes[1].change_type, "Created");
    EXPECT_EQ(changes[2].change_type, "Updated");
    EXPECT_EQ(changes[3].change_type, "Deleted");
    EXPECT_EQ(changes[4].entity, "Provider");
    EXPECT_EQ(changes[4].change_type, "Updated");
    // A failed write reports nothing.
    EXPECT_EQ(Call("DELETE", "/api/ModelProviderMapping/999").status, 404);
    EXPECT_EQ(Changes().size(), 5u);
}

}  // namespace
}  // namespace conduit::admin::testing
