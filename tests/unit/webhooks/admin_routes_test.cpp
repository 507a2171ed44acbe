#include "webhooks/admin_routes.hpp"

#include "core/clock.hpp"
#include "fakes/fake_exchange.hpp"
#include "net/router.hpp"
#include "webhook_fixture.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace conduit::webhooks::testing {
namespace {

namespace bj = boost::json;
using std::chrono::milliseconds;

constexpr std::string_view kMasterKey = "webhooks-master-key-123";

struct Resp {
    int status = 0;
    std::string body;
    net::Headers headers;
    bj::value json;
    const bj::object& obj() const { return json.as_object(); }
};

class WebhookAdminTest : public WebhookTest {
protected:
    WebhookAdminTest() {
        deps_ = std::make_shared<WebhookAdminDeps>(WebhookAdminDeps{*store_, *executor_, *secrets_,
                                                                    *publisher_, *recorder_, clock_,
                                                                    std::string(kMasterKey)});
        RegisterWebhookAdminRoutes(router_, deps_);
    }

    Resp Call(std::string method, std::string target, std::string body = {}, bool auth = true) {
        net::Headers headers;
        if (auth) {
            headers.Add("X-API-Key", std::string(kMasterKey));
        }
        auto ex = conduit::testing::FakeExchange::Make(loop_, std::move(method), std::move(target),
                                                       std::move(body), std::move(headers));
        auto& req = ex->request();
        Resp r;
        auto match = router_.Match(req.method, req.path(), req.path_params);
        if (match.handler == nullptr) {
            r.status = 404;
            return r;
        }
        (*match.handler)(ex);
        EXPECT_TRUE(Pump([&] { return ex->responded(); })) << req.target;
        r.status = ex->status();
        r.body = ex->body();
        r.headers = ex->headers();
        boost::system::error_code ec;
        r.json = bj::parse(r.body, ec);
        if (ec) {
            r.json = nullptr;
        }
        return r;
    }

    std::string ErrorCode(const Resp& r) {
        if (!r.json.is_object() || !r.obj().contains("error")) {
            return {};
        }
        return std::string(r.json.at("error").at("code").as_string());
    }

    void Seed(const std::string& id,
              const std::string& status,
              int64_t key,
              const std::string& task,
              int64_t created_ms) {
        store::WebhookDelivery d;
        d.id = id;
        d.task_id = task;
        d.virtual_key_id = key;
        d.event_type = "task.completed";
        d.url = std::string(kUrl);
        d.headers_json = EncodeHeaders({{"X-Secret-Token", "very-secret-value"}});
        d.payload = R"({"type":"task.completed","task_id":")" + task + R"("})";
        d.status = status;
        d.attempts = status == "pending" ? 0 : 1;
        d.last_status_code = status == "dead" ? 400 : 0;
        d.last_error = status == "dead" ? "HTTP 400" : "";
        d.created_at_ms = created_ms;
        d.updated_at_ms = created_ms + 10;
        d.delivered_at_ms = status == "delivered" ? created_ms + 10 : 0;
        auto r = store_->UpsertWebhookDeliveries({d});
        ASSERT_TRUE(r.has_value()) << r.error().message;
    }

    int64_t OtherKey() {
        domain::VirtualKey k;
        k.key_name = "other";
        k.key_hash = std::string(64, 'b');
        k.key_prefix = "condt_othr";
        auto first = store_->GetKey(key_id_);
        k.group_id = (first && *first) ? (*first)->group_id : 0;
        auto created = store_->CreateKey(k);
        EXPECT_TRUE(created.has_value());
        return created ? created->id : 0;
    }

