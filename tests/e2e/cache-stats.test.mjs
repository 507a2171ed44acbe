// Distributed cache statistics (issue 6 item 3): GET /api/cache/statistics, the conduit_cache_*
// families in /metrics and the cache_statistics health check, in embedded mode and with two
// instances sharing Redis (aggregation, drift after tampering with the global aggregate, a
// stopped instance pruned once stale). The Redis part needs CONDUIT_TEST_REDIS.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { startMock, startGateway, seed, waitFor, apiCall, metricValue } from './harness.mjs';

const REDIS = process.env.CONDUIT_TEST_REDIS;
const FAST = ['--cache-stats-interval-ms', '100', '--cache-stats-collect-interval-ms', '200'];

async function chat(gw, key) {
  const r = await apiCall(gw.base, key, 'POST', '/v1/chat/completions', {
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] },
  });
  return r.status;
}

function region(stats, name) {
  const r = stats.regions.find((x) => x.region === name);
  assert.ok(r, `region ${name} in ${JSON.stringify(stats)}`);
  return r;
}

/** One Redis command over a raw RESP connection; resolves with the reply line(s) as text. */
async function redisCommand(url, args) {
  const u = new URL(url);
  const sock = net.connect(Number(u.port || 6379), u.hostname);
  const db = u.pathname.replace('/', '') || '0';
  const enc = (a) => `*${a.length}\r\n${a.map((x) => `$${Buffer.byteLength(String(x))}\r\n${x}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    let data = '';
    sock.on('error', reject);
    sock.on('data', (d) => {
      data += d.toString();
      // SELECT's +OK, then the command's single-line reply.
      const lines = data.split('\r\n');
      if (lines.length >= 3) {
        sock.end();
        resolve(lines[1]);
      }
    });
    sock.write(enc(['SELECT', db]) + enc(args));
  });
}

describe('cache statistics, embedded', () => {
  let mock;
  let gw;
  let fx;

  before(async () => {
    mock = await startMock();
    gw = await startGateway(FAST, { single: true });  // one instance, also under CONDUIT_E2E_CLUSTER
    fx = await seed(gw, mock);
  });

  after(async () => {
    await gw?.stop();
    mock?.stop();
  });

  it('the admin route needs the master key and validates instances=', async () => {
    const anon = await fetch(`${gw.base}/api/cache/statistics`);
    assert.equal(anon.status, 401);
    await assert.rejects(gw.admin('GET', '/api/cache/statistics?instances=maybe'), (e) => e.status === 400);
  });

  it('counts key lookups and shows them in the route, /metrics and health', async () => {
    // One lookup per request; the memo is per event-loop thread (2), so at most 2 misses of the
    // valid key, plus the unknown key's.
    for (let i = 0; i < 8; i++) assert.equal(await chat(gw, fx.keys.main), 200);
    assert.equal(await chat(gw, 'condt_not-a-key'), 401);

    const stats = await waitFor(async () => {
      const s = await gw.admin('GET', '/api/cache/statistics?instances=true');
      const vk = region(s, 'virtual_keys');
      return vk.hits + vk.misses >= 9 ? s : null;
    }, 10000, 'virtual key lookups in the statistics');
    assert.equal(stats.mode, 'embedded');
    assert.equal(stats.activeInstances, 1);
    assert.equal(stats.tolerancePercent, 5);
    assert.deepEqual(stats.drifting, []);
    const vk = region(stats, 'virtual_keys');
    assert.ok(vk.hits >= 6, JSON.stringify(vk));
    assert.ok(vk.misses >= 2 && vk.misses <= 3, JSON.stringify(vk));
    assert.ok(vk.sets >= 1, 'a key entered the memo');
    assert.equal(vk.global.hits, vk.hits, 'embedded: the aggregate is this instance');
    assert.equal(vk.driftPercent, 0);
    assert.ok(vk.hitRate > 0 && vk.hitRate < 1);
    assert.ok(vk.latencyMs.count >= vk.hits + vk.misses - 1);
    assert.ok(vk.latencyMs.p99 <= vk.latencyMs.max && vk.latencyMs.max > 0);
    assert.equal(stats.instances.length, 1);
    assert.equal(region(stats.instances[0], 'virtual_keys').hits, vk.hits);
    for (const name of ['webhook_secrets', 'key_budgets']) region(stats, name);

    await waitFor(async () => (await metricValue(gw.base, 'conduit_cache_requests_total',
      { region: 'virtual_keys', result: 'hit' })) >= vk.hits, 5000, 'hit counter in /metrics');
    assert.ok(await metricValue(gw.base, 'conduit_cache_requests_total',
      { region: 'virtual_keys', result: 'miss' }) >= vk.misses);
    await waitFor(async () => (await metricValue(gw.base, 'conduit_cache_instances_active')) === 1,
      5000, 'instances gauge');
    assert.equal(await metricValue(gw.base, 'conduit_cache_drift_percent', { region: 'virtual_keys' }), 0);
    assert.ok(await metricValue(gw.base, 'conduit_cache_latency_seconds',
      { region: 'virtual_keys', quantile: '0.99' }) > 0);

    const health = await (await fetch(`${gw.base}/health/ready`)).json();
    const check = health.checks.find((c) => c.name === 'cache_statistics');
    assert.ok(check, JSON.stringify(health));
    assert.equal(check.status, 'Healthy');
  });
});

