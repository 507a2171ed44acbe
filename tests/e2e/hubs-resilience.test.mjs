// Real-time hubs under failure, with the official @microsoft/signalr client and raw HTTP /
// WebSocket against the real `conduit` binary (specs/signalr-protocol.md):
// - fallback to Server-Sent Events behind an HTTP proxy that refuses WebSocket upgrades (§2.5);
// - automatic reconnect with a new connection id after a gateway restart (§4.3);
// - stateful reconnect over a cut WebSocket: same connection id, every event exactly once and in
//   order; a final stop() does not reconnect (§4.4);
// - skipNegotiation; every row of the §2.1 status table, negotiate and handshake errors, 401s;
// - limits: message size, handshake timeout, client timeout, a client that stops reading,
//   reaping of unused connections.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startMock, startGateway, seed, seedVideo, waitFor, apiCall } from './harness.mjs';

const require = createRequire(import.meta.url);
const signalR = require('@microsoft/signalr');
// The `ws` package the SignalR client itself uses (installed with it, pinned by the lock file).
const WebSocket = createRequire(require.resolve('@microsoft/signalr'))('ws');

const RS = '\x1e';
const HANDSHAKE = `{"protocol":"json","version":1}${RS}`;
const TASK_EVENTS = ['TaskStarted', 'TaskProgress', 'TaskCompleted', 'TaskFailed', 'TaskCancelled', 'TaskTimedOut'];

// The limits gateway: small values so every timeout test takes a second or two.
const LIMITS = {
  maxMessage: 4096,
  handshakeMs: 1000,
  keepAliveMs: 400,
  clientTimeoutMs: 2000,
};
// Unused connections are reaped after HubOptions::disconnect_timeout (15 s, not configurable),
// checked on a 1 s heartbeat.
const DISCONNECT_TIMEOUT_MS = 15000;

const TASK_FLAGS = ['--task-poll-interval-ms', '100', '--task-sweep-interval-ms', '200'];

let mock;
let gw;       // defaults (15 s keep-alive, 30 s client timeout)
let fx;
let lim;      // small limits
let limFx;
let reaped;   // a connection negotiated in before() and never used: {token, at}
const reapedByFallback = [];  // connections the fallback tests abandoned (first negotiate)
const cleanups = [];

before(async () => {
  mock = await startMock(['--job-duration-ms', '1200']);
  gw = await startGateway(TASK_FLAGS);
  fx = await seed(gw, mock);
  await seedVideo(gw, fx);
  lim = await startGateway([
    ...TASK_FLAGS,
    '--hub-max-message-bytes', String(LIMITS.maxMessage),
    '--hub-handshake-timeout-ms', String(LIMITS.handshakeMs),
    '--hub-keep-alive-ms', String(LIMITS.keepAliveMs),
    '--hub-client-timeout-ms', String(LIMITS.clientTimeoutMs),
  ]);
  limFx = await seed(lim, mock);
  // Set up now, checked by the last test (the reaper needs 15 s; the other tests run meanwhile):
  // a connection negotiated and never used; a long-polling one that stops polling; a stateful
  // WebSocket one whose socket drops and never resumes.
  const at = Date.now();
  const key = fx.keys.main;
  const unused = (await negotiate(gw.base, '/hubs/tasks', key)).json.connectionToken;
  const longPoll = (await negotiate(gw.base, '/hubs/tasks', key)).json.connectionToken;
  assert.equal((await hubRequest(gw.base, '/hubs/tasks', 'GET', { id: longPoll, key })).status, 200);
  assert.equal((await hubRequest(gw.base, '/hubs/tasks', 'POST', { id: longPoll, key, body: HANDSHAKE })).status, 200);
  const n = await negotiate(gw.base, '/hubs/tasks', key, 'negotiateVersion=1&useStatefulReconnect=true');
  assert.equal(n.json.useStatefulReconnect, true);
  const ws = await rawWebSocket(gw.port, '/hubs/tasks', { id: n.json.connectionToken, key });
  ws.ws.send(`{"protocol":"json","version":2}${RS}`);
  await waitFor(() => ws.messages.length > 0, 5000, 'handshake response');
  assert.equal(ws.messages[0], `{}${RS}`);
  ws.ws.terminate();  // no close frame: a network drop, which a stateful connection survives
  await ws.closed;
  reaped = { at, unused, longPoll, stateful: n.json.connectionToken };
  // All three are known for now: POST is accepted (405 on the WebSocket one).
  const status = async (token) => (await hubRequest(gw.base, '/hubs/tasks', 'POST', { id: token, key, body: '' })).status;
  assert.equal(await status(reaped.unused), 200);
  assert.equal(await status(reaped.longPoll), 200);
  assert.equal(await status(reaped.stateful), 405);
});

after(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
  await gw?.stop();
  await lim?.stop();
  mock?.stop();
});

// --- helpers ---------------------------------------------------------------------------------

function build(base, hub, key, { transport, reconnect, stateful, keepAliveMs } = {}) {
  const opts = { accessTokenFactory: () => key };
  if (transport !== undefined) opts.transport = transport;
  let b = new signalR.HubConnectionBuilder().withUrl(`${base}${hub}`, opts)
    .configureLogging(signalR.LogLevel.None);
  if (reconnect) b = b.withAutomaticReconnect(reconnect);
  if (stateful) b = b.withStatefulReconnect();
  if (keepAliveMs) b = b.withKeepAliveInterval(keepAliveMs);
  const c = b.build();
  cleanups.push(() => c.stop().catch(() => {}));
  return c;
}

const transportName = (c) => c.connection?.transport?.constructor?.name;

