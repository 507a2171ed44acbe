// Starts the real binaries (mock provider + gateway) on free ports with a fresh data directory,
// and seeds configuration through the admin API. Shared by the e2e suites.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';

export const CONDUIT_BIN = process.env.CONDUIT_BIN ?? path.resolve('../../build/release/conduit');
export const MOCK_BIN =
  process.env.MOCK_BIN ?? path.resolve('../../build/release/conduit-mock-provider');
export const MASTER_KEY = 'e2e-master-key-0123456789';
export const UPSTREAM_KEY = 'sk-mock-upstream-key';

/** Spawns a process and resolves with {proc, port} once `pattern` (with a port group) shows up. */
function spawnAndWaitForPort(bin, args, pattern, env = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${path.basename(bin)} did not start:\n${out}`));
    }, 15000);
    const onData = (d) => {
      out += d.toString();
      const m = out.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, port: Number(m[1]), output: () => out });
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(bin)} exited with ${code}:\n${out}`));
    });
  });
}

export async function startMock(extraArgs = []) {
  const { proc, port } = await spawnAndWaitForPort(
    MOCK_BIN,
    ['--listen', '127.0.0.1:0', '--threads', '2', '--require-key', UPSTREAM_KEY, ...extraArgs],
    /listening on http:\/\/[^:]+:(\d+)/,
  );
  const base = `http://127.0.0.1:${port}`;
  return {
    proc,
    port,
    base,
    async stats() {
      return (await fetch(`${base}/mock/stats`)).json();
    },
    async release(token) {
      return (await fetch(`${base}/mock/release/${encodeURIComponent(token)}`, { method: 'POST' })).status;
    },
    async reset() {
      await fetch(`${base}/mock/reset`, { method: 'POST' });
    },
    stop() {
      proc.kill('SIGTERM');
    },
  };
}

export async function startGateway(extraArgs = [], opts = {}) {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'conduit-e2e-'));
  const env = opts.env ?? { CONDUIT_MASTER_KEY: MASTER_KEY };
  const masterKey = opts.masterKey ?? env.CONDUIT_MASTER_KEY ?? MASTER_KEY;
  const { proc, port, output } = await spawnAndWaitForPort(
    CONDUIT_BIN,
    ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--threads', '2',
      '--spend-flush-interval-ms', '200', ...extraArgs],
    /listening on http:\/\/[^:]+:(\d+)/,
    env,
  );
  const base = `http://127.0.0.1:${port}`;
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  const gw = {
    proc,
    port,
    base,
    dataDir,
    output,
    exited,
    async admin(method, route, body) {
      const res = await fetch(`${base}${route}`, {
        method,
        headers: { 'X-API-Key': masterKey, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let json = null;
      try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
      if (!res.ok) {
        const err = new Error(`admin ${method} ${route} → ${res.status}: ${text}`);
        err.status = res.status;
        err.body = json;
        throw err;
      }
      return json;
    },
    /** SIGTERM, wait for exit; removes the data directory unless `keepData`. */
    async stop({ keepData = opts.keepData ?? false } = {}) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
      }
      const result = await exited;
      if (!keepData) {
        rmSync(dataDir, { recursive: true, force: true });
      }
      return result;
    },
  };
  return gw;
}

/**
 * Seeds: a provider pointing at the mock, chat/embedding/image mappings with prices, a funded
 * group, an empty group, and keys (full, restricted to embeddings, broke, disabled).
 */
export async function seed(gw, mock, { balance = 100 } = {}) {
  const provider = await gw.admin('POST', '/api/ProviderCredentials', {
    providerType: 'openai-compatible',
    providerName: 'mock',
    baseUrl: `${mock.base}/v1`,
    apiKey: UPSTREAM_KEY,
  });
  const chat = await gw.admin('POST', '/api/ModelProviderMapping', {
    modelAlias: 'gpt-4o-mini', providerModelId: 'mock-gpt', providerId: provider.id,
  });
  const embed = await gw.admin('POST', '/api/ModelProviderMapping', {
    modelAlias: 'text-embedding-3-small', providerModelId: 'mock-embed', providerId: provider.id,
    supportsChat: false, supportsEmbeddings: true,
  });
  const image = await gw.admin('POST', '/api/ModelProviderMapping', {
    modelAlias: 'dall-e-3', providerModelId: 'mock-image', providerId: provider.id,
    supportsChat: false, supportsImageGeneration: true,
  });
  await gw.admin('POST', '/api/ModelCosts', {
    costName: 'chat', modelProviderMappingIds: [chat.id],
    inputCostPerMillionTokens: 1.0, outputCostPerMillionTokens: 2.0,
  });
  await gw.admin('POST', '/api/ModelCosts', {
    costName: 'embed', modelProviderMappingIds: [embed.id], embeddingCostPerMillionTokens: 0.5,
  });
  await gw.admin('POST', '/api/ModelCosts', {
    costName: 'image', modelProviderMappingIds: [image.id], imageCostPerImage: 0.04,
  });
  const group = await gw.admin('POST', '/api/VirtualKeyGroups', { groupName: 'e2e', initialBalance: balance });
  const broke = await gw.admin('POST', '/api/VirtualKeyGroups', { groupName: 'broke', initialBalance: 0 });
  const key = await gw.admin('POST', '/api/VirtualKeys', { keyName: 'main', virtualKeyGroupId: group.id });
  const restricted = await gw.admin('POST', '/api/VirtualKeys', {
    keyName: 'embeddings-only', virtualKeyGroupId: group.id, allowedModels: 'text-embedding*',
  });
  const brokeKey = await gw.admin('POST', '/api/VirtualKeys', { keyName: 'broke', virtualKeyGroupId: broke.id });
  const disabled = await gw.admin('POST', '/api/VirtualKeys', {
    keyName: 'disabled', virtualKeyGroupId: group.id, isEnabled: false,
  });
  return {
    provider, group, broke,
    mappings: { chat, embed, image },
    keys: {
      main: key.virtualKey,
      mainId: key.keyInfo.id,
      restricted: restricted.virtualKey,
      broke: brokeKey.virtualKey,
      disabled: disabled.virtualKey,
    },
  };
}

/** Opens a raw TCP connection (for protocol-level tests). */
export function rawConnect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves with everything the socket sends until it closes (or rejects after `ms`). */
export function readUntilClose(socket, ms) {
  return new Promise((resolve, reject) => {
    let data = '';
    const timer = setTimeout(() => reject(new Error(`socket still open after ${ms} ms; got: ${data}`)), ms);
    socket.on('data', (d) => { data += d.toString(); });
    socket.on('close', () => { clearTimeout(timer); resolve(data); });
  });
}

/** Polls `fn` until it returns a truthy value (or throws after `ms`). */
export async function waitFor(fn, ms = 10000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
