// Crash test of the async task engine (issue 3): submit many image/video tasks with webhooks,
// `kill -9` the gateway while they run, restart it on the same data directory (and the same
// RabbitMQ vhost), and check that
//   - every accepted task still exists and reaches a terminal state (completed: no failure is
//     injected), none is lost;
//   - no attempt is started twice upstream: the mock provider holds exactly one job per
//     `Idempotency-Key` (<task id>-<attempt>), and no task has upstream jobs for more attempts
//     than it reports (retry_count + 1);
//   - every task's terminal webhook (task.completed) arrives at least once, with a valid
//     Standard Webhooks signature and the deterministic webhook-id of its attempt;
//   - every completed task's media is served, with the size the provider produced;
//   - no webhook concerns a task no client submitted (a client retry after a kill made no twin).
//   - every completed task is billed exactly once (its request-log row and debit are committed
//     with the completion);
//   - no task's step chain is cut by a kill: every task finishes within CRASH_SLOW_S of the
//     last restart, well before the 30 s sweeper safety net would revive it.
// Kills: once during the submission (clients retry with their Idempotency-Key), once mid-run,
// then CRASH_RECOVERY_KILLS times during the recovery, each restart on the same port, data
// directory and vhost.
//
// Run: scripts/crash-test.sh <build-dir> [embedded|rabbitmq|all]
//   or: CONDUIT_BUILD_DIR=build/release CRASH_MODES=embedded node tests/crash/crash.test.mjs
//
// Environment (all optional):
//   CONDUIT_BUILD_DIR       build directory holding conduit and conduit-mock-provider
//                           (or CONDUIT_BIN / MOCK_BIN)
//   CRASH_MODES             comma list of embedded, rabbitmq (default: embedded, plus rabbitmq
//                           when CONDUIT_TEST_AMQP is set)
//   CONDUIT_TEST_AMQP       amqp://user:pass@host:port/ of the broker for the rabbitmq mode
//   CRASH_RABBITMQCTL       command prefix running rabbitmqctl against that broker (a fresh vhost
//                           is created per run and deleted after); default: the local node of
//                           scripts/engines.sh
//   CRASH_RABBITMQ_VHOST    use this existing, empty vhost instead (neither created nor deleted)
//   CRASH_TASKS (500)       tasks submitted
//   CRASH_KEYS (10)         virtual keys (= queue partitions keys) the tasks are spread over
//   CRASH_SUBMIT_KILL_AT (150)  kill -9 once this many tasks are accepted (0: no kill during the
//                           submission; clients retry with their Idempotency-Key meanwhile)
//   CRASH_KILL_AT (60)      kill -9 again once this many more tasks sent their completion webhook
//   CRASH_RECOVERY_KILLS (1)       further kill -9s during the recovery, each at a random time
//   CRASH_RECOVERY_KILL_MS (300-2500)  range of that time after the restart
//   CRASH_JOB_MS (1500-3000)       provider job duration range (ms), per task at random
//   CRASH_POLL_MS (250)     gateway --task-poll-interval-ms
//   CRASH_DEADLINE_S (120)  after the last restart, time allowed for every task to finish
//   CRASH_MOCK_LATENCY_MS (15)     mock provider latency (and jitter) on every call
//   CRASH_SLOW_S (20)       tasks still open this long after the last restart are reported
//   CRASH_LENIENT_BILLING=1 only warn on billing mismatches (the default fails)
//   CRASH_LOG_LEVEL (info)  gateway --log-level
//   CRASH_LOG_DIR           where logs and the JSON report go (default: a temp directory, kept
//                           on failure); CRASH_KEEP=1 keeps them (and the data dir) on success
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const buildDir = path.resolve(repo, process.env.CONDUIT_BUILD_DIR ?? 'build/release');
process.env.CONDUIT_BIN ??= path.join(buildDir, 'conduit');
process.env.MOCK_BIN ??= path.join(buildDir, 'conduit-mock-provider');
// The harness reads CONDUIT_BIN / MOCK_BIN when it is loaded: import it after setting them.
const { startMock, startGateway, seed, MASTER_KEY } = await import('../e2e/harness.mjs');

