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

/**
 * One admin API call with the master key: the parsed JSON answer (null when empty); throws an
 * Error carrying `status` and `body` on a non-2xx answer.
 */
export async function adminCall(base, masterKey, method, route, body) {
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
}

export async function startGateway(extraArgs = [], opts = {}) {
  if (process.env.CONDUIT_E2E_CLUSTER) {
    // CONDUIT_E2E_CLUSTER=N: an N-instance cluster behind nginx (tests/e2e/cluster.mjs).
    const cluster = await import('./cluster.mjs');
    if (cluster.wantsCluster(extraArgs, opts)) return cluster.startClusterGateway(extraArgs, opts);
  }
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
    admin(method, route, body) {
      return adminCall(base, masterKey, method, route, body);
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

// ---------------------------------------------------------------------------------------------
// Async tasks and webhooks (tasks.test.mjs, webhooks.test.mjs)
// (ES imports are hoisted: these work from here, keeping the additions in one place.)
import http from 'node:http';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** Adds a video mapping (`alias` → the mock's `sora-2`) on the seeded mock provider. */
export async function seedVideo(gw, fx, { alias = 'sora', providerModelId = 'sora-2' } = {}) {
  return gw.admin('POST', '/api/ModelProviderMapping', {
    modelAlias: alias, providerModelId, providerId: fx.provider.id,
    supportsChat: false, supportsVideoGeneration: true,
  });
}

/**
 * One request with a virtual key (Bearer). `body` is JSON-encoded unless it is a string.
 * Resolves with {status, headers, text, json} (json null when the body is not JSON).
 */
export async function apiCall(base, key, method, route, { body, headers = {} } = {}) {
  const h = { ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  if (body !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) {
    h['Content-Type'] = 'application/json';
  }
  const res = await fetch(`${base}${route}`, {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

/**
 * A raw HTTP/1.1 request through node:http: the path is sent exactly as given (fetch would
 * normalise `..` and percent-escapes away). Resolves with {status, headers, body: Buffer}.
 */
export async function rawHttp(port, method, rawPath, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: rawPath, headers, agent: false }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export function sha256Hex(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

/**
 * Verifies a Standard Webhooks request with Node's own crypto (independent of the gateway's
 * implementation): `secret` is "whsec_<base64>", the signed content is id.timestamp.body, the
 * header holds space-separated "v1,<base64>" signatures. True when any of them matches.
 */
export function verifyWebhookSignature(secret, headers, body) {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sigHeader = headers['webhook-signature'];
  if (!id || !ts || !sigHeader) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest();
  let ok = false;
  for (const part of String(sigHeader).split(' ')) {
    if (!part.startsWith('v1,')) continue;
    const got = Buffer.from(part.slice(3), 'base64');
    if (got.length === expected.length && timingSafeEqual(got, expected)) ok = true;
  }
  return ok;
}

/**
 * A local webhook receiver (node:http on a free loopback port). Every request is recorded as
 * {method, path, headers, body, at}; `respond(req, n)` (n = index of the request) picks the
 * answer {status, headers?, body?} (default 200). `url(path)` builds a delivery URL. `port` 0 =
 * any free port.
 */
export async function startReceiver(respond = () => ({ status: 200 }), { port: listenPort = 0 } = {}) {
  const requests = [];
  let responder = respond;
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const rec = {
        method: req.method, path: req.url, headers: req.headers,
        body: Buffer.concat(parts).toString('utf8'), at: Date.now(),
      };
      requests.push(rec);
      const answer = responder(rec, requests.length - 1) ?? { status: 200 };
      res.writeHead(answer.status ?? 200, { 'Content-Type': 'text/plain', ...(answer.headers ?? {}) });
      res.end(answer.body ?? 'ok');
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    requests,
    url: (p = '/hook') => `http://127.0.0.1:${port}${p}`,
    setResponder(fn) { responder = fn; },
    /** The requests whose path is `p`. */
    at(p) { return requests.filter((r) => r.path === p); },
    close() {
      server.closeAllConnections?.();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** A loopback port that was free a moment ago (nothing listens on it). */
export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** The value of one Prometheus sample (`labels` must match exactly the ones given); 0 if absent. */
export async function metricValue(base, name, labels = {}) {
  const text = await (await fetch(`${base}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = line.match(/^([^{\s]+)(?:\{(.*)\})?\s+(\S+)/);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) total += Number(m[3]);
  }
  return total;
}