    net::Router router_;
    std::shared_ptr<WebhookAdminDeps> deps_;
};

TEST_F(WebhookAdminTest, EveryRouteRequiresTheMasterKey) {
    for (auto [method, target] : std::vector<std::pair<std::string, std::string>>{
             {"POST", "/api/VirtualKeys/1/webhook-secret"},
             {"GET", "/api/webhooks/deliveries"},
             {"GET", "/api/webhooks/deliveries/msg_1"},
             {"POST", "/api/webhooks/deliveries/msg_1/redeliver"}}) {
        auto r = Call(method, target, {}, /*auth=*/false);
        EXPECT_EQ(r.status, 401) << target;
        EXPECT_EQ(ErrorCode(r), "invalid_api_key") << target;
    }
}

TEST_F(WebhookAdminTest, CreatesThenRotatesTheSecret) {
    auto target = "/api/VirtualKeys/" + std::to_string(key_id_) + "/webhook-secret";
    auto created = Call("POST", target);
    ASSERT_EQ(created.status, 200) << created.body;
    std::string first(created.obj().at("secret").as_string());
    EXPECT_TRUE(first.starts_with("whsec_"));
    EXPECT_TRUE(signing::SecretKeyBytes(first).has_value());
    EXPECT_EQ(created.obj().at("rotatedAt").as_string(), core::FormatIso8601(clock_.NowUnixMs()));
    EXPECT_TRUE(created.obj().at("previousValidUntil").is_null());
    EXPECT_EQ(created.headers.Get("Cache-Control"), "no-store");

    // Stored sealed, never in clear.
    auto row = store_->GetWebhookSecret(key_id_);
    ASSERT_TRUE(row && *row) << (row ? "missing" : row.error().message);
    EXPECT_EQ((*row)->secret_sealed.find(first.substr(6)), std::string::npos);
    EXPECT_EQ(box_.Open((*row)->secret_sealed), first);

    // The delivery worker's cache is refreshed by a rotation.
    auto keys = secrets_->LoadOnExecutor(key_id_);
    ASSERT_TRUE(keys);
    EXPECT_TRUE(secrets_->Cached(key_id_));

    clock_.Advance(milliseconds(1000));
    auto rotated = Call("POST", target);
    ASSERT_EQ(rotated.status, 200) << rotated.body;
    std::string second(rotated.obj().at("secret").as_string());
    EXPECT_NE(second, first);
    EXPECT_EQ(rotated.obj().at("previousValidUntil").as_string(),
              core::FormatIso8601(clock_.NowUnixMs() + 24LL * 3600 * 1000));
    EXPECT_FALSE(secrets_->Cached(key_id_));

    auto loaded = secrets_->LoadOnExecutor(key_id_);
    ASSERT_TRUE(loaded);
    EXPECT_EQ((*loaded)->current, *signing::SecretKeyBytes(second));
    EXPECT_EQ((*loaded)->previous, *signing::SecretKeyBytes(first));
    EXPECT_EQ((*loaded)->ActiveAt(clock_.NowUnixMs()).size(), 2u);
}

TEST_F(WebhookAdminTest, GracePeriodCanBeChosenPerRotation) {
    auto target = "/api/VirtualKeys/" + std::to_string(key_id_) + "/webhook-secret";
    ASSERT_EQ(Call("POST", target).status, 200);
    auto r = Call("POST", target, R"({"gracePeriodSeconds":60})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.obj().at("previousValidUntil").as_string(),
              core::FormatIso8601(clock_.NowUnixMs() + 60000));
    auto none = Call("POST", target, R"({"gracePeriodSeconds":0})");
    ASSERT_EQ(none.status, 200);
    EXPECT_TRUE(none.obj().at("previousValidUntil").is_null());

    EXPECT_EQ(Call("POST", target, R"({"gracePeriodSeconds":-1})").status, 400);
    EXPECT_EQ(Call("POST", target, R"({"gracePeriodSeconds":"x"})").status, 400);
    EXPECT_EQ(Call("POST", target, "not json").status, 400);
}

TEST_F(WebhookAdminTest, CreationsAndRotationsAreAnnouncedToOtherInstances) {
    std::vector<int64_t> announced;
    deps_->on_secret_rotated = [&announced](int64_t id) { announced.push_back(id); };
    auto target = "/api/VirtualKeys/" + std::to_string(key_id_) + "/webhook-secret";
    ASSERT_EQ(Call("POST", target).status, 200);
    ASSERT_EQ(Call("POST", target, R"({"gracePeriodSeconds":0})").status, 200);
    EXPECT_EQ(Call("POST", "/api/VirtualKeys/9999/webhook-secret").status, 404);
    EXPECT_EQ(Call("POST", target, R"({"gracePeriodSeconds":-1})").status, 400);
    EXPECT_EQ(announced, (std::vector<int64_t>{key_id_, key_id_}));
}

TEST_F(WebhookAdminTest, UnknownKeyIs404) {
    auto r = Call("POST", "/api/VirtualKeys/9999/webhook-secret");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(ErrorCode(r), "not_found");
    EXPECT_EQ(Call("POST", "/api/VirtualKeys/abc/webhook-secret").status, 404);
}

TEST_F(WebhookAdminTest, ListsWithFiltersAndNeverShowsHeaderValues) {
    int64_t other = OtherKey();
    int64_t t = clock_.NowUnixMs();
    Seed("msg_a", "delivered", key_id_, "task-1", t);
    Seed("msg_b", "dead", key_id_, "task-1", t + 1);
    Seed("msg_c", "dead", other, "task-2", t + 2);
    Seed("msg_d", "pending", other, "task-3", t + 3);

    auto all = Call("GET", "/api/webhooks/deliveries");
    ASSERT_EQ(all.status, 200) << all.body;
    const auto& data = all.obj().at("data").as_array();
    ASSERT_EQ(data.size(), 4u);
    EXPECT_EQ(data[0].at("id").as_string(), "msg_d");  // newest first
    EXPECT_EQ(all.obj().at("limit").as_int64(), 100);
    EXPECT_EQ(all.obj().at("offset").as_int64(), 0);
    EXPECT_EQ(all.body.find("very-secret-value"), std::string::npos);
    const auto& b = data[2].as_object();
    EXPECT_EQ(b.at("id").as_string(), "msg_b");
    EXPECT_EQ(b.at("taskId").as_string(), "task-1");
    EXPECT_EQ(b.at("virtualKeyId").as_int64(), key_id_);
    EXPECT_EQ(b.at("eventType").as_string(), "task.completed");
    EXPECT_EQ(b.at("url").as_string(), kUrl);
    EXPECT_EQ(b.at("status").as_string(), "dead");
    EXPECT_EQ(b.at("attempts").as_int64(), 1);
    EXPECT_EQ(b.at("lastStatusCode").as_int64(), 400);
    EXPECT_EQ(b.at("lastError").as_string(), "HTTP 400");
    EXPECT_EQ(b.at("createdAt").as_string(), core::FormatIso8601(t + 1));
    EXPECT_EQ(b.at("updatedAt").as_string(), core::FormatIso8601(t + 11));
    EXPECT_TRUE(b.at("deliveredAt").is_null());
    EXPECT_EQ(b.at("headerNames").as_array().at(0).as_string(), "X-Secret-Token");
    EXPECT_FALSE(b.contains("payload"));
    EXPECT_FALSE(data[3].at("deliveredAt").is_null());
    EXPECT_TRUE(data[0].at("lastStatusCode").is_null());

    auto dead = Call("GET", "/api/webhooks/deliveries?status=dead");
    ASSERT_EQ(dead.status, 200);
    EXPECT_EQ(dead.obj().at("data").as_array().size(), 2u);
    auto by_key = Call("GET", "/api/webhooks/deliveries?virtualKeyId=" + std::to_string(other));
    EXPECT_EQ(by_key.obj().at("data").as_array().size(), 2u);
    auto by_task = Call("GET", "/api/webhooks/deliveries?taskId=task-1&status=dead");
    ASSERT_EQ(by_task.obj().at("data").as_array().size(), 1u);
    EXPECT_EQ(by_task.obj().at("data").as_array()[0].at("id").as_string(), "msg_b");
    auto page = Call("GET", "/api/webhooks/deliveries?limit=2&offset=1");
    ASSERT_EQ(page.obj().at("data").as_array().size(), 2u);
    EXPECT_EQ(page.obj().at("data").as_array()[0].at("id").as_string(), "msg_c");
    EXPECT_EQ(page.obj().at("limit").as_int64(), 2);
    EXPECT_EQ(page.obj().at("offset").as_int64(), 1);

    EXPECT_EQ(Call("GET", "/api/webhooks/deliveries?status=bogus").status, 400);
    EXPECT_EQ(Call("GET", "/api/webhooks/deliveries?limit=0").status, 400);
    EXPECT_EQ(Call("GET", "/api/webhooks/deliveries?virtualKeyId=x").status, 400);
}

TEST_F(WebhookAdminTest, ListIncludesRowsStillInTheRecorder) {
    Enqueue({Event("msg_fresh")});
    EXPECT_EQ(recorder_->Pending(), 1u);
    auto r = Call("GET", "/api/webhooks/deliveries?status=pending");
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_EQ(r.obj().at("data").as_array().size(), 1u);
    EXPECT_EQ(r.obj().at("data").as_array()[0].at("id").as_string(), "msg_fresh");
}

TEST_F(WebhookAdminTest, GetReturnsThePayload) {
    Seed("msg_get", "dead", key_id_, "task-g", clock_.NowUnixMs());
    auto r = Call("GET", "/api/webhooks/deliveries/msg_get");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.obj().at("id").as_string(), "msg_get");
    EXPECT_EQ(r.obj().at("payload").at("task_id").as_string(), "task-g");
    EXPECT_EQ(r.body.find("very-secret-value"), std::string::npos);

