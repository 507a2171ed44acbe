// Configuration across instances sharing one PostgreSQL database: an admin change on instance A
// (new key, revoked key, new mapping, price change) takes effect on instance B within 1 s through
// the Redis backplane, and on an instance without Redis through the periodic version check.
// Needs CONDUIT_TEST_PG and CONDUIT_TEST_REDIS (scripts/engines.sh); skipped otherwise.
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startMock, startGateway, seed, waitFor, MASTER_KEY } from './harness.mjs';

const PG = process.env.CONDUIT_TEST_PG;
const REDIS = process.env.CONDUIT_TEST_REDIS;
const skip = PG && REDIS ? false : 'needs CONDUIT_TEST_PG and CONDUIT_TEST_REDIS (scripts/engines.sh)';
const DB = `conduit_cfg_${process.pid}_${Date.now()}`;
const psql = (sql) => execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', PG, '-c', sql]);

let mock;
let a;
let b;
let c;
let fx;

const CHAT = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };
async function chat(base, key, model = 'gpt-4o-mini') {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...CHAT, model }),
  });
  await r.text();
  return r.status;
}
/** Waits until `fn()` holds; returns the milliseconds it took. */
async function timeUntil(fn, ms, what) {
  const t0 = Date.now();
  await waitFor(fn, ms, what);
  return Date.now() - t0;
}

before(async () => {
  if (skip) return;
  psql(`CREATE DATABASE ${DB}`);
  const u = new URL(PG);
  u.pathname = `/${DB}`;
  const env = { CONDUIT_MASTER_KEY: MASTER_KEY, CONDUIT_ENCRYPTION_KEY: 'e2e-cluster-encryption-key' };
  const shared = ['--database-url', u.toString()];
  const redis = ['--redis-url', REDIS, '--redis-prefix', `${DB}:`];
  mock = await startMock();
  a = await startGateway([...shared, ...redis], { env });
  fx = await seed(a, mock);
  b = await startGateway([...shared, ...redis], { env });
  c = await startGateway(shared, { env }); // no Redis: only the periodic version check
});

after(async () => {
  for (const g of [a, b, c]) await g?.stop();
  mock?.stop();
  if (!skip) psql(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
});

it('a key created on A works on B within 1 s; revoked on A, B refuses it within 1 s', { skip }, async () => {
  const k = await a.admin('POST', '/api/VirtualKeys', { keyName: 'new', virtualKeyGroupId: fx.group.id });
  const created = await timeUntil(async () => (await chat(b.base, k.virtualKey)) === 200, 1000,
    'the new key accepted by B');
  await a.admin('PUT', `/api/VirtualKeys/${k.keyInfo.id}`, { isEnabled: false });
  const revoked = await timeUntil(async () => (await chat(b.base, k.virtualKey)) === 401, 1000,
    'the revoked key refused by B');
  assert.ok(created <= 1000 && revoked <= 1000, `created ${created} ms, revoked ${revoked} ms`);
  assert.equal(await chat(a.base, k.virtualKey), 401);
});

it('a new mapping and a price change on A apply on B', { skip }, async () => {
  const m = await a.admin('POST', '/api/ModelProviderMapping', {
    modelAlias: 'fresh-model', providerModelId: 'mock-gpt', providerId: fx.provider.id,
  });
  await timeUntil(async () => (await chat(b.base, fx.keys.main, 'fresh-model')) === 200, 1000,
    'the new mapping served by B');
  await a.admin('DELETE', `/api/ModelProviderMapping/${m.id}`);
  await timeUntil(async () => (await chat(b.base, fx.keys.main, 'fresh-model')) === 404, 1000,
    'the deleted mapping gone from B');
});

it('an instance without Redis catches up through the periodic version check', { skip }, async () => {
  const k = await a.admin('POST', '/api/VirtualKeys', { keyName: 'polled', virtualKeyGroupId: fx.group.id });
  const took = await timeUntil(async () => (await chat(c.base, k.virtualKey)) === 200, 8000,
    'the new key accepted by C (no Redis)');
  assert.ok(took <= 8000, `${took} ms`);
});
