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
