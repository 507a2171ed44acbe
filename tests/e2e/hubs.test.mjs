// Real-time hubs (specs/api.md §5), end to end with the official @microsoft/signalr client
// against the real `conduit` binary and the mock provider: every transport forced and once
// unforced; task events of real video/image tasks in order with the documented positional
// arguments; cancellation; ownership (HubException 'Task not found'); 401 on negotiate.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startMock, startGateway, seed, seedVideo, waitFor, apiCall } from './harness.mjs';

const require = createRequire(import.meta.url);
const signalR = require('@microsoft/signalr');

const LIMIT = 5;  // hub connections per key (the main key stays well below it)
const GATEWAY_FLAGS = [
  '--task-poll-interval-ms', '100',
  '--task-sweep-interval-ms', '200',
  '--hub-max-connections-per-key', String(LIMIT),
];

let mock;
let gw;
let fx;
let otherKey;
let limitedKey;

before(async () => {
  mock = await startMock(['--job-duration-ms', '1200']);
  gw = await startGateway(GATEWAY_FLAGS);
  fx = await seed(gw, mock);
  await seedVideo(gw, fx);
  otherKey = (await gw.admin('POST', '/api/VirtualKeys', { keyName: 'other', virtualKeyGroupId: fx.group.id })).virtualKey;
  limitedKey = (await gw.admin('POST', '/api/VirtualKeys', { keyName: 'limited', virtualKeyGroupId: fx.group.id })).virtualKey;
});

after(async () => {
  await gw?.stop();
  mock?.stop();
});

// --- helpers ---------------------------------------------------------------------------------

const TRANSPORTS = [
  ['WebSockets', signalR.HttpTransportType.WebSockets, 'WebSocketTransport'],
  ['ServerSentEvents', signalR.HttpTransportType.ServerSentEvents, 'ServerSentEventsTransport'],
  ['LongPolling', signalR.HttpTransportType.LongPolling, 'LongPollingTransport'],
  // Unforced: the client picks the first offered transport, WebSockets (Node: the `ws` package).
  ['unforced', undefined, 'WebSocketTransport'],
];

const open = [];

function build(hub, { transport, key = fx.keys.main } = {}) {
  const opts = { accessTokenFactory: () => key };
  if (transport !== undefined) opts.transport = transport;
  return new signalR.HubConnectionBuilder()
    .withUrl(`${gw.base}${hub}`, opts)
    .configureLogging(signalR.LogLevel.None)
    .build();
}

async function connect(hub, opts = {}) {
  const c = build(hub, opts);
  await c.start();
  open.push(c);
  return c;
}

async function closeAll() {
  await Promise.all(open.splice(0).map((c) => c.stop().catch(() => {})));
}

/** The transport class the client really uses (internal, but stable across 6.x–10.x). */
const transportName = (c) => c.connection?.transport?.constructor?.name;

/** Records every listed server→client method as {name, args}, in arrival order. */
function record(c, names) {
  const events = [];
  for (const name of names) c.on(name, (...args) => events.push({ name, args }));
  return events;
}

const call = (method, route, opts = {}) => apiCall(gw.base, opts.key ?? fx.keys.main, method, route, opts);

async function submit(kind, extra = {}, key = fx.keys.main) {
  const route = kind === 'video' ? '/v1/videos/generations/async' : '/v1/images/generations/async';
  const model = kind === 'video' ? 'sora' : 'dall-e-3';
  const res = await call('POST', route, { body: { model, prompt: 'a red fox', ...extra }, key });
  assert.equal(res.status, 202, res.text);
  return res.json.task_id;
}

const TASK_EVENTS = ['TaskStarted', 'TaskProgress', 'TaskCompleted', 'TaskFailed', 'TaskCancelled', 'TaskTimedOut'];
const VIDEO_EVENTS = ['VideoGenerationStarted', 'VideoGenerationProgress', 'VideoGenerationCompleted', 'VideoGenerationFailed'];
const IMAGE_EVENTS = ['ImageGenerationStarted', 'ImageGenerationProgress', 'ImageGenerationCompleted', 'ImageGenerationFailed'];

const waitEvent = (events, name, ms = 10000) =>
  waitFor(() => events.find((e) => e.name === name) ?? null, ms, `${name} event`);