    auto missing = Call("GET", "/api/webhooks/deliveries/msg_nope");
    EXPECT_EQ(missing.status, 404);
    EXPECT_EQ(ErrorCode(missing), "not_found");
    EXPECT_EQ(Call("GET", "/api/webhooks/deliveries/bad%20id").status, 404);
}

TEST_F(WebhookAdminTest, RedeliverReenqueuesWithTheSameId) {
    Seed("msg_dead", "dead", key_id_, "task-x", clock_.NowUnixMs());
    clock_.Advance(milliseconds(1000));
    auto r = Call("POST", "/api/webhooks/deliveries/msg_dead/redeliver");
    ASSERT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(r.obj().at("id").as_string(), "msg_dead");
    EXPECT_EQ(r.obj().at("status").as_string(), "pending");
    EXPECT_EQ(r.obj().at("attempts").as_int64(), 0);
    EXPECT_TRUE(r.obj().at("lastStatusCode").is_null());

    auto published = queue_.published();
    ASSERT_EQ(published.size(), 1u);
    EXPECT_EQ(published[0].partition_key, "task-x");
    auto m = DecodeDelivery(published[0].body);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->id, "msg_dead");
    EXPECT_TRUE(m->redelivery);
    ASSERT_EQ(m->headers.size(), 1u);
    EXPECT_EQ(m->headers[0].second, "very-secret-value");  // sent again, never shown

    // The worker delivers it.
    auto s = Deliver();
    ASSERT_TRUE(s);
    ASSERT_EQ(client_.calls.size(), 1u);
    EXPECT_EQ(LastCall()->request.headers.Get("webhook-id"), "msg_dead");
    EXPECT_EQ(LastCall()->request.headers.Get("X-Secret-Token"), "very-secret-value");
    Respond(LastCall(), 200);
    auto got = Call("GET", "/api/webhooks/deliveries/msg_dead");
    EXPECT_EQ(got.obj().at("status").as_string(), "delivered");

    EXPECT_EQ(Call("POST", "/api/webhooks/deliveries/msg_nope/redeliver").status, 404);
}

TEST_F(WebhookAdminTest, RedeliverReportsAQueueFailure) {
    Seed("msg_q", "dead", key_id_, "task-q", clock_.NowUnixMs());
    queue_.FailPublishes(core::Error::Make(core::ErrorCode::kUnavailable, "queue down"));
    auto r = Call("POST", "/api/webhooks/deliveries/msg_q/redeliver");
    EXPECT_EQ(r.status, 503);
}

}  // namespace
}  // namespace conduit::webhooks::testing
