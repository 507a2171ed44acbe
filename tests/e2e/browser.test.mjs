// A real browser against the hubs (specs/signalr-protocol.md §1.4, §6.3): headless Chromium
// (Debian `chromium`) loads a page from another origin (a static server here) with the browser
// bundle of @microsoft/signalr, connects cross-origin to /hubs/tasks over WebSockets, Server-Sent
// Events and long polling with the virtual key from accessTokenFactory, invokes hub methods and receives
// the events of a real video task. CORS: the preflight passes for the configured origin; a page
// from another origin is refused. Chromium is driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe). Skipped (with the reason) when Chromium is not installed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startMock, startGateway, seed, seedVideo, apiCall, waitFor } from './harness.mjs';

const require = createRequire(import.meta.url);
const CHROMIUM = process.env.CHROMIUM_BIN ??
  ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const SKIP = CHROMIUM ? false : 'chromium is not installed (apt-get install chromium; or set CHROMIUM_BIN)';

const BUNDLE = path.join(path.dirname(require.resolve('@microsoft/signalr')), '../browser/signalr.js');

// --- the page --------------------------------------------------------------------------------

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>hubs</title>
<script src="/signalr.js"></script>
<script src="/app.js"></script>
</head><body>hubs</body></html>`;

// Runs in the page. Everything returns plain JSON for Runtime.evaluate.
const APP = `
window.hubEvents = [];
window.hubConnect = async (url, key, transport) => {
  const opts = { accessTokenFactory: () => key };
  if (transport) opts.transport = signalR.HttpTransportType[transport];
  const c = new signalR.HubConnectionBuilder().withUrl(url, opts)
    .configureLogging(signalR.LogLevel.None).build();
  for (const name of ['TaskStarted', 'TaskProgress', 'TaskCompleted', 'TaskFailed', 'TaskCancelled']) {
    c.on(name, (...args) => window.hubEvents.push({ name, args }));
  }
  window.hub = c;
  try {
    await c.start();
    return { connectionId: c.connectionId, transport: c.connection.transport.constructor.name,
      origin: location.origin };
  } catch (e) {
    return { error: String(e && e.message || e) };
  }
};
window.hubInvoke = async (method, ...args) => {
  try {
    return { result: (await window.hub.invoke(method, ...args)) ?? null };
  } catch (e) {
    return { error: String(e && e.message || e) };
  }
};
window.hubWaitFor = (name, ms) => new Promise((resolve) => {
  const deadline = Date.now() + ms;
  const check = () => {
    if (window.hubEvents.some((e) => e.name === name)) return resolve({ events: window.hubEvents });
    if (Date.now() > deadline) return resolve({ error: 'timed out waiting for ' + name, events: window.hubEvents });
    setTimeout(check, 20);
  };
  check();
});
window.hubStop = async () => { await window.hub.stop(); return { state: window.hub.state }; };
`;

/** A static server for the page (its own origin: another port than the gateway). */
async function startSite() {
  const requests = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const url = new URL(req.url, 'http://x');
    const send = (type, body) => {
      res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(body);
    };
    if (url.pathname === '/') return send('text/html; charset=utf-8', PAGE);
    if (url.pathname === '/app.js') return send('text/javascript', APP);
    if (url.pathname === '/signalr.js') return send('text/javascript', readFileSync(BUNDLE));
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    requests,
    close() {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

// --- Chromium over the DevTools protocol (pipe: fd 3 to the browser, fd 4 from it) -----------

async function launchChromium() {
  const profile = mkdtempSync(path.join(tmpdir(), 'conduit-chromium-'));
  const proc = spawn(CHROMIUM, [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--no-first-run', '--no-default-browser-check', '--disable-extensions',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--remote-debugging-pipe', `--user-data-dir=${profile}`, 'about:blank',
  ], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const exited = new Promise((r) => proc.once('exit', r));
  const toBrowser = proc.stdio[3];
  const fromBrowser = proc.stdio[4];
  let nextId = 1;
  const pending = new Map();
  const listeners = [];
  let buf = '';
  fromBrowser.on('data', (d) => {
    buf += d.toString('utf8');
    let end;
    while ((end = buf.indexOf('\0')) >= 0) {
      const msg = JSON.parse(buf.slice(0, end));
      buf = buf.slice(end + 1);
      if (msg.id !== undefined && pending.has(msg.id)) {
        const { resolve, reject, method } = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.error) reject(new Error(`${method}: ${msg.error.message}`));
        else resolve(msg.result);
      } else if (msg.method) {
        for (const l of listeners) l(msg);
      }
    }
  });
  const failAll = () => {
    for (const { reject, method } of pending.values()) reject(new Error(`${method}: chromium exited\n${stderr}`));
    pending.clear();
  };
  proc.once('exit', failAll);
  const send = (method, params = {}, sessionId, ms = 30000) => new Promise((resolve, reject) => {
    const id = nextId++;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`${method}: no answer within ${ms} ms\n${stderr}`));
    }, ms);
    pending.set(id, {
      method,
      resolve: (v) => { clearTimeout(timer); resolve(v); },
      reject: (e) => { clearTimeout(timer); reject(e); },
    });
    toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
  });
  await send('Browser.getVersion');
  return {
    send,
    onEvent: (fn) => listeners.push(fn),
    /** Opens a tab; resolves with a page handle bound to its session. */
    async newPage() {
      const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
      const events = [];
      listeners.push((m) => { if (m.sessionId === sessionId) events.push(m); });
      await send('Page.enable', {}, sessionId);
      await send('Network.enable', {}, sessionId);
      await send('Runtime.enable', {}, sessionId);
      return {
        events,
        async goto(url) {
          const loaded = new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`${url} did not load`)), 30000);
            listeners.push((m) => {
              if (m.sessionId === sessionId && m.method === 'Page.loadEventFired') {
                clearTimeout(timer);
                resolve();
              }
            });
          });
          await send('Page.navigate', { url }, sessionId);
          await loaded;
        },
        /** Evaluates `expression` in the page (promises awaited), returning its JSON value. */
        async eval(expression, ms = 30000) {
          const r = await send('Runtime.evaluate',
            { expression, awaitPromise: true, returnByValue: true }, sessionId, ms);
          if (r.exceptionDetails) {
            throw new Error(`page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
          }
          return r.result.value;
        },
        close: () => send('Target.closeTarget', { targetId }),
      };
    },
    async close() {
      try { await send('Browser.close', {}, undefined, 5000); } catch { proc.kill('SIGKILL'); }
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// --- tests -------------------------------------------------------------------------------------

describe('browser (headless Chromium, cross-origin)', { skip: SKIP }, () => {
  let mock;
  let gw;
  let fx;
  let site;      // the allowed origin
  let foreign;   // an origin that is not allowed
  let browser;

  before(async () => {
    site = await startSite();
    foreign = await startSite();
    mock = await startMock(['--job-duration-ms', '800']);
    gw = await startGateway([
      '--task-poll-interval-ms', '100', '--task-sweep-interval-ms', '200',
      '--hub-cors-origins', `${site.origin}, http://cors.example.test`,
      '--log-level', 'trace',  // nothing logged may carry the key (it travels in URLs here)
    ]);
    fx = await seed(gw, mock);
    await seedVideo(gw, fx);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await gw?.stop();
    mock?.stop();
    await site?.close();
    await foreign?.close();
  });

  const hubUrl = () => `${gw.base}/hubs/tasks`;

  it('CORS preflight: the allowed origin gets the exact origin back with credentials; another none', async () => {
    for (const route of ['/hubs/tasks/negotiate?negotiateVersion=1', '/hubs/tasks?id=x']) {
      const ok = await fetch(`${gw.base}${route}`, {
        method: 'OPTIONS',
        headers: {
          Origin: site.origin,
          'Access-Control-Request-Method': 'POST',
          'Access-Control-Request-Headers': 'authorization,x-requested-with,x-signalr-user-agent,content-type',
        },
      });
      assert.ok(ok.status === 204 || ok.status === 200, `${route}: ${ok.status}`);
      assert.equal(ok.headers.get('access-control-allow-origin'), site.origin);
      assert.equal(ok.headers.get('access-control-allow-credentials'), 'true');
      assert.match(ok.headers.get('vary') ?? '', /Origin/i);
      const methods = (ok.headers.get('access-control-allow-methods') ?? '').split(/\s*,\s*/);
      for (const m of ['GET', 'POST', 'DELETE']) assert.ok(methods.includes(m), `${route} methods: ${methods}`);
      const allowed = (ok.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
      for (const h of ['authorization', 'x-requested-with', 'x-signalr-user-agent', 'content-type']) {
        assert.ok(allowed.includes(h), `${route} headers: ${allowed}`);
      }

      const refused = await fetch(`${gw.base}${route}`, {
        method: 'OPTIONS',
        headers: { Origin: foreign.origin, 'Access-Control-Request-Method': 'POST' },
      });
      assert.equal(refused.headers.get('access-control-allow-origin'), null);
      assert.equal(refused.headers.get('access-control-allow-credentials'), null);
    }
    // The real responses repeat the origin (the SSE GET has no preflight).
    const neg = await fetch(`${gw.base}/hubs/tasks/negotiate?negotiateVersion=1`, {
      method: 'POST', headers: { Origin: site.origin, Authorization: `Bearer ${fx.keys.main}` },
    });
    assert.equal(neg.status, 200);
    assert.equal(neg.headers.get('access-control-allow-origin'), site.origin);
    assert.equal(neg.headers.get('access-control-allow-credentials'), 'true');
  });

  for (const transport of ['WebSockets', 'ServerSentEvents', 'LongPolling']) {
    it(`${transport}: the page connects cross-origin, invokes, and receives a task's events`, async () => {
      const page = await browser.newPage();
      try {
        await page.goto(`${site.origin}/`);
        const conn = await page.eval(`hubConnect(${JSON.stringify(hubUrl())}, ${JSON.stringify(fx.keys.main)}, ${JSON.stringify(transport)})`);
        assert.equal(conn.error, undefined, `connect: ${conn.error}`);
        assert.equal(conn.origin, site.origin);
        assert.notEqual(new URL(conn.origin).port, String(gw.port));
        assert.equal(conn.transport, `${{ WebSockets: 'WebSocket', ServerSentEvents: 'ServerSentEvents', LongPolling: 'LongPolling' }[transport]}Transport`);
        assert.ok(conn.connectionId);

        // What the browser really sent: the key travels as access_token on the WebSocket / SSE
        // request (a browser cannot set headers there), and as a Bearer header on negotiate.
        // (CDP events may trail the evaluate answer a little: bounded waits.)
        const sentRequests = () => page.events.filter((e) => e.method === 'Network.requestWillBeSent')
          .map((e) => e.params.request);
        const negotiate = await waitFor(() => sentRequests().find((r) => r.method === 'POST' &&
          r.url.includes('/hubs/tasks/negotiate')), 5000, 'the negotiate request');
        assert.equal(negotiate.headers.Authorization ?? negotiate.headers.authorization, `Bearer ${fx.keys.main}`);
        // It needed a CORS preflight (Authorization, X-Requested-With…), which passed.
        await waitFor(() => sentRequests().find((r) => r.method === 'OPTIONS' &&
          r.url.includes('/hubs/tasks/negotiate')), 5000, 'a preflight for negotiate');
        if (transport === 'WebSockets') {
          const created = await waitFor(() => page.events.find((e) => e.method === 'Network.webSocketCreated'),
            5000, 'a WebSocket');
          const u = new URL(created.params.url);
          assert.equal(u.host, `127.0.0.1:${gw.port}`);
          assert.equal(u.searchParams.get('access_token'), fx.keys.main);
          assert.ok(u.searchParams.get('id'));
        } else if (transport === 'ServerSentEvents') {
          const stream = await waitFor(() => sentRequests().find((r) => r.method === 'GET' &&
            r.url.startsWith(hubUrl()) && r.url.includes('access_token=')), 5000, 'an SSE GET with access_token');
          assert.equal(new URL(stream.url).searchParams.get('access_token'), fx.keys.main);
        } else {
          // Polls are XHR/fetch GETs with the Bearer header.
          const poll = await waitFor(() => sentRequests().find((r) => r.method === 'GET' &&
            r.url.startsWith(`${hubUrl()}?id=`)), 5000, 'a poll');
          assert.equal(poll.headers.Authorization ?? poll.headers.authorization, `Bearer ${fx.keys.main}`);
        }
        if (transport !== 'WebSockets') {
          assert.equal(page.events.some((e) => e.method === 'Network.webSocketCreated'), false);
        }

        // Hub methods: an error round trip, then a subscription that delivers events.
        const notFound = await page.eval(`hubInvoke('SubscribeToTask', 'task_00000000000000000000000000000000')`);
        assert.match(notFound.error ?? '', /HubException: Task not found/);
        const sub = await page.eval(`hubInvoke('SubscribeToTaskType', 'video_generation')`);
        assert.deepEqual(sub, { result: null });
        const res = await apiCall(gw.base, fx.keys.main, 'POST', '/v1/videos/generations/async',
          { body: { model: 'sora', prompt: 'a fox in a browser' } });
        assert.equal(res.status, 202, res.text);
        const id = res.json.task_id;
        const got = await page.eval(`hubWaitFor('TaskCompleted', 20000)`, 30000);
        assert.equal(got.error, undefined, `${got.error}: ${JSON.stringify(got.events)}`);
        const names = got.events.map((e) => e.name);
        assert.equal(names[0], 'TaskStarted', names.join(','));
        assert.equal(names.at(-1), 'TaskCompleted', names.join(','));
        assert.ok(got.events.every((e) => e.args[0] === id));
        assert.ok(got.events.at(-1).args[1].data[0].url.includes('/v1/media/'));

        // The key travelled in URLs (access_token): it must not show up in the gateway's logs.
        assert.equal(gw.output().includes(fx.keys.main), false, 'the key was logged');
        const stopped = await page.eval('hubStop()');
        assert.equal(stopped.state, 'Disconnected');
        if (transport === 'LongPolling') {
          // stop() ends a long-polling connection with DELETE, cross-origin too (preflighted):
          // the browser lets the page see the answer. (The Close message the client POSTs first
          // already ended the connection, so it may be 404, which clients ignore: spec §2.4.)
          const del = await waitFor(() => page.events.find((e) => e.method === 'Network.requestWillBeSent' &&
            e.params.request.method === 'DELETE'), 5000, 'the DELETE');
          const answered = await waitFor(() => page.events.find((e) => e.params.requestId === del.params.requestId &&
            (e.method === 'Network.loadingFinished' || e.method === 'Network.loadingFailed')), 5000, 'the DELETE to end');
          assert.equal(answered.method, 'Network.loadingFinished', JSON.stringify(answered.params));
          const response = page.events.find((e) => e.method === 'Network.responseReceived' &&
            e.params.requestId === del.params.requestId);
          assert.ok([202, 404].includes(response?.params.response.status), JSON.stringify(response?.params.response));
        }
      } finally {
        await page.close();
      }
    });
  }

  it('a bad key from the allowed origin: the page sees the 401 itself (CORS headers on errors too)', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${site.origin}/`);
      const conn = await page.eval(`hubConnect(${JSON.stringify(hubUrl())}, 'condt_not-a-real-key', 'WebSockets')`);
      assert.ok(conn.error, `connected anyway: ${JSON.stringify(conn)}`);
      assert.match(conn.error, /Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'/);
    } finally {
      await page.close();
    }
  });

  it('a page from an origin that is not allowed cannot connect', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${foreign.origin}/`);
      const conn = await page.eval(`hubConnect(${JSON.stringify(hubUrl())}, ${JSON.stringify(fx.keys.main)}, 'WebSockets')`);
      assert.ok(conn.error, `connected anyway: ${JSON.stringify(conn)}`);
      assert.match(conn.error, /Failed to complete negotiation with the server/);
      assert.match(conn.error, /Failed to fetch/);
      // The browser blocked it for CORS (its preflight got no Access-Control-Allow-Origin).
      const failed = page.events.filter((e) => e.method === 'Network.loadingFailed');
      assert.ok(failed.some((e) => e.params.corsErrorStatus), JSON.stringify(failed.map((e) => e.params)));
    } finally {
      await page.close();
    }
  });
});
