// Three gateway instances sharing PostgreSQL, Redis and RabbitMQ behind nginx, configured from
// deploy/nginx/conduit.conf (tests/e2e/cluster.mjs): SignalR routed by connection token (every
// transport, no sticky cookies), chat requests and their bills spread over the instances, a
// revocation seen by every instance within 1 s, async tasks correct wherever the client polls.
// Needs CONDUIT_TEST_PG, CONDUIT_TEST_REDIS, CONDUIT_TEST_AMQP (scripts/engines.sh start all) and
// nginx; skipped otherwise.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import OpenAI from 'openai';
import { startMock, seed, waitFor, apiCall, freePort, MASTER_KEY } from './harness.mjs';
import { startCluster, startNginx, addTappedImageModel, clusterSkipReason } from './cluster.mjs';

const require = createRequire(import.meta.url);
const signalR = require('@microsoft/signalr');

const skip = clusterSkipReason();
const N = 3;

let mock;
let cl;
let fx;
let tap;
const open = [];

before(async () => {
  if (skip) return;
  mock = await startMock(['--job-duration-ms', '600', '--stream-chunks', '6']);
  cl = await startCluster({
    n: N, name: 'nginx', args: ['--task-poll-interval-ms', '100', '--task-sweep-interval-ms', '200'],
  });
  fx = await seed(cl.instances[0], mock);
  // Image tasks through a relay that tells which instance's worker called the provider.
  tap = await addTappedImageModel(cl, mock.port, fx.keys.main);
});

after(async () => {
  await Promise.all(open.splice(0).map((c) => c.stop().catch(() => {})));
  await cl?.stop();
  await tap?.close();
  mock?.stop();
});

const addr = (g) => `127.0.0.1:${g.port}`;
/** nginx access-log entries whose URI matches `re`. */
const logged = (re) => cl.nginx.accessLog().filter((e) => e.uri && re.test(e.uri));
/** Instances (indexes) that served the access-log entries `entries`. */
const servedBy = (entries) => new Set(entries.map((e) => cl.indexOf(e.upstream)));

async function connect(hub, session, transport, key = fx.keys.main) {
  const c = new signalR.HubConnectionBuilder()
    // `session` is an extra query parameter the client keeps on every request: it ties the
    // access-log lines to this session.
    .withUrl(`${cl.base}${hub}?session=${session}`, { accessTokenFactory: () => key, transport })
    .configureLogging(signalR.LogLevel.None)
    .build();
  await c.start();
  open.push(c);
  return c;
}

/** The instance that answered this session's negotiate. */
function negotiatedOn(session) {
  const lines = logged(new RegExp(`/negotiate\\?session=${session}&`));
  assert.equal(lines.length, 1, `one negotiate for ${session}`);
  assert.equal(lines[0].status, 200, lines[0].line);
  return cl.indexOf(lines[0].upstream);
}

const announce = (g, message, severity) => fetch(`${g.base}/api/notifications/announcements`, {
  method: 'POST',
  headers: { 'X-API-Key': MASTER_KEY, 'Content-Type': 'application/json' },
  body: JSON.stringify({ message, severity }),
});

const settle = () => new Promise((r) => setTimeout(r, 500));  // a duplicate would arrive by now

