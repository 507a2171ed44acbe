// Chaos test of a three-instance cluster (issue 6): three `conduit` instances share one
// PostgreSQL database, one Redis and one RabbitMQ (PRIVATE engines: this test stops and restarts
// them), a mock provider and a webhook receiver. Under a steady load of chat requests (priced
// model, funded group), async video tasks with signed webhooks and CHAOS_HUB_SESSIONS SignalR
// sessions (held by tests/chaos/hub-clients.mjs in a process of its own, with automatic
// reconnect), three faults are injected in sequence:
//   1. `kill -9` of the instance that ran the most task steps so far (the one that sent the most
//      webhooks; CHAOS_VICTIM=1..3 picks one), restarted on the same port CHAOS_KILL_DOWN_S later;
//   2. Redis stopped for CHAOS_REDIS_DOWN_S seconds (restarted empty: no persistence);
//   3. RabbitMQ restarted (stopped, CHAOS_RMQ_DOWN_S seconds, started again).
// A poller reads /health/ready of every instance every CHAOS_HEALTH_MS. Afterwards:
//   - every accepted task (202) reaches a terminal state, completed (no failure is injected);
//     no twin task (a client retry with its Idempotency-Key must find the first one); exactly one
//     upstream job per attempt (the mock holds one job per `<task id>-<attempt>` key, and
//     jobs_started = Σ(retry_count + 1));
//   - every completed task's terminal webhook arrived with a valid Standard Webhooks signature
//     and its attempt's webhook-id, and no delivery is left pending/failed/dead in the store;
//   - the ledger is exact: group balance = initial − Σ request-log costs = initial −
//     lifetime_spent (micro-units); every chat answered 200 has exactly one request-log row (by
//     its X-Request-Id) whose cost = its usage × the price (except those the killed instance
//     answered in its last unflushed spend batch: see CHAOS_KILL_BATCH_MS); every completed task
//     one row;
//   - every hub session is connected again, the killed instance's sessions all reconnected, and a
//     SystemAnnouncement sent after the faults reaches every session exactly once;
//   - /health/ready reported each outage while it lasted: the killed instance did not answer,
//     every instance answered non-Healthy (naming Redis / the work queue) for the whole time
//     Redis / RabbitMQ were down (after a detection grace of CHAOS_HEALTH_GRACE_MS), and every
//     instance was Healthy again within CHAOS_RECOVER_S.
//
// Run: scripts/chaos-test.sh [build-dir]   (starts the private engines, runs this, stops them)
//
// Environment: CONDUIT_TEST_PG, CONDUIT_TEST_REDIS, CONDUIT_TEST_AMQP (the private engines) and
// CHAOS_PRIVATE_ENGINES=1 (a guard: this test stops Redis and RabbitMQ through
// scripts/engines.sh with the CONDUIT_ENGINES_DIR / CONDUIT_*_PORT / CONDUIT_RMQ_NODE of the
// environment — never run it against shared engines). Knobs (defaults): CHAOS_HUB_SESSIONS
// (3000) CHAOS_CHAT_RPS (40) CHAOS_TASK_RPS (4) CHAOS_KEYS (6) CHAOS_JOB_MS (500-2000)
// CHAOS_WARMUP_S (6) CHAOS_KILL_DOWN_S (3) CHAOS_REDIS_DOWN_S (10) CHAOS_RMQ_DOWN_S (10)
// CHAOS_SETTLE_S (5) CHAOS_RECOVER_S (30) CHAOS_DEADLINE_S (120) CHAOS_HEALTH_MS (200)
// CHAOS_HEALTH_GRACE_MS (1500) CHAOS_HEALTH_TIMEOUT_MS (3000; a timed-out poll is counted apart,
// not as an answer) CHAOS_THREADS (1) CHAOS_KILL_BATCH_MS (1000: chat requests the
// killed instance answered this shortly before the kill may be unbilled — its spend batch was not
// flushed, and webhook delivery records of its unwritten batch; reported as warnings, failures
// with CHAOS_STRICT_KILL_BILLING=1) CHAOS_LOG_DIR (logs
// + report.json; kept on failure) CHAOS_KEEP=1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import net from 'node:net';
import { execFile, fork, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const buildDir = path.resolve(repo, process.env.CONDUIT_BUILD_DIR ?? 'build/release');
process.env.CONDUIT_BIN ??= path.join(buildDir, 'conduit');
process.env.MOCK_BIN ??= path.join(buildDir, 'conduit-mock-provider');
const { startMock, startGateway, seed, seedVideo, metricValue, MASTER_KEY } = await import('../e2e/harness.mjs');
const run = promisify(execFile);

const num = (name, dflt) => (process.env[name] ? Number(process.env[name]) : dflt);
const CFG = {
  hubSessions: num('CHAOS_HUB_SESSIONS', 3000),
  chatRps: num('CHAOS_CHAT_RPS', 40),
  taskRps: num('CHAOS_TASK_RPS', 4),
  keys: num('CHAOS_KEYS', 6),
  jobMs: (process.env.CHAOS_JOB_MS ?? '500-2000').split('-').map(Number),
  warmupS: num('CHAOS_WARMUP_S', 6),
  killDownS: num('CHAOS_KILL_DOWN_S', 3),
  redisDownS: num('CHAOS_REDIS_DOWN_S', 10),
  rmqDownS: num('CHAOS_RMQ_DOWN_S', 10),
  settleS: num('CHAOS_SETTLE_S', 5),
  recoverS: num('CHAOS_RECOVER_S', 30),
  deadlineS: num('CHAOS_DEADLINE_S', 120),
  healthMs: num('CHAOS_HEALTH_MS', 200),
  healthGraceMs: num('CHAOS_HEALTH_GRACE_MS', 1500),
  healthTimeoutMs: num('CHAOS_HEALTH_TIMEOUT_MS', 3000),
  threads: num('CHAOS_THREADS', 1),
  killBatchMs: num('CHAOS_KILL_BATCH_MS', 1000),
};
const PG = process.env.CONDUIT_TEST_PG;
const REDIS = process.env.CONDUIT_TEST_REDIS;
const AMQP = process.env.CONDUIT_TEST_AMQP;
const ENGINES = path.join(repo, 'scripts/engines.sh');
const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'timedout']);
const INITIAL_BALANCE = 1000; // dollars → 1e9 micro-units
const MICRO = 1_000_000;

const skip = !(PG && REDIS && AMQP) ? 'needs CONDUIT_TEST_PG, CONDUIT_TEST_REDIS and CONDUIT_TEST_AMQP (scripts/chaos-test.sh)'
  : process.env.CHAOS_PRIVATE_ENGINES !== '1' ? 'CHAOS_PRIVATE_ENGINES=1 is required (the test stops Redis and RabbitMQ): run scripts/chaos-test.sh'
    : false;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const rel = (t) => `${((t - t0) / 1000).toFixed(1)}s`;
