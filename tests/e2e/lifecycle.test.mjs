// Process lifecycle of the real binary: first start, master key generation, graceful shutdown
// with in-flight requests, and spend surviving a restart.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startMock, startGateway, seed, waitFor } from './harness.mjs';

const mock = await startMock();
after(() => mock.stop());

describe('first start in embedded mode', () => {
  it('generates a master key once, stores it 0600, prints it once, and it works', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'conduit-e2e-mk-'));
    try {
      const env = { CONDUIT_MASTER_KEY: '', CONDUIT_API_TO_API_BACKEND_AUTH_KEY: '' };
      const keyFile = path.join(dataDir, 'master.key');
      let gw = await startGateway([], { dataDir, env, masterKey: 'unused', keepData: true });
      await waitFor(() => gw.output().includes('Generated a master key'), 5000, 'banner');
      const key = readFileSync(keyFile, 'utf8').trim();
      assert.ok(key.length >= 40);
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);
      assert.ok(gw.output().includes(key), 'the generated key is printed at creation');
      assert.ok(statSync(path.join(dataDir, 'conduit.db')).size > 0, 'SQLite created on first start');
      const ok = await fetch(`${gw.base}/api/VirtualKeyGroups`, { headers: { 'X-API-Key': key } });
      assert.equal(ok.status, 200);
      const bad = await fetch(`${gw.base}/api/VirtualKeyGroups`, { headers: { 'X-API-Key': key + 'x' } });
      assert.equal(bad.status, 401);
      await gw.stop();
      // Second start: same key from the file, not printed again.
      gw = await startGateway([], { dataDir, env, masterKey: key, keepData: true });
      assert.ok(!gw.output().includes(key), 'the key is printed only when generated');
      const again = await fetch(`${gw.base}/api/VirtualKeyGroups`, { headers: { 'Authorization': `Bearer ${key}` } });
      assert.equal(again.status, 200);
      await gw.stop();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('graceful shutdown', () => {
  it('SIGTERM finishes in-flight requests, refuses new ones, flushes spend, exits 0', async () => {
    let gw = await startGateway(['--spend-flush-interval-ms', '60000', '--shutdown-grace-ms', '10000'],
      { keepData: true });
    const fx = await seed(gw, mock);
    const client = new OpenAI({ apiKey: fx.keys.main, baseURL: `${gw.base}/v1`, maxRetries: 0 });
    const before = await gw.admin('GET', `/api/VirtualKeyGroups/${fx.group.id}`);
    const inflight = client.chat.completions.create({
      model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'slow one' }], mock_latency_ms: 800,
    });
    await waitFor(async () => (await mock.stats()).requests_total > 0, 5000, 'request upstream');
    gw.proc.kill('SIGTERM');
    const res = await inflight;  // completes despite the signal
    assert.ok(res.choices[0].message.content.length > 0);
    await assert.rejects(fetch(`${gw.base}/health/live`), 'new connections are refused');
    const { code } = await gw.exited;
    assert.equal(code, 0);
    // The spend of that request was flushed at shutdown (the interval was 60 s).
    gw = await startGateway([], { dataDir: gw.dataDir });
    const afterRestart = await gw.admin('GET', `/api/VirtualKeyGroups/${fx.group.id}`);
    assert.ok(afterRestart.lifetimeSpent > before.lifetimeSpent, 'spend flushed before exit');
    const logs = await gw.admin('GET', `/api/Analytics/logs?virtualKeyGroupId=${fx.group.id}`);
    assert.ok(logs.data.some((l) => l.statusCode === 200));
    await gw.stop();
  });
});