/** Started → Progress* (non-decreasing) → Completed, nothing else, for `taskId`. */
function assertLifecycle(events, taskId, started, progress, completed) {
  const names = events.map((e) => e.name);
  assert.equal(names[0], started, names.join(','));
  assert.equal(names.at(-1), completed, names.join(','));
  assert.equal(names.filter((n) => n === completed).length, 1, names.join(','));
  const middle = names.slice(1, -1);
  assert.ok(middle.every((n) => n === progress), names.join(','));
  assert.ok(middle.length >= 1, `at least one ${progress}: ${names.join(',')}`);
  for (const e of events) assert.equal(e.args[0], taskId);
  let last = -1;
  for (const e of events.filter((x) => x.name === progress)) {
    const p = e.args[1];
    assert.ok(Number.isInteger(p) && p >= 0 && p <= 100, `progress ${p}`);
    assert.ok(p >= last, `progress went back: ${last} → ${p}`);
    last = p;
  }
}

// --- per transport ---------------------------------------------------------------------------

for (const [label, transport, className] of TRANSPORTS) {
  describe(`transport: ${label}`, () => {
    after(closeAll);

    it('connects with the virtual key over the expected transport', async () => {
      const c = await connect('/hubs/tasks', { transport });
      assert.equal(c.state, signalR.HubConnectionState.Connected);
      assert.ok(c.connectionId);
      assert.equal(transportName(c), className);
      await c.stop();
    });

    it('SubscribeToTask on a video task: TaskStarted → TaskProgress… → TaskCompleted', async () => {
      const c = await connect('/hubs/tasks', { transport });
      const events = record(c, TASK_EVENTS);
      const id = await submit('video');
      await c.invoke('SubscribeToTask', id);
      await waitEvent(events, 'TaskCompleted');
      await new Promise((r) => setTimeout(r, 200));  // nothing may follow the completion
      assertLifecycle(events, id, 'TaskStarted', 'TaskProgress', 'TaskCompleted');

      const [, type, metadata] = events[0].args;
      assert.equal(type, 'video_generation');
      assert.equal(metadata.model, 'sora');
      assert.equal(metadata.prompt, 'a red fox');
      for (const e of events.filter((x) => x.name === 'TaskProgress')) {
        assert.equal(typeof e.args[2], 'string');
      }
      const result = events.at(-1).args[1];
      assert.ok(result.data[0].url.includes('/v1/media/'), JSON.stringify(result));
      // The hub agrees with the task API.
      const t = (await call('GET', `/v1/tasks/${id}`)).json;
      assert.equal(t.status, 'completed');
      await c.stop();
    });

    it('cancel → TaskCancelled(taskId, reason)', async () => {
      const c = await connect('/hubs/tasks', { transport });
      const events = record(c, TASK_EVENTS);
      const id = await submit('video', { mock_job_duration_ms: 20000 });
      await c.invoke('SubscribeToTask', id);
      await waitEvent(events, 'TaskStarted');
      const res = await call('DELETE', `/v1/videos/generations/${id}`);
      assert.equal(res.status, 200, res.text);
      const cancelled = await waitEvent(events, 'TaskCancelled');
      assert.equal(cancelled.args[0], id);
      assert.equal(typeof cancelled.args[1], 'string');
      assert.ok(cancelled.args[1].length > 0);
      assert.equal(events.filter((e) => e.name === 'TaskCompleted').length, 0);
      await c.stop();
    });

    it("another key's task or an unknown id → HubException 'Task not found'", async () => {
      const c = await connect('/hubs/tasks', { transport });
      const events = record(c, TASK_EVENTS);
      const foreign = await submit('video', {}, otherKey);
      await assert.rejects(c.invoke('SubscribeToTask', foreign), (err) => {
        assert.match(err.message, /HubException: Task not found/);
        return true;
      });
      await assert.rejects(c.invoke('SubscribeToTask', 'task_00000000000000000000000000000000'),
        /HubException: Task not found/);
      // The connection stays usable, and the foreign task's events never arrive.
      const mine = await submit('video');
      await c.invoke('SubscribeToTask', mine);
      await waitEvent(events, 'TaskCompleted');
      assert.ok(events.every((e) => e.args[0] === mine), JSON.stringify(events.map((e) => e.args[0])));
      await c.stop();
    });

    it('a bad key is refused with 401 on negotiate', async () => {
      const c = build('/hubs/tasks', { transport, key: 'condt_not-a-real-key' });
      await assert.rejects(c.start(), (err) => {
        assert.match(String(err.message), /401|Unauthorized/);
        return true;
      });
      const res = await fetch(`${gw.base}/hubs/tasks/negotiate?negotiateVersion=1`, { method: 'POST' });
      assert.equal(res.status, 401);
    });

    it('video hub: VideoGenerationStarted → Progress… → Completed with the documented arguments', async () => {
      const c = await connect('/hubs/video-generation', { transport });
      assert.equal(transportName(c), className);
      const events = record(c, VIDEO_EVENTS);
      const id = await submit('video');
      await c.invoke('SubscribeToTask', id);
      await waitEvent(events, 'VideoGenerationCompleted');
      await new Promise((r) => setTimeout(r, 200));
      assertLifecycle(events, id, 'VideoGenerationStarted', 'VideoGenerationProgress', 'VideoGenerationCompleted');
      assert.deepEqual(events[0].args.slice(1), ['a red fox', null]);  // no estimate from providers
      for (const e of events.filter((x) => x.name === 'VideoGenerationProgress')) {
        assert.equal(e.args.length, 5);
        assert.equal(typeof e.args[4], 'string');
      }
      const [, url, , metadata] = events.at(-1).args;
      assert.ok(url.includes('/v1/media/'), url);
      assert.equal(metadata.data[0].url, url);
      await c.stop();
    });
  });
}

