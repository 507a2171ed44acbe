// Real-time hubs across two gateway instances sharing Redis (the Backplane), RabbitMQ (the work
// queue) and one data directory: instance A runs the roles api,hubs, instance B worker,hubs, so
// a task submitted on A runs on B. Every hub event must reach its clients on either instance
// exactly once: task events (A's client, task run by B), SystemAnnouncement sent via A's admin
// API (clients on A and B), ModelMappingChanged, and SpendUpdate (client on B, request on A).
//
// One SQLite data directory shared by both processes (SQLite in WAL mode is multi-process safe);
// the PostgreSQL store of the scale-out issue will replace this for real clusters.
//
// Needs CONDUIT_TEST_REDIS and CONDUIT_TEST_AMQP (scripts/engines.sh start redis / rabbitmq);
// skipped otherwise. Its own RabbitMQ vhost when rabbitmqctl is usable (other test suites on the
// same broker then cannot take this suite's tasks).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startMock, startGateway, seed, seedVideo, waitFor, apiCall, MASTER_KEY } from './harness.mjs';

const require = createRequire(import.meta.url);
const signalR = require('@microsoft/signalr');

const REDIS = process.env.CONDUIT_TEST_REDIS;
const AMQP = process.env.CONDUIT_TEST_AMQP;
const skip = REDIS && AMQP ? false
  : 'CONDUIT_TEST_REDIS and CONDUIT_TEST_AMQP must both be set (scripts/engines.sh start redis; scripts/engines.sh start rabbitmq)';

let mock;
let a;
let b;
let fx;
let dataDir;
let vhost = null;
const open = [];

function rabbitmqctl(args) {
  const prefix = process.env.CONDUIT_RABBITMQCTL
    ? process.env.CONDUIT_RABBITMQCTL.split(' ').filter(Boolean)
    : ['runuser', '-u', 'rabbitmq', '--', 'env', 'HOME=/var/lib/rabbitmq',
      'ERL_EPMD_ADDRESS=127.0.0.1', '/usr/lib/rabbitmq/bin/rabbitmqctl', '-q',
      '-n', process.env.CONDUIT_RABBITMQ_NODE ?? 'conduit@localhost'];
  return execFileSync(prefix[0], [...prefix.slice(1), ...args], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000,
  });
}

before(async () => {
  if (skip) return;
  const amqp = new URL(AMQP);
  const user = decodeURIComponent(amqp.username || 'guest');
  try {
    // One long-lived vhost, never deleted (deleting a vhost of quorum queues right after its
    // consumers left has wedged RabbitMQ 3.10; see cluster.mjs). Messages a previous run left
    // name tasks this run's database does not have: they are acknowledged and dropped.
    const name = process.env.CONDUIT_E2E_HUBS_VHOST ?? 'conduit_e2e_cluster_hubs';
    const have = rabbitmqctl(['list_vhosts', '--no-table-headers']).split('\n').map((l) => l.trim());
    if (!have.includes(name)) {
      rabbitmqctl(['add_vhost', name]);
      rabbitmqctl(['set_permissions', '-p', name, user, '.*', '.*', '.*']);
    }
    vhost = name;
  } catch (e) {
    console.log(`# rabbitmqctl unavailable (${String(e.message).split('\n')[0]}): using the default vhost`);
  }
  const common = [
    // Own prefix: the shared Redis may carry other deployments' traffic (benchmarks, other runs).
    '--redis-url', REDIS, '--redis-prefix', `cluster-hubs-${process.pid}-${Date.now()}:`,
    '--rabbitmq-host', amqp.hostname, '--rabbitmq-port', amqp.port || '5672',
    '--rabbitmq-username', user, '--rabbitmq-password', decodeURIComponent(amqp.password || 'guest'),
    '--task-poll-interval-ms', '100',
    '--task-sweep-interval-ms', '200',
  ];
  if (vhost) common.push('--rabbitmq-vhost', vhost);
  dataDir = mkdtempSync(path.join(tmpdir(), 'conduit-cluster-hubs-'));
  mock = await startMock(['--job-duration-ms', '1500']);
  a = await startGateway([...common, '--roles', 'api,hubs'], { dataDir, keepData: true });
  // Seeded before B starts: B reads the configuration at start-up (the cross-instance reload of
  // the snapshot comes with the scale-out issue).
  fx = await seed(a, mock);
  await seedVideo(a, fx);
  b = await startGateway([...common, '--roles', 'worker,hubs'], { dataDir, keepData: true });
});