function record(c, names) {
  const events = [];
  for (const name of names) c.on(name, (...args) => events.push({ name, args }));
  return events;
}

const waitEvent = (events, name, ms = 15000) =>
  waitFor(() => events.find((e) => e.name === name) ?? null, ms, `${name} event`);

async function submitVideo(base, key, extra = {}) {
  const res = await apiCall(base, key, 'POST', '/v1/videos/generations/async',
    { body: { model: 'sora', prompt: 'a red fox', ...extra } });
  assert.equal(res.status, 202, res.text);
  return res.json.task_id;
}

async function negotiate(base, hub, key, query = 'negotiateVersion=1') {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const res = await fetch(`${base}${hub}/negotiate?${query}`, { method: 'POST', headers });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, text, json, headers: res.headers };
}

/** One HTTP request on `{hub}` with the key; resolves with {status, text, headers}. */
async function hubRequest(base, hub, method, { id, key, headers = {}, body, query } = {}) {
  const qs = new URLSearchParams();
  if (id !== undefined) qs.set('id', id);
  if (query) for (const [k, v] of Object.entries(query)) qs.set(k, v);
  const h = { ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  const res = await fetch(`${base}${hub}${qs.size ? `?${qs}` : ''}`, { method, headers: h, body });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/** Opens an SSE GET and resolves once the response head arrived; the stream stays open. */
function openSse(port, hub, token, key) {
  return new Promise((resolve, reject) => {
    const req = http.get({
      host: '127.0.0.1', port, agent: false,
      path: `${hub}?id=${encodeURIComponent(token)}&access_token=${encodeURIComponent(key)}`,
      headers: { Accept: 'text/event-stream' },
    }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { data += d; });
      resolve({ res, close: () => req.destroy(), data: () => data });
    });
    req.on('error', reject);
  });
}

/**
 * A raw WebSocket to `{hub}` (`ws` package). Resolves {ws, status, text} once open (status 101)
 * or refused (the status and body of the HTTP answer).
 */
function rawWebSocket(port, hub, { id, key, headers = {} } = {}) {
  const qs = new URLSearchParams();
  if (id !== undefined) qs.set('id', id);
  const h = { ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  const ws = new WebSocket(`ws://127.0.0.1:${port}${hub}${qs.size ? `?${qs}` : ''}`,
    { headers: h, perMessageDeflate: false });
  const messages = [];
  const closed = new Promise((r) => ws.on('close', (code, reason) => r({ code, reason: String(reason), at: Date.now() })));
  ws.on('message', (m) => messages.push(String(m)));
  ws.on('error', () => {});
  return new Promise((resolve) => {
    ws.on('open', () => resolve({ ws, status: 101, messages, closed }));
    ws.on('unexpected-response', (req, res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => { resolve({ ws: null, status: res.statusCode, text }); req.destroy(); });
    });
  });
}

/**
 * An HTTP proxy (node:http, one upstream request per request, streamed both ways: SSE and held
 * long polls pass through as they come) that refuses WebSocket upgrades: `mode` 'refuse' answers
 * 403, 'destroy' drops the socket. Records every request and the negotiate responses.
 */