// --- once ------------------------------------------------------------------------------------

describe('hubs', () => {
  after(closeAll);

  it('image hub: ImageGeneration events; a video task is not found there', async () => {
    const c = await connect('/hubs/image-generation');
    const events = record(c, IMAGE_EVENTS);
    const video = await submit('video');
    await assert.rejects(c.invoke('SubscribeToTask', video), /HubException: Task not found/);
    const id = await submit('image');
    await c.invoke('SubscribeToTask', id);
    const done = await waitEvent(events, 'ImageGenerationCompleted');
    assert.equal(events[0].name, 'ImageGenerationStarted');
    assert.deepEqual(events[0].args, [id, 'a red fox', 'dall-e-3']);
    assert.equal(done.args[0], id);
    assert.ok(done.args[1].includes('/v1/media/'), done.args[1]);
    assert.equal(done.args[2].data[0].url, done.args[1]);
    await c.stop();
  });

  it("SubscribeToTaskType delivers the key's own tasks only, each event once", async () => {
    const mine = await connect('/hubs/tasks');
    const theirs = await connect('/hubs/tasks', { key: otherKey });
    const mineEvents = record(mine, TASK_EVENTS);
    const theirEvents = record(theirs, TASK_EVENTS);
    await mine.invoke('SubscribeToTaskType', 'video_generation');
    await theirs.invoke('SubscribeToTaskType', 'video_generation');
    await assert.rejects(mine.invoke('SubscribeToTaskType', 'audio'), /HubException: Unknown task type/);
    const id = await submit('video');
    await mine.invoke('SubscribeToTask', id);  // both subscriptions: still one copy of each
    await waitEvent(mineEvents, 'TaskCompleted');
    await new Promise((r) => setTimeout(r, 200));
    assertLifecycle(mineEvents, id, 'TaskStarted', 'TaskProgress', 'TaskCompleted');
    const progress = mineEvents.filter((e) => e.name === 'TaskProgress').map((e) => e.args[1]);
    // No event twice (a duplicate would show as an identical consecutive pair).
    assert.equal(mineEvents.filter((e) => e.name === 'TaskStarted').length, 1, JSON.stringify(progress));
    assert.equal(theirEvents.length, 0);

    await mine.invoke('UnsubscribeFromTaskType', 'video_generation');
    await mine.invoke('UnsubscribeFromTask', id);
    const before = mineEvents.length;
    const next = await submit('video', { mock_job_duration_ms: 300 });
    await waitFor(async () => ((await call('GET', `/v1/tasks/${next}`)).json.status === 'completed' ? true : null), 10000, 'next task done');
    assert.equal(mineEvents.length, before);
    await mine.stop();
    await theirs.stop();
  });

  it('spend and notifications hubs accept the key', async () => {
    const spend = await connect('/hubs/spend');
    const notes = await connect('/hubs/notifications', { transport: signalR.HttpTransportType.LongPolling });
    assert.ok(spend.connectionId);
    assert.ok(notes.connectionId);
    await spend.stop();
    await notes.stop();
  });

  it('per-key connection limit: the connection over it is closed, another key is unaffected', async () => {
    const conns = [];
    for (let i = 0; i < LIMIT; i++) conns.push(await connect('/hubs/tasks', { key: limitedKey }));
    const fourth = build('/hubs/notifications', { key: limitedKey });
    const closed = new Promise((r) => fourth.onclose(r));
    const outcome = await fourth.start().then(() => 'started', (e) => e);
    if (outcome === 'started') {
      const err = await closed;
      assert.match(String(err?.message), /Connection closed with an error/);
    } else {
      // Closed before the client saw the handshake response.
      assert.match(String(outcome?.message), /Handshake was canceled|Connection closed with an error/);
    }
    const other = await connect('/hubs/tasks', { key: otherKey });
    assert.ok(other.connectionId);
    await other.stop();
    // Closing one frees a slot.
    await conns[0].stop();
    await waitFor(async () => {
      const c = build('/hubs/tasks', { key: limitedKey });
      const ok = await c.start().then(() => true, () => false);
      if (!ok) return null;
      const alive = await new Promise((r) => {
        c.onclose(() => r(false));
        setTimeout(() => r(c.state === signalR.HubConnectionState.Connected), 300);
      });
      if (alive) { open.push(c); return true; }
      return null;
    }, 5000, 'a freed slot');
    await Promise.all(conns.slice(1).map((c) => c.stop()));
  });
});

