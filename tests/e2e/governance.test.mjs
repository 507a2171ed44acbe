// Governance and resilience (issue 5) with the real gateway, the mock provider and the official
// openai client: per-key request limits exact under concurrency (one instance, and three sharing
// Redis + PostgreSQL), the Redis-outage policy, fallbacks, circuit breakers and key failover.
import { it, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import {
  startMock, startGateway, seed, waitFor, freePort, metricValue, UPSTREAM_KEY, MASTER_KEY,
} from './harness.mjs';

const require = createRequire(import.meta.url);
const signalR = require('@microsoft/signalr');

const REDIS = process.env.CONDUIT_TEST_REDIS;
const PG = process.env.CONDUIT_TEST_PG;

const CHAT = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };

/** POSTs one chat completion with `key`; resolves with the Response (body read). */
async function chat(base, key, body = CHAT) {
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  res.text_ = await res.text();
  return res;
}

/** Fires `n` chat requests at once, spread round-robin over `bases`; returns status counts. */
async function burst(bases, key, n) {
  const all = await Promise.all(
    Array.from({ length: n }, (_, i) => chat(bases[i % bases.length], key)),
  );
  const counts = {};
  for (const r of all) counts[r.status] = (counts[r.status] ?? 0) + 1;
  return { counts, responses: all };
}

/** A chat request's worst case in micro-units at the seeded prices ($1/M in, $2/M out). */
const worstOf = (body) => Math.floor(JSON.stringify(body).length / 4) + 1 + 2 * body.max_tokens;

/** A key with request limits in the group of `fx`. */
async function limitedKey(gw, fx, limits) {
  const k = await gw.admin('POST', '/api/VirtualKeys', {
    keyName: `limited-${Date.now()}`, virtualKeyGroupId: fx.group.id, ...limits,
  });
  return k.virtualKey;
}

