#include "hubs/hubs.hpp"

#include "realtime/connection.hpp"
#include "tasks/task_events.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <map>

namespace conduit::hubs {

namespace {

namespace bj = boost::json;
using realtime::CallContext;
using realtime::Completer;
using realtime::HubResult;

/// One hub that delivers task events: its subscriptions and (once registered) its server.
struct TaskHub {
    std::weak_ptr<realtime::HubServer> server;
    std::unique_ptr<TaskSubscriptions> subs;
    std::string only_type;  // image/video hubs accept only their own task type
};

/// A string argument, or nullopt.
std::optional<std::string> StringArg(const bj::array& args, size_t i) {
    if (i >= args.size() || !args[i].is_string()) {
        return std::nullopt;
    }
    return std::string(args[i].as_string());
}

/// A hub's channel prefix on the hub backplane: "hubs/tasks", "hubs/notifications", ...
std::string BackplanePrefix(std::string_view path) {
    return "hubs" + std::string(path.substr(path.rfind('/')));
}

/// "image"/"video" are accepted as short forms of the task types.
std::optional<std::string> NormalizeType(std::string_view type) {
    if (type == domain::kImageTask || type == "image") {
        return std::string(domain::kImageTask);
    }
    if (type == domain::kVideoTask || type == "video") {
        return std::string(domain::kVideoTask);
    }
    return std::nullopt;
}

}  // namespace

struct Hubs::State {
    HubsDeps deps;
    KeyConnectionLimiter limiter;
    KeyRateLimiter rate;
    // Navigation items: the data they were built from, provider health, the items.
    mutable std::mutex nav_mu;
    NavigationData nav_data;
    std::map<domain::Id, ProviderHealth> health;
    bj::array nav_items;
    uint64_t nav_generation = 0;  // newest load started
    std::shared_ptr<TaskHub> tasks_hub = std::make_shared<TaskHub>();
    std::shared_ptr<TaskHub> image_hub = std::make_shared<TaskHub>();
    std::shared_ptr<TaskHub> video_hub = std::make_shared<TaskHub>();
    explicit State(HubsDeps d)
        : deps(std::move(d)),
          limiter(deps.options.max_connections_per_key),
          rate(deps.options.method_rate_per_minute) {}

    /// The gate of every hub method invocation: the connection's key's limits.
    void LimitCall(const CallContext& ctx, std::function<void(std::optional<std::string>)> done) {
        const domain::Id key = KeyOf(ctx.connection->principal());
        if (deps.limit_invocation) {
            deps.limit_invocation(key, std::move(done));
            return;
        }
        if (rate.Allow(key, deps.clock.SteadyNs() / 1'000'000)) {
            done(std::nullopt);
        } else {
            done(std::string(kRateLimitExceeded));
        }
    }
};

bool IsAnnouncementSeverity(std::string_view severity) {
    return severity == "info" || severity == "warning" || severity == "error" ||
           severity == "critical";
}

domain::Id KeyOf(const realtime::Principal& principal) {
    if (!principal.data) {
        return 0;
    }
    return static_cast<const KeyPrincipal*>(principal.data.get())->key_id;
}

std::string KeyGroup(domain::Id key_id) { return "vkey-" + std::to_string(key_id); }

bool KeyConnectionLimiter::Acquire(const std::string& connection_id, domain::Id key_id) {
    std::lock_guard lock(mu_);
    if (by_conn_.count(connection_id) != 0) {
        return true;
    }
    int& n = per_key_[key_id];
    if (n >= max_) {
        if (n == 0) {
            per_key_.erase(key_id);
        }
        return false;
    }
    ++n;
    by_conn_.emplace(connection_id, key_id);
    return true;
}

void KeyConnectionLimiter::Release(const std::string& connection_id) {
    std::lock_guard lock(mu_);
    auto it = by_conn_.find(connection_id);
    if (it == by_conn_.end()) {
        return;
    }
    auto k = per_key_.find(it->second);
    if (k != per_key_.end() && --k->second <= 0) {
        per_key_.erase(k);
    }
    by_conn_.erase(it);
}

int KeyConnectionLimiter::CountFor(domain::Id key_id) const {
    std::lock_guard lock(mu_);
    auto it = per_key_.find(key_id);
    return it == per_key_.end() ? 0 : it->second;
}

}  // namespace conduit::hubs