// --- hub sources: navigation state, notifications, spend, rate limit, shutdown ----------------

/** POST /api/notifications/announcements; returns {status, json}. */
async function announce(body, { key } = {}) {
  const res = await fetch(`${gw.base}/api/notifications/announcements`, {
    method: 'POST',
    headers: { 'X-API-Key': key ?? 'e2e-master-key-0123456789', 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

describe('hub sources', () => {
  after(closeAll);

  it('navigation-state: GetNavigationState, then ModelMappingChanged + NavigationStateUpdated on admin changes', async () => {
    const nav = await connect('/hubs/navigation-state');
    const events = record(nav, ['NavigationStateUpdated', 'ModelMappingChanged']);
    const state = await nav.invoke('GetNavigationState');
    const chat = state.items.find((i) => i.id === 'gpt-4o-mini');
    assert.deepEqual(Object.keys(chat).sort(), ['badgeColor', 'badgeText', 'id', 'isEnabled', 'path', 'tooltip']);
    assert.equal(chat.isEnabled, true);
    assert.equal(chat.path, '/v1/models/gpt-4o-mini');
    assert.equal(chat.badgeText, null);
    assert.match(chat.tooltip, /mock\/mock-gpt/);

    const m = await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'nav-test', providerModelId: 'mock-nav', providerId: fx.provider.id,
    });
    const created = await waitFor(() => events.find((e) => e.name === 'ModelMappingChanged' && e.args[2] === 'Created'), 5000, 'Created');
    assert.deepEqual(created.args, [m.id, 'nav-test', 'Created']);
    const shown = await waitFor(() => events.find((e) => e.name === 'NavigationStateUpdated' &&
      e.args[0].items.some((i) => i.id === 'nav-test' && i.isEnabled)), 5000, 'nav-test item');
    assert.ok(shown);

    await gw.admin('PUT', `/api/ModelProviderMapping/${m.id}`, { isEnabled: false });
    const disabled = await waitFor(() => events.find((e) => e.name === 'NavigationStateUpdated' &&
      e.args[0].items.some((i) => i.id === 'nav-test' && !i.isEnabled)), 5000, 'nav-test disabled');
    const item = disabled.args[0].items.find((i) => i.id === 'nav-test');
    assert.equal(item.badgeText, 'Disabled');
    assert.equal(item.badgeColor, 'gray');
    assert.ok(events.some((e) => e.name === 'ModelMappingChanged' && e.args[2] === 'Updated' && e.args[0] === m.id));
    const now = await nav.invoke('GetNavigationState');
    assert.equal(now.items.find((i) => i.id === 'nav-test').isEnabled, false);

    await gw.admin('DELETE', `/api/ModelProviderMapping/${m.id}`);
    await waitFor(() => events.find((e) => e.name === 'ModelMappingChanged' && e.args[2] === 'Deleted'), 5000, 'Deleted');
    await waitFor(async () => !(await nav.invoke('GetNavigationState')).items.some((i) => i.id === 'nav-test'), 5000, 'nav-test gone');
    await nav.stop();
  });

  it('notifications: ModelMappingChanged on create/update/delete, once each', async () => {
    const notes = await connect('/hubs/notifications', { transport: signalR.HttpTransportType.ServerSentEvents });
    const events = record(notes, ['ModelMappingChanged']);
    const m = await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'notes-test', providerModelId: 'mock-notes', providerId: fx.provider.id,
    });
    await gw.admin('PUT', `/api/ModelProviderMapping/${m.id}`, { priority: 5 });
    await gw.admin('DELETE', `/api/ModelProviderMapping/${m.id}`);
    await waitFor(() => events.length >= 3, 5000, 'three ModelMappingChanged');
    await new Promise((r) => setTimeout(r, 200));  // a duplicate would arrive by now
    assert.deepEqual(events.map((e) => e.args), [
      [m.id, 'notes-test', 'Created'], [m.id, 'notes-test', 'Updated'], [m.id, 'notes-test', 'Deleted'],
    ]);
    await notes.stop();
  });

  it('announcements: every notifications client gets SystemAnnouncement verbatim; bad input is 400', async () => {
    const a = await connect('/hubs/notifications');
    const b = await connect('/hubs/notifications', { transport: signalR.HttpTransportType.LongPolling, key: otherKey });
    const ea = record(a, ['SystemAnnouncement']);
    const eb = record(b, ['SystemAnnouncement']);
    const message = 'Maintenance at 02:00 UTC — “quotes”, <tags> & \\ backslash ✓';
    const res = await announce({ message, severity: 'warning' });
    assert.equal(res.status, 202, res.text);
    assert.equal(res.json.accepted, true);
    await waitFor(() => ea.length && eb.length, 5000, 'announcement on both');
    assert.deepEqual(ea[0].args, [message, 'warning']);
    assert.deepEqual(eb[0].args, [message, 'warning']);
    // Severity defaults to info.
    assert.equal((await announce({ message: 'plain' })).status, 202);
    await waitFor(() => ea.length === 2, 5000, 'second announcement');
    assert.deepEqual(ea[1].args, ['plain', 'info']);

    for (const bad of [{}, { message: '' }, { message: 42 }, { message: 'x', severity: 'panic' }, '{not json']) {
      const r = await announce(bad);
      assert.equal(r.status, 400, `${JSON.stringify(bad)} → ${r.status} ${r.text}`);
      assert.ok(r.json?.error?.message, r.text);
    }
    assert.equal((await announce({ message: 'x' }, { key: 'wrong' })).status, 401);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(ea.length, 2);
    assert.equal(eb.length, 2);
    await a.stop();
    await b.stop();
  });

  it('spend: SpendUpdate to the key after a chat request, not to another key', async () => {
    const mine = await connect('/hubs/spend');
    const theirs = await connect('/hubs/spend', { key: otherKey });
    const em = record(mine, ['SpendUpdate']);
    const et = record(theirs, ['SpendUpdate']);
    const res = await call('POST', '/v1/chat/completions', {
      body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello spend' }] },
    });
    assert.equal(res.status, 200, res.text);
    const requestId = res.headers.get('x-request-id');
    const u = await waitFor(() => em.find((e) => e.args[0].metadata.requestId === requestId), 5000, 'SpendUpdate');
    const s = u.args[0];
    assert.equal(s.model, 'gpt-4o-mini');
    assert.equal(s.provider, 'mock');
    assert.equal(s.metadata.endpoint, '/v1/chat/completions');
    assert.equal(s.metadata.inputTokens, res.json.usage.prompt_tokens);
    assert.equal(s.metadata.outputTokens, res.json.usage.completion_tokens);
    // Prices: $1 / $2 per million tokens (seed), exact decimals.
    const expected = (res.json.usage.prompt_tokens * 1 + res.json.usage.completion_tokens * 2) / 1e6;
    assert.ok(Math.abs(s.newSpend - expected) < 1e-9, `${s.newSpend} vs ${expected}`);
    assert.ok(s.newSpend > 0);
    assert.ok(s.totalSpend >= s.newSpend);
    assert.ok(s.budgetRemaining > 0 && s.budgetRemaining < 100, String(s.budgetRemaining));
    assert.ok(!Number.isNaN(Date.parse(s.timestamp)), s.timestamp);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(et.length, 0);
    assert.equal(em.filter((e) => e.args[0].metadata.requestId === requestId).length, 1);
    await mine.stop();
    await theirs.stop();
  });
});

