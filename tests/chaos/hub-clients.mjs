// Holds many SignalR sessions on /hubs/notifications for the chaos test (tests/chaos/chaos.test.mjs),
// in a process of its own (forked with an IPC channel), so that thousands of WebSockets do not
// slow the test driver's event loop. Every session uses the official @microsoft/signalr client
// with automatic reconnect (a retry every 250-750 ms for up to CHAOS_HUB_RETRY_S seconds), so a
// session whose instance is killed comes back once the instance is restarted on the same port.
//
// Input (environment): HUB_URLS (comma-separated hub URLs; session i uses URL i mod n), HUB_KEYS
// (comma-separated virtual keys; session i uses key i mod n), HUB_SESSIONS, HUB_CONCURRENCY
// (sessions connecting at once, default 64), HUB_RETRY_S (default 180).
// Parent → child messages: {cmd: 'status'}, {cmd: 'stop'}.
// Child → parent: {type: 'ready', ...status} once every session started (or failed to),
// {type: 'status', ...} on request, {type: 'stopped'}.
// status = {sessions, connected, reconnecting, disconnected, startFailed, everDropped,
//           reconnected (sessions that dropped and came back), reconnects (total),
//           byUrl: {url: {sessions, connected, everDropped, reconnected}},
//           announcements: {message: sessions that received it}, duplicates, errors: [..]}
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../e2e/package.json'));
const signalR = require('@microsoft/signalr');

const urls = (process.env.HUB_URLS ?? '').split(',').filter(Boolean);
const keys = (process.env.HUB_KEYS ?? '').split(',').filter(Boolean);
const total = Number(process.env.HUB_SESSIONS ?? 100);
const concurrency = Number(process.env.HUB_CONCURRENCY ?? 64);
const retryMs = Number(process.env.HUB_RETRY_S ?? 180) * 1000;
if (urls.length === 0 || keys.length === 0) {
  console.error('hub-clients: HUB_URLS and HUB_KEYS are required');
  process.exit(2);
}

const sessions = [];
const errors = [];
const noteError = (e) => { if (errors.length < 20) errors.push(String(e?.message ?? e).slice(0, 200)); };
const announcements = new Map(); // message → Set of session indexes
let duplicates = 0;

function makeSession(i) {
  const url = urls[i % urls.length];
  const key = keys[i % keys.length];
  const s = {
    i, url, state: 'new', everDropped: false, reconnects: 0, startFailed: false,
  };
  const conn = new signalR.HubConnectionBuilder()
    .withUrl(url, { accessTokenFactory: () => key, transport: signalR.HttpTransportType.WebSockets })
    .withAutomaticReconnect({
      nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < retryMs ? 250 + Math.random() * 500 : null),
    })
    .configureLogging(signalR.LogLevel.None)
    .build();
  conn.on('SystemAnnouncement', (message) => {
    if (!announcements.has(message)) announcements.set(message, new Set());
    const got = announcements.get(message);
    if (got.has(i)) duplicates += 1;
    got.add(i);
  });
  conn.onreconnecting(() => { s.state = 'reconnecting'; s.everDropped = true; });
  conn.onreconnected(() => { s.state = 'connected'; s.reconnects += 1; });
  conn.onclose((e) => { s.state = 'disconnected'; if (e) noteError(e); });
  s.conn = conn;
  return s;
}

function status() {
  const st = {
    sessions: sessions.length, connected: 0, reconnecting: 0, disconnected: 0, startFailed: 0,
    everDropped: 0, reconnected: 0, reconnects: 0, byUrl: {}, announcements: {}, duplicates, errors,
  };
  for (const s of sessions) {
    const u = (st.byUrl[s.url] ??= { sessions: 0, connected: 0, everDropped: 0, reconnected: 0 });
    u.sessions += 1;
    if (s.state === 'connected') { st.connected += 1; u.connected += 1; }
    if (s.state === 'reconnecting') st.reconnecting += 1;
    if (s.state === 'disconnected') st.disconnected += 1;
    if (s.startFailed) st.startFailed += 1;
    if (s.everDropped) { st.everDropped += 1; u.everDropped += 1; }
    if (s.everDropped && s.state === 'connected' && s.reconnects > 0) { st.reconnected += 1; u.reconnected += 1; }
    st.reconnects += s.reconnects;
  }
  for (const [m, set] of announcements) st.announcements[m] = set.size;
  return st;
}

async function startAll() {
  let next = 0;
  async function worker() {
    while (next < total) {
      const s = makeSession(next);
      next += 1;
      sessions.push(s);
      try {
        await s.conn.start();
        s.state = 'connected';
      } catch (e) {
        s.startFailed = true;
        s.state = 'disconnected';
        noteError(e);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
}

process.on('message', async (msg) => {
  if (msg?.cmd === 'status') {
    process.send({ type: 'status', ...status() });
  } else if (msg?.cmd === 'stop') {
    await Promise.all(sessions.map((s) => s.conn.stop().catch(() => {})));
    process.send({ type: 'stopped' }, () => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0)); // the parent went away

await startAll();
process.send({ type: 'ready', ...status() });