describe('cache statistics, two instances on Redis', { skip: REDIS ? false : 'CONDUIT_TEST_REDIS is not set' }, () => {
  let mock;
  let a;
  let b;
  let fx;
  const prefix = `e2ecs${randomBytes(4).toString('hex')}:`;

  before(async () => {
    mock = await startMock();
    const args = [...FAST, '--cache-stats-stale-ms', '1500', '--redis-url', REDIS, '--redis-prefix', prefix];
    a = await startGateway(args, { single: true });
    fx = await seed(a, mock);
    // B has its own SQLite store (seeded the same way in the test); only Redis is shared.
    b = await startGateway(args, { single: true });
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    mock?.stop();
  });

  it('aggregates both instances, detects drift, prunes a stopped instance', async () => {
    const fxB = await seed(b, mock);
    for (let i = 0; i < 4; i++) assert.equal(await chat(a, fx.keys.main), 200);
    for (let i = 0; i < 6; i++) assert.equal(await chat(b, fxB.keys.main), 200);

    const stats = await waitFor(async () => {
      const s = await a.admin('GET', '/api/cache/statistics?instances=true');
      if (s.activeInstances !== 2) return null;
      const lookups = s.instances.map((x) => region(x, 'virtual_keys'))
        .map((r) => r.hits + r.misses);
      return lookups.length === 2 && lookups.every((n) => n >= 4) ? s : null;
    }, 10000, 'both instances in the statistics');
    assert.equal(stats.mode, 'redis');
    const vk = region(stats, 'virtual_keys');
    const sum = stats.instances.reduce((t, x) => t + region(x, 'virtual_keys').hits, 0);
    assert.equal(vk.hits, sum, 'Σ per-instance hits');
    assert.equal(vk.global.hits, vk.hits, 'global aggregate = Σ instances');
    assert.equal(vk.drifting, false);
    await waitFor(async () => (await metricValue(a.base, 'conduit_cache_instances_active')) === 2,
      5000, 'instances gauge = 2');

    // The engine's aggregate is moved behind the instances' back: drift is reported.
    await redisCommand(REDIS, ['HINCRBY', `${prefix}cache:stats:global`, 'virtual_keys:hits', '100000']);
    const drifted = await a.admin('GET', '/api/cache/statistics');
    assert.deepEqual(drifted.drifting, ['virtual_keys']);
    assert.ok(region(drifted, 'virtual_keys').driftPercent > 5);
    await waitFor(async () => {
      const h = await (await fetch(`${a.base}/health/ready`)).json();
      return h.checks.find((c) => c.name === 'cache_statistics')?.status === 'Degraded';
    }, 5000, 'health check Degraded');
    assert.ok(await metricValue(a.base, 'conduit_cache_drift_percent', { region: 'virtual_keys' }) > 5);
    await redisCommand(REDIS, ['HINCRBY', `${prefix}cache:stats:global`, 'virtual_keys:hits', '-100000']);

    // B stops: once its heartbeat is older than 1.5 s it is pruned, with its figures.
    await b.stop();
    b = null;
    const after = await waitFor(async () => {
      const s = await a.admin('GET', '/api/cache/statistics?instances=true');
      return s.instances.length === 1 ? s : null;
    }, 10000, 'the stopped instance pruned');
    assert.equal(after.activeInstances, 1);
    assert.equal(after.staleInstances, 0);
    const left = region(after, 'virtual_keys');
    assert.equal(left.global.hits, left.hits);
    assert.equal(left.drifting, false);
    assert.equal(after.instances.length, 1);
  });
});