async function startHttpProxy(targetPort, mode) {
  const requests = [];
  const negotiations = [];
  const server = http.createServer((req, res) => {
    const entry = { method: req.method, url: req.url, accept: req.headers.accept ?? '' };
    requests.push(entry);
    const headers = { ...req.headers };
    delete headers.connection;
    const up = http.request({
      host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers, agent: false,
    }, (ures) => {
      entry.status = ures.statusCode;
      const out = { ...ures.headers };
      delete out.connection;
      delete out['keep-alive'];
      res.writeHead(ures.statusCode, out);
      if (req.url.includes('/negotiate')) {
        let body = '';
        ures.on('data', (d) => { body += d; });
        ures.on('end', () => { try { negotiations.push(JSON.parse(body)); } catch { /* error text */ } });
      }
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());  // the client gave up (EventSource closed, poll aborted)
    req.pipe(up);
  });
  const upgrades = [];
  server.on('upgrade', (req, socket) => {
    upgrades.push(req.url);
    if (mode === 'refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 26\r\n' +
        'Connection: close\r\n\r\nWebSockets are not allowed');
    } else {
      socket.destroy();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    requests,
    negotiations,
    upgrades,
    close() {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/**
 * A TCP proxy that can cut its WebSocket connections as a network failure would: first the
 * server→client direction goes dark (what the server sends meanwhile is lost on the wire), then
 * both sides are reset; it can also reset upgrades as they come. Every upgrade request line is
 * recorded; plain HTTP is left alone.
 */
async function startTcpProxy(targetPort) {
  const conns = new Set();
  const upgrades = [];
  const negotiates = [];
  let refuse = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const c = { client, upstream, ws: false, dark: false, lost: '' };
    conns.add(c);
    let head = '';
    client.on('data', (d) => {
      if (head !== null) {
        head += d.toString('latin1');
        for (;;) {
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) break;
          const request = head.slice(0, end);
          const line = request.split('\r\n')[0];
          if (/\r\nupgrade:\s*websocket/i.test(request)) {
            c.ws = true;
            upgrades.push(line);
            head = null;  // frames follow
            if (refuse > 0) {
              refuse -= 1;
              client.resetAndDestroy();
              upstream.resetAndDestroy();
              return;
            }
            break;
          }
          if (line.includes('/negotiate')) negotiates.push(line);
          head = head.slice(end + 4);  // bodies here are tiny; a body line never holds \r\n\r\n
        }
      }
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (c.dark) c.lost += d.toString('latin1');
      else client.write(d);
    });
    const end = () => { client.destroy(); upstream.destroy(); conns.delete(c); };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    upgrades,
    negotiates,
    /**
     * Cuts every proxied WebSocket: dark for `darkMs`, then reset. Resolves with the server
     * bytes lost in the dark, per connection.
     */
    async cutWebSockets(darkMs) {
      const victims = [...conns].filter((c) => c.ws);
      for (const c of victims) c.dark = true;
      await new Promise((r) => setTimeout(r, darkMs));
      for (const c of victims) {
        c.client.resetAndDestroy();
        c.upstream.resetAndDestroy();
        conns.delete(c);
      }
      return victims.map((c) => c.lost);
    },
    /** Resets the next `n` WebSocket upgrades as soon as they are seen. */
    refuseUpgrades(n) { refuse = n; },
    close() {
      for (const c of conns) { c.client.destroy(); c.upstream.destroy(); }
      return new Promise((r) => server.close(() => r()));
    },
  };
}

// --- fallback ----------------------------------------------------------------------------------

describe('fallback: WebSockets refused by a proxy → Server-Sent Events', () => {
  for (const mode of ['refuse', 'destroy']) {
    it(`an unforced client behind a proxy that ${mode === 'refuse' ? 'answers upgrades 403' : 'drops upgrade sockets'} ends up on SSE and works`, async () => {
      const proxy = await startHttpProxy(gw.port, mode);
      cleanups.push(() => proxy.close());
      const c = build(proxy.base, '/hubs/tasks', fx.keys.main);
      const events = record(c, TASK_EVENTS);
      await c.start();
      assert.equal(transportName(c), 'ServerSentEventsTransport');
      // The client tried WebSockets first (refused by the proxy), negotiated again, then SSE.
      assert.equal(proxy.upgrades.length, 1, JSON.stringify(proxy.upgrades));
      assert.equal(proxy.negotiations.length, 2);
      const [first, second] = proxy.negotiations;
      assert.notEqual(first.connectionId, second.connectionId);
      assert.equal(c.connectionId, second.connectionId);
      assert.ok(proxy.requests.some((r) => r.method === 'GET' && r.accept.includes('text/event-stream') &&
        r.url.includes(encodeURIComponent(second.connectionToken))), 'an SSE GET');

      // Invocations (POST sends) and server events (the SSE stream) through the proxy.
      await assert.rejects(c.invoke('SubscribeToTask', 'task_00000000000000000000000000000000'),
        /HubException: Task not found/);
      const id = await submitVideo(gw.base, fx.keys.main);
      await c.invoke('SubscribeToTask', id);
      await waitEvent(events, 'TaskCompleted');
      const names = events.map((e) => e.name);
      assert.equal(names[0], 'TaskStarted', names.join(','));
      assert.equal(names.at(-1), 'TaskCompleted', names.join(','));
      assert.ok(events.every((e) => e.args[0] === id));
      assert.equal(transportName(c), 'ServerSentEventsTransport');

      // The abandoned first connection is still known until the reaper removes it (checked,
      // with the one negotiated in before(), by the reaping test at the end).
      reapedByFallback.push(first.connectionToken);
      await c.stop();
    });
  }
});

// --- restart -----------------------------------------------------------------------------------

describe('server restart', () => {
  for (const signal of ['SIGTERM', 'SIGKILL']) {
    it(`${signal}, then the gateway again on the same port: onreconnecting → onreconnected with a new connection id; works after`, async () => {
      const dataDir = mkdtempSync(path.join(tmpdir(), 'conduit-e2e-restart-'));
      cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
      let g = await startGateway(TASK_FLAGS, { dataDir, keepData: true });
      cleanups.push(() => g.stop({ keepData: true }));
      const rfx = await seed(g, mock);
      await seedVideo(g, rfx);
      const port = g.port;

      // Retries every 250 ms for up to 30 s (the default policy waits 2 s, then 10 s, then 30 s).
      const policy = { nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < 30000 ? 250 : null) };
      const c = build(g.base, '/hubs/tasks', rfx.keys.main, { reconnect: policy });
      const seen = [];
      c.onreconnecting((err) => seen.push({ what: 'reconnecting', err }));
      c.onreconnected((id) => seen.push({ what: 'reconnected', id }));
      c.onclose((err) => seen.push({ what: 'close', err }));
      const events = record(c, TASK_EVENTS);
      await c.start();
      const firstId = c.connectionId;
      assert.ok(firstId);

      if (signal === 'SIGTERM') {
        const result = await g.stop({ keepData: true });
        assert.equal(result.code, 0, `clean exit: ${JSON.stringify(result)}`);
      } else {
        g.proc.kill('SIGKILL');
        await g.exited;
      }
      await waitFor(() => seen.some((s) => s.what === 'reconnecting'), 10000, 'onreconnecting');
      g = await startGateway([...TASK_FLAGS, '--listen', `127.0.0.1:${port}`], { dataDir, keepData: true });
      assert.equal(g.port, port);

      const reconnected = await waitFor(() => seen.find((s) => s.what === 'reconnected'), 30000, 'onreconnected');
      assert.deepEqual(seen.map((s) => s.what), ['reconnecting', 'reconnected']);
      assert.ok(reconnected.id && reconnected.id !== firstId, `new id: ${reconnected.id} vs ${firstId}`);
      assert.equal(c.connectionId, reconnected.id);
      assert.equal(c.state, signalR.HubConnectionState.Connected);

      // Works after: the key still authenticates (same data dir), invocations and events flow.
      await assert.rejects(c.invoke('SubscribeToTask', 'task_00000000000000000000000000000000'),
        /HubException: Task not found/);
      const id = await submitVideo(g.base, rfx.keys.main);
      await c.invoke('SubscribeToTask', id);
      await waitEvent(events, 'TaskCompleted');
      assert.equal(events[0].name, 'TaskStarted');
      assert.ok(events.every((e) => e.args[0] === id));
      await c.stop();
      assert.equal(seen.at(-1).what, 'close');
    });
  }
});

// --- stateful reconnect ----------------------------------------------------------------------

describe('stateful reconnect over a cut WebSocket', () => {
  it('same connection id, every event exactly once and in order; stop() does not reconnect', async () => {
    const proxy = await startTcpProxy(gw.port);
    cleanups.push(() => proxy.close());
    // The stateful client goes through the proxy; a reference client connects directly. Both see
    // every video task of the key (SubscribeToTaskType), so their event lists must be identical.
    const c = build(proxy.base, '/hubs/tasks', fx.keys.main,
      { transport: signalR.HttpTransportType.WebSockets, stateful: true, reconnect: [0, 200, 400] });
    const ref = build(gw.base, '/hubs/tasks', fx.keys.main);
    const seen = [];
    c.onreconnecting((err) => seen.push({ what: 'reconnecting', err }));
    c.onreconnected((id) => seen.push({ what: 'reconnected', id }));
    c.onclose((err) => seen.push({ what: 'close', err }));
    const events = record(c, TASK_EVENTS);
    const refEvents = record(ref, TASK_EVENTS);
    await c.start();
    await ref.start();
    const id0 = c.connectionId;
    assert.equal(proxy.upgrades.length, 1);
    assert.equal(proxy.negotiates.length, 1);
    assert.match(proxy.negotiates[0], /useStatefulReconnect=true/);
    const token = new URL(`http://x${proxy.upgrades[0].split(' ')[1]}`).searchParams.get('id');
    assert.ok(token);
    await c.invoke('SubscribeToTaskType', 'video_generation');
    await ref.invoke('SubscribeToTaskType', 'video_generation');

    // A task with many progress events (polled every 100 ms for 6 s).
    const id = await submitVideo(gw.base, fx.keys.main, { mock_job_duration_ms: 6000 });
    // Cut the WebSocket three times while the events flow.
    for (let cut = 1; cut <= 3; cut++) {
      await waitFor(() => refEvents.filter((e) => e.name === 'TaskProgress').length >= cut * 5, 15000,
        `progress events before cut ${cut}`);
      // Dark while the next progress events go out: they are lost on the wire, so only the
      // server's replay can deliver them.
      const before = refEvents.length;
      const lost = await proxy.cutWebSockets(400);
      assert.equal(lost.length, 1, `cut ${cut}: one WebSocket`);
      assert.ok(refEvents.length > before, `cut ${cut}: the server sent events meanwhile`);
      assert.match(lost[0], /TaskProgress/, `cut ${cut}: progress events were lost on the wire`);
      // The client resumes on a new WebSocket with the same token, without negotiating.
      await waitFor(() => proxy.upgrades.length === cut + 1, 10000, `resume ${cut}`);
    }
    await waitEvent(refEvents, 'TaskCompleted');
    await waitEvent(events, 'TaskCompleted');
    await new Promise((r) => setTimeout(r, 300));  // a late duplicate would show up here

    assert.deepEqual(seen, [], 'no onreconnecting/onreconnected/onclose');
    assert.equal(c.connectionId, id0);
    assert.equal(c.state, signalR.HubConnectionState.Connected);
    assert.equal(proxy.negotiates.length, 1);
    for (const line of proxy.upgrades) {
      assert.equal(new URL(`http://x${line.split(' ')[1]}`).searchParams.get('id'), token, line);
    }
    assert.ok(events.length >= 20, `events: ${events.length}`);
    assert.deepEqual(events.map((e) => [e.name, ...e.args.slice(0, 2)]),
      refEvents.map((e) => [e.name, ...e.args.slice(0, 2)]));
    assert.deepEqual(events, refEvents);
    assert.ok(events.every((e) => e.args[0] === id));

    // The connection still works, and a final stop() does not reconnect.
    await assert.rejects(c.invoke('SubscribeToTask', 'task_00000000000000000000000000000000'),
      /HubException: Task not found/);
    await c.stop();
    assert.deepEqual(seen.map((s) => s.what), ['close']);
    assert.equal(seen[0].err, undefined);
    const upgrades = proxy.upgrades.length;
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(proxy.upgrades.length, upgrades, 'no upgrade after stop()');
    assert.equal(proxy.negotiates.length, 1, 'no negotiate after stop()');
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
    // The server forgot the connection.
    await waitFor(async () => (await hubRequest(gw.base, '/hubs/tasks', 'POST',
      { id: token, key: fx.keys.main, body: '' })).status === 404, 5000, 'the token to be gone');
    await ref.stop();
  });
});

describe('stateful reconnect whose resume fails', () => {
  it('falls back to an ordinary reconnect: onreconnecting → onreconnected with a new id', async () => {
    const proxy = await startTcpProxy(gw.port);
    cleanups.push(() => proxy.close());
    const c = build(proxy.base, '/hubs/tasks', fx.keys.main,
      { transport: signalR.HttpTransportType.WebSockets, stateful: true, reconnect: [0, 200, 400] });
    const seen = [];
    c.onreconnecting(() => seen.push('reconnecting'));
    c.onreconnected((id) => seen.push(id));
    await c.start();
    const id0 = c.connectionId;
    proxy.refuseUpgrades(1);  // the one resume attempt fails
    assert.equal((await proxy.cutWebSockets(0)).length, 1);
    await waitFor(() => seen.length === 2, 10000, 'onreconnecting and onreconnected');
    assert.equal(seen[0], 'reconnecting');
    assert.ok(seen[1] && seen[1] !== id0, `new id ${seen[1]}`);
    assert.equal(c.connectionId, seen[1]);
    assert.equal(proxy.negotiates.length, 2);
    assert.equal(proxy.upgrades.length, 3);  // first, failed resume, new connection
    await assert.rejects(c.invoke('SubscribeToTask', 'task_00000000000000000000000000000000'),
      /HubException: Task not found/);
    await c.stop();
  });
});

// --- skipNegotiation ---------------------------------------------------------------------------

describe('skipNegotiation (spec §1.5)', () => {
  it('a WebSocket straight to {hub} with the key: no connection id, invocations and events work', async () => {
    const c = new signalR.HubConnectionBuilder()
      .withUrl(`${gw.base}/hubs/tasks`, {
        skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets,
        accessTokenFactory: () => fx.keys.main,
      })
      .configureLogging(signalR.LogLevel.None).build();
    cleanups.push(() => c.stop().catch(() => {}));
    const events = record(c, TASK_EVENTS);
    await c.start();
    assert.equal(c.connectionId, null);
    assert.equal(transportName(c), 'WebSocketTransport');
    await assert.rejects(c.invoke('SubscribeToTask', 'task_00000000000000000000000000000000'),
      /HubException: Task not found/);
    const id = await submitVideo(gw.base, fx.keys.main);
    await c.invoke('SubscribeToTask', id);
    await waitEvent(events, 'TaskCompleted');
    assert.equal(events[0].name, 'TaskStarted');
    await c.stop();

    const bad = new signalR.HubConnectionBuilder()
      .withUrl(`${gw.base}/hubs/tasks`, {
        skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets,
        accessTokenFactory: () => 'condt_not-a-real-key',
      })
      .configureLogging(signalR.LogLevel.None).build();
    await assert.rejects(bad.start());
    const refused = await rawWebSocket(gw.port, '/hubs/tasks', { key: 'condt_not-a-real-key' });
    assert.equal(refused.status, 401);
  });
});

// --- negative HTTP (spec §2.1) ------------------------------------------------------------------

describe('negative HTTP (spec §2.1)', () => {
  const hub = '/hubs/tasks';
  const key = () => fx.keys.main;
  const SSE = { Accept: 'text/event-stream' };

  it('id missing on SSE GET, long-poll GET, POST or DELETE → 400 "Connection ID required"', async () => {
    for (const [method, headers] of [['GET', SSE], ['GET', {}], ['POST', {}], ['DELETE', {}]]) {
      const res = await hubRequest(gw.base, hub, method, { key: key(), headers, body: method === 'POST' ? '' : undefined });
      assert.equal(res.status, 400, `${method} ${JSON.stringify(headers)}`);
      assert.equal(res.text, 'Connection ID required');
    }
  });

  it('unknown id → 404 "No Connection with that ID" (SSE, poll, POST, DELETE, WebSocket)', async () => {
    const id = 'no-such-connection-token';
    for (const [method, headers] of [['GET', SSE], ['GET', {}], ['POST', {}], ['DELETE', {}]]) {
      const res = await hubRequest(gw.base, hub, method, { id, key: key(), headers, body: method === 'POST' ? '' : undefined });
      assert.equal(res.status, 404, `${method} ${JSON.stringify(headers)}`);
      assert.equal(res.text, 'No Connection with that ID');
    }
    const ws = await rawWebSocket(gw.port, hub, { id, key: key() });
    assert.equal(ws.status, 404);
    assert.equal(ws.text, 'No Connection with that ID');
  });

  it('a disposed connection → 404 (long polling ended with DELETE)', async () => {
    const { json } = await negotiate(gw.base, hub, key());
    const id = json.connectionToken;
    const first = await hubRequest(gw.base, hub, 'GET', { id, key: key() });
    assert.equal(first.status, 200);
    assert.equal(first.text, '');
    const del = await hubRequest(gw.base, hub, 'DELETE', { id, key: key() });
    assert.equal(del.status, 202);
    await waitFor(async () => (await hubRequest(gw.base, hub, 'GET', { id, key: key() })).status === 404, 5000, 'poll → 404');
    const post = await hubRequest(gw.base, hub, 'POST', { id, key: key(), body: HANDSHAKE });
    assert.equal(post.status, 404);
    assert.equal(post.text, 'No Connection with that ID');
  });

  it('a second active request of the same transport → 409; a newer poll ends the held one with 204', async () => {
    // SSE twice.
    let { json } = await negotiate(gw.base, hub, key());
    const sse = await openSse(gw.port, hub, json.connectionToken, key());
    assert.equal(sse.res.statusCode, 200);
    const second = await hubRequest(gw.base, hub, 'GET', { id: json.connectionToken, key: key(), headers: SSE });
    assert.equal(second.status, 409);
    sse.close();

    // Long polling: a new poll while one is held → the older one ends with 204.
    ({ json } = await negotiate(gw.base, hub, key()));
    const id = json.connectionToken;
    assert.equal((await hubRequest(gw.base, hub, 'GET', { id, key: key() })).status, 200);
    const held = hubRequest(gw.base, hub, 'GET', { id, key: key(), query: { _: '1' } });
    await new Promise((r) => setTimeout(r, 200));
    const newer = hubRequest(gw.base, hub, 'GET', { id, key: key(), query: { _: '2' } });
    assert.equal((await held).status, 204);
    assert.equal((await hubRequest(gw.base, hub, 'DELETE', { id, key: key() })).status, 202);
    assert.equal((await newer).status, 204);
  });

  // Known server bug (hub_server.cpp HandleGet): the 409/400 pre-check runs only when the upgrade
  // lands on the connection's own loop; on another loop the upgrade is accepted (101) and the
  // socket then closed with 1008 "Conflict".
  it('a second WebSocket on an active connection → 409, a WebSocket after SSE → 400 (whichever loop it lands on)', async () => {
    const { json } = await negotiate(gw.base, hub, key());
    const ws1 = await rawWebSocket(gw.port, hub, { id: json.connectionToken, key: key() });
    assert.equal(ws1.status, 101);
    ws1.ws.send(HANDSHAKE);
    await waitFor(() => ws1.messages.length > 0, 5000, 'handshake response');
    try {
      for (let i = 0; i < 6; i++) {  // connections are spread over the server's loops
        const ws2 = await rawWebSocket(gw.port, hub, { id: json.connectionToken, key: key() });
        ws2.ws?.terminate();
        assert.equal(ws2.status, 409, `attempt ${i}`);
      }
      assert.equal(ws1.ws.readyState, WebSocket.OPEN, 'the first socket is unaffected');
    } finally {
      ws1.ws.close();
    }
    const n = await negotiate(gw.base, hub, key());
    const sse = await openSse(gw.port, hub, n.json.connectionToken, key());
    try {
      for (let i = 0; i < 6; i++) {
        const ws = await rawWebSocket(gw.port, hub, { id: n.json.connectionToken, key: key() });
        ws.ws?.terminate();
        assert.equal(ws.status, 400, `attempt ${i}`);
        assert.equal(ws.text, 'Cannot change transports mid-connection');
      }
    } finally {
      sse.close();
    }
  });

  it('changing transport mid-connection → 400 "Cannot change transports mid-connection"', async () => {
    // Poll or WebSocket after SSE.
    let { json } = await negotiate(gw.base, hub, key());
    const sse = await openSse(gw.port, hub, json.connectionToken, key());
    const poll = await hubRequest(gw.base, hub, 'GET', { id: json.connectionToken, key: key() });
    assert.equal(poll.status, 400);
    assert.equal(poll.text, 'Cannot change transports mid-connection');
    sse.close();
    // SSE after long polling.
    ({ json } = await negotiate(gw.base, hub, key()));
    const id = json.connectionToken;
    assert.equal((await hubRequest(gw.base, hub, 'GET', { id, key: key() })).status, 200);
    const res = await hubRequest(gw.base, hub, 'GET', { id, key: key(), headers: SSE });
    assert.equal(res.status, 400);
    assert.equal(res.text, 'Cannot change transports mid-connection');
    assert.equal((await hubRequest(gw.base, hub, 'DELETE', { id, key: key() })).status, 202);
  });

  it('POST on a WebSocket connection → 405; DELETE on a non-long-polling connection → 400', async () => {
    let { json } = await negotiate(gw.base, hub, key());
    const ws = await rawWebSocket(gw.port, hub, { id: json.connectionToken, key: key() });
    assert.equal(ws.status, 101);
    ws.ws.send(HANDSHAKE);
    await waitFor(() => ws.messages.length > 0, 5000, 'handshake response');
    const post = await hubRequest(gw.base, hub, 'POST', { id: json.connectionToken, key: key(), body: '{"type":6}\x1e' });
    assert.equal(post.status, 405);
    assert.equal(post.text, 'POST requests are not allowed for WebSocket connections.');
    const del = await hubRequest(gw.base, hub, 'DELETE', { id: json.connectionToken, key: key() });
    assert.equal(del.status, 400);
    assert.equal(del.text, 'Cannot terminate this connection using the DELETE endpoint.');
    ws.ws.close();

    ({ json } = await negotiate(gw.base, hub, key()));
    const sse = await openSse(gw.port, hub, json.connectionToken, key());
    const del2 = await hubRequest(gw.base, hub, 'DELETE', { id: json.connectionToken, key: key() });
    assert.equal(del2.status, 400);
    assert.equal(del2.text, 'Cannot terminate this connection using the DELETE endpoint.');
    sse.close();
  });

  it('any other method on {hub}, or a non-POST to /negotiate → 405', async () => {
    for (const method of ['PUT', 'PATCH']) {
      const res = await hubRequest(gw.base, hub, method, { key: key(), body: '' });
      assert.equal(res.status, 405, method);
    }
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await fetch(`${gw.base}${hub}/negotiate?negotiateVersion=1`,
        { method, headers: { Authorization: `Bearer ${key()}` } });
      assert.equal(res.status, 405, `${method} /negotiate`);
    }
  });

  it('negotiate: 401 without a key or with a bad one; transport requests need the key too', async () => {
    assert.equal((await negotiate(gw.base, hub, null)).status, 401);
    assert.equal((await negotiate(gw.base, hub, 'condt_not-a-real-key')).status, 401);
    assert.equal((await negotiate(gw.base, hub, fx.keys.disabled)).status, 401);
    const ok = await negotiate(gw.base, hub, key());
    assert.equal(ok.status, 200);
    const id = ok.json.connectionToken;
    for (const [method, headers] of [['GET', SSE], ['GET', {}], ['POST', {}], ['DELETE', {}]]) {
      const res = await hubRequest(gw.base, hub, method, { id, headers, body: method === 'POST' ? HANDSHAKE : undefined });
      assert.equal(res.status, 401, `${method} ${JSON.stringify(headers)} without a key`);
      const bad = await hubRequest(gw.base, hub, method, { id, key: 'condt_not-a-real-key', headers, body: method === 'POST' ? HANDSHAKE : undefined });
      assert.equal(bad.status, 401, `${method} ${JSON.stringify(headers)} with a bad key`);
    }
    const ws = await rawWebSocket(gw.port, hub, { id });
    assert.equal(ws.status, 401);
    // The access_token query parameter works as well as the header.
    const viaQuery = await hubRequest(gw.base, hub, 'GET', { id, query: { access_token: key() } });
    assert.equal(viaQuery.status, 200);
    assert.equal((await hubRequest(gw.base, hub, 'DELETE', { id, key: key() })).status, 202);
  });

  it('handshake errors (spec §3.1): unknown protocol, unsupported version → {"error"} and closed', async () => {
    for (const [request, error] of [
      [{ protocol: 'xyz', version: 1 }, "The protocol 'xyz' is not supported."],
      [{ protocol: 'json', version: 3 }, "The server does not support version 3 of the 'json' protocol."],
    ]) {
      const { json } = await negotiate(gw.base, hub, key());
      const ws = await rawWebSocket(gw.port, hub, { id: json.connectionToken, key: key() });
      assert.equal(ws.status, 101);
      ws.ws.send(`${JSON.stringify(request)}${RS}`);
      const closed = await Promise.race([ws.closed, new Promise((_, rej) => setTimeout(() => rej(new Error('still open')), 5000))]);
      assert.equal(closed.code, 1000);
      assert.deepEqual(ws.messages, [`${JSON.stringify({ error })}${RS}`]);
    }
  });

  it('negotiate: versions, transports, stateful opt-in; a bad negotiateVersion gets {"error"}', async () => {
    const v1 = await negotiate(gw.base, hub, key());
    assert.equal(v1.json.negotiateVersion, 1);
    assert.deepEqual(v1.json.availableTransports.map((t) => t.transport), ['WebSockets', 'ServerSentEvents', 'LongPolling']);
    assert.equal(v1.json.useStatefulReconnect, undefined);
    assert.equal(v1.json.ProtocolVersion, undefined);
    const v0 = await negotiate(gw.base, hub, key(), '');
    assert.equal(v0.json.negotiateVersion, 0);
    assert.equal(v0.json.connectionToken, undefined);
    const v9 = await negotiate(gw.base, hub, key(), 'negotiateVersion=9&useStatefulReconnect=true');
    assert.equal(v9.json.negotiateVersion, 1);
    assert.equal(v9.json.useStatefulReconnect, true);
    const bad = await negotiate(gw.base, hub, key(), 'negotiateVersion=abc');
    assert.equal(typeof bad.json?.error, 'string', bad.text);
    assert.equal(bad.json.connectionId, undefined);
  });
});

// --- limits ------------------------------------------------------------------------------------

describe('limits', () => {
  const hub = '/hubs/tasks';
  const FORCED = [
    ['WebSockets', signalR.HttpTransportType.WebSockets],
    ['ServerSentEvents', signalR.HttpTransportType.ServerSentEvents],
    ['LongPolling', signalR.HttpTransportType.LongPolling],
  ];

  for (const [label, transport] of FORCED) {
    it(`${label}: a message over the maximum closes the connection with an error, for good`, async () => {
      const c = build(lim.base, hub, limFx.keys.main,
        { transport, reconnect: [0, 100, 100], keepAliveMs: LIMITS.keepAliveMs });
      const seen = [];
      c.onreconnecting(() => seen.push('reconnecting'));
      const closed = new Promise((r) => c.onclose(r));
      await c.start();
      // Just under the limit: an ordinary hub error, the connection stays.
      const small = 'x'.repeat(LIMITS.maxMessage - 200);
      await assert.rejects(c.invoke('SubscribeToTask', small), /HubException: Task not found/);
      assert.equal(c.state, signalR.HubConnectionState.Connected);
      // Over it: Close with the error; no reconnect.
      const big = 'x'.repeat(LIMITS.maxMessage + 100);
      const pending = c.invoke('SubscribeToTask', big).then(() => null, (e) => e);
      const err = await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('not closed')), 3000))]);
      assert.match(String(err?.message), /Server returned an error on close: Connection closed with an error\./);
      assert.ok(await pending, 'the invocation is rejected');
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(seen, []);
      assert.equal(c.state, signalR.HubConnectionState.Disconnected);
    });
  }

  it('handshake timeout: a WebSocket that never sends the handshake gets "Handshake was canceled." and is closed', async () => {
    const { json } = await negotiate(lim.base, hub, limFx.keys.main);
    const opened = Date.now();
    const ws = await rawWebSocket(lim.port, hub, { id: json.connectionToken, key: limFx.keys.main });
    assert.equal(ws.status, 101);
    const closed = await Promise.race([ws.closed, new Promise((_, rej) => setTimeout(() => rej(new Error('still open')), LIMITS.handshakeMs + 3000))]);
    const elapsed = closed.at - opened;
    // Never early (the server checks on a 1 s heartbeat: at most about a heartbeat late).
    assert.ok(elapsed >= LIMITS.handshakeMs, `closed after ${elapsed} ms`);
    assert.deepEqual(ws.messages, [`{"error":"Handshake was canceled."}${RS}`]);
    // The token is gone.
    const post = await hubRequest(lim.base, hub, 'POST', { id: json.connectionToken, key: limFx.keys.main, body: '' });
    assert.equal(post.status, 404);
  });

  it('a handshake over the maximum (SSE + POST) → "Handshake was canceled." and the stream ends', async () => {
    const { json } = await negotiate(lim.base, hub, limFx.keys.main);
    const sse = await openSse(lim.port, hub, json.connectionToken, limFx.keys.main);
    const ended = new Promise((r) => sse.res.on('end', r));
    const huge = `{"protocol":"json","version":1,"pad":"${'x'.repeat(LIMITS.maxMessage)}"}${RS}`;
    const post = await hubRequest(lim.base, hub, 'POST', { id: json.connectionToken, key: limFx.keys.main, body: huge });
    assert.equal(post.status, 200);
    await Promise.race([ended, new Promise((_, rej) => setTimeout(() => rej(new Error('stream still open')), 5000))]);
    assert.equal(sse.data(), `:\r\ndata: {"error":"Handshake was canceled."}${RS}\r\n\r\n`);
  });

  it('client timeout: a client that stops sending is dropped; one that pings stays', async () => {
    const open = async () => {
      const { json } = await negotiate(lim.base, hub, limFx.keys.main);
      const ws = await rawWebSocket(lim.port, hub, { id: json.connectionToken, key: limFx.keys.main });
      assert.equal(ws.status, 101);
      const lastSent = Date.now();
      ws.ws.send(HANDSHAKE);
      await waitFor(() => ws.messages.length > 0, 5000, 'handshake response');
      assert.equal(ws.messages[0], `{}${RS}`);
      return { ...ws, token: json.connectionToken, lastSent };
    };
    const silent = await open();
    const lively = await open();
    const pinger = setInterval(() => lively.ws.send(`{"type":6}${RS}`), LIMITS.keepAliveMs);
    try {
      const closed = await Promise.race([silent.closed, new Promise((_, rej) => setTimeout(() => rej(new Error('silent client still open')), LIMITS.clientTimeoutMs + 3000))]);
      const elapsed = closed.at - silent.lastSent;
      assert.ok(elapsed >= LIMITS.clientTimeoutMs, `dropped after ${elapsed} ms`);
      // The server kept pinging the silent client until it gave up on it.
      assert.ok(silent.messages.includes(`{"type":6}${RS}`), JSON.stringify(silent.messages));
      assert.equal(lively.ws.readyState, WebSocket.OPEN);
      await new Promise((r) => setTimeout(r, LIMITS.clientTimeoutMs));
      assert.equal(lively.ws.readyState, WebSocket.OPEN, 'the pinging client is still connected');
      const gone = await hubRequest(lim.base, hub, 'POST', { id: silent.token, key: limFx.keys.main, body: '' });
      assert.equal(gone.status, 404);
    } finally {
      clearInterval(pinger);
      lively.ws.close();
    }
  });

  it('a client that stops reading is disconnected once its send buffer bound is exceeded; one that reads is not', async () => {
    const key = fx.keys.main;
    const open = async () => {
      const { json } = await negotiate(gw.base, hub, key);
      const ws = await rawWebSocket(gw.port, hub, { id: json.connectionToken, key });
      assert.equal(ws.status, 101);
      ws.ws.send(HANDSHAKE);
      await waitFor(() => ws.messages.length > 0, 5000, 'handshake response');
      return { ...ws, token: json.connectionToken };
    };
    const slow = await open();
    const reader = await open();
    slow.ws._socket.pause();  // stops reading (an internal of the `ws` package)
    // Each invocation of an unknown method is answered with an error naming the method: ~4 KB
    // per answer, 32 MB in all, far beyond the kernel socket buffers and the 1 MB bound.
    const target = 'M'.repeat(4000);
    const status = async (c) => (await hubRequest(gw.base, hub, 'POST', { id: c.token, key, body: '' })).status;
    let answers = 0;
    let wake = null;
    reader.ws.on('message', (m) => {
      if (String(m).includes('Unknown hub method')) answers += 1;
      wake?.();
    });
    // The reader keeps at most 64 answers (256 KB) outstanding, so it never lags by much.
    const answered = (n) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`reader: ${answers} of ${n} answers`)), 10000);
      wake = () => { if (answers >= n) { clearTimeout(timer); wake = null; resolve(); } };
      wake();
    });
    let i = 0;
    for (; i < 8000; i++) {
      const record = `{"type":1,"invocationId":"${i}","target":"${target}","arguments":[]}${RS}`;
      reader.ws.send(record);
      if (slow.ws.readyState === WebSocket.OPEN) slow.ws.send(record);
      if (i - answers >= 64) await answered(i - 16);
      if (i % 500 === 499 && (await status(slow)) === 404) break;
    }
    await waitFor(async () => (await status(slow)) === 404, 10000, 'the slow client to be disconnected');
    assert.ok(i >= 250, `disconnected after ${i} answers (1 MB = 250): sooner than its bound`);
    // The reading client gets every answer and stays.
    await waitFor(() => answers >= Math.min(i + 1, 8000), 20000, `all ${i + 1} answers`);
    assert.equal(await status(reader), 405);
    assert.equal(reader.ws.readyState, WebSocket.OPEN);
    slow.ws.terminate();
    reader.ws.close();
  });

  it('reaping after the disconnect timeout: unused, idle long-polling, dropped stateful, abandoned by a fallback', async () => {
    const key = fx.keys.main;
    const status = async (token) => (await hubRequest(gw.base, hub, 'POST', { id: token, key, body: '' })).status;
    const deadline = reaped.at + DISCONNECT_TIMEOUT_MS + 1000 + 3000;  // + one heartbeat + slack
    for (const [what, token] of [['unused', reaped.unused], ['long polling', reaped.longPoll], ['stateful', reaped.stateful]]) {
      await waitFor(async () => (await status(token)) === 404, Math.max(0, deadline - Date.now()), `the ${what} connection to be reaped`);
    }
    assert.equal(reapedByFallback.length, 2);
    for (const token of reapedByFallback) {
      await waitFor(async () => (await status(token)) === 404, DISCONNECT_TIMEOUT_MS + 4000, 'the abandoned connection to be reaped');
    }
  });
});