describe('nginx in front of three instances', { skip }, () => {
  it('hub sessions on every transport, spread over the instances, routed by token; events published on another instance arrive once', async () => {
    const transports = {
      ws: signalR.HttpTransportType.WebSockets,
      sse: signalR.HttpTransportType.ServerSentEvents,
      lp: signalR.HttpTransportType.LongPolling,
    };
    const sessions = [];
    for (const [name, transport] of Object.entries(transports)) {
      // Negotiate goes to a random instance: open sessions until each instance holds one of
      // this transport (bounded: 30 random picks miss an instance with probability < 1e-5).
      const on = new Set();
      for (let i = 0; on.size < N; i++) {
        assert.ok(i < 30, `${name}: 30 sessions did not reach all ${N} instances (${[...on]})`);
        const session = `${name}-${i}`;
        const c = await connect('/hubs/notifications', session, transport);
        const events = [];
        c.on('SystemAnnouncement', (...args) => events.push(args));
        const instance = negotiatedOn(session);
        on.add(instance);
        sessions.push({ session, name, c, events, instance });
      }
    }
    // Published through instances 1 and 2 directly (not through nginx): every session gets both,
    // through Redis when it lives on another instance.
    const m1 = `from instance 1 ${Date.now()}`;
    const m2 = `from instance 2 ${Date.now()} ✓`;
    assert.equal((await announce(cl.instances[1], m1, 'info')).status, 202);
    assert.equal((await announce(cl.instances[2], m2, 'warning')).status, 202);
    await waitFor(() => sessions.every((s) => s.events.length >= 2), 10000, 'both announcements in every session');
    await settle();
    for (const s of sessions) {
      const got = s.events.map((a) => JSON.stringify(a)).sort();
      assert.deepEqual(got, [JSON.stringify([m1, 'info']), JSON.stringify([m2, 'warning'])].sort(), s.session);
    }
    for (const s of sessions) await s.c.stop();

    // Every transport request (WebSocket upgrade, SSE stream, poll, send, DELETE) carried a
    // marked token and reached the instance that issued it.
    for (const s of sessions) {
      const lines = logged(new RegExp(`^/hubs/notifications\\?session=${s.session}&`));
      assert.ok(lines.length >= 1, s.session);
      // Once the close message is in, the instance disposes the connection, so the client's
      // last request can find it gone: 404 from the right instance, as without nginx (the SSE
      // client's trailing POST; the long-polling client's DELETE or close POST, whichever comes
      // second; clients ignore it). At most one, among the last two requests.
      const gone = lines.map((e, i) => [e, i]).filter(([e]) => e.status === 404);
      assert.ok(gone.length <= 1, lines.map((x) => x.line).join('\n'));
      if (gone.length === 1) {
        const [e, i] = gone[0];
        assert.ok(s.name !== 'ws' && ['POST', 'DELETE'].includes(e.method) && i >= lines.length - 2,
          lines.map((x) => x.line).join('\n'));
        lines.splice(i, 1);
      }
      for (const e of lines) {
        const m = e.uri.match(/[?&]id=n(\d+)\./);
        assert.ok(m, `marked token: ${e.line}`);
        assert.equal(Number(m[1]), s.instance, e.line);
        assert.equal(e.upstream, addr(cl.instances[s.instance]), e.line);
        // 499: a held long poll the client aborted on stop().
        assert.ok([101, 200, 202, 204, 499].includes(e.status), lines.map((x) => x.line).join("\n"));
      }
      if (s.name === 'lp') {
        assert.ok(lines.some((e) => e.method === 'POST' && e.status === 200), `${s.session}: send`);
        assert.ok(logged(new RegExp(`^/hubs/notifications\\?session=${s.session}&`)).some((e) => e.method === 'DELETE'),
          `${s.session}: DELETE`);
      }
      if (s.name === 'ws') assert.ok(lines.some((e) => e.status === 101), `${s.session}: upgrade`);
    }
    // The SSE requests carry the key as access_token: never written to the access log.
    assert.ok(logged(/access_token=\*\*\*/).length >= 1);
    assert.ok(!cl.nginx.accessLog().some((e) => e.line.includes(fx.keys.main)), 'key in the access log');
  });

  it('negotiate falls over to the next instance when one is down; skipNegotiation WebSockets go anywhere; a body over the limit is a JSON 413', async () => {
    // A second nginx whose first instance is a dead port (nothing listens there).
    const dead = await freePort();
    const lb = await startNginx([`127.0.0.1:${dead}`, ...cl.instances.slice(1).map(addr)], { maxBody: 4096 });
    try {
      const tokens = [];
      for (let i = 0; i < 12; i++) {
        const r = await fetch(`${lb.base}/hubs/notifications/negotiate?negotiateVersion=1`, {
          method: 'POST', headers: { Authorization: `Bearer ${fx.keys.main}` },
        });
        assert.equal(r.status, 200);
        tokens.push((await r.json()).connectionToken);
      }
      assert.ok(tokens.every((t) => /^n[12]\./.test(t)), tokens.join(' '));
      const c = new signalR.HubConnectionBuilder()
        .withUrl(`${lb.base}/hubs/notifications`, {
          accessTokenFactory: () => fx.keys.main, transport: signalR.HttpTransportType.LongPolling,
        })
        .configureLogging(signalR.LogLevel.None)
        .build();
      await c.start();
      await c.stop();
      const ws = new signalR.HubConnectionBuilder()
        .withUrl(`${cl.base}/hubs/notifications`, {
          accessTokenFactory: () => fx.keys.main, transport: signalR.HttpTransportType.WebSockets, skipNegotiation: true,
        })
        .configureLogging(signalR.LogLevel.None)
        .build();
      const got = [];
      ws.on('SystemAnnouncement', (...a) => got.push(a));
      await ws.start();
      open.push(ws);
      const message = `skipNegotiation ${Date.now()}`;
      // Whichever instance took the upgrade, an announcement from each of them reaches it.
      for (const g of cl.instances) assert.equal((await announce(g, `${message} ${g.port}`, 'info')).status, 202);
      await waitFor(() => got.length >= N, 5000, 'announcements on the skipNegotiation client');
      await ws.stop();
      // A body over the limit is refused by nginx with the gateway's error shape.
      const big = await apiCall(lb.base, fx.keys.main, 'POST', '/v1/chat/completions', {
        body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x'.repeat(8192) }] },
      });
      assert.equal(big.status, 413, big.text);
      assert.equal(big.json?.error?.code, 'request_too_large', big.text);
      assert.equal(big.json.error.type, 'invalid_request_error');
      const small = await apiCall(lb.base, fx.keys.main, 'POST', '/v1/chat/completions', {
        body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x'.repeat(1024) }] },
      });
      assert.equal(small.status, 200, small.text);
    } finally {
      await lb.stop();
    }
  });

  it('chat with the openai client (stream and not) spreads over the instances; streams are not buffered', async () => {
    const client = new OpenAI({ apiKey: fx.keys.main, baseURL: `${cl.base}/v1`, maxRetries: 0 });
    const before = logged(/^\/v1\/chat\/completions$/).length;
    for (let i = 0; i < 6; i++) {
      const r = await client.chat.completions.create({
        model: 'gpt-4o-mini', messages: [{ role: 'user', content: `plain ${i}` }],
      });
      assert.equal(r.object, 'chat.completion');
      assert.ok(r.choices[0].message.content.length > 0);
      const s = await client.chat.completions.create({
        model: 'gpt-4o-mini', messages: [{ role: 'user', content: `stream ${i}` }], stream: true,
      });
      let text = '';
      let chunks = 0;
      for await (const c of s) {
        chunks += 1;
        text += c.choices[0]?.delta?.content ?? '';
      }
      assert.ok(chunks >= 6 && text.length > 0, `${chunks} chunks`);
    }
    const lines = logged(/^\/v1\/chat\/completions$/).slice(before);
    assert.equal(lines.length, 12);
    assert.ok(lines.every((e) => e.status === 200));
    assert.deepEqual([...servedBy(lines)].sort(), [0, 1, 2]);

    // The mock sends all but the last chunk, then holds the stream until released: the client
    // sees the first chunks through nginx while the stream is still open.
    const hold = `nginx-hold-${Date.now()}`;
    const s = await client.chat.completions.create({
      model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'held' }], stream: true, mock_hold: hold,
    });
    const it = s[Symbol.asyncIterator]();
    let first;
    do {
      first = await Promise.race([
        it.next(),
        new Promise((_, rej) => setTimeout(() => rej(new Error('no chunk while the stream is held: buffered?')), 5000)),
      ]);
    } while (!first.done && !first.value.choices[0]?.delta?.content);
    assert.ok(!first.done);
    assert.equal(await mock.release(hold), 200);
    let rest = 0;
    for (let r = await it.next(); !r.done; r = await it.next()) rest += 1;
    assert.ok(rest >= 1);
  });

  it('spend flushed by all instances keeps the ledger exact', async () => {
    const g = await cl.admin('POST', '/api/VirtualKeyGroups', { groupName: 'ledger', initialBalance: 10 });
    const k = await cl.admin('POST', '/api/VirtualKeys', { keyName: 'ledger', virtualKeyGroupId: g.id });
    await cl.onAll(async (i) => (await apiCall(i.base, k.virtualKey, 'GET', '/v1/models')).status === 200,
      5000, 'the new key on every instance');
    const client = new OpenAI({ apiKey: k.virtualKey, baseURL: `${cl.base}/v1`, maxRetries: 0 });
    const K = 30;
    const before = logged(/^\/v1\/chat\/completions$/).length;
    let expected = 0;  // micro-dollars: $1/M input and $2/M output = 1 and 2 micro per token
    const one = async (i) => {
      if (i % 3 === 0) {
        const s = await client.chat.completions.create({
          model: 'gpt-4o-mini', messages: [{ role: 'user', content: `ledger stream ${i} `.repeat(1 + (i % 5)) }],
          stream: true, stream_options: { include_usage: true },
        });
        let usage = null;
        for await (const c of s) if (c.usage) usage = c.usage;
        return usage;
      }
      const r = await client.chat.completions.create({
        model: 'gpt-4o-mini', messages: [{ role: 'user', content: `ledger ${i} `.repeat(1 + (i % 7)) }],
      });
      return r.usage;
    };
    for (let i = 0; i < K; i += 6) {
      const usages = await Promise.all(Array.from({ length: 6 }, (_, j) => one(i + j)));
      for (const u of usages) {
        assert.ok(u && u.prompt_tokens > 0 && u.completion_tokens > 0, JSON.stringify(u));
        expected += u.prompt_tokens + 2 * u.completion_tokens;
      }
    }
    const lines = logged(/^\/v1\/chat\/completions$/).slice(before);
    assert.equal(lines.length, K);
    assert.deepEqual([...servedBy(lines)].sort(), [0, 1, 2], 'requests on every instance');

    const micros = (x) => Math.round(Number(x) * 1e6);
    // Every instance flushes its own spend; wait until all K requests are billed.
    await waitFor(async () => {
      const logs = await cl.admin('GET', '/api/Analytics/logs?limit=200');
      return logs.data.filter((l) => l.virtualKeyGroupId === g.id && l.statusCode === 200).length === K;
    }, 10000, `${K} billed requests`);
    const txns = await cl.admin('GET', `/api/VirtualKeyGroups/${g.id}/transactions`);
    const list = txns.data ?? txns;
    const debits = list.filter((t) => t.transactionType === 'Debit').reduce((a, t) => a + micros(t.amount), 0);
    const credits = list.filter((t) => t.transactionType === 'Credit').reduce((a, t) => a + micros(t.amount), 0);
    assert.equal(credits, 10_000_000);
    assert.equal(debits, expected, 'ledger debits = sum of the request costs');
    // Read through another instance: the same numbers.
    const group = await cl.instances[2].admin('GET', `/api/VirtualKeyGroups/${g.id}`);
    assert.equal(micros(group.balance), 10_000_000 - expected);
    assert.equal(micros(group.lifetimeSpent), expected);
  });

  it('a key revoked through instance 1 is refused by instances 2 and 3 within 1 s', async () => {
    const chat = async (g, key) => {
      const r = await apiCall(g.base, key, 'POST', '/v1/chat/completions', {
        body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'revocation' }] },
      });
      return r.status;
    };
    const k = await cl.instances[0].admin('POST', '/api/VirtualKeys', { keyName: 'revoke-me', virtualKeyGroupId: fx.group.id });
    await cl.onAll(async (g) => (await chat(g, k.virtualKey)) === 200, 5000, 'the new key on every instance');
    const t0 = Date.now();
    await cl.instances[0].admin('PUT', `/api/VirtualKeys/${k.keyInfo.id}`, { isEnabled: false });
    const refused = await Promise.all(cl.instances.slice(1).map(async (g) => {
      await waitFor(async () => (await chat(g, k.virtualKey)) === 401, 1000, `the revoked key refused by ${g.base}`);
      return Date.now() - t0;
    }));
    assert.ok(refused.every((ms) => ms <= 1000), `refused after ${refused} ms`);
    assert.equal(await chat(cl.instances[0], k.virtualKey), 401);
    // And through nginx, whichever instance answers.
    for (let i = 0; i < N; i++) {
      assert.equal((await apiCall(cl.base, k.virtualKey, 'GET', '/v1/models')).status, 401);
    }
  });

  it('async tasks submitted through nginx complete, correct wherever the client polls', async () => {
    // A tasks-hub client (long polling through nginx) follows them too.
    const hub = await connect('/hubs/tasks', 'tasks-lp', signalR.HttpTransportType.LongPolling);
    const done = new Map();
    hub.on('TaskCompleted', (id, result) => done.set(id, (done.get(id) ?? 0) + 1));
    const before = logged(/^\/v1\/images\/generations\/async$/).length;
    const ids = [];
    for (let i = 0; i < 9; i++) {
      const r = await apiCall(cl.base, fx.keys.main, 'POST', '/v1/images/generations/async', {
        body: { model: 'dall-e-tap', prompt: `a lighthouse ${i}` },
      });
      assert.equal(r.status, 202, r.text);
      ids.push(r.json.task_id);
      await hub.invoke('SubscribeToTask', r.json.task_id);
    }
    assert.deepEqual([...servedBy(logged(/^\/v1\/images\/generations\/async$/).slice(before))].sort(), [0, 1, 2],
      'submitted on every instance');
    for (const id of ids) {
      // Each poll goes through nginx (round robin): every instance reads the same task.
      const t = await waitFor(async () => {
        const r = await apiCall(cl.base, fx.keys.main, 'GET', `/v1/images/generations/${id}/status`);
        assert.equal(r.status, 200, r.text);
        return r.json.status === 'completed' && r.json;
      }, 20000, `task ${id} completed`);
      const url = t.result.data[0].url;
      assert.ok(url.startsWith(`${cl.base}/v1/media/`), url);
      const viaNginx = Buffer.from(await (await fetch(url)).arrayBuffer());
      assert.ok(viaNginx.length > 0);
      // The same bytes from each instance directly (shared media directory).
      for (const g of cl.instances) {
        const r = await fetch(url.replace(cl.base, g.base));
        assert.equal(r.status, 200);
        assert.ok(Buffer.from(await r.arrayBuffer()).equals(viaNginx));
      }
      for (const g of cl.instances) {
        const r = await apiCall(g.base, fx.keys.main, 'GET', `/v1/tasks/${id}`);
        assert.equal(r.json.status, 'completed');
        assert.deepEqual(r.json.result, t.result);
      }
    }
    await waitFor(() => ids.every((id) => done.has(id)), 5000, 'TaskCompleted for every task on the hub');
    await settle();
    for (const id of ids) assert.equal(done.get(id), 1, id);
    await hub.stop();
    // Only workers call the tapped provider; every call came from one of the instances.
    assert.ok(![...tap.requests.keys()].includes(null), `unknown caller: ${[...tap.requests]}`);
  });

  // Spreading task work over the instances' workers is asserted by cluster-tasks.test.mjs: the
  // tasks above all belong to one key, so they share one partition (and one worker) by design.
});