const log = (...a) => console.log(`[chaos ${new Date().toISOString().slice(11, 23)}]`, ...a);

/** Polls `fn` until truthy; throws after `ms` with `what`. */
async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** A free port below the ephemeral range (kept across the restart of an instance). */
async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const free = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port in 20000-31999');
}

const portOpen = (port) => new Promise((resolve) => {
  const s = net.connect(port, '127.0.0.1');
  s.once('connect', () => { s.destroy(); resolve(true); });
  s.once('error', () => resolve(false));
});

async function psql(db, sql) {
  const { stdout } = await run('psql', ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-d', db, '-c', sql],
    { maxBuffer: 256 * 1024 * 1024 });
  return stdout.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

/**
 * scripts/engines.sh `cmd` `engine`, bounded: after `ms` its whole process group is killed (the
 * RabbitMQ CLI tools it runs can hang on a loaded machine) and this rejects.
 */
function engines(cmd, engine, ms = 90000) {
  const t = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(ENGINES, [cmd, engine], { env: process.env, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => {
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, ms);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) {
        log(`engines ${cmd} ${engine}: ${Date.now() - t} ms`);
        resolve();
      } else {
        reject(new Error(`scripts/engines.sh ${cmd} ${engine} failed after ${Date.now() - t} ms (${signal ?? `exit ${code}`}): ${err.trim().split('\n').slice(-3).join(' | ')}`));
      }
    });
  });
}

/** Waits until nothing accepts connections on `port` and, if given, process `pid` is gone. */
async function waitDown(port, pid, ms, what) {
  await until(async () => {
    if (pid) { try { process.kill(pid, 0); return false; } catch { /* gone */ } }
    return !(await portOpen(port));
  }, ms, what);
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver: verifies every Standard Webhooks signature with Node crypto, answers 200.

function verifySignature(secret, id, ts, body, header) {
  if (!secret || !header) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const want = crypto.createHmac('sha256', key).update(`${id}.${ts}.`).update(body).digest();
  for (const part of header.split(' ')) {
    const [version, sig] = part.split(',');
    if (version !== 'v1' || !sig) continue;
    const got = Buffer.from(sig, 'base64');
    if (got.length === want.length && crypto.timingSafeEqual(got, want)) return true;
  }
  return false;
}

function startReceiver(secretOfKey) {
  const received = [];
  const byId = new Map(); // webhook-id → deliveries
  const terminalByTask = new Map(); // task id → [records]
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const keyIndex = Number((req.url.match(/^\/hook\/(\d+)/) ?? [])[1]);
      const id = req.headers['webhook-id'];
      const ts = req.headers['webhook-timestamp'];
      let why = '';
      if (!id || !ts) why = 'missing webhook-id/webhook-timestamp';
      else if (!verifySignature(secretOfKey(keyIndex), id, ts, raw, req.headers['webhook-signature'])) why = 'bad or missing signature';
      let payload = null;
      try { payload = JSON.parse(raw.toString()); } catch { why ||= 'body is not JSON'; }
      const rec = {
        id, keyIndex, type: payload?.type, taskId: payload?.task_id, status: payload?.status, valid: !why, why, at: Date.now(),
      };
      received.push(rec);
      byId.set(id, (byId.get(id) ?? 0) + 1);
      if (rec.type && rec.type !== 'task.progress' && rec.taskId) {
        if (!terminalByTask.has(rec.taskId)) terminalByTask.set(rec.taskId, []);
        terminalByTask.get(rec.taskId).push(rec);
      }
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
  });
  server.keepAliveTimeout = 30000;
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        base: `http://127.0.0.1:${port}`,
        received,
        byId,
        terminalByTask,
        close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Hub sessions in a child process (tests/chaos/hub-clients.mjs).