after(async () => {
  await Promise.all(open.splice(0).map((c) => c.stop().catch(() => {})));
  await a?.stop({ keepData: true });
  await b?.stop({ keepData: true });
  mock?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function connect(gw, hub, { key = fx.keys.main, transport } = {}) {
  const opts = { accessTokenFactory: () => key };
  if (transport !== undefined) opts.transport = transport;
  const c = new signalR.HubConnectionBuilder()
    .withUrl(`${gw.base}${hub}`, opts)
    .configureLogging(signalR.LogLevel.None)
    .build();
  await c.start();
  open.push(c);
  return c;
}

function record(c, names) {
  const events = [];
  for (const name of names) c.on(name, (...args) => events.push({ name, args }));
  return events;
}

const settle = () => new Promise((r) => setTimeout(r, 500));  // a duplicate would arrive by now

describe('two instances sharing Redis and RabbitMQ', { skip }, () => {
  it('a client on A receives every event of a task run by B, in order, once each', async () => {
    const c = await connect(a, '/hubs/tasks');
    const events = record(c, ['TaskStarted', 'TaskProgress', 'TaskCompleted', 'TaskFailed', 'TaskCancelled', 'TaskTimedOut']);
    const res = await apiCall(a.base, fx.keys.main, 'POST', '/v1/videos/generations/async', {
      body: { model: 'sora', prompt: 'a fox across instances' },
    });
    assert.equal(res.status, 202, res.text);
    const id = res.json.task_id;
    await c.invoke('SubscribeToTask', id);
    await waitFor(() => events.some((e) => e.name === 'TaskCompleted'), 30000, 'TaskCompleted');
    await settle();
    const names = events.map((e) => e.name);
    assert.equal(names[0], 'TaskStarted', names.join(','));
    assert.equal(names.at(-1), 'TaskCompleted', names.join(','));
    assert.equal(names.filter((n) => n === 'TaskStarted').length, 1, names.join(','));
    assert.equal(names.filter((n) => n === 'TaskCompleted').length, 1, names.join(','));
    const middle = names.slice(1, -1);
    assert.ok(middle.length >= 1 && middle.every((n) => n === 'TaskProgress'), names.join(','));
    let last = -1;
    for (const e of events) {
      assert.equal(e.args[0], id);
      if (e.name === 'TaskProgress') {
        assert.ok(e.args[1] >= last, `progress went back: ${last} → ${e.args[1]}`);
        last = e.args[1];
      }
    }
    // A has no worker role, so B ran it: its events reached A's client through Redis only.
    await c.stop();
  });

  it('SystemAnnouncement sent via A reaches a client on A and one on B, exactly once each', async () => {
    const ca = await connect(a, '/hubs/notifications');
    const cb = await connect(b, '/hubs/notifications', { transport: signalR.HttpTransportType.ServerSentEvents });
    const ea = record(ca, ['SystemAnnouncement']);
    const eb = record(cb, ['SystemAnnouncement']);
    const message = `cluster announcement ${Date.now()} ✓`;
    const res = await fetch(`${a.base}/api/notifications/announcements`, {
      method: 'POST',
      headers: { 'X-API-Key': MASTER_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ message, severity: 'error' }),
    });
    assert.equal(res.status, 202, await res.text());
    await waitFor(() => ea.length >= 1 && eb.length >= 1, 5000, 'announcement on both instances');
    await settle();
    assert.deepEqual(ea.map((e) => e.args), [[message, 'error']]);
    assert.deepEqual(eb.map((e) => e.args), [[message, 'error']]);
    await ca.stop();
    await cb.stop();
  });

  it('ModelMappingChanged from an admin change on A reaches a client on B once', async () => {
    const cb = await connect(b, '/hubs/notifications');
    const eb = record(cb, ['ModelMappingChanged']);
    const m = await a.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'cluster-alias', providerModelId: 'mock-x', providerId: fx.provider.id,
    });
    await waitFor(() => eb.length >= 1, 5000, 'ModelMappingChanged on B');
    await settle();
    assert.deepEqual(eb.map((e) => e.args), [[m.id, 'cluster-alias', 'Created']]);
    await a.admin('DELETE', `/api/ModelProviderMapping/${m.id}`);
    await cb.stop();
  });

  it('SpendUpdate reaches a client on B for a request served by A, once', async () => {
    const cb = await connect(b, '/hubs/spend', { transport: signalR.HttpTransportType.LongPolling });
    const eb = record(cb, ['SpendUpdate']);
    const res = await apiCall(a.base, fx.keys.main, 'POST', '/v1/chat/completions', {
      body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'spend across instances' }] },
    });
    assert.equal(res.status, 200, res.text);
    const requestId = res.headers.get('x-request-id');
    await waitFor(() => eb.some((e) => e.args[0].metadata.requestId === requestId), 5000, 'SpendUpdate on B');
    await settle();
    const mine = eb.filter((e) => e.args[0].metadata.requestId === requestId);
    assert.equal(mine.length, 1);
    assert.equal(mine[0].args[0].model, 'gpt-4o-mini');
    assert.equal(mine[0].args[0].metadata.endpoint, '/v1/chat/completions');
    assert.ok(mine[0].args[0].newSpend > 0);
    await cb.stop();
  });
});