namespace conduit::hubs {
namespace {

/// Connect/disconnect hooks shared by every hub: the per-key limit, the vkey group, and the
/// cleanup of task subscriptions.
void AddConnectionHooks(realtime::Hub& hub,
                        const std::shared_ptr<Hubs::State>& state,
                        std::shared_ptr<TaskHub> task_hub) {
    std::weak_ptr<Hubs::State> weak = state;
    hub.OnConnected([weak](realtime::HubConnection& conn,
                           realtime::HubContext& ctx) -> std::optional<std::string> {
        auto s = weak.lock();
        if (!s) {
            return std::string("shutting down");
        }
        domain::Id key = KeyOf(conn.principal());
        if (!s->limiter.Acquire(conn.id(), key)) {
            spdlog::warn("hubs: key {} is at its limit of {} connections", key,
                         s->deps.options.max_connections_per_key);
            return std::string("Too many connections for this key");
        }
        ctx.AddToGroup(conn.id(), KeyGroup(key));
        return std::nullopt;
    });
    hub.OnDisconnected([weak, task_hub](realtime::HubConnection& conn, realtime::HubContext&,
                                        const std::optional<std::string>&) {
        if (task_hub && task_hub->subs) {
            task_hub->subs->RemoveConnection(conn.id());
        }
        if (auto s = weak.lock()) {
            s->limiter.Release(conn.id());
        }
    });
}

/// SubscribeToTask/UnsubscribeFromTask of the tasks, image and video hubs.
void AddTaskMethods(realtime::Hub& hub,
                    const std::shared_ptr<Hubs::State>& state,
                    const std::shared_ptr<TaskHub>& task_hub) {
    std::weak_ptr<Hubs::State> weak = state;
    hub.OnAsync(
        "SubscribeToTask",
        [weak, task_hub](CallContext& ctx, const bj::array& args, Completer done) {
            auto s = weak.lock();
            auto task_id = StringArg(args, 0);
            if (!s || !task_id || task_id->empty()) {
                done(HubResult::Exception(std::string(kTaskNotFound)));
                return;
            }
            const domain::Id key = KeyOf(ctx.connection->principal());
            const std::string conn_id = ctx.connection->id();
            if (!task_hub->subs->Begin(conn_id, *task_id, key)) {
                done(HubResult::Exception("Too many subscriptions on this connection"));
                return;
            }
            const core::Clock* clock = &s->deps.clock;
            s->deps.lookup(ctx.connection->loop(), *task_id, key,
                           [task_hub, conn_id, id = *task_id, clock,
                            done](core::Result<domain::AsyncTask> task) {
                               bool ok = task.has_value() && (task_hub->only_type.empty() ||
                                                              task->type == task_hub->only_type);
                               if (!ok) {
                                   // Unknown, another key's, or of the other media type:
                                   // indistinguishable.
                                   task_hub->subs->Remove(conn_id, id);
                                   done(HubResult::Exception(std::string(kTaskNotFound)));
                                   return;
                               }
                               // The completion first: the client's invoke() resolves before the
                               // catch-up events arrive (they are sent right after, in order, on
                               // the same loop).
                               done(HubResult::Void());
                               task_hub->subs->Confirm(conn_id, *task, clock->NowUnixMs());
                           });
        },
        1);
    hub.On(
        "UnsubscribeFromTask",
        [weak, task_hub](CallContext& ctx, const bj::array& args) {
            if (auto id = StringArg(args, 0)) {
                task_hub->subs->Remove(ctx.connection->id(), *id);
            }
            return HubResult::Void();
        },
        1);
}

/// SubscribeToTaskType/UnsubscribeFromTaskType of the tasks hub (limited to the caller's key).
void AddTypeMethods(realtime::Hub& hub,
                    const std::shared_ptr<Hubs::State>& state,
                    const std::shared_ptr<TaskHub>& task_hub) {
    std::weak_ptr<Hubs::State> weak = state;
    hub.On(
        "SubscribeToTaskType",
        [weak, task_hub](CallContext& ctx, const bj::array& args) {
            auto raw = StringArg(args, 0);
            auto type = raw ? NormalizeType(*raw) : std::nullopt;
            if (!type) {
                return HubResult::Exception(
                    "Unknown task type (expected image_generation or video_generation)");
            }
            if (!task_hub->subs->AddType(ctx.connection->id(), KeyOf(ctx.connection->principal()),
                                         *type)) {
                return HubResult::Exception("Too many subscriptions on this connection");
            }
            return HubResult::Void();
        },
        1);
    hub.On(
        "UnsubscribeFromTaskType",
        [weak, task_hub](CallContext& ctx, const bj::array& args) {
            auto raw = StringArg(args, 0);
            if (auto type = raw ? NormalizeType(*raw) : std::nullopt) {
                task_hub->subs->RemoveType(ctx.connection->id(), KeyOf(ctx.connection->principal()),
                                           *type);
            }
            return HubResult::Void();
        },
        1);
}

std::unique_ptr<TaskSubscriptions> MakeSubs(const std::shared_ptr<TaskHub>& task_hub,
                                            TaskSubscriptions::Mapper mapper) {
    std::weak_ptr<TaskHub> weak = task_hub;
    return std::make_unique<TaskSubscriptions>(
        std::move(mapper), [weak](const std::string& connection_id, const HubMessage& msg) {
            auto th = weak.lock();
            if (!th) {
                return;
            }
            if (auto server = th->server.lock()) {
                // Every instance receives every task event: deliver to this one's connections only.
                server->SendToLocalConnection(connection_id, msg.target, msg.args);
            }
        });
}

}  // namespace

Hubs::~Hubs() {
    if (backplane_ != nullptr && subscription_ != 0) {
        backplane_->Unsubscribe(subscription_);
    }
    if (backplane_ != nullptr && config_subscription_ != 0) {
        backplane_->Unsubscribe(config_subscription_);
    }
}

void Hubs::Announce(const std::string& message, const std::string& severity) {
    notifications->SendToAll("SystemAnnouncement",
                             bj::array{bj::string_view(message), bj::string_view(severity)});
}

bj::array Hubs::NavigationState() const {
    std::lock_guard lock(state_->nav_mu);
    return state_->nav_items;
}

void Hubs::RefreshNavigation(std::function<void()> done) {
    auto state = state_;
    if (!state->deps.load_navigation) {
        if (done) {
            done();
        }
        return;
    }
    uint64_t generation = 0;
    {
        std::lock_guard lock(state->nav_mu);
        generation = ++state->nav_generation;
    }
    std::weak_ptr<State> weak = state;
    auto nav = navigation;
    state->deps.load_navigation(
        [weak, generation, nav, done = std::move(done)](core::Result<NavigationData> data) {
            auto s = weak.lock();
            if (!s) {
                return;
            }
            if (!data) {
                spdlog::warn("hubs: navigation state not reloaded: {}", data.error().message);
            } else {
                bj::array items;
                {
                    std::lock_guard lock(s->nav_mu);
                    if (generation < s->nav_generation) {
                        // A newer load is under way: it sends the newest items.
                        if (done) {
                            done();
                        }
                        return;
                    }
                    s->nav_data = std::move(*data);
                    s->nav_items = NavigationItems(s->nav_data, s->health);
                    items = s->nav_items;
                }
                if (nav) {
                    nav->SendToAllLocal("NavigationStateUpdated",
                                        bj::array{bj::object{{"items", std::move(items)}}});
                }
            }
            if (done) {
                done();
            }
        });
}

void Hubs::OnConfigChange(const ConfigChange& change) {
    if (change.entity == "ModelMapping") {
        bj::array args{change.id, bj::string_view(change.model_alias),
                       bj::string_view(change.change_type)};
        notifications->SendToAllLocal("ModelMappingChanged", args);
        navigation->SendToAllLocal("ModelMappingChanged", args);
    }
    if (change.AffectsNavigation()) {
        RefreshNavigation();
    }
}

void Hubs::OnProviderHealthChanged(domain::Id provider_id,
                                   const std::string& status,
                                   const std::string& message) {
    bj::array args{provider_id, bj::string_view(status), bj::string_view(message)};
    notifications->SendToAllLocal("ProviderHealthChanged", args);
    navigation->SendToAllLocal("ProviderHealthChanged", args);
    bj::array items;
    {
        std::lock_guard lock(state_->nav_mu);
        state_->health[provider_id] = ProviderHealth{status, message};
        state_->nav_items = NavigationItems(state_->nav_data, state_->health);
        items = state_->nav_items;
    }
    navigation->SendToAllLocal("NavigationStateUpdated",
                               bj::array{bj::object{{"items", std::move(items)}}});
}

void Hubs::OnSpend(const domain::RequestLogRow& row, const SpendTotals& totals) {
    SendSpendUpdate(*spend, row, totals);
}

void SendSpendUpdate(realtime::HubServer& spend_hub,
                     const domain::RequestLogRow& row,
                     const SpendTotals& totals) {
    if (!spend_hub.has_backplane() && spend_hub.ConnectionCount() == 0) {
        return;  // one instance and nobody listening: nothing to serialize or post
    }
    spend_hub.SendToGroupJson(KeyGroup(row.virtual_key_id), "SpendUpdate",
                              SpendUpdateArgsJson(row, totals));
}

void SendBudgetAlert(realtime::HubServer& spend_hub, const BudgetAlertInfo& alert) {
    if (!spend_hub.has_backplane() && spend_hub.ConnectionCount() == 0) {
        return;
    }
    spend_hub.SendToGroupJson(KeyGroup(alert.key_id), "BudgetAlert", BudgetAlertArgsJson(alert));
}

bool IsBilled(const domain::RequestLogRow& row) {
    return (row.status_code >= 200 && row.status_code < 300) || row.cost > 0;
}

std::shared_ptr<realtime::HubServer> HubPublisher(bus::Backplane& hub_backplane,
                                                  std::string_view path) {
    realtime::HubOptions o;
    o.backplane_prefix = BackplanePrefix(path);
    return std::make_shared<realtime::HubServer>(std::make_shared<realtime::Hub>(), o,
                                                 &hub_backplane);
}

void Hubs::CloseAll(std::function<void()> done) {
    std::vector<std::shared_ptr<realtime::HubServer>> servers{tasks, image,         video,
                                                              spend, notifications, navigation};
    auto left = std::make_shared<std::atomic<size_t>>(servers.size());
    auto finish = std::make_shared<std::function<void()>>(std::move(done));
    for (const auto& server : servers) {
        server->CloseAll(true, [left, finish] {
            if (left->fetch_sub(1) == 1 && *finish) {
                (*finish)();
            }
        });
    }
}

void Hubs::OnTaskEvent(const tasks::TaskEvent& e) {
    for (const auto& th : {state_->tasks_hub, state_->image_hub, state_->video_hub}) {
        th->subs->OnEvent(e);
    }
}

std::unique_ptr<Hubs> RegisterHubs(net::Router& router, HubsDeps deps) {
    std::unique_ptr<Hubs> hubs(new Hubs());
    auto state = std::make_shared<Hubs::State>(std::move(deps));
    hubs->state_ = state;

    realtime::HubOptions options = state->deps.options.hub;
    std::weak_ptr<Hubs::State> weak = state;
    options.authenticate = [weak](const net::Request& req,
                                  std::string_view token) -> std::optional<realtime::Principal> {
        auto s = weak.lock();
        if (!s) {
            return std::nullopt;
        }
        auto key = s->deps.authenticate(req, token);
        if (!key) {
            return std::nullopt;
        }
        realtime::Principal p;
        p.user_id = std::to_string(*key);
        p.data = std::make_shared<const KeyPrincipal>(KeyPrincipal{*key});
        return p;
    };

    state->tasks_hub->subs = MakeSubs(state->tasks_hub, TaskHubMessage);
    state->image_hub->subs = MakeSubs(state->image_hub, ImageHubMessage);
    state->image_hub->only_type = std::string(domain::kImageTask);
    state->video_hub->subs = MakeSubs(state->video_hub, VideoHubMessage);
    state->video_hub->only_type = std::string(domain::kVideoTask);

    auto build = [&](const std::shared_ptr<TaskHub>& th, bool types) {
        auto hub = std::make_shared<realtime::Hub>();
        AddConnectionHooks(*hub, state, th);
        hub->OnInvocation(
            [weak = std::weak_ptr<Hubs::State>(state)](
                CallContext& ctx, std::function<void(std::optional<std::string>)> proceed) {
                if (auto s = weak.lock()) {
                    s->LimitCall(ctx, std::move(proceed));
                } else {
                    proceed(std::nullopt);
                }
            });
        if (th) {
            AddTaskMethods(*hub, state, th);
            if (types) {
                AddTypeMethods(*hub, state, th);
            }
        }
        return hub;
    };
    // Each hub its own channels on the hub backplane (see RegisterHubs' comment in hubs.hpp).
    bus::Backplane* hub_bp = state->deps.hub_backplane;
    auto reg = [&](std::string_view path, std::shared_ptr<realtime::Hub> hub) {
        realtime::HubOptions o = options;
        o.backplane_prefix = BackplanePrefix(path);
        return realtime::RegisterHub(router, std::string(path), std::move(hub), std::move(o),
                                     hub_bp);
    };
    hubs->tasks = reg(kTasksHubPath, build(state->tasks_hub, true));
    hubs->image = reg(kImageHubPath, build(state->image_hub, false));
    hubs->video = reg(kVideoHubPath, build(state->video_hub, false));
    // Spend and notifications: connect + vkey group.
    hubs->spend = reg(kSpendHubPath, build(nullptr, false));
    hubs->notifications = reg(kNotificationsHubPath, build(nullptr, false));
    // Navigation state: GetNavigationState() → {items}.
    auto nav = build(nullptr, false);
    nav->On(
        "GetNavigationState",
        [weak](CallContext& ctx, const bj::array&) {
            auto s = weak.lock();
            if (!s) {
                return HubResult::Unexpected();
            }
            std::lock_guard lock(s->nav_mu);
            return HubResult::Value(bj::object{{"items", s->nav_items}});
        },
        0);
    hubs->navigation = reg(kNavigationHubPath, std::move(nav));
    state->tasks_hub->server = hubs->tasks;
    state->image_hub->server = hubs->image;
    state->video_hub->server = hubs->video;

    hubs->backplane_ = &state->deps.backplane;
    Hubs* raw = hubs.get();
    hubs->subscription_ = state->deps.backplane.Subscribe(
        std::string(tasks::kTaskEventsChannel), [raw](std::string_view, std::string_view payload) {
            auto e = tasks::ParseTaskEvent(payload);
            if (!e) {
                spdlog::warn("hubs: unparsable task event: {}", e.error().message);
                return;
            }
            raw->OnTaskEvent(*e);
        });
    hubs->config_subscription_ = state->deps.backplane.Subscribe(
        std::string(kConfigChangedChannel), [raw](std::string_view, std::string_view payload) {
            auto c = ParseConfigChange(payload);
            if (!c) {
                spdlog::warn("hubs: unparsable configuration change: {}", c.error().message);
                return;
            }
            raw->OnConfigChange(*c);
        });
    return hubs;
}

}  // namespace conduit::hubs