function startHubClients(urls, keys, sessions) {
  const child = fork(path.join(here, 'hub-clients.mjs'), [], {
    env: { ...process.env, HUB_URLS: urls.join(','), HUB_KEYS: keys.join(','), HUB_SESSIONS: String(sessions) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiters = [];
  let ready = null;
  child.on('message', (m) => {
    if (m.type === 'ready') ready = m;
    const w = waiters.findIndex((x) => x.type === m.type);
    if (w >= 0) waiters.splice(w, 1)[0].resolve(m);
  });
  const exited = new Promise((r) => child.once('exit', r));
  const next = (type, ms) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hub clients: no '${type}' within ${ms} ms`)), ms);
    waiters.push({ type, resolve: (m) => { clearTimeout(timer); resolve(m); } });
  });
  return {
    async ready(ms) {
      if (ready) return ready;
      return next('ready', ms);
    },
    async status() {
      const p = next('status', 30000);
      child.send({ cmd: 'status' });
      return p;
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.send({ cmd: 'stop' });
      await Promise.race([exited, sleep(20000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

// ---------------------------------------------------------------------------------------------

test('chaos: kill -9 an instance, stop Redis, restart RabbitMQ under load', { skip, timeout: 900000 }, async () => {
  const report = { config: CFG, failures: [], warnings: [], faults: {} };
  const fail = (msg) => { report.failures.push(msg); log(`FAIL: ${msg}`); };
  const warn = (msg) => { report.warnings.push(msg); log(`warning: ${msg}`); };
  const logDir = process.env.CHAOS_LOG_DIR ?? mkdtempSync(path.join(tmpdir(), 'conduit-chaos-logs-'));
  mkdirSync(logDir, { recursive: true });
  const db = `conduit_chaos_${process.pid}_${Date.now()}`;
  const dbUrl = (() => { const u = new URL(PG); u.pathname = `/${db}`; return u.toString(); })();
  const amqp = new URL(AMQP);
  const env = { CONDUIT_MASTER_KEY: MASTER_KEY, CONDUIT_ENCRYPTION_KEY: 'chaos-test-encryption-key-0123' };
  const common = [
    '--database-url', dbUrl,
    '--redis-url', REDIS, '--redis-prefix', `${db}:`,
    '--rabbitmq-host', amqp.hostname, '--rabbitmq-port', amqp.port || '5672',
    '--rabbitmq-username', decodeURIComponent(amqp.username || 'guest'),
    '--rabbitmq-password', decodeURIComponent(amqp.password || 'guest'),
    '--threads', String(CFG.threads),
    '--task-poll-interval-ms', '200', '--task-sweep-interval-ms', '500',
    '--webhook-retry-base-ms', '200', '--webhook-retry-max-ms', '2000',
    '--hub-max-connections-per-key', '100000', '--hub-method-rate-per-minute', '0',
    '--log-level', process.env.CHAOS_LOG_LEVEL ?? 'info',
  ];
  const instances = []; // {name, port, dataDir, gw, logs: [output fns]}
  let mock; let receiver; let hubs; let ok = false;
  let loadOn = true; let polling = true;
  const chats = []; // {n, inst, t0, t1, status, id, usage, err}
  const tasks = []; // {n, key, id, attempts: [{inst, status, err}], t1}
  const samples = []; // {t, i, code, status, bad, err}
  const inflight = new Set();
  try {
    await psql(PG, `CREATE DATABASE ${db}`);
    mock = await startMock(['--job-duration-ms', '1000']);
    const secrets = [];
    receiver = await startReceiver((k) => secrets[k]);

    // --- Three instances --------------------------------------------------------------------
    const startInstance = async (i) => {
      const inst = instances[i] ?? { name: `gw${i + 1}`, port: await freePort(), dataDir: mkdtempSync(path.join(tmpdir(), `conduit-chaos-gw${i + 1}-`)), logs: [] };
      instances[i] = inst;
      inst.gw = await startGateway([...common, '--listen', `127.0.0.1:${inst.port}`], { dataDir: inst.dataDir, keepData: true, env });
      inst.logs.push(inst.gw.output);
      inst.base = inst.gw.base;
      return inst;
    };
    await startInstance(0);
    const gw1 = instances[0].gw;
    const fx = await seed(gw1, mock, { balance: INITIAL_BALANCE });
    const video = await seedVideo(gw1, fx);
    await gw1.admin('POST', '/api/ModelCosts', { costName: 'video', modelProviderMappingIds: [video.id], videoCostPerSecond: 0.01 });
    const keys = [];
    for (let k = 0; k < CFG.keys; k++) {
      const created = await gw1.admin('POST', '/api/VirtualKeys', { keyName: `chaos-${k}`, virtualKeyGroupId: fx.group.id });
      keys.push({ key: created.virtualKey, id: created.keyInfo.id });
      const s = await gw1.admin('POST', `/api/VirtualKeys/${created.keyInfo.id}/webhook-secret`);
      secrets[k] = s.secret;
    }
    await startInstance(1);
    await startInstance(2);
    log(`instances: ${instances.map((x) => `${x.name} ${x.base}`).join(', ')}; db ${db}; logs ${logDir}`);
    // The keys made on gw1 must be known on all instances before the load starts.
    for (const inst of instances) {
      await until(async () => (await fetch(`${inst.base}/v1/models`, { headers: { Authorization: `Bearer ${keys.at(-1).key}` } })).status === 200,
        10000, `the keys known on ${inst.name}`);
    }

    // --- Health poller ------------------------------------------------------------------------
    const pollOne = async (i) => {
      const inst = instances[i];
      const t = Date.now();
      try {
        const res = await fetch(`${inst.base}/health/ready`, { signal: AbortSignal.timeout(CFG.healthTimeoutMs) });
        const j = await res.json();
        samples.push({ t, i, code: res.status, status: j.status, bad: j.checks.filter((c) => c.status !== 'Healthy').map((c) => `${c.name}:${c.status}`) });
      } catch (e) {
        samples.push({ t, i, err: String(e.cause?.code ?? e.name ?? e.message) });
      }
    };
    const pollers = [0, 1, 2].map(async (i) => {
      while (polling) {
        const t = Date.now();
        await pollOne(i);
        await sleep(Math.max(0, CFG.healthMs - (Date.now() - t)));
      }
    });

    // --- Hub sessions -------------------------------------------------------------------------
    const hubUrl = (inst) => `${inst.base}/hubs/notifications`;
    const tHub = Date.now();
    hubs = startHubClients(instances.map(hubUrl), keys.map((k) => k.key), CFG.hubSessions);
    const ready = await hubs.ready(180000);
    log(`hub sessions: ${ready.connected}/${CFG.hubSessions} connected in ${Date.now() - tHub} ms (${ready.startFailed} failed)`);
    if (ready.connected !== CFG.hubSessions) fail(`only ${ready.connected} of ${CFG.hubSessions} hub sessions connected: ${ready.errors.slice(0, 3)}`);
    report.hubsInitial = { connected: ready.connected, ms: Date.now() - tHub };

    // --- Steady load ----------------------------------------------------------------------------
    const track = (p) => { inflight.add(p); p.finally(() => inflight.delete(p)); return p; };
    const chatOnce = async (n) => {
      const inst = instances[n % 3];
      // Every fourth request streams (its usage comes in the last chunk).
      const stream = n % 4 === 3;
      const rec = { n, inst: n % 3, t0: Date.now(), id: `chaos-chat-${n}`, stream };
      chats.push(rec);
      try {
        const res = await fetch(`${inst.base}/v1/chat/completions`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${keys[n % keys.length].key}`, 'Content-Type': 'application/json', 'X-Request-Id': rec.id },
          body: JSON.stringify({
            model: 'gpt-4o-mini', messages: [{ role: 'user', content: `chaos ${n}` }], max_tokens: 16,
            ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
          }),
          signal: AbortSignal.timeout(20000),
        });
        const text = await res.text();
        rec.status = res.status;
        if (res.status !== 200) {
          rec.body = text.slice(0, 200);
        } else if (!stream) {
          rec.usage = JSON.parse(text).usage;
        } else {
          const events = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
          if (events.at(-1) !== '[DONE]') throw new Error('stream cut before [DONE]');
          rec.usage = events.slice(0, -1).map((e) => JSON.parse(e)).find((e) => e.usage)?.usage;
          if (!rec.usage) throw new Error('stream without a usage chunk');
        }
      } catch (e) {
        if (rec.status === 200) rec.status = 'cut';
        rec.err = String(e.cause?.code ?? e.name ?? e.message);
      }
      rec.t1 = Date.now();
    };
    const submitTask = async (n) => {
      const k = n % keys.length;
      const t = { n, key: k, idem: `chaos-task-${n}`, attempts: [], t0: Date.now() };
      tasks.push(t);
      const [lo, hi] = CFG.jobMs;
      const body = JSON.stringify({
        model: 'sora', prompt: `chaos ${n}`, mock_job_duration_ms: Math.round(lo + Math.random() * (hi - lo)),
        webhook_url: `${receiver.base}/hook/${k}`,
      });
      // Retried (next instance, same Idempotency-Key) until accepted or refused for good.
      for (let a = 0; Date.now() - t.t0 < 90000; a++) {
        const i = (n + a) % 3;
        const att = { inst: i, at: Date.now() };
        t.attempts.push(att);
        try {
          const res = await fetch(`${instances[i].base}/v1/videos/generations/async`, {
            method: 'POST',
            headers: { Authorization: `Bearer ${keys[k].key}`, 'Content-Type': 'application/json', 'Idempotency-Key': t.idem },
            body,
            signal: AbortSignal.timeout(20000),
          });
          const text = await res.text();
          att.status = res.status;
          if (res.status === 202) {
            const id = JSON.parse(text).task_id;
            if (t.id && t.id !== id) t.twin = id;
            t.id ??= id;
            t.t1 = Date.now();
            return;
          }
          att.body = text.slice(0, 200);
          if (res.status < 500 && res.status !== 429) { t.refused = `${res.status} ${att.body}`; return; }
        } catch (e) {
          att.err = String(e.cause?.code ?? e.name ?? e.message);
        }
        await sleep(300);
      }
      t.gaveUp = true;
    };
    const loop = async (rps, fn) => {
      const period = 1000 / rps;
      let n = 0;
      const start = Date.now();
      while (loadOn) {
        track(fn(n));
        n += 1;
        await sleep(Math.max(0, start + n * period - Date.now()));
      }
    };
    const loads = [loop(CFG.chatRps, chatOnce), loop(CFG.taskRps, submitTask)];
    log(`load: ${CFG.chatRps} chat/s, ${CFG.taskRps} tasks/s, ${CFG.hubSessions} hub sessions; warm-up ${CFG.warmupS} s`);
    await sleep(CFG.warmupS * 1000);

    // The cluster must be Healthy before a fault is injected.
    const allHealthy = async (since) => {
      for (const i of [0, 1, 2]) {
        const last = samples.filter((s) => s.i === i && s.t >= since).at(-1);
        if (!last || last.status !== 'Healthy') return false;
      }
      return true;
    };
    const waitHealthy = async (what) => {
      const t = Date.now();
      await until(() => allHealthy(t), CFG.recoverS * 1000, `every instance Healthy after ${what}`);
      return Date.now();
    };
    await waitHealthy('the start');
    const announce = async (message) => {
      const res = await fetch(`${instances[0].base}/api/notifications/announcements`, {
        method: 'POST',
        headers: { 'X-API-Key': MASTER_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify({ message, severity: 'info' }),
      });
      assert.ok(res.status < 300, `announcement → ${res.status} ${await res.text()}`);
    };
    const everyoneGot = async (message, ms) => {
      try {
        await until(async () => ((await hubs.status()).announcements[message] ?? 0) >= CFG.hubSessions, ms, `'${message}' at every session`);
      } catch { /* reported below */ }
      return (await hubs.status()).announcements[message] ?? 0;
    };
    const baseline = `chaos-baseline-${Date.now()}`;
    await announce(baseline);
    report.hubsBaselineAnnouncement = await everyoneGot(baseline, 30000);
    log(`baseline announcement reached ${report.hubsBaselineAnnouncement}/${CFG.hubSessions} sessions`);

    // --- Fault 1: kill -9 of the instance running the task steps, restart on the same port ----
    // Killing the instance that runs task steps is what tests the tasks: the one that sent the
    // most webhooks so far (with a single active consumer per partition queue, the only one).
    const webhooksSent = await Promise.all(instances.map((x) => metricValue(x.base, 'conduit_webhook_requests_total')));
    const vi = process.env.CHAOS_VICTIM ? Number(process.env.CHAOS_VICTIM) - 1
      : webhooksSent.indexOf(Math.max(...webhooksSent));
    const victim = instances[vi];
    const others = [0, 1, 2].filter((i) => i !== vi);
    const before1 = await hubs.status();
    const f1 = { at: Date.now(), victim: victim.name, webhooksSentBefore: webhooksSent };
    report.faults.kill = f1;
    log(`FAULT 1: kill -9 ${victim.name} (pid ${victim.gw.proc.pid}; webhooks sent so far per instance: ${webhooksSent})`);
    victim.gw.proc.kill('SIGKILL');
    await victim.gw.exited;
    f1.dead = Date.now();
    await sleep(CFG.killDownS * 1000);
    f1.restartAt = Date.now();
    await startInstance(vi);
    f1.up = Date.now();
    log(`${victim.name} restarted on port ${victim.port} in ${f1.up - f1.restartAt} ms (down ${f1.up - f1.at} ms)`);
    f1.healthy = await waitHealthy('the restart');
    try {
      await until(async () => (await hubs.status()).byUrl[hubUrl(victim)].reconnected >= before1.byUrl[hubUrl(victim)].sessions,
        CFG.recoverS * 1000, `the sessions of ${victim.name} reconnected`);
    } catch (e) { fail(e.message); }
    f1.hubsReconnectedAt = Date.now();
    const after1 = await hubs.status();
    f1.hubs = after1.byUrl[hubUrl(victim)];
    log(`sessions of ${victim.name}: ${JSON.stringify(f1.hubs)} (${f1.hubsReconnectedAt - f1.up} ms after the restart)`);
    await sleep(CFG.settleS * 1000);

    // --- Fault 2: Redis stopped for CHAOS_REDIS_DOWN_S ---------------------------------------
    const f2 = { at: Date.now() };
    report.faults.redis = f2;
    log('FAULT 2: stop Redis');
    await engines('stop', 'redis');
    await waitDown(Number(new URL(REDIS).port), 0, 10000, 'the Redis port to close');
    f2.down = Date.now();
    await sleep(CFG.redisDownS * 1000);
    f2.startAt = Date.now();
    await engines('start', 'redis');
    f2.up = Date.now();
    f2.healthy = await waitHealthy('the Redis restart');
    log(`Redis down ${f2.startAt - f2.down} ms; cluster Healthy ${f2.healthy - f2.up} ms after its restart`);
    await sleep(CFG.settleS * 1000);

    // --- Fault 3: RabbitMQ restart ------------------------------------------------------------
    const f3 = { at: Date.now() };
    report.faults.rabbitmq = f3;
    log('FAULT 3: restart RabbitMQ');
    const amqpPort = Number(amqp.port || 5672);
    try {
      await engines('stop', 'rabbitmq', 60000);
    } catch (e) {
      // rabbitmqctl did not get through: stop the node with SIGTERM (a graceful shutdown too).
      const pidFile = path.join(process.env.CONDUIT_ENGINES_DIR ?? '/tmp/conduit-engines', 'rabbitmq/rabbitmq.pid');
      if (!existsSync(pidFile)) throw e;
      warn(`${e.message}; stopping RabbitMQ with SIGTERM instead`);
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      process.kill(pid, 'SIGTERM');
      await waitDown(amqpPort, pid, 60000, 'RabbitMQ to stop after SIGTERM');
    }
    await waitDown(amqpPort, 0, 10000, 'the AMQP port to close');
    f3.down = Date.now();
    await sleep(CFG.rmqDownS * 1000);
    f3.startAt = Date.now();
    let probing = true;
    const probe = (async () => {
      while (probing && !(await portOpen(amqpPort))) await sleep(100);
      f3.portOpen = Date.now();
    })();
    await engines('start', 'rabbitmq', 150000);
    probing = false;
    await probe;
    f3.up = Date.now();
    f3.healthy = await waitHealthy('the RabbitMQ restart');
    log(`RabbitMQ down ${f3.portOpen - f3.down} ms; cluster Healthy ${f3.healthy - f3.up} ms after its start`);
    await sleep(CFG.settleS * 1000);

    // --- Stop the load, let it drain ------------------------------------------------------------
    loadOn = false;
    await Promise.all(loads);
    const tLoadEnd = Date.now();
    await until(() => inflight.size === 0, 120000, 'the in-flight requests and submissions to finish');
    log(`load stopped: ${chats.length} chat requests, ${tasks.length} task submissions (drained in ${Date.now() - tLoadEnd} ms)`);

    // --- Verify: tasks ----------------------------------------------------------------------------
    const accepted = tasks.filter((t) => t.id);
    const taskById = new Map(accepted.map((t) => [t.id, t]));
    const notAccepted = tasks.filter((t) => !t.id);
    report.submissions = {
      total: tasks.length, accepted: accepted.length, refused: notAccepted.filter((t) => t.refused).length,
      gaveUp: notAccepted.filter((t) => t.gaveUp).length,
      retried: tasks.filter((t) => t.attempts.length > 1).length,
      errors: tasks.flatMap((t) => t.attempts.filter((a) => a.err || (a.status && a.status !== 202)).map((a) => a.err ?? a.status))
        .reduce((m, e) => ({ ...m, [e]: (m[e] ?? 0) + 1 }), {}),
    };
    for (const t of notAccepted) fail(`task submission ${t.idem} never accepted: ${t.refused ?? 'gave up'} (${JSON.stringify(t.attempts.slice(-2))})`);
    for (const t of accepted.filter((x) => x.twin)) fail(`task submission ${t.idem} got two task ids: ${t.id} and ${t.twin}`);
    const keyIds = keys.map((k) => k.id).join(',');
    const readTasks = async () => new Map((await psql(dbUrl,
      `SELECT id, state, retry_count, attempt, error_message FROM async_tasks WHERE virtual_key_id IN (${keyIds})`))
      .map(([id, state, retry, attempt, error]) => [id, { id, state, retry: Number(retry), attempt: Number(attempt), error }]));
    let state = new Map();
    const tWait = Date.now();
    try {
      await until(async () => {
        state = await readTasks();
        return accepted.every((t) => TERMINAL.has(state.get(t.id)?.state));
      }, CFG.deadlineS * 1000, 'every accepted task terminal');
    } catch (e) { fail(e.message); }
    report.tasksTerminalMs = Date.now() - tWait;
    const states = {};
    for (const t of accepted) { const s = state.get(t.id)?.state ?? 'missing'; states[s] = (states[s] ?? 0) + 1; }
    report.taskStates = states;
    const lost = accepted.filter((t) => !state.has(t.id));
    if (lost.length) fail(`${lost.length} accepted tasks are missing from the store: ${lost.slice(0, 5).map((t) => t.id)}`);
    const notCompleted = accepted.filter((t) => state.has(t.id) && state.get(t.id).state !== 'completed');
    if (notCompleted.length) {
      fail(`${notCompleted.length} accepted tasks did not complete: ${notCompleted.slice(0, 5)
        .map((t) => `${t.id} ${state.get(t.id).state} ${state.get(t.id).error}`).join('; ')}`);
    }
    const twins = [...state.keys()].filter((id) => !taskById.has(id));
    if (twins.length) fail(`${twins.length} tasks in the store were never returned to a client (twins of a retried submission?): ${twins.slice(0, 5)}`);
    report.tasksRetried = accepted.filter((t) => (state.get(t.id)?.retry ?? 0) > 0).length;
    // The faults must hit running work: tasks created before and completed after each fault.
    const times = new Map((await psql(dbUrl, `SELECT id, created_at_ms, completed_at_ms FROM async_tasks WHERE virtual_key_id IN (${keyIds})`))
      .map(([id, c, d]) => [id, [Number(c), Number(d)]]));
    const openAt = (t) => accepted.filter((x) => { const [c, d] = times.get(x.id) ?? [0, 0]; return c < t && d > t; }).length;
    report.tasksOpenAtFault = { kill: openAt(f1.at), redis: openAt(f2.down), rabbitmq: openAt(f3.down) };
    if (report.tasksOpenAtFault.kill === 0) fail('no task was running when the worker was killed (the load is too light to test anything)');

    // Exactly one upstream job per attempt.
    const jobs = (await (await fetch(`${mock.base}/mock/jobs`)).json()).data;
    const stats = await mock.stats();
    const jobsByKey = new Map();
    const attemptsByTask = new Map();
    const foreign = [];
    for (const j of jobs) {
      const m = (j.idempotency_key ?? '').match(/^(.*)-(\d+)$/);
      if (!m || !taskById.has(m[1])) { foreign.push(j.idempotency_key || j.id); continue; }
      jobsByKey.set(j.idempotency_key, (jobsByKey.get(j.idempotency_key) ?? 0) + 1);
      if (!attemptsByTask.has(m[1])) attemptsByTask.set(m[1], new Set());
      attemptsByTask.get(m[1]).add(Number(m[2]));
    }
    const dupJobs = [...jobsByKey].filter(([, c]) => c > 1);
    const expectedAttempts = accepted.reduce((s, t) => s + (state.get(t.id)?.retry ?? 0) + 1, 0);
    const extra = accepted.filter((t) => {
      const a = attemptsByTask.get(t.id);
      const allowed = (state.get(t.id)?.retry ?? 0) + 1;
      return a && (a.size > allowed || Math.max(...a) > allowed);
    });
    const noJob = accepted.filter((t) => state.get(t.id)?.state === 'completed' && !attemptsByTask.has(t.id));
    report.upstream = { jobs: jobs.length, jobs_started: stats.jobs_started, expected_attempts: expectedAttempts, duplicate_attempts: dupJobs.length, foreign: foreign.length };
    if (foreign.length) fail(`${foreign.length} upstream jobs belong to no accepted task: ${foreign.slice(0, 5)}`);
    if (dupJobs.length) fail(`${dupJobs.length} task attempts were started twice upstream: ${dupJobs.slice(0, 5).map(([k, c]) => `${k}×${c}`)}`);
    if (extra.length) fail(`${extra.length} tasks ran upstream under more attempts than they report: ${extra.slice(0, 5).map((t) => t.id)}`);
    if (noJob.length) fail(`${noJob.length} completed tasks have no upstream job: ${noJob.slice(0, 5).map((t) => t.id)}`);
    if (stats.jobs_started !== expectedAttempts) fail(`mock jobs_started ${stats.jobs_started} ≠ Σ(retry_count + 1) = ${expectedAttempts}`);

    // --- Verify: webhooks -------------------------------------------------------------------------
    const completed = accepted.filter((t) => state.get(t.id)?.state === 'completed');
    const hookOk = (t) => {
      const st = state.get(t.id);
      const want = `msg_${t.id}_${st.retry}_${st.state}`;
      return (receiver.terminalByTask.get(t.id) ?? []).some((r) => r.valid && r.id === want && r.keyIndex === t.key && r.status === st.state);
    };
    try {
      await until(() => completed.every(hookOk), 60000, 'the terminal webhook of every completed task');
    } catch (e) {
      const missing = completed.filter((t) => !hookOk(t));
      fail(`${missing.length} completed tasks have no valid terminal webhook with their attempt's id: ${missing.slice(0, 5).map((t) =>
        `${t.id} (got ${(receiver.terminalByTask.get(t.id) ?? []).map((r) => `${r.id}/${r.why || 'ok'}`).join(',') || 'nothing'})`).join('; ')}`);
    }
    // Delivery outcomes are recorded in memory and written in batches (200 ms), like spend: a
    // kill -9 loses the killed instance's unwritten batch, so a webhook it delivered (and acked)
    // just before the kill can stay 'pending' in the store although the receiver has it. Such a
    // row — received, valid, within CFG.killBatchMs before the kill — is reported as a warning
    // (a failure with CHAOS_STRICT_KILL_BILLING=1); any other open row is a failure.
    const receivedJustBeforeKill = (id) => receiver.received.some((r) => r.id === id && r.valid &&
      r.at <= f1.at && r.at >= f1.at - CFG.killBatchMs);
    let openDeliveries = [];
    try {
      await until(async () => {
        openDeliveries = (await psql(dbUrl, `SELECT id, status, attempts, last_error FROM webhook_deliveries WHERE virtual_key_id IN (${keyIds}) AND status <> 'delivered'`))
          .filter((r) => !receivedJustBeforeKill(r[0]));
        return openDeliveries.length === 0;
      }, 60000, 'every webhook delivery delivered in the store');
    } catch {
      fail(`${openDeliveries.length} webhook deliveries are not delivered: ${openDeliveries.slice(0, 5).map((r) => r.join(' '))}`);
    }
    const staleByKill = (await psql(dbUrl, `SELECT id, status, attempts FROM webhook_deliveries WHERE virtual_key_id IN (${keyIds}) AND status <> 'delivered'`))
      .filter((r) => receivedJustBeforeKill(r[0]));
    if (staleByKill.length) {
      warn(`${staleByKill.length} webhook deliveries received in the last ${CFG.killBatchMs} ms before the kill -9 are still ` +
        `'${staleByKill[0][1]}' in the store (the killed instance's unwritten record batch): ${staleByKill.slice(0, 5).map((r) => r[0]).join('; ')}`);
      if (process.env.CHAOS_STRICT_KILL_BILLING === '1') fail(`${staleByKill.length} delivery records lost with the killed instance's batch`);
    }
    // One terminal event per task: a task completed twice (e.g. by two instances) would send two
    // terminal webhooks with different ids.
    const twoTerminal = completed.filter((t) => new Set((receiver.terminalByTask.get(t.id) ?? []).map((r) => r.id)).size > 1);
    if (twoTerminal.length) {
      fail(`${twoTerminal.length} tasks sent terminal webhooks with several ids (completed more than once): ${twoTerminal.slice(0, 5)
        .map((t) => `${t.id}: ${[...new Set(receiver.terminalByTask.get(t.id).map((r) => r.id))]}`).join('; ')}`);
    }
    const invalid = receiver.received.filter((r) => !r.valid);
    if (invalid.length) fail(`${invalid.length} webhooks failed verification: ${invalid.slice(0, 5).map((r) => `${r.id} ${r.why}`)}`);
    const foreignHooks = receiver.received.filter((r) => r.taskId && !taskById.has(r.taskId));
    if (foreignHooks.length) fail(`${foreignHooks.length} webhooks concern tasks no client submitted`);
    let dupDeliveries = 0;
    for (const c of receiver.byId.values()) if (c > 1) dupDeliveries += c - 1;
    const storeDeliveries = Number((await psql(dbUrl, `SELECT count(*) FROM webhook_deliveries WHERE virtual_key_id IN (${keyIds})`))[0][0]);
    report.webhooks = {
      received: receiver.received.length, distinct_ids: receiver.byId.size, duplicate_deliveries: dupDeliveries,
      terminal_tasks_covered: completed.filter(hookOk).length, store_deliveries: storeDeliveries, invalid: invalid.length,
    };
    if (receiver.byId.size < storeDeliveries) fail(`the store holds ${storeDeliveries} deliveries, the receiver saw ${receiver.byId.size} distinct ids`);
    // Deliveries made but not recorded in the store (the record is written in batches: a kill -9
    // can lose it after the request went out). At-least-once still holds: reported only.
    const storedIds = new Set((await psql(dbUrl, `SELECT id FROM webhook_deliveries WHERE virtual_key_id IN (${keyIds})`)).map((r) => r[0]));
    const unrecorded = [...receiver.byId.keys()].filter((id) => !storedIds.has(id));
    report.webhooks.delivered_unrecorded = unrecorded.length;
    if (unrecorded.length) {
      const first = new Map();
      for (const r of receiver.received) if (!first.has(r.id)) first.set(r.id, r);
      warn(`${unrecorded.length} webhooks were delivered but have no delivery record in the store: ${unrecorded.slice(0, 5)
        .map((id) => `${id} (${first.get(id).type}, received ${first.get(id).at - f1.at} ms from the kill)`).join('; ')}`);
    }

    // --- Verify: ledger -----------------------------------------------------------------------------
    const ok200 = chats.filter((c) => c.status === 200);
    const readLogs = async () => psql(dbUrl, `SELECT request_id, cost, status_code, input_tokens, output_tokens FROM request_logs WHERE group_id = ${fx.group.id}`);
    let logs = [];
    const logCount = () => {
      const m = new Map();
      for (const [rid] of logs) m.set(rid, (m.get(rid) ?? 0) + 1);
      return m;
    };
    try {
      await until(async () => {
        logs = await readLogs();
        const m = logCount();
        return ok200.every((c) => m.has(c.id)) && completed.every((t) => m.has(t.id));
      }, 15000, 'a request-log row for every chat answered 200 and every completed task');
    } catch { /* reported below */ }
    await sleep(1000); // a last spend flush (interval 200 ms) after the rows appeared
    logs = await readLogs();
    const rowsById = logCount();
    const logById = new Map(logs.map((r) => [r[0], r]));
    const priced = (u) => u.prompt_tokens * 1 + u.completion_tokens * 2; // $1 / $2 per 1M tokens = 1 / 2 µ$ per token
    const unbilled = ok200.filter((c) => !rowsById.has(c.id));
    const wrongCost = ok200.filter((c) => rowsById.has(c.id) && Number(logById.get(c.id)[1]) !== priced(c.usage));
    const dupRows = [...rowsById].filter(([rid, n]) => n > 1 && rid !== '');
    const taskUnbilled = completed.filter((t) => !rowsById.has(t.id));
    const [[balance, spent, credits]] = await psql(dbUrl, `SELECT balance, lifetime_spent, lifetime_credits_added FROM virtual_key_groups WHERE id = ${fx.group.id}`);
    const sumCost = logs.reduce((s, r) => s + Number(r[1]), 0);
    const [[txSum, txCount]] = await psql(dbUrl, `SELECT coalesce(sum(amount), 0), count(*) FROM group_transactions WHERE group_id = ${fx.group.id}`);
    const failedChats = chats.filter((c) => c.status !== 200);
    const killWindow = (c) => c.inst === vi && c.t1 >= f1.at - 50 && c.t0 <= f1.up;
    report.ledger = {
      initial_micro: INITIAL_BALANCE * MICRO, balance_micro: Number(balance), lifetime_spent: Number(spent),
      lifetime_credits_added: Number(credits), sum_request_log_costs: sumCost, request_logs: logs.length,
      transactions: Number(txCount), transactions_sum: Number(txSum),
      chats_200: ok200.length, chats_unbilled: unbilled.length, chats_wrong_cost: wrongCost.length,
      duplicate_rows: dupRows.length, tasks_unbilled: taskUnbilled.length,
      chats_failed: failedChats.length,
      chats_failed_by: failedChats.reduce((m, c) => { const k = `${c.err ?? c.status}${killWindow(c) ? ' (killed instance)' : ''}`; return { ...m, [k]: (m[k] ?? 0) + 1 }; }, {}),
      chats_failed_but_billed: failedChats.filter((c) => rowsById.has(c.id)).length,
    };
    const drift = INITIAL_BALANCE * MICRO - sumCost - Number(balance);
    report.ledger.drift_micro = drift;
    if (drift !== 0) fail(`ledger drift: initial ${INITIAL_BALANCE * MICRO} − Σ request-log costs ${sumCost} ≠ balance ${balance} (off by ${drift} µ$)`);
    if (Number(spent) !== sumCost) fail(`lifetime_spent ${spent} ≠ Σ request-log costs ${sumCost}`);
    // Spend is recorded in memory and flushed in batches (DESIGN.md §2): a kill -9 loses the
    // killed instance's unflushed batch, i.e. requests it answered at most one flush interval
    // (200 ms here, plus the time the batch write takes) before the kill. That loss is reported;
    // any other unbilled request is a failure.
    const lostWithBatch = (c) => c.inst === vi && c.t1 <= f1.at && c.t1 >= f1.at - CFG.killBatchMs;
    const unbilledByKill = unbilled.filter(lostWithBatch);
    const unbilledOther = unbilled.filter((c) => !lostWithBatch(c));
    report.ledger.chats_unbilled_killed_batch = unbilledByKill.length;
    if (unbilledByKill.length) {
      warn(`${unbilledByKill.length} chat requests answered 200 by ${victim.name} in the last ${CFG.killBatchMs} ms before its kill -9 ` +
        `were never billed (its unflushed spend batch): ${unbilledByKill.slice(0, 5).map((c) => `${c.id} ${c.t1 - f1.at} ms`).join('; ')}`);
      if (process.env.CHAOS_STRICT_KILL_BILLING === '1') fail(`${unbilledByKill.length} requests lost with the killed instance's spend batch`);
    }
    if (unbilledOther.length) {
      fail(`${unbilledOther.length} chat requests answered 200 have no request-log row (spend lost): ${unbilledOther.slice(0, 5)
        .map((c) => `${c.id} on gw${c.inst + 1} at ${rel(c.t1)} (${c.t1 - f1.at} ms from the kill)`).join('; ')}`);
    }
    if (wrongCost.length) fail(`${wrongCost.length} chat requests were billed a wrong cost: ${wrongCost.slice(0, 5).map((c) => `${c.id}: ${logById.get(c.id)[1]} ≠ ${priced(c.usage)}`)}`);
    if (dupRows.length) fail(`${dupRows.length} request ids have several request-log rows (billed twice): ${dupRows.slice(0, 5).map(([k, n]) => `${k}×${n}`)}`);
    if (taskUnbilled.length) fail(`${taskUnbilled.length} completed tasks have no request-log row: ${taskUnbilled.slice(0, 5).map((t) => t.id)}`);
    // Outside the kill window every chat request must succeed (Redis down: the rate gate fails
    // open; RabbitMQ is not on the chat path).
    const failedOutsideKill = failedChats.filter((c) => !killWindow(c));
    if (failedOutsideKill.length) {
      fail(`${failedOutsideKill.length} chat requests failed outside the kill of ${victim.name}: ${failedOutsideKill.slice(0, 5)
        .map((c) => `${c.id} gw${c.inst + 1} at ${rel(c.t0)}: ${c.err ?? `${c.status} ${c.body}`}`).join('; ')}`);
    }

    // --- Verify: hubs -------------------------------------------------------------------------------
    let hubFinal = await hubs.status();
    try {
      await until(async () => { hubFinal = await hubs.status(); return hubFinal.connected === CFG.hubSessions; }, CFG.recoverS * 1000, 'every hub session connected');
    } catch { /* reported below */ }
    const finalMsg = `chaos-final-${Date.now()}`;
    await announce(finalMsg);
    const gotFinal = await everyoneGot(finalMsg, 30000);
    hubFinal = await hubs.status();
    report.hubs = {
      sessions: CFG.hubSessions, connected: hubFinal.connected, reconnecting: hubFinal.reconnecting, disconnected: hubFinal.disconnected,
      everDropped: hubFinal.everDropped, reconnected: hubFinal.reconnected, reconnects: hubFinal.reconnects,
      byInstance: Object.fromEntries(instances.map((x) => [x.name, hubFinal.byUrl[hubUrl(x)]])),
      finalAnnouncement: gotFinal, duplicates: hubFinal.duplicates, errors: hubFinal.errors.slice(0, 5),
    };
    if (hubFinal.connected !== CFG.hubSessions) fail(`${CFG.hubSessions - hubFinal.connected} hub sessions are not connected at the end (${hubFinal.disconnected} gave up)`);
    const victimHubs = hubFinal.byUrl[hubUrl(victim)];
    if (victimHubs.everDropped !== victimHubs.sessions) fail(`only ${victimHubs.everDropped} of the ${victimHubs.sessions} sessions of the killed instance noticed the kill`);
    if (victimHubs.reconnected !== victimHubs.sessions) fail(`${victimHubs.sessions - victimHubs.reconnected} sessions of the killed instance did not reconnect`);
    if (hubFinal.reconnected !== hubFinal.everDropped) fail(`${hubFinal.everDropped - hubFinal.reconnected} dropped hub sessions did not reconnect`);
    if (gotFinal !== CFG.hubSessions) fail(`the final announcement reached ${gotFinal} of ${CFG.hubSessions} sessions`);
    if (hubFinal.duplicates) fail(`${hubFinal.duplicates} announcements were received twice by one session`);

    // --- Verify: health -----------------------------------------------------------------------------
    polling = false;
    await Promise.all(pollers);
    const within = (i, from, to) => samples.filter((s) => s.i === i && s.t >= from && s.t <= to);
    const health = {};
    // Kill: the victim did not answer while it was dead; the others stayed answering.
    {
      const dead = within(vi, f1.dead + 100, f1.restartAt);
      const answered = dead.filter((s) => !s.err);
      health.kill = { victimSamples: dead.length, victimAnswered: answered.length };
      if (dead.length < 3) fail(`only ${dead.length} health samples of the killed instance while it was down`);
      if (answered.length) fail(`the killed instance answered /health/ready while dead: ${JSON.stringify(answered[0])}`);
      for (const i of others) {
        const s = within(i, f1.at, f1.up);
        // A timeout is the loaded machine (every instance stalls at once), not an answer.
        const errs = s.filter((x) => x.err && x.err !== 'TimeoutError');
        health.kill[instances[i].name] = s.reduce((m, x) => ({ ...m, [x.status ?? x.err]: (m[x.status ?? x.err] ?? 0) + 1 }), {});
        if (errs.length) fail(`${instances[i].name} did not answer /health/ready during the kill of ${victim.name}: ${errs[0].err}`);
      }
    }
    // Redis and RabbitMQ: every sample while the engine was down reports it (after the grace).
    const outage = (name, from, to, pattern) => {
      health[name] = {};
      for (const i of [0, 1, 2]) {
        const all = within(i, from + CFG.healthGraceMs, to);
        // Timeouts (CHAOS_HEALTH_TIMEOUT_MS) are counted apart: on a loaded machine every
        // instance can stall at once. Every answer must report the outage.
        const s = all.filter((x) => x.err !== 'TimeoutError');
        const bad = s.filter((x) => x.err || x.status === 'Healthy' || !x.bad.some((b) => pattern.test(b)));
        health[name][instances[i].name] = {
          samples: s.length, timeouts: all.length - s.length, reported: s.length - bad.length,
          statuses: s.reduce((m, x) => ({ ...m, [x.status ?? x.err]: (m[x.status ?? x.err] ?? 0) + 1 }), {}),
          checks: [...new Set(s.flatMap((x) => x.bad ?? []))],
        };
        if (s.length < 3) fail(`only ${s.length} health samples of ${instances[i].name} during the ${name} outage`);
        if (bad.length) {
          fail(`${instances[i].name} did not report the ${name} outage in ${bad.length} of ${s.length} /health/ready samples, ` +
            `e.g. at +${bad[0].t - from} ms: ${JSON.stringify(bad[0])}`);
        }
      }
    };
    outage('redis', f2.down, f2.startAt, /^(counters|backplane):/);
    outage('rabbitmq', f3.down, f3.portOpen, /^work_queue:/);
    // Healthy afterwards: every instance's last samples are Healthy.
    for (const i of [0, 1, 2]) {
      const last = samples.filter((s) => s.i === i).slice(-3);
      if (!last.every((s) => s.status === 'Healthy')) fail(`${instances[i].name} is not Healthy at the end: ${JSON.stringify(last.at(-1))}`);
    }
    health.recovery_ms = { kill: f1.healthy - f1.up, redis: f2.healthy - f2.up, rabbitmq: f3.healthy - f3.up };
    report.health = health;

    ok = report.failures.length === 0;
    log(`SUMMARY ${ok ? 'PASS' : 'FAIL'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    log(`  chat:     ${chats.length} requests (${chats.filter((c) => c.stream).length} streamed), ${ok200.length} answered 200; failed: ${JSON.stringify(report.ledger.chats_failed_by)}`);
    log(`  tasks:    ${JSON.stringify(report.submissions)}; states ${JSON.stringify(states)}; ${report.tasksRetried} retried; ` +
      `open at the faults ${JSON.stringify(report.tasksOpenAtFault)}; terminal ${report.tasksTerminalMs} ms after the load`);
    log(`  upstream: ${JSON.stringify(report.upstream)}`);
    log(`  webhooks: ${JSON.stringify(report.webhooks)}`);
    log(`  ledger:   ${JSON.stringify(report.ledger)}`);
    log(`  hubs:     ${JSON.stringify({ ...report.hubs, errors: undefined })}`);
    log(`  health:   ${JSON.stringify(report.health)}`);
    for (const w of report.warnings) log(`  WARNING: ${w}`);
    for (const f of report.failures) log(`  FAILURE: ${f}`);
  } catch (e) {
    fail(`run aborted: ${e.stack ?? e}`);
  } finally {
    loadOn = false;
    polling = false;
    await hubs?.stop().catch(() => {});
    for (const inst of instances) await inst.gw?.stop({ keepData: true }).catch(() => {});
    mock?.stop();
    await receiver?.close();
    instances.forEach((inst) => inst.logs.forEach((out, k) => writeFileSync(path.join(logDir, `${inst.name}-${k}.log`), out())));
    writeFileSync(path.join(logDir, 'report.json'), JSON.stringify({ ...report, samples, chats: ok ? undefined : chats, tasks: ok ? undefined : tasks }, null, 2));
    if (ok && !process.env.CHAOS_KEEP) {
      await psql(PG, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => {});
      for (const inst of instances) rmSync(inst.dataDir, { recursive: true, force: true });
      if (!process.env.CHAOS_LOG_DIR) rmSync(logDir, { recursive: true, force: true });
    } else {
      log(`logs and report in ${logDir}; database ${db}`);
    }
  }
  assert.deepEqual(report.failures, [], 'chaos test failures (see above)');
});