describe('hub method rate limit and shutdown', () => {
  let gw2;
  let key2;
  let other2;
  before(async () => {
    gw2 = await startGateway(['--hub-method-rate-per-minute', '3', '--shutdown-grace-ms', '30000']);
    const g = await gw2.admin('POST', '/api/VirtualKeyGroups', { groupName: 'g', initialBalance: 1 });
    key2 = (await gw2.admin('POST', '/api/VirtualKeys', { keyName: 'k', virtualKeyGroupId: g.id })).virtualKey;
    other2 = (await gw2.admin('POST', '/api/VirtualKeys', { keyName: 'o', virtualKeyGroupId: g.id })).virtualKey;
  });
  after(async () => { await gw2?.stop(); });

  const build2 = (hub, key, transport, reconnect) => {
    const opts = { accessTokenFactory: () => key };
    if (transport !== undefined) opts.transport = transport;
    let b = new signalR.HubConnectionBuilder().withUrl(`${gw2.base}${hub}`, opts).configureLogging(signalR.LogLevel.None);
    if (reconnect) b = b.withAutomaticReconnect([60000]);  // long first delay: the test sees 'reconnecting'
    return b.build();
  };

  it("over the per-key rate a method completes with 'Rate limit exceeded'; the connection stays", async () => {
    const c = build2('/hubs/navigation-state', key2);
    await c.start();
    for (let i = 0; i < 3; i++) await c.invoke('GetNavigationState');
    await assert.rejects(c.invoke('GetNavigationState'), /Rate limit exceeded/);
    await assert.rejects(c.invoke('GetNavigationState'), /Rate limit exceeded/);
    assert.equal(c.state, signalR.HubConnectionState.Connected);
    // Another key has its own budget; the limit is per key across connections and hubs.
    const o = build2('/hubs/tasks', other2);
    await o.start();
    await assert.rejects(o.invoke('SubscribeToTask', 'nope'), /Task not found/);
    const c2 = build2('/hubs/tasks', key2);
    await c2.start();
    await assert.rejects(c2.invoke('UnsubscribeFromTask', 'x'), /Rate limit exceeded/);
    await Promise.all([c.stop(), o.stop(), c2.stop()]);
  });

  it('SIGTERM: every client gets a Close that allows reconnecting, and the drain does not wait for SSE/long polls', async () => {
    const clients = [
      build2('/hubs/notifications', other2, signalR.HttpTransportType.WebSockets, true),
      build2('/hubs/notifications', other2, signalR.HttpTransportType.ServerSentEvents, true),
      build2('/hubs/spend', other2, signalR.HttpTransportType.LongPolling, true),
    ];
    const reconnecting = clients.map((c) => new Promise((r) => c.onreconnecting(() => r('reconnecting'))));
    const closed = clients.map((c) => new Promise((r) => c.onclose(() => r('closed'))));
    for (const c of clients) await c.start();
    const t0 = Date.now();
    gw2.proc.kill('SIGTERM');
    const outcomes = await Promise.all(clients.map((c, i) => Promise.race([reconnecting[i], closed[i]])));
    assert.deepEqual(outcomes, ['reconnecting', 'reconnecting', 'reconnecting']);
    const exit = await gw2.exited;
    const elapsed = Date.now() - t0;
    assert.equal(exit.code, 0);
    // The drain grace is 30 s: held SSE streams and polls would have kept the process that long.
    assert.ok(elapsed < 10000, `exited after ${elapsed} ms`);
    await Promise.all(clients.map((c) => c.stop().catch(() => {})));
  });
});
