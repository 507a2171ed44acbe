// The gateway with the Redis Backplane (--redis-url): task events travel through Redis pub/sub to
// the hubs, and readiness reports the backplane. Needs CONDUIT_TEST_REDIS (scripts/engines.sh
// start redis prints it; `make test` sets it); skipped otherwise.
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import { startMock, startGateway, seed, seedVideo, waitFor, apiCall } from './harness.mjs';

const require = createRequire(import.meta.url);
const signalR = require('@microsoft/signalr');

const REDIS = process.env.CONDUIT_TEST_REDIS;
const skip = REDIS ? false : 'CONDUIT_TEST_REDIS is not set (scripts/engines.sh start redis)';

let mock;
let gw;
let fx;

before(async () => {
  if (skip) return;
  mock = await startMock(['--job-duration-ms', '2500']);
  gw = await startGateway(['--task-poll-interval-ms', '100', '--redis-url', REDIS]);
  fx = await seed(gw, mock);
  await seedVideo(gw, fx);
});

after(async () => {
  await gw?.stop();
  mock?.stop();
});

/**
 * A raw RESP subscriber (what another instance's backplane sees): SUBSCRIBE `channel` on Redis
 * and collect everything it receives. Returns {received(), close()} once subscribed.
 */
async function redisSubscribe(channel) {
  const u = new URL(REDIS);
  const sock = net.connect(Number(u.port || 6379), u.hostname);
  let data = '';
  sock.on('data', (d) => { data += d.toString('latin1'); });
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  sock.write(`*2\r\n$9\r\nSUBSCRIBE\r\n$${channel.length}\r\n${channel}\r\n`);
  await waitFor(() => data.includes('subscribe'), 5000, 'SUBSCRIBE confirmed');
  return { received: () => data, close: () => sock.destroy() };
}

/** The backplane readiness check: {status, description}. */
async function backplaneCheck() {
  const res = await fetch(`${gw.base}/health/ready`);
  const body = await res.json();
  return body.checks.find((c) => c.name === 'backplane');
}

it('task events reach a hub subscriber through Redis, and readiness reports the backplane', { skip }, async () => {
  const before = await backplaneCheck();
  assert.ok(before, 'a backplane check exists in Redis mode');
  assert.equal(before.status, 'Healthy', before.description);
  const delivered = (d) => Number(/(\d+) delivered/.exec(d)?.[1] ?? NaN);
  const deliveredBefore = delivered(before.description);

  // Task events are published once on the prefixed channel (docs/task-events.md).
  const wire = await redisSubscribe('conduit:conduit.tasks');
  const c = new signalR.HubConnectionBuilder()
    .withUrl(`${gw.base}/hubs/tasks`, {
      accessTokenFactory: () => fx.keys.main,
      transport: signalR.HttpTransportType.WebSockets,
    })
    .configureLogging(signalR.LogLevel.None)
    .build();
  const events = [];
  for (const name of ['TaskStarted', 'TaskProgress', 'TaskCompleted', 'TaskFailed']) {
    c.on(name, (...args) => events.push({ name, args }));
  }
  await c.start();
  try {
    const res = await apiCall(gw.base, fx.keys.main, 'POST', '/v1/videos/generations/async', {
      body: { model: 'sora', prompt: 'a fox in the snow' },
    });
    assert.equal(res.status, 202, res.text);
    const id = res.json.task_id;
    await c.invoke('SubscribeToTask', id);
    await waitFor(() => events.find((e) => e.name === 'TaskCompleted'), 15000, 'TaskCompleted');
    // The job runs 2.5 s after the subscription: its progress came live, through Redis.
    assert.ok(events.some((e) => e.name === 'TaskProgress'), events.map((e) => e.name).join(','));
    assert.ok(events.every((e) => e.args[0] === id));
    assert.equal(events.filter((e) => e.name === 'TaskCompleted').length, 1);
    // Another instance subscribed to Redis saw the same task's events.
    await waitFor(() => wire.received().includes(id) && /completed/.test(wire.received()), 5000,
      'the task events on the Redis channel');
  } finally {
    await c.stop();
    wire.close();
  }
  const afterCheck = await backplaneCheck();
  assert.equal(afterCheck.status, 'Healthy', afterCheck.description);
  assert.ok(delivered(afterCheck.description) > deliveredBefore,
    `events went through the Redis backplane: ${before.description} → ${afterCheck.description}`);
});