/** Starts a throwaway redis-server on a free port (for outage tests; the shared engine stays up). */
async function startRedis(port) {
  const dir = mkdtempSync(path.join(tmpdir(), 'conduit-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  await waitFor(async () => {
    try {
      execFileSync('redis-cli', ['-p', String(port), 'ping'], { stdio: 'pipe' });
      return true;
    } catch {
      return false;
    }
  }, 10000, 'redis-server up');
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async stop() {
      proc.kill('SIGKILL');
      await new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('request limits on one instance', () => {
  let mock;
  let gw;
  let fx;
  before(async () => {
    mock = await startMock();
    gw = await startGateway();
    fx = await seed(gw, mock);
  });
  after(async () => {
    await gw?.stop();
    mock?.stop();
  });

  it('RPM = N admits exactly N of 4N concurrent requests; the rest get 429 with the limit headers', async () => {
    const N = 20;
    const key = await limitedKey(gw, fx, { rateLimitRpm: N });
    const { counts, responses } = await burst([gw.base], key, 4 * N);
    assert.deepEqual(counts, { 200: N, 429: 3 * N });
    const refused = responses.find((r) => r.status === 429);
    assert.equal(refused.headers.get('x-ratelimit-limit-requests'), String(N));
    assert.equal(refused.headers.get('x-ratelimit-remaining-requests'), '0');
    const retry = Number(refused.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 3, `Retry-After ${retry}s (one request per 3 s)`);
    const body = JSON.parse(refused.text_);
    assert.equal(body.error.code, 'rate_limit_exceeded');
    assert.equal(body.error.type, 'rate_limit_error');
    const admitted = responses.find((r) => r.status === 200);
    assert.equal(admitted.headers.get('x-ratelimit-limit-requests'), String(N));
    assert.match(admitted.headers.get('x-ratelimit-reset-requests'), /^\d+(\.\d+)?(ms|s)$|m/);
    assert.equal(await metricValue(gw.base, 'conduit_rate_limit_rejections_total', { limit: 'rpm' }), 3 * N);
  });

  it('the official client sees RateLimitError; a key without limits is never limited', async () => {
    const key = await limitedKey(gw, fx, { rateLimitRpm: 1 });
    const client = new OpenAI({ apiKey: key, baseURL: `${gw.base}/v1`, maxRetries: 0 });
    await client.chat.completions.create(CHAT);
    await assert.rejects(client.chat.completions.create(CHAT), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, e.constructor.name);
      assert.equal(e.status, 429);
      assert.equal(e.code, 'rate_limit_exceeded');
      return true;
    });
    const { counts } = await burst([gw.base], fx.keys.main, 60);
    assert.deepEqual(counts, { 200: 60 });
  });

  it('RPD counts separately and names the day', async () => {
    const key = await limitedKey(gw, fx, { rateLimitRpm: 100, rateLimitRpd: 3 });
    const { counts, responses } = await burst([gw.base], key, 6);
    assert.deepEqual(counts, { 200: 3, 429: 3 });
    const refused = responses.find((r) => r.status === 429);
    assert.match(JSON.parse(refused.text_).error.message, /per day/);
    assert.equal(refused.headers.get('x-ratelimit-remaining-requests-day'), '0');
    // A refused request used nothing of the minute limit: 97 of 100 left.
    assert.equal(refused.headers.get('x-ratelimit-remaining-requests'), '97');
  });

  it('limits apply to every /v1 route, not to media downloads', async () => {
    const key = await limitedKey(gw, fx, { rateLimitRpm: 2 });
    const models = await fetch(`${gw.base}/v1/models`, { headers: { Authorization: `Bearer ${key}` } });
    assert.equal(models.status, 200);
    assert.equal((await chat(gw.base, key)).status, 200);
    const third = await fetch(`${gw.base}/v1/embeddings`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'text-embedding-3-small', input: 'x' }),
    });
    assert.equal(third.status, 429);
    const task = await fetch(`${gw.base}/v1/tasks/does-not-matter`, { headers: { Authorization: `Bearer ${key}` } });
    assert.equal(task.status, 429);
    const media = await fetch(`${gw.base}/v1/media/unknown.png`);
    assert.equal(media.status, 404);
  });
});

