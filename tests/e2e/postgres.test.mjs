// The gateway on PostgreSQL (--database-url): configuration, a chat request with the official
// openai client, and its bill all live in the database; a restart on the same database keeps
// them; readiness pings PostgreSQL; the password never reaches the log. Needs CONDUIT_TEST_PG
// (scripts/engines.sh start postgres prints it; `make test` sets it) and psql (installed with
// the engine) to create and drop a fresh database; skipped otherwise.
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import { startMock, startGateway, seed, waitFor } from './harness.mjs';

const PG = process.env.CONDUIT_TEST_PG;
const skip = PG ? false : 'CONDUIT_TEST_PG is not set (scripts/engines.sh start postgres)';

const DB = `conduit_e2e_${process.pid}_${Date.now()}`;
const PASSWORD = 'e2e-Secret-pw';

/** Runs one SQL statement with psql against `url`; returns its unaligned output. */
function psql(url, sql) {
  return execFileSync('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql], {
    encoding: 'utf8',
  }).trim();
}

/** CONDUIT_TEST_PG pointed at database `db`, with a password in its userinfo (the engine trusts
 * loopback connections, so the server never asks for it; it must still never be logged). */
function databaseUrl(db) {
  const u = new URL(PG);
  u.pathname = `/${db}`;
  if (!u.password) u.password = PASSWORD;
  return u.toString();
}

let mock;
let gw;

before(async () => {
  if (skip) return;
  psql(PG, `CREATE DATABASE ${DB}`);
  mock = await startMock();
});

after(async () => {
  await gw?.stop();
  mock?.stop();
  if (!skip) psql(PG, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
});

it('serves and bills a chat request with its data in PostgreSQL, across a restart', { skip }, async () => {
  const url = databaseUrl(DB);
  gw = await startGateway(['--database-url', url], { keepData: true });
  const fx = await seed(gw, mock, { balance: 10 });

  const ready = await (await fetch(`${gw.base}/health/ready`)).json();
  const store = ready.checks.find((c) => c.name === 'store');
  assert.equal(store.status, 'Healthy', store.description);
  assert.match(store.description, /postgresql/);

  const client = new OpenAI({ apiKey: fx.keys.main, baseURL: `${gw.base}/v1`, maxRetries: 0 });
  const res = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'hello from postgres' }],
  });
  assert.equal(res.object, 'chat.completion');
  assert.ok(res.choices[0].message.content.length > 0);
  const expected = Math.round(res.usage.prompt_tokens * 1.0) + Math.round(res.usage.completion_tokens * 2.0);
  assert.ok(expected > 0);

  // The spend flush writes the debit and the request log into PostgreSQL, exactly.
  const row = await waitFor(() => {
    const out = psql(url, `SELECT balance || ',' || lifetime_spent FROM virtual_key_groups WHERE id = ${fx.group.id}`);
    const [balance, spent] = out.split(',').map(Number);
    return spent > 0 ? { balance, spent } : null;
  }, 10000, 'spend flush into postgresql');
  assert.equal(row.spent, expected);
  assert.equal(row.balance, 10_000_000 - expected);
  assert.equal(psql(url, `SELECT COUNT(*) FROM request_logs WHERE virtual_key_id = ${fx.keys.mainId} AND status_code = 200`), '1');
  assert.equal(psql(url, `SELECT COUNT(*) FROM group_transactions WHERE group_id = ${fx.group.id} AND type = 2`), '1');
  // Every migration applied once, in order (versions 1..n without gaps).
  assert.equal(psql(url, 'SELECT COUNT(*) = MAX(version) AND MAX(version) >= 2 FROM schema_migrations'), 't');

  // The log names the engine but never the password.
  assert.match(gw.output(), /store: postgresql /);
  assert.ok(!gw.output().includes(PASSWORD), 'the database password appeared in the log');

  // A restart on the same database finds everything there (the data directory only keeps the
  // generated keys: the encryption key unseals the provider key stored in PostgreSQL).
  await gw.stop();
  gw = await startGateway(['--database-url', url], { dataDir: gw.dataDir });
  const group = await gw.admin('GET', `/api/VirtualKeyGroups/${fx.group.id}`);
  assert.equal(Math.round(group.lifetimeSpent * 1e6), expected);
  const again = await new OpenAI({ apiKey: fx.keys.main, baseURL: `${gw.base}/v1`, maxRetries: 0 })
    .chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'again' }] });
  assert.equal(again.object, 'chat.completion');
  assert.ok(!gw.output().includes(PASSWORD), 'the database password appeared in the log');
});

it('refuses a database URL that is not PostgreSQL, without echoing it', { skip }, async () => {
  await assert.rejects(
    startGateway(['--database-url', `mysql://root:${PASSWORD}@127.0.0.1/conduit`]),
    (e) => {
      assert.match(String(e.message), /postgres:\/\//);
      assert.ok(!String(e.message).includes(PASSWORD), 'the password appeared in the error');
      return true;
    },
  );
});