const num = (name, dflt) => (process.env[name] ? Number(process.env[name]) : dflt);
const CFG = {
  tasks: num('CRASH_TASKS', 500),
  keys: num('CRASH_KEYS', 10),
  submitKillAt: num('CRASH_SUBMIT_KILL_AT', 150),
  killAt: num('CRASH_KILL_AT', 60),
  recoveryKills: num('CRASH_RECOVERY_KILLS', 1),
  recoveryKillMs: (process.env.CRASH_RECOVERY_KILL_MS ?? '300-2500').split('-').map(Number),
  jobMs: (process.env.CRASH_JOB_MS ?? '1500-3000').split('-').map(Number),
  pollMs: num('CRASH_POLL_MS', 250),
  deadlineS: num('CRASH_DEADLINE_S', 120),
  webhookGraceS: num('CRASH_WEBHOOK_GRACE_S', 60),
  slowS: num('CRASH_SLOW_S', 20),
  strictBilling: process.env.CRASH_LENIENT_BILLING !== '1',
  videoBytes: 16384,
  mockLatencyMs: num('CRASH_MOCK_LATENCY_MS', 15),
};
const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'timedout']);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[crash ${new Date().toISOString().slice(11, 23)}]`, ...a);

/** Runs `fn(item)` over `items` with at most `n` in flight; returns the results in order. */
async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

/**
 * A free port for the gateway, kept across its restarts. Taken below the kernel's ephemeral range
 * (32768+): the gateway and the mock bind with SO_REUSEPORT, so a port handed out by a `:0` bind
 * (the mock, other tests) could be bound a second time without an error, and the two processes
 * would then share the connections.
 */
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

async function getJson(url, headers = {}) {
  const res = await fetch(url, { headers });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver: verifies Standard Webhooks signatures with Node crypto, answers 200 at once.

/** True when one of the space-separated `v1,<b64>` signatures is HMAC-SHA256(secret, id.ts.body). */
export function verifySignature(secret, id, ts, body, header) {
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
  const received = []; // {id, keyIndex, type, taskId, status, valid, why, at}
  const byId = new Map(); // webhook-id → count
  const terminalByTask = new Map(); // task id → [{id, type, valid}]
  let invalid = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const keyIndex = Number((req.url.match(/^\/hook\/(\d+)/) ?? [])[1]);
      const id = req.headers['webhook-id'];
      const ts = req.headers['webhook-timestamp'];
      const sig = req.headers['webhook-signature'];
      let why = '';
      if (!id || !ts) why = 'missing webhook-id/webhook-timestamp';
      else if (!sig) why = 'missing webhook-signature';
      else if (!verifySignature(secretOfKey(keyIndex), id, ts, raw, sig)) why = 'bad signature';
      else if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) why = `timestamp ${ts} off by > 5 min`;
      let payload = null;
      try { payload = JSON.parse(raw.toString()); } catch { why ||= 'body is not JSON'; }
      const rec = {
        id, keyIndex, type: payload?.type, taskId: payload?.task_id, status: payload?.status,
        valid: !why, why, at: Date.now(),
      };
      received.push(rec);
      byId.set(id, (byId.get(id) ?? 0) + 1);
      if (!rec.valid) invalid += 1;
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
        invalidCount: () => invalid,
        completedTasks: () => {
          let n = 0;
          for (const list of terminalByTask.values()) if (list.some((r) => r.valid)) n += 1;
          return n;
        },
        close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ: one fresh vhost per run (the queue prefix is fixed, so runs would share queues).

function parseAmqp(url) {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 5672,
    user: decodeURIComponent(u.username || 'guest'),
    password: decodeURIComponent(u.password || 'guest'),
  };
}

function rabbitmqctl(args) {
  const prefix = process.env.CRASH_RABBITMQCTL
    ? process.env.CRASH_RABBITMQCTL.split(' ').filter(Boolean)
    : ['runuser', '-u', 'rabbitmq', '--', 'env', 'HOME=/var/lib/rabbitmq',
      'ERL_EPMD_ADDRESS=127.0.0.1', '/usr/lib/rabbitmq/bin/rabbitmqctl', '-q',
      '-n', process.env.CONDUIT_RABBITMQ_NODE ?? 'conduit@localhost'];
  return execFileSync(prefix[0], [...prefix.slice(1), ...args], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000,
  });
}

// ---------------------------------------------------------------------------------------------
// One run: mock + gateway + receiver, submit, kill -9 (several times), restart, verify.

async function runCrash(mode) {
  const t0 = Date.now();
  const logDir = process.env.CRASH_LOG_DIR
    ? path.resolve(process.env.CRASH_LOG_DIR, `${mode}-${t0}`)
    : mkdtempSync(path.join(tmpdir(), `conduit-crash-${mode}-`));
  mkdirSync(logDir, { recursive: true });
  const dataDir = mkdtempSync(path.join(tmpdir(), `conduit-crash-data-${mode}-`));
  const report = { mode, config: CFG, logDir, dataDir, phases: {}, failures: [] };
  const fail = (what) => { report.failures.push(what); log(`FAIL: ${what}`); };
  report.warnings = [];
  const warn = (what) => { report.warnings.push(what); log(`WARNING (known bug, not failed): ${what}`); };
  const gatewayLogs = [];
  let gw = null;
  let mock = null;
  let receiver = null;
  let vhost = null;
  let ok = false;

  try {
    // --- Gateway arguments (same on every start: same port, data dir and vhost) ---------------
    const port = await freePort();
    const args = [
      '--listen', `127.0.0.1:${port}`,
      '--task-poll-interval-ms', String(CFG.pollMs),
      '--task-sweep-interval-ms', '1000',
      '--task-max-retries', '3',
      '--task-retry-base-ms', '500',
      '--webhook-retry-base-ms', '200',
      '--webhook-retry-max-ms', '2000',
      '--log-level', process.env.CRASH_LOG_LEVEL ?? 'info',
    ];
    if (mode === 'rabbitmq') {
      const amqp = parseAmqp(process.env.CONDUIT_TEST_AMQP);
      let runVhost = process.env.CRASH_RABBITMQ_VHOST;
      if (!runVhost) {
        vhost = runVhost = `conduit-crash-${process.pid}-${t0}`;
        try {
          rabbitmqctl(['add_vhost', vhost]);
          rabbitmqctl(['set_permissions', '-p', vhost, amqp.user, '.*', '.*', '.*']);
        } catch (e) {
          throw new Error(`could not create the RabbitMQ vhost ${vhost} with rabbitmqctl (set ` +
            `CRASH_RABBITMQCTL, or CRASH_RABBITMQ_VHOST to an existing empty vhost): ${e.stderr ?? e.message}`);
        }
      }
      report.vhost = runVhost;
      args.push('--rabbitmq-host', amqp.host, '--rabbitmq-port', String(amqp.port),
        '--rabbitmq-username', amqp.user, '--rabbitmq-password', amqp.password,
        '--rabbitmq-vhost', runVhost);
    }
    const env = { CONDUIT_MASTER_KEY: MASTER_KEY };
    const start = async () => {
      const g = await startGateway(args, { dataDir, keepData: true, env });
      gatewayLogs.push(g);
      return g;
    };

    // --- Mock, gateway, seed ------------------------------------------------------------------
    // A little latency on every provider call widens the windows a kill can hit (between a job
    // submit and the recording of its id, between a poll and the state update).
    mock = await startMock(['--job-duration-ms', String(CFG.jobMs[0]),
      '--video-bytes', String(CFG.videoBytes), '--latency-ms', String(CFG.mockLatencyMs),
      '--jitter-ms', String(CFG.mockLatencyMs)]);
    gw = await start();
    log(`${mode}: gateway on ${gw.base} (pid ${gw.proc.pid}), mock on ${mock.base}, data ${dataDir}`);
    const s = await seed(gw, mock, { balance: 1e6 });
    const video = await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'sora', providerModelId: 'sora-2', providerId: s.provider.id,
      supportsChat: false, supportsVideoGeneration: true,
    });
    await gw.admin('POST', '/api/ModelCosts', {
      costName: 'video', modelProviderMappingIds: [video.id], videoCostPerSecond: 0.1,
    }).catch(() => { /* the video price is not what is tested here */ });
    const keys = [];
    for (let i = 0; i < CFG.keys; i++) {
      const k = await gw.admin('POST', '/api/VirtualKeys', {
        keyName: `crash-${i}`, virtualKeyGroupId: s.group.id,
      });
      const sec = await gw.admin('POST', `/api/VirtualKeys/${k.keyInfo.id}/webhook-secret`, {});
      assert.match(sec.secret, /^whsec_/, 'webhook secret shape');
      keys.push({ index: i, id: k.keyInfo.id, key: k.virtualKey, secret: sec.secret });
    }
    receiver = await startReceiver((i) => keys[i]?.secret);

    // --- kill -9 and restart ------------------------------------------------------------------
    const base = gw.base; // the same on every start (fixed port)
    const kills = [];
    let lastRestart = Date.now();
    const killAndRestart = async (label) => {
      const before = await mock.stats();
      const k = {
        label,
        atMs: Date.now() - t0,
        webhooksReceived: receiver.received.length,
        completedWebhookTasks: receiver.completedTasks(),
        mock: {
          jobs_started: before.jobs_started, jobs_active: before.jobs_active,
          jobs_completed: before.jobs_completed, idempotent_replays: before.idempotent_replays,
        },
      };
      if (gw.proc.exitCode !== null || gw.proc.signalCode !== null) {
        fail(`gateway had already exited (${gw.proc.exitCode ?? gw.proc.signalCode}) before kill "${label}"`);
      }
      gw.proc.kill('SIGKILL');
      k.exit = await gw.exited;
      kills.push(k);
      log(`${mode}: kill -9 (${label}) → ${JSON.stringify(k.exit)}; ${k.completedWebhookTasks}` +
        ` tasks had their completion webhook, mock ${JSON.stringify(k.mock)}`);
      gw = await start();
      lastRestart = Date.now();
      log(`${mode}: restarted (pid ${gw.proc.pid})`);
    };

    // --- Submit (a kill in the middle; clients retry with their Idempotency-Key) --------------
    const tSubmit = Date.now();
    const specs = Array.from({ length: CFG.tasks }, (_, i) => {
      const k = keys[i % keys.length];
      const isVideo = i % 2 === 0;
      const jobMs = CFG.jobMs[0] + Math.floor(Math.random() * (CFG.jobMs[1] - CFG.jobMs[0] + 1));
      return {
        i, k, kind: isVideo ? 'video' : 'image',
        path: isVideo ? '/v1/videos/generations/async' : '/v1/images/generations/async',
        idem: `crash-${mode}-${t0}-${i}`,
        body: {
          model: isVideo ? 'sora' : 'dall-e-3',
          prompt: `crash test ${mode} #${i}`,
          ...(isVideo ? { duration: 4 } : {}),
          webhook_url: `${receiver.base}/hook/${k.index}`,
          mock_job_duration_ms: jobMs,
          mock_job_fail: false,
        },
      };
    });
    const submitStats = { network_errors: 0, server_errors: 0, replayed: 0 };
    let accepted = 0;
    let submitKill = null;
    const submitOne = async (sp) => {
      const giveUp = Date.now() + 60000;
      for (;;) {
        let res;
        try {
          res = await fetch(`${base}${sp.path}`, {
            method: 'POST',
            headers: {
              Authorization: `Bearer ${sp.k.key}`, 'Content-Type': 'application/json',
              'Idempotency-Key': sp.idem,
            },
            body: JSON.stringify(sp.body),
          });
        } catch (e) {
          // The gateway was killed under this request: retry once it is back.
          submitStats.network_errors += 1;
          if (Date.now() > giveUp) throw new Error(`submit #${sp.i}: ${e.cause?.code ?? e.message}`);
          await sleep(100);
          continue;
        }
        const text = await res.text();
        if (res.status >= 500 && Date.now() < giveUp) {
          submitStats.server_errors += 1;
          await sleep(200);
          continue;
        }
        if (res.status !== 202) throw new Error(`submit #${sp.i} → ${res.status}: ${text}`);
        const { task_id: id } = JSON.parse(text);
        assert.ok(id, `submit #${sp.i} returned a task id: ${text}`);
        if (res.headers.get('idempotent-replayed') === 'true') submitStats.replayed += 1;
        accepted += 1;
        if (CFG.submitKillAt > 0 && accepted === CFG.submitKillAt) {
          submitKill = killAndRestart(`during submission, ${accepted} accepted`);
        }
        return { id, kind: sp.kind, k: sp.k, i: sp.i };
      }
    };
    const tasks = await pool(specs, 25, submitOne);
    if (submitKill) await submitKill;
    const taskById = new Map(tasks.map((t) => [t.id, t]));
    report.submit = { ...submitStats, distinct_tasks: taskById.size, ms: Date.now() - tSubmit };
    log(`${mode}: ${tasks.length} tasks accepted in ${report.submit.ms} ms ${JSON.stringify(submitStats)}`);
    if (taskById.size !== tasks.length) {
      fail(`${tasks.length - taskById.size} submissions with distinct Idempotency-Keys got the same task id`);
    }

    // --- kill -9 mid-run, then during the recovery --------------------------------------------
    const killDeadline = Date.now() + 90000;
    const completedBefore = receiver.completedTasks();
    while (receiver.completedTasks() < completedBefore + CFG.killAt && Date.now() < killDeadline) {
      if (gw.proc.exitCode !== null) throw new Error('gateway died on its own');
      await sleep(10);
    }
    await killAndRestart('mid-run');
    for (let n = 0; n < CFG.recoveryKills; n++) {
      const [lo, hi] = CFG.recoveryKillMs;
      await sleep(lo + Math.floor(Math.random() * (hi - lo + 1)));
      await killAndRestart(`recovery ${n + 1}`);
    }
    report.kills = kills;

    // --- Wait until every task is terminal ----------------------------------------------------
    const state = new Map(); // id → last task JSON
    const missing = new Set();
    const deadline = lastRestart + CFG.deadlineS * 1000;
    let lastLog = 0;
    for (;;) {
      const open = tasks.filter((t) => !TERMINAL.has(state.get(t.id)?.status));
      await pool(open, 16, async (t) => {
        const r = await getJson(`${gw.base}/v1/tasks/${t.id}`, { Authorization: `Bearer ${t.k.key}` });
        if (r.status === 200) {
          state.set(t.id, r.json);
          missing.delete(t.id);
        } else if (r.status === 404) {
          missing.add(t.id);
        } else {
          throw new Error(`GET /v1/tasks/${t.id} → ${r.status}: ${r.text}`);
        }
      });
      const still = tasks.filter((t) => !TERMINAL.has(state.get(t.id)?.status));
      if (still.length === 0) break;
      if (Date.now() > deadline) break;
      if (gw.proc.exitCode !== null) throw new Error('gateway died on its own');
      if (!report.slowTasks && Date.now() - lastRestart > CFG.slowS * 1000) {
        // Tasks still open well after the restart: their step chain was lost and waits for
        // the sweeper (stale after 30 s), or something is stuck. Kept for the report.
        report.slowTasks = still.map((t) => ({
          id: t.id, kind: t.kind, status: state.get(t.id)?.status, progress: state.get(t.id)?.progress,
          message: state.get(t.id)?.message, updated_at: state.get(t.id)?.updated_at,
        }));
        log(`${mode}: ${still.length} tasks still open ${CFG.slowS} s after the restart: ` +
          JSON.stringify(report.slowTasks.slice(0, 10)));
      }
      if (Date.now() - lastLog > 10000) {
        lastLog = Date.now();
        const counts = {};
        for (const t of still) {
          const st = state.get(t.id)?.status ?? 'missing';
          counts[st] = (counts[st] ?? 0) + 1;
        }
        log(`${mode}: ${still.length} tasks not terminal yet ${JSON.stringify(counts)}`);
      }
      await sleep(500);
    }
    report.phases.allTerminalAfterRestartMs = Date.now() - lastRestart;
    if (report.slowTasks?.length) {
      fail(`${report.slowTasks.length} tasks were still running ${CFG.slowS} s after the last ` +
        `restart and only finished ${Math.round(report.phases.allTerminalAfterRestartMs / 1000)} s ` +
        `after it (their step chain was lost in the kill; the sweeper revives a running task ` +
        `only once it is 30 s stale): ${report.slowTasks.slice(0, 5).map((t) => `${t.id} ` +
          `updated_at ${t.updated_at}`).join('; ')}`);
    }

    // --- Then until every terminal webhook has arrived ----------------------------------------
    const webhookDeadline = Date.now() + CFG.webhookGraceS * 1000;
    const terminalWebhookOk = (t) => (receiver.terminalByTask.get(t.id) ?? []).some((r) => r.valid);
    while (tasks.some((t) => TERMINAL.has(state.get(t.id)?.status) && !terminalWebhookOk(t)) &&
      Date.now() < webhookDeadline) {
      await sleep(200);
    }
    await sleep(1500); // stragglers (duplicates) for the counts
    report.phases.totalMs = Date.now() - t0;

    // --- Verify: tasks ------------------------------------------------------------------------
    const states = {};
    for (const t of tasks) {
      const st = missing.has(t.id) ? 'missing' : state.get(t.id)?.status ?? 'unknown';
      states[st] = (states[st] ?? 0) + 1;
    }
    report.states = states;
    if (missing.size) fail(`${missing.size} accepted tasks are LOST (404): ${[...missing].slice(0, 5)}`);
    const notTerminal = tasks.filter((t) => !missing.has(t.id) && !TERMINAL.has(state.get(t.id)?.status));
    if (notTerminal.length) {
      fail(`${notTerminal.length} tasks not terminal ${CFG.deadlineS} s after the last restart, e.g. ` +
        notTerminal.slice(0, 5).map((t) => `${t.id} ${JSON.stringify(state.get(t.id))}`).join('; '));
    }
    const notCompleted = tasks.filter((t) => TERMINAL.has(state.get(t.id)?.status) &&
      state.get(t.id).status !== 'completed');
    if (notCompleted.length) {
      fail(`${notCompleted.length} tasks ended other than completed (no failure injected), e.g. ` +
        notCompleted.slice(0, 5).map((t) => `${t.id} ${state.get(t.id).status}: ` +
          `${state.get(t.id).error ?? ''} (${state.get(t.id).message})`).join('; '));
    }
    const retried = tasks.filter((t) => (state.get(t.id)?.retry_count ?? 0) > 0);
    report.tasksRetried = retried.length;

    // --- Verify: one upstream start per attempt -----------------------------------------------
    const jobs = (await getJson(`${mock.base}/mock/jobs`)).json.data;
    const stats = await mock.stats();
    const jobsByKey = new Map();
    const attemptsByTask = new Map();
    const keyless = [];
    const foreign = [];
    for (const j of jobs) {
      if (!j.idempotency_key) { keyless.push(j.id); continue; }
      if (!jobsByKey.has(j.idempotency_key)) jobsByKey.set(j.idempotency_key, []);
      jobsByKey.get(j.idempotency_key).push(j);
      const m = j.idempotency_key.match(/^(.*)-(\d+)$/);
      if (!m || !taskById.has(m[1])) { foreign.push(j.idempotency_key); continue; }
      if (!attemptsByTask.has(m[1])) attemptsByTask.set(m[1], new Set());
      attemptsByTask.get(m[1]).add(Number(m[2]));
    }
    const dupKeys = [...jobsByKey].filter(([, l]) => l.length > 1);
    const expectedAttempts = tasks.reduce((n, t) => n + (state.get(t.id)?.retry_count ?? 0) + 1, 0);
    const extraAttempts = [];
    const noJob = [];
    for (const t of tasks) {
      const a = attemptsByTask.get(t.id);
      const st = state.get(t.id);
      if (!a) { noJob.push(t.id); continue; }
      const allowed = (st?.retry_count ?? 0) + 1;
      if (a.size > allowed || Math.max(...a) > allowed) {
        extraAttempts.push(`${t.id}: upstream attempts [${[...a].sort()}] but retry_count ${st?.retry_count}`);
      }
    }
    report.upstream = {
      jobs: jobs.length,
      jobs_started: stats.jobs_started,
      video_jobs_started: stats.video_jobs_started,
      image_jobs_started: stats.image_jobs_started,
      idempotent_replays: stats.idempotent_replays,
      expected_attempts: expectedAttempts,
      keyless: keyless.length,
      duplicate_key_starts: dupKeys.length,
      tasks_with_extra_attempts: extraAttempts.length,
      completed_tasks_without_job: noJob.length,
      job_polls: stats.job_polls,
    };
    if (keyless.length) fail(`${keyless.length} upstream jobs were started without an Idempotency-Key`);
    if (foreign.length) fail(`${foreign.length} upstream jobs have keys of no submitted task: ${foreign.slice(0, 5)}`);
    if (dupKeys.length) {
      fail(`${dupKeys.length} attempts were STARTED TWICE upstream (several jobs for one key): ` +
        dupKeys.slice(0, 5).map(([k, l]) => `${k} → ${l.map((j) => j.id)}`).join('; '));
    }
    if (extraAttempts.length) {
      fail(`${extraAttempts.length} tasks were started upstream under more attempts than they ` +
        `report (a second generation of the same attempt): ${extraAttempts.slice(0, 5).join('; ')}`);
    }
    const completedNoJob = noJob.filter((id) => state.get(id)?.status === 'completed');
    if (completedNoJob.length) fail(`${completedNoJob.length} completed tasks have no upstream job: ${completedNoJob.slice(0, 5)}`);
    if (stats.jobs_started !== expectedAttempts) {
      fail(`mock jobs_started ${stats.jobs_started} ≠ attempts Σ(retry_count+1) ${expectedAttempts}`);
    }

    // --- Verify: terminal webhooks ------------------------------------------------------------
    const noWebhook = [];
    const wrongId = [];
    for (const t of tasks) {
      const st = state.get(t.id);
      if (!st || !TERMINAL.has(st.status)) continue;
      const list = receiver.terminalByTask.get(t.id) ?? [];
      const good = list.filter((r) => r.valid && r.type === `task.${st.status}` && r.status === st.status);
      if (good.length === 0) {
        noWebhook.push(`${t.id} (${st.status}; got ${list.map((r) => `${r.type}/${r.why || 'ok'}`).join(',') || 'nothing'})`);
        continue;
      }
      const wantId = `msg_${t.id}_${st.retry_count}_${st.status}`;
      if (!good.some((r) => r.id === wantId)) wrongId.push(`${t.id}: ${good.map((r) => r.id)} ≠ ${wantId}`);
      for (const r of list) {
        if (r.keyIndex !== t.k.index) wrongId.push(`${t.id}: delivered to key ${r.keyIndex}'s URL`);
      }
    }
    let duplicates = 0;
    for (const c of receiver.byId.values()) if (c > 1) duplicates += c - 1;
    const terminalIds = new Set();
    let terminalDeliveries = 0;
    for (const r of receiver.received) {
      if (r.type && r.type !== 'task.progress') { terminalDeliveries += 1; terminalIds.add(r.id); }
    }
    const foreignHooks = receiver.received.filter((r) => r.taskId && !taskById.has(r.taskId));
    if (foreignHooks.length) {
      fail(`${foreignHooks.length} webhooks are about tasks no client submitted (a duplicate task?): ` +
        foreignHooks.slice(0, 5).map((r) => `${r.id} ${r.type}`).join('; '));
    }
    report.webhooks = {
      received: receiver.received.length,
      distinct_ids: receiver.byId.size,
      duplicate_deliveries: duplicates,
      terminal_deliveries: terminalDeliveries,
      terminal_distinct: terminalIds.size,
      terminal_duplicates: terminalDeliveries - terminalIds.size,
      progress_deliveries: receiver.received.filter((r) => r.type === 'task.progress').length,
      invalid: receiver.invalidCount(),
      tasks_without_terminal_webhook: noWebhook.length,
    };
    if (receiver.invalidCount()) {
      const bad = receiver.received.filter((r) => !r.valid).slice(0, 5);
      fail(`${receiver.invalidCount()} webhooks failed verification: ` +
        bad.map((r) => `${r.id} ${r.type}: ${r.why}`).join('; '));
    }
    if (noWebhook.length) {
      fail(`${noWebhook.length} terminal tasks never got their terminal webhook with a valid ` +
        `signature: ${noWebhook.slice(0, 5).join('; ')}`);
    }
    if (wrongId.length) fail(`${wrongId.length} terminal webhooks have an unexpected id/URL: ${wrongId.slice(0, 5).join('; ')}`);

    // --- Verify: billing, one request-log row per completed task ------------------------------
    // The gateway bills a generation when it completes; a crash must neither lose nor repeat it.
    // (Spend rows are flushed in batches: wait for a flush interval before reading.)
    await sleep(1000);
    const rowsByTask = new Map();
    for (let offset = 0; ; offset += 1000) {
      const page = await gw.admin('GET', `/api/Analytics/logs?virtualKeyGroupId=${s.group.id}&limit=1000&offset=${offset}`);
      for (const row of page.data) {
        if (taskById.has(row.requestId)) rowsByTask.set(row.requestId, (rowsByTask.get(row.requestId) ?? 0) + 1);
      }
      if (page.data.length < 1000) break;
    }
    const unbilled = tasks.filter((t) => state.get(t.id)?.status === 'completed' && !rowsByTask.has(t.id));
    const billedTwice = [...rowsByTask].filter(([, n]) => n > 1);
    report.billing = { billed_tasks: rowsByTask.size, unbilled: unbilled.length, billed_twice: billedTwice.length };
    const billingIssue = (what) => (CFG.strictBilling ? fail(what) : warn(what));
    if (unbilled.length) {
      billingIssue(`${unbilled.length} completed tasks have no request-log/spend row (billing lost ` +
        `in the crash: the row was still in the SpendRecorder batch): ${unbilled.slice(0, 5)
          .map((t) => `${t.id} (completed_at ${state.get(t.id).completed_at})`).join('; ')}`);
    }
    if (billedTwice.length) billingIssue(`${billedTwice.length} tasks were billed more than once: ${billedTwice.slice(0, 5)}`);

    // --- Verify: media of completed tasks -----------------------------------------------------
    const jobOfTask = new Map();
    for (const [k, l] of jobsByKey) {
      const m = k.match(/^(.*)-(\d+)$/);
      if (m) jobOfTask.set(`${m[1]}#${m[2]}`, l[0]);
    }
    const mediaBad = [];
    const completed = tasks.filter((t) => state.get(t.id)?.status === 'completed');
    await pool(completed, 16, async (t) => {
      const st = state.get(t.id);
      const urls = (st.result?.data ?? []).map((d) => d.url);
      if (urls.length === 0) { mediaBad.push(`${t.id}: no result urls`); return; }
      for (const u of urls) {
        const res = await fetch(u);
        const buf = Buffer.from(await res.arrayBuffer());
        if (res.status !== 200 || buf.length === 0) {
          mediaBad.push(`${t.id}: GET ${u} → ${res.status}, ${buf.length} bytes`);
        } else if (t.kind === 'video') {
          const job = jobOfTask.get(`${t.id}#${st.retry_count + 1}`);
          if (job && job.content_bytes && buf.length !== job.content_bytes) {
            mediaBad.push(`${t.id}: video is ${buf.length} bytes, the provider made ${job.content_bytes}`);
          }
        }
      }
    });
    report.media = { checked: completed.length, bad: mediaBad.length };
    if (mediaBad.length) fail(`${mediaBad.length} completed tasks have bad media: ${mediaBad.slice(0, 5).join('; ')}`);

    // --- Queue dead letters (diagnostics) -----------------------------------------------------
    try {
      await sleep(Math.max(0, lastRestart + 6000 - Date.now())); // the gauges refresh every 5 s
      const metrics = await (await fetch(`${gw.base}/metrics`)).text();
      const dead = {};
      for (const m of metrics.matchAll(/^conduit_queue_messages\{([^}]*)\} (\S+)$/gm)) {
        const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
        if (labels.state === 'dead') dead[labels.topic] = Number(m[2]);
      }
      report.deadLetters = dead;
    } catch { /* diagnostics only */ }

    ok = report.failures.length === 0;
    log(`${mode}: ${ok ? 'PASS' : 'FAIL'} in ${(report.phases.totalMs / 1000).toFixed(1)} s — ` +
      `states ${JSON.stringify(states)}, upstream ${JSON.stringify(report.upstream)}, ` +
      `webhooks ${JSON.stringify(report.webhooks)}, media ${JSON.stringify(report.media)}, ` +
      `billing ${JSON.stringify(report.billing)}, kills ${kills.map((k) => `${k.label}@${k.atMs}ms`).join(', ')}, ` +
      `dead letters ${JSON.stringify(report.deadLetters ?? {})}, all terminal ` +
      `${report.phases.allTerminalAfterRestartMs} ms after the last restart ` +
      `(${report.slowTasks?.length ?? 0} tasks waited for the sweeper)`);
  } catch (e) {
    fail(`run aborted: ${e.stack ?? e}`);
  } finally {
    if (gw) await gw.stop({ keepData: true }).catch(() => {});
    if (mock) mock.stop();
    if (receiver) await receiver.close();
    gatewayLogs.forEach((g, i) => writeFileSync(path.join(logDir, `gateway-${i}.log`), g.output()));
    writeFileSync(path.join(logDir, 'report.json'), JSON.stringify(report, null, 2));
    if (vhost) {
      try { rabbitmqctl(['delete_vhost', vhost]); } catch (e) { log(`could not delete vhost ${vhost}: ${e.message}`); }
    }
    if (ok && !process.env.CRASH_KEEP) {
      rmSync(dataDir, { recursive: true, force: true });
      if (!process.env.CRASH_LOG_DIR) rmSync(logDir, { recursive: true, force: true });
    } else {
      log(`${mode}: logs and report in ${logDir}, data in ${dataDir}`);
    }
  }
  return report;
}

const modes = (process.env.CRASH_MODES ??
  (process.env.CONDUIT_TEST_AMQP ? 'embedded,rabbitmq' : 'embedded')).split(',').filter(Boolean);

for (const mode of modes) {
  const skip = mode === 'rabbitmq' && !process.env.CONDUIT_TEST_AMQP
    ? 'CONDUIT_TEST_AMQP is unset (start a broker: scripts/engines.sh start rabbitmq)'
    : false;
  test(`crash: ${CFG.tasks} tasks, kill -9 ×${(CFG.submitKillAt > 0 ? 1 : 0) + 1 + CFG.recoveryKills}, restart (${mode} queue)`,
    { skip, timeout: (CFG.deadlineS + CFG.webhookGraceS + 240) * 1000 }, async () => {
      const report = await runCrash(mode);
      assert.deepEqual(report.failures, [], `crash test (${mode}) failed; see ${report.logDir}`);
    });
}