describe('prepaid balance: worst-case reservations', () => {
  let mock;
  let gw;
  let fx;
  before(async () => {
    mock = await startMock(['--stream-chunks', '4']);
    gw = await startGateway();
    fx = await seed(gw, mock, { balance: 1 });
  });
  after(async () => {
    await gw?.stop();
    mock?.stop();
  });

  it('64 parallel requests on a balance covering 4 worst cases: exactly 4 run, and the ledger balances to the micro-unit', async () => {
    // max_tokens 100,000 at $2/M output: each request may cost just over $0.20; the group has $1.
    const body = {
      ...CHAT, max_tokens: 100000, stream: true, stream_options: { include_usage: true }, mock_hold: 'budget',
    };
    const started = await Promise.all(Array.from({ length: 64 }, () => fetch(`${gw.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${fx.keys.main}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    })));
    const counts = {};
    for (const r of started) counts[r.status] = (counts[r.status] ?? 0) + 1;
    assert.deepEqual(counts, { 200: 4, 402: 60 });
    const refused = started.find((r) => r.status === 402);
    const err = (await refused.json()).error;
    assert.equal(err.code, 'insufficient_balance');
    assert.equal(err.type, 'insufficient_quota');
    assert.match(err.message, /may cost up to \$0\.200/);
    // Release the held streams and read them to the end.
    assert.equal(await mock.release('budget'), 200);
    const texts = await Promise.all(started.filter((r) => r.status === 200).map((r) => r.text()));
    for (const t of texts) assert.match(t, /\[DONE\]/);
    // Once flushed: initial balance − debits = balance, exactly, and never below zero.
    const micros = (x) => Math.round(Number(x) * 1e6);
    await waitFor(async () => {
      const logs = await gw.admin('GET', '/api/Analytics/logs?limit=100');
      return logs.data.filter((l) => l.virtualKeyGroupId === fx.group.id && l.statusCode === 200).length === 4;
    }, 10000, 'four billed requests flushed');
    // Logs and ledger rows are written in one transaction: read both after it.
    const txns = await gw.admin('GET', `/api/VirtualKeyGroups/${fx.group.id}/transactions`);
    const group = await gw.admin('GET', `/api/VirtualKeyGroups/${fx.group.id}`);
    const list = txns.data ?? txns;
    const debits = list.filter((t) => t.transactionType === 'Debit').reduce((a, t) => a + micros(t.amount), 0);
    const credits = list.filter((t) => t.transactionType === 'Credit').reduce((a, t) => a + micros(t.amount), 0);
    assert.equal(credits, 1_000_000);
    assert.equal(micros(group.balance), credits - debits);
    assert.equal(micros(group.lifetimeSpent), debits);
    assert.ok(micros(group.balance) >= 0);
    // The reservations were settled: the whole rest of the balance is usable again.
    const again = await chat(gw.base, fx.keys.main, { ...CHAT, max_tokens: 100000 });
    assert.equal(again.status, 200, again.text_);
  });

  it('an admin credit is usable at once', async () => {
    const g = await gw.admin('POST', '/api/VirtualKeyGroups', { groupName: 'tiny', initialBalance: 0.0001 });
    const k = await gw.admin('POST', '/api/VirtualKeys', { keyName: 'tiny', virtualKeyGroupId: g.id });
    const body = { ...CHAT, max_tokens: 1000 };  // may cost ~$0.002: more than $0.0001
    assert.equal((await chat(gw.base, k.virtualKey, body)).status, 402);
    await gw.admin('POST', `/api/VirtualKeyGroups/${g.id}/adjust-balance`, { amount: 1 });
    assert.equal((await chat(gw.base, k.virtualKey, body)).status, 200);
  });
});

describe('per-key budgets, BudgetAlert and tokens per minute', () => {
  // Prices of the seeded chat model: $1/M input, $2/M output, i.e. 1 and 2 micro-units per
  // token, so a request's worst case is (body bytes / 4 + 1) + 2 × max_tokens micro-units.
  let mock;
  let gw;
  let fx;
  let dataDir;
  const micros = (x) => Math.round(Number(x) * 1e6);
  /** A chat body whose worst case is exactly `target` micro-units (target >= ~20). */
  function bodyWithWorst(target) {
    const base = { ...CHAT, max_tokens: 0 };
    const p0 = worstOf(base);
    const maxTokens = Math.floor((target - p0) / 2);
    let body = { ...CHAT, max_tokens: maxTokens };
    if (worstOf(body) < target) {
      // One prompt token more: pad the message to the next multiple of 4 bytes.
      const len = JSON.stringify(body).length;
      const pad = 4 - (len % 4);
      body = { ...body, messages: [{ role: 'user', content: 'hi' + 'x'.repeat(pad) }] };
    }
    assert.equal(worstOf(body), target);
    return body;
  }
  async function budgetKey(extra) {
    const k = await gw.admin('POST', '/api/VirtualKeys', {
      keyName: `budget-${Date.now()}-${Math.random()}`, virtualKeyGroupId: fx.group.id, ...extra,
    });
    return { id: k.keyInfo.id, virtualKey: k.virtualKey };
  }
  /** The key's billed spend in the request log (once flushed). */
  async function loggedSpend(keyId) {
    const logs = await gw.admin('GET', `/api/Analytics/logs?limit=1000&virtualKeyId=${keyId}`);
    return logs.data.filter((l) => l.virtualKeyId === keyId).reduce((a, l) => a + micros(l.cost), 0);
  }
  function tomorrowUtc() {
    const d = new Date();
    return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)).toISOString();
  }

  before(async () => {
    mock = await startMock(['--stream-chunks', '4']);
    dataDir = mkdtempSync(path.join(tmpdir(), 'conduit-e2e-budget-'));
    gw = await startGateway([], { dataDir, keepData: true });
    fx = await seed(gw, mock, { balance: 1000 });
  });
  after(async () => {
    await gw?.stop();
    mock?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('the admin API round-trips maxBudget, budgetDuration and rateLimitTpm and validates them', async () => {
    const k = await budgetKey({ maxBudget: 12.345678, budgetDuration: 'Weekly', rateLimitTpm: 9000 });
    const got = await gw.admin('GET', `/api/VirtualKeys/${k.id}`);
    assert.equal(got.maxBudget, 12.345678);
    assert.equal(got.budgetDuration, 'weekly');
    assert.equal(got.rateLimitTpm, 9000);
    const total = await budgetKey({ maxBudget: 0 });
    assert.equal((await gw.admin('GET', `/api/VirtualKeys/${total.id}`)).budgetDuration, 'total');
    for (const bad of [{ maxBudget: -1 }, { budgetDuration: 'yearly' }, { rateLimitTpm: 0 }]) {
      const res = await fetch(`${gw.base}/api/VirtualKeys/${k.id}`, {
        method: 'PUT',
        headers: { 'X-API-Key': MASTER_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify(bad),
      });
      assert.equal(res.status, 400, JSON.stringify(bad));
    }
    await gw.admin('PUT', `/api/VirtualKeys/${k.id}`, { maxBudget: null });
    assert.equal((await gw.admin('GET', `/api/VirtualKeys/${k.id}`)).maxBudget, null);
  });

  it('64 parallel requests on a daily budget covering 4 worst cases: exactly 4 run, the rest get budget_exceeded', async () => {
    const body = {
      ...CHAT, max_tokens: 100000, stream: true, stream_options: { include_usage: true }, mock_hold: 'kb',
    };
    const w = worstOf(body);
    const k = await budgetKey({ maxBudget: (4 * w + w - 1) / 1e6, budgetDuration: 'daily' });
    const started = await Promise.all(Array.from({ length: 64 }, () => fetch(`${gw.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${k.virtualKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    })));
    const counts = {};
    for (const r of started) counts[r.status] = (counts[r.status] ?? 0) + 1;
    assert.deepEqual(counts, { 200: 4, 402: 60 });
    const err = (await started.find((r) => r.status === 402).json()).error;
    assert.equal(err.code, 'budget_exceeded');
    assert.equal(err.type, 'insufficient_quota');
    assert.match(err.message, /daily budget/);
    assert.ok(err.message.includes(tomorrowUtc().slice(0, 19)), err.message);
    assert.equal(await mock.release('kb'), 200);
    for (const t of await Promise.all(started.filter((r) => r.status === 200).map((r) => r.text()))) {
      assert.match(t, /\[DONE\]/);
    }
  });

  it('a spent daily budget refuses to the micro-unit, also after a gateway restart on the same data', async () => {
    const budget = 2000;  // $0.002
    const k = await budgetKey({ maxBudget: budget / 1e6, budgetDuration: 'daily' });
    let refused = null;
    for (let i = 0; i < 100 && !refused; i++) {
      const r = await chat(gw.base, k.virtualKey, { ...CHAT, max_tokens: 60 });
      if (r.status === 402) refused = r;
      else assert.equal(r.status, 200, r.text_);
    }
    assert.ok(refused, 'the budget ran out');
    assert.equal(JSON.parse(refused.text_).error.code, 'budget_exceeded');
    // Restart: the in-process counters are gone; the key's counter starts again from the
    // store's spend (flushed at shutdown), not from 0.
    await gw.stop({ keepData: true });
    gw = await startGateway([], { dataDir, keepData: true });
    const spent = await loggedSpend(k.id);
    const left = budget - spent;
    assert.ok(spent > 0 && left >= 0 && left < worstOf({ ...CHAT, max_tokens: 60 }), `spent ${spent}`);
    assert.ok(left >= 25, `left ${left}: too little for an exact check`);
    {
      const over = await chat(gw.base, k.virtualKey, bodyWithWorst(left + 1));
      assert.equal(over.status, 402, over.text_);
      assert.equal(JSON.parse(over.text_).error.code, 'budget_exceeded');
      const exact = await chat(gw.base, k.virtualKey, bodyWithWorst(left));
      assert.equal(exact.status, 200, exact.text_);
    }
  });

  it('BudgetAlert reaches the official SignalR client on /hubs/spend at 80, 90 and 100 %, once each', async () => {
    const budget = 1500;
    const k = await budgetKey({ maxBudget: budget / 1e6, budgetDuration: 'monthly' });
    const conn = new signalR.HubConnectionBuilder()
      .withUrl(`${gw.base}/hubs/spend`, { accessTokenFactory: () => k.virtualKey })
      .configureLogging(signalR.LogLevel.None)
      .build();
    const alerts = [];
    conn.on('BudgetAlert', (a) => alerts.push(a));
    await conn.start();
    try {
      let refusals = 0;
      for (let i = 0; i < 100 && refusals < 2; i++) {
        const r = await chat(gw.base, k.virtualKey, { ...CHAT, max_tokens: 40 });
        if (r.status === 402) refusals++;
        else assert.equal(r.status, 200, r.text_);
      }
      assert.equal(refusals, 2);
      await waitFor(() => alerts.length >= 3, 10000, 'three BudgetAlerts');
      assert.deepEqual(alerts.map((a) => a.threshold), [80, 90, 100]);
      const d = new Date();
      const monthEnd = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)).toISOString();
      for (const a of alerts) {
        assert.equal(a.budgetLimit, budget / 1e6);
        if (a.threshold < 100) {
          assert.ok(a.percentageUsed >= a.threshold, JSON.stringify(a));
          assert.ok(micros(a.currentSpend) * 100 >= budget * a.threshold, JSON.stringify(a));
        } else {
          // Sent with the first refusal: what is left is less than that request's worst case.
          assert.ok(budget - micros(a.currentSpend) < worstOf({ ...CHAT, max_tokens: 40 }), JSON.stringify(a));
        }
        assert.ok(Array.isArray(a.recommendations) && a.recommendations.length > 0);
        assert.equal(a.budgetPeriodEnd.slice(0, 19), monthEnd.slice(0, 19));
        assert.equal(typeof a.message, 'string');
      }
      assert.deepEqual(alerts.map((a) => a.severity), ['warning', 'critical', 'error']);
      assert.deepEqual(alerts.map((a) => a.alertType), ['budget_threshold', 'budget_threshold', 'budget_exceeded']);
    } finally {
      await conn.stop();
    }
  });

  it('tokens per minute: a large request puts the bucket in debt and the next one is refused', async () => {
    const k = await budgetKey({ rateLimitTpm: 50 });
    const client = new OpenAI({ apiKey: k.virtualKey, baseURL: `${gw.base}/v1`, maxRetries: 0 });
    const { data, response } = await client.chat.completions
      .create({ ...CHAT, max_tokens: 200 })
      .withResponse();
    assert.ok(data.usage.total_tokens > 50, `usage ${data.usage.total_tokens}`);
    assert.equal(response.headers.get('x-ratelimit-limit-tokens'), '50');
    assert.equal(response.headers.get('x-ratelimit-remaining-tokens'), '50');
    const refused = await chat(gw.base, k.virtualKey);
    assert.equal(refused.status, 429, refused.text_);
    const err = JSON.parse(refused.text_).error;
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.match(err.message, /tokens per minute \(limit 50\)/);
    assert.equal(refused.headers.get('x-ratelimit-limit-tokens'), '50');
    assert.equal(refused.headers.get('x-ratelimit-remaining-tokens'), '0');
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
  });
});

const HELD = {
  ...CHAT, max_tokens: 100000, stream: true, stream_options: { include_usage: true }, mock_hold: 'cluster',
};

describe('request limits across three instances sharing Redis and PostgreSQL', () => {
  const skip = REDIS && PG ? false : 'needs CONDUIT_TEST_REDIS and CONDUIT_TEST_PG (scripts/engines.sh)';
  const DB = `conduit_gov_${process.pid}_${Date.now()}`;
  let mock;
  const gws = [];
  let fx;
  const psql = (sql) => execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', PG, '-c', sql]);
  before(async () => {
    if (skip) return;
    psql(`CREATE DATABASE ${DB}`);
    const u = new URL(PG);
    u.pathname = `/${DB}`;
    // Own Redis prefix: the shared Redis outlives this database (key ids repeat across runs).
    const common = ['--database-url', u.toString(), '--redis-url', REDIS, '--redis-prefix', `${DB}:`];
    // A cluster shares the encryption key of provider keys (each data dir would make its own).
    const env = { CONDUIT_MASTER_KEY: MASTER_KEY, CONDUIT_ENCRYPTION_KEY: 'e2e-cluster-encryption-key' };
    mock = await startMock();
    gws.push(await startGateway(common, { env }));
    fx = await seed(gws[0], mock);
    fx.limited = await limitedKey(gws[0], fx, { rateLimitRpm: 30 });
    fx.hubLimited = await limitedKey(gws[0], fx, { rateLimitRpm: 5 });
    fx.budgeted = await limitedKey(gws[0], fx, {
      maxBudget: (4 * worstOf(HELD) + worstOf(HELD) - 1) / 1e6, budgetDuration: 'daily',
    });
    // The others start after the seeding: their first snapshot already has the key.
    gws.push(await startGateway(common, { env }));
    gws.push(await startGateway(common, { env }));
  });
  after(async () => {
    for (const g of gws) await g.stop();
    mock?.stop();
    if (!skip) psql(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  });

  it('RPM = 30 admits exactly 30 of 120 requests spread over three instances', { skip }, async () => {
    const { counts } = await burst(gws.map((g) => g.base), fx.limited, 120);
    assert.deepEqual(counts, { 200: 30, 429: 90 });
  });

  it('hub method invocations take the key\'s RPM across the three instances', { skip }, async () => {
    const conns = await Promise.all(gws.map(async (g) => {
      const c = new signalR.HubConnectionBuilder()
        .withUrl(`${g.base}/hubs/navigation-state`, { accessTokenFactory: () => fx.hubLimited })
        .configureLogging(signalR.LogLevel.None)
        .build();
      await c.start();
      return c;
    }));
    try {
      // RPM 5: two invocations on the first instance, two on the second, one on the third.
      for (const i of [0, 0, 1, 1, 2]) {
        const state = await conns[i].invoke('GetNavigationState');
        assert.ok(Array.isArray(state.items));
      }
      for (const c of conns) {
        await assert.rejects(c.invoke('GetNavigationState'),
          /Rate limit exceeded: requests per minute \(limit 5\); try again in \d+s/);
        assert.equal(c.state, signalR.HubConnectionState.Connected);
      }
      // The same bucket refuses the key's HTTP requests too.
      const r = await fetch(`${gws[2].base}/v1/chat/completions`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${fx.hubLimited}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(CHAT),
      });
      assert.equal(r.status, 429);
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), '5');
    } finally {
      await Promise.all(conns.map((c) => c.stop()));
    }
  });

  it('a daily key budget covering 4 worst cases admits exactly 4 of 48 held requests over three instances', { skip }, async () => {
    const started = await Promise.all(Array.from({ length: 48 }, (_, i) => fetch(`${gws[i % 3].base}/v1/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${fx.budgeted}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(HELD),
    })));
    const counts = {};
    for (const r of started) counts[r.status] = (counts[r.status] ?? 0) + 1;
    assert.deepEqual(counts, { 200: 4, 402: 44 });
    assert.equal((await started.find((r) => r.status === 402).json()).error.code, 'budget_exceeded');
    assert.equal(await mock.release('cluster'), 200);
    for (const t of await Promise.all(started.filter((r) => r.status === 200).map((r) => r.text()))) {
      assert.match(t, /\[DONE\]/);
    }
  });
});

describe('Redis outage follows the fail policy and recovers', () => {
  let mock;
  let redis;
  const gws = {};
  let keys = {};
  before(async () => {
    mock = await startMock();
    redis = await startRedis(await freePort());
    for (const policy of ['open', 'closed']) {
      const g = await startGateway(['--redis-url', redis.url, '--rate-limit-fail-policy', policy]);
      const fx = await seed(g, mock);
      gws[policy] = g;
      keys[policy] = await limitedKey(g, fx, { rateLimitRpm: 1000 });
    }
  });
  after(async () => {
    for (const g of Object.values(gws)) await g.stop();
    await redis?.stop();
    mock?.stop();
  });

  it('open admits and closed refuses with 503 while Redis is down; both enforce again after', async () => {
    assert.equal((await chat(gws.open.base, keys.open)).status, 200);
    assert.equal((await chat(gws.closed.base, keys.closed)).status, 200);
    const port = new URL(redis.url).port;
    await redis.stop();
    const open = await chat(gws.open.base, keys.open);
    assert.equal(open.status, 200);
    const closed = await chat(gws.closed.base, keys.closed);
    assert.equal(closed.status, 503);
    assert.match(JSON.parse(closed.text_).error.message, /Rate limits cannot be checked/);
    assert.ok((await metricValue(gws.closed.base, 'conduit_rate_limit_engine_errors_total')) >= 1);
    redis = await startRedis(Number(port));
    await waitFor(async () => (await chat(gws.closed.base, keys.closed)).status === 200, 20000,
      'closed-policy gateway admits again once Redis is back');
    const after = await chat(gws.open.base, keys.open);
    assert.equal(after.status, 200);
    assert.ok(after.headers.get('x-ratelimit-remaining-requests'), 'limits are enforced again');
  });
});

describe('routing: fallbacks, circuit breakers, key failover', () => {
  let good;
  let bad;
  let gw;
  let fx;
  before(async () => {
    good = await startMock();
    bad = await startMock(['--error-rate', '1', '--error-status', '503']);
    gw = await startGateway(['--breaker-min-requests', '4', '--breaker-failure-percent', '50',
      '--breaker-open-ms', '1500', '--breaker-window-ms', '30000']);
    fx = await seed(gw, good);
  });
  after(async () => {
    await gw?.stop();
    good?.stop();
    bad?.stop();
  });

  async function provider(name, base, apiKey = UPSTREAM_KEY) {
    return gw.admin('POST', '/api/ProviderCredentials', {
      providerType: 'openai-compatible', providerName: name, baseUrl: `${base}/v1`, apiKey,
    });
  }

  it('a failing primary model falls back to the configured model at once', async () => {
    const p = await provider('broken', bad.base);
    await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'primary-model', providerModelId: 'x', providerId: p.id,
    });
    const fb = await gw.admin('POST', '/api/Router/fallbacks/primary-model', ['gpt-4o-mini']);
    assert.deepEqual(fb['primary-model'], ['gpt-4o-mini']);
    const config = await gw.admin('GET', '/api/Router/config');
    assert.deepEqual(config.fallbacks['primary-model'], ['gpt-4o-mini']);
    const client = new OpenAI({ apiKey: fx.keys.main, baseURL: `${gw.base}/v1`, maxRetries: 0 });
    const { data, response } = await client.chat.completions
      .create({ ...CHAT, model: 'primary-model' })
      .withResponse();
    assert.ok(data.choices[0].message.content.length > 0);
    assert.equal(response.headers.get('x-conduit-attempts'), '2');
    await assert.rejects(gw.admin('PUT', '/api/Router/config', { defaultStrategy: 'fastest' }), (e) => {
      assert.equal(e.status, 400);
      return true;
    });
  });

  it('the breaker opens under errors, routing skips the deployment, a probe closes it after recovery', async () => {
    const p = await provider('flaky', bad.base);
    const flaky = await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'flaky-model', providerModelId: 'x', providerId: p.id, priority: 10,
    });
    const healthy = await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'flaky-model', providerModelId: 'mock-gpt', providerId: fx.provider.id, priority: 1,
    });
    assert.ok(healthy.id);
    await gw.admin('PUT', '/api/Router/config', { maxRetries: 1 });
    const statsBefore = await bad.stats();
    // Each request fails on the flaky deployment, then succeeds on the healthy one.
    for (let i = 0; i < 4; i++) {
      const r = await chat(gw.base, fx.keys.main, { ...CHAT, model: 'flaky-model' });
      assert.equal(r.status, 200, r.text_);
      assert.equal(r.headers.get('x-conduit-attempts'), '2');
    }
    const deployment = `flaky-model#${flaky.id}`;
    assert.equal(await metricValue(gw.base, 'conduit_circuit_breaker_state', { provider: 'flaky', deployment }), 1);
    // Open: the flaky deployment is skipped (first attempt succeeds, the mock sees nothing).
    const hits = (await bad.stats()).requests_total;
    const skipped = await chat(gw.base, fx.keys.main, { ...CHAT, model: 'flaky-model' });
    assert.equal(skipped.status, 200);
    assert.equal(skipped.headers.get('x-conduit-attempts'), null);
    assert.equal((await bad.stats()).requests_total, hits);
    assert.ok(hits > statsBefore.requests_total);
    const ready = await (await fetch(`${gw.base}/health/ready`)).json();
    const check = ready.checks.find((c) => c.name === 'providers');
    assert.equal(check.status, 'Degraded', JSON.stringify(ready));
    // The provider recovers (same port): after open-ms a probe goes through and closes it.
    await gw.admin('PUT', `/api/ProviderCredentials/${p.id}`, { baseUrl: `${good.base}/v1` });
    await waitFor(async () => {
      await chat(gw.base, fx.keys.main, { ...CHAT, model: 'flaky-model' });
      return (await metricValue(gw.base, 'conduit_circuit_breaker_state', { provider: 'flaky', deployment })) === 0;
    }, 15000, 'breaker closed after a successful probe');
    assert.ok((await metricValue(gw.base, 'conduit_circuit_breaker_trips_total', { provider: 'flaky' })) >= 1);
  });

  it('a provider key answered with 401 is disabled and the next key serves', async () => {
    const p = await provider('two-keys', good.base, 'sk-wrong-key');
    await gw.admin('POST', `/api/ProviderCredentials/${p.id}/keys`, { apiKey: UPSTREAM_KEY, keyName: 'good' });
    await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'keyed-model', providerModelId: 'mock-gpt', providerId: p.id,
    });
    const r = await chat(gw.base, fx.keys.main, { ...CHAT, model: 'keyed-model' });
    assert.equal(r.status, 200, r.text_);
    assert.equal(r.headers.get('x-conduit-attempts'), '2');
    await waitFor(async () => {
      const keys = await gw.admin('GET', `/api/ProviderCredentials/${p.id}/keys`);
      const primary = keys.find((k) => k.isPrimary);
      return primary && primary.isEnabled === false;
    }, 10000, 'the rejected primary key is disabled');
    // Next request: straight to the working key.
    const next = await chat(gw.base, fx.keys.main, { ...CHAT, model: 'keyed-model' });
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('x-conduit-attempts'), null);
  });
});
