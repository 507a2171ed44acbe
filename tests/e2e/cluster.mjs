// A Conduit cluster for the e2e suites: N gateway instances sharing PostgreSQL (a fresh database
// per cluster), Redis (own key prefix) and RabbitMQ (the conduit_e2e_cluster vhost), behind
// nginx rendered from deploy/nginx/conduit.conf (deploy/nginx/render.sh) and run unprivileged in
// a temporary prefix directory. Engines come from scripts/engines.sh: CONDUIT_TEST_PG,
// CONDUIT_TEST_REDIS and CONDUIT_TEST_AMQP.
import { spawn, execFileSync } from 'node:child_process';
import {
  chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGateway, freePort, waitFor, apiCall, adminCall, MASTER_KEY, UPSTREAM_KEY } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const RENDER = path.resolve(HERE, '../../deploy/nginx/render.sh');
export const NGINX_BIN = process.env.NGINX_BIN ?? '/usr/sbin/nginx';

/** Why a cluster cannot start here (missing engine or nginx), or false. */
export function clusterSkipReason() {
  const missing = ['CONDUIT_TEST_PG', 'CONDUIT_TEST_REDIS', 'CONDUIT_TEST_AMQP'].filter((v) => !process.env[v]);
  if (missing.length) return `needs ${missing.join(', ')} (scripts/engines.sh start all)`;
  if (!existsSync(NGINX_BIN)) return `needs nginx (${NGINX_BIN}; apt-get install nginx)`;
  return false;
}

function psql(url, sql) {
  return execFileSync('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

function rabbitmqctl(args) {
  const prefix = process.env.CONDUIT_RABBITMQCTL
    ? process.env.CONDUIT_RABBITMQCTL.split(' ').filter(Boolean)
    : ['runuser', '-u', 'rabbitmq', '--', 'env', 'HOME=/var/lib/rabbitmq',
      'ERL_EPMD_ADDRESS=127.0.0.1', '/usr/lib/rabbitmq/bin/rabbitmqctl', '-q',
      '-n', process.env.CONDUIT_RABBITMQ_NODE ?? 'conduit@localhost'];
  return execFileSync(prefix[0], [...prefix.slice(1), ...args], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000,
  });
}

// Processes this module started and has not stopped yet: killed if the test process exits first
// (a cancelled or timed-out suite), so no instance outlives its test holding queue partitions.
const live = new Set();
function killLive() {
  for (const p of live) {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}
process.once('exit', killLive);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    killLive();
    process.kill(process.pid, signal);  // the default action, now that the listener is gone
  });
}
function track(proc) {
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
}

/**
 * The RabbitMQ vhost of the e2e clusters (CONDUIT_E2E_VHOST, default conduit_e2e_cluster),
 * created when missing and never deleted: on RabbitMQ 3.10, deleting a vhost of quorum queues
 * right after its consumers left has wedged the broker's vhost supervisor (new vhosts, then every
 * login, hung). Clusters run one after the other, so they take turns on its queues; a message a
 * stopped cluster left behind names a task or delivery the next cluster's database does not have.
 * Null (the default vhost) when rabbitmqctl is unusable.
 */
function clusterVhost(user) {
  const name = process.env.CONDUIT_E2E_VHOST ?? 'conduit_e2e_cluster';
  try {
    const have = rabbitmqctl(['list_vhosts', '--no-table-headers']).split('\n').map((l) => l.trim());
    if (!have.includes(name)) {
      rabbitmqctl(['add_vhost', name]);
      rabbitmqctl(['set_permissions', '-p', name, user, '.*', '.*', '.*']);
    }
    return name;
  } catch (e) {
    console.log(`# rabbitmqctl unavailable (${String(e.message).split('\n')[0]}): using the default vhost`);
    return null;
  }
}

/**
 * Renders deploy/nginx/conduit.conf for `nodes` ("host:port" each) and starts nginx on
 * 127.0.0.1:`port` as a foreground process with its own prefix directory (config, pid, temp
 * files, logs). Resolves once nginx accepts connections. `template`: another template to render.
 */
export async function startNginx(nodes, { port, maxBody = 33554432, template } = {}) {
  const listenPort = port ?? await freePort();
  const prefix = mkdtempSync(path.join(tmpdir(), 'conduit-nginx-'));
  // nginx started as root runs its workers as nobody: they must reach the temp directories.
  chmodSync(prefix, 0o755);
  const accessLog = path.join(prefix, 'access.log');
  const errorLog = path.join(prefix, 'error.log');
  const conduitConf = execFileSync('sh', [RENDER, '--listen', `127.0.0.1:${listenPort}`,
    '--max-body', String(maxBody), '--access-log', accessLog, ...(template ? ['--template', template] : []), ...nodes],
  { encoding: 'utf8' });
  writeFileSync(path.join(prefix, 'conduit.conf'), conduitConf);
  writeFileSync(path.join(prefix, 'nginx.conf'), [
    'worker_processes 1;',
    `pid ${path.join(prefix, 'nginx.pid')};`,
    `error_log ${errorLog} warn;`,
    'events { worker_connections 4096; }',
    'http {',
    `    client_body_temp_path ${path.join(prefix, 'client_body')};`,
    `    proxy_temp_path ${path.join(prefix, 'proxy')};`,
    `    fastcgi_temp_path ${path.join(prefix, 'fastcgi')};`,
    `    uwsgi_temp_path ${path.join(prefix, 'uwsgi')};`,
    `    scgi_temp_path ${path.join(prefix, 'scgi')};`,
    `    include ${path.join(prefix, 'conduit.conf')};`,
    '}',
    '',
  ].join('\n'));
  const proc = spawn(NGINX_BIN, ['-p', prefix, '-e', errorLog, '-c', path.join(prefix, 'nginx.conf'),
    '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(proc);
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  const base = `http://127.0.0.1:${listenPort}`;
  const readLog = (file) => (existsSync(file) ? readFileSync(file, 'utf8') : '');
  try {
    await waitFor(async () => {
      if (proc.exitCode !== null) throw new Error(`nginx exited ${proc.exitCode}: ${out}${readLog(errorLog)}`);
      try {
        await (await fetch(`${base}/health/live`)).text();
        return true;
      } catch {
        return false;
      }
    }, 10000, 'nginx listening');
  } catch (e) {
    proc.kill('SIGKILL');
    rmSync(prefix, { recursive: true, force: true });
    throw e;
  }
  return {
    proc,
    port: listenPort,
    base,
    prefix,
    config: conduitConf,
    /** Parsed access-log lines: {method, uri, status, upstream (last address tried)}. */
    accessLog() {
      return readLog(accessLog).split('\n').filter(Boolean).map((line) => {
        const m = line.match(/"(\S+) (\S+) [^"]*" (\d+) \d+ \S+ upstream=(\S*(?:, \S+)*) /);
        if (!m) return { line };
        const ups = m[4].split(', ');
        return { method: m[1], uri: m[2], status: Number(m[3]), upstream: ups.at(-1), line };
      });
    },
    errorLog: () => readLog(errorLog),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      rmSync(prefix, { recursive: true, force: true });
    },
  };
}

/**
 * Starts `n` gateway instances on shared engines, then nginx in front of them. `args` are added
 * to every instance's command line. Each cluster has its own PostgreSQL database (dropped by
 * stop()) and Redis prefix; RabbitMQ: see clusterVhost(). Resolves with
 *   {base (nginx), nginx, instances: [gateway as harness.startGateway returns], admin(...) (via
 *    instance 0), database, redisPrefix, vhost, mediaDir, stop()}.
 */
export async function startCluster({ n = 3, args = [], env = {}, name = 'cluster' } = {}) {
  const reason = clusterSkipReason();
  if (reason) throw new Error(reason);
  const tag = `${name}_${process.pid}_${Date.now()}`.replace(/[^A-Za-z0-9_]/g, '_').toLowerCase();
  const cluster = { instances: [], nginx: null, vhost: null, database: null, mediaDir: null };
  const cleanup = async () => {
    await cluster.nginx?.stop().catch(() => {});
    await Promise.all(cluster.instances.map((g) => g.stop().catch(() => {})));
    if (cluster.mediaDir) rmSync(cluster.mediaDir, { recursive: true, force: true });
    if (cluster.database) {
      try { psql(process.env.CONDUIT_TEST_PG, `DROP DATABASE IF EXISTS ${cluster.database} WITH (FORCE)`); } catch { /* best effort */ }
    }
  };
  try {
    psql(process.env.CONDUIT_TEST_PG, `CREATE DATABASE ${tag}`);
    cluster.database = tag;
    const dbUrl = new URL(process.env.CONDUIT_TEST_PG);
    dbUrl.pathname = `/${tag}`;
    const amqp = new URL(process.env.CONDUIT_TEST_AMQP);
    const user = decodeURIComponent(amqp.username || 'guest');
    cluster.vhost = clusterVhost(user);
    cluster.redisPrefix = `${tag}:`;
    cluster.mediaDir = mkdtempSync(path.join(tmpdir(), 'conduit-cluster-media-'));
    const nginxPort = await freePort();
    const common = [
      '--database-url', dbUrl.toString(),
      '--redis-url', process.env.CONDUIT_TEST_REDIS, '--redis-prefix', cluster.redisPrefix,
      '--rabbitmq-host', amqp.hostname, '--rabbitmq-port', amqp.port || '5672',
      '--rabbitmq-username', user, '--rabbitmq-password', decodeURIComponent(amqp.password || 'guest'),
      ...(cluster.vhost ? ['--rabbitmq-vhost', cluster.vhost] : []),
      // Media written by one instance's worker is served by any instance.
      '--media-dir', cluster.mediaDir,
      '--public-base-url', `http://127.0.0.1:${nginxPort}`,
      ...args,
    ];
    const instanceEnv = {
      CONDUIT_MASTER_KEY: MASTER_KEY,
      // Every instance must decrypt the provider credentials another one stored.
      CONDUIT_ENCRYPTION_KEY: `e2e-${tag}-encryption-key`,
      ...env,
    };
    // Instance 0 first (it applies the migrations), then the others together: the advisory lock
    // makes concurrent start-ups safe too, but a failure is easier to read this way.
    cluster.instances.push(await startGateway(common, { env: instanceEnv, single: true }));
    track(cluster.instances[0].proc);
    const rest = await Promise.allSettled(
      Array.from({ length: n - 1 }, () => startGateway(common, { env: instanceEnv, single: true })));
    for (const r of rest) {
      if (r.status === 'fulfilled') {
        cluster.instances.push(r.value);
        track(r.value.proc);
      }
    }
    const failed = rest.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    // nginx refuses what the instances would refuse (same body limit).
    const bodyFlag = args.indexOf('--max-body-bytes');
    const maxBody = bodyFlag >= 0 ? Number(args[bodyFlag + 1]) : undefined;
    cluster.nginx = await startNginx(cluster.instances.map((g) => `127.0.0.1:${g.port}`), { port: nginxPort, maxBody });
  } catch (e) {
    await cleanup();
    throw e;
  }
  const { instances, nginx } = cluster;
  return {
    ...cluster,
    base: nginx.base,
    port: nginx.port,
    admin: (...a) => instances[0].admin(...a),
    /** Index of the instance listening on "host:port" (as nginx logs it), or -1. */
    indexOf: (addr) => instances.findIndex((g) => addr === `127.0.0.1:${g.port}`),
    /** Waits until `probe(instance)` holds on every instance (config propagation). */
    async onAll(probe, ms = 5000, what = 'condition on every instance') {
      await waitFor(async () => (await Promise.all(instances.map(probe))).every(Boolean), ms, what);
    },
    output: () => instances.map((g, i) => `--- instance ${i}\n${g.output()}`).join('\n'),
    stop: cleanup,
  };
}

/**
 * The pid, among `pids`, of the process holding the client end of the loopback TCP connection
 * from `clientPort` to `serverPort` (from /proc/net/tcp* and /proc/<pid>/fd), or null.
 */
export function ownerOfConnection(clientPort, serverPort, pids) {
  const hex = (p) => p.toString(16).toUpperCase().padStart(4, '0');
  let inode = null;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(table)) continue;
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      if (f[1].endsWith(`:${hex(clientPort)}`) && f[2].endsWith(`:${hex(serverPort)}`)) inode = f[9];
    }
  }
  if (!inode) return null;
  const link = `socket:[${inode}]`;
  for (const pid of pids) {
    let fds = [];
    try { fds = readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === link) return pid;
      } catch { /* closed meanwhile */ }
    }
  }
  return null;
}

/**
 * A loopback TCP relay to 127.0.0.1:`targetPort` that records which process opened each
 * connection (`pids()` lists the candidates) and how many HTTP requests with a request line
 * matching `count` it carried: `requests` maps pid (or null) → count.
 */
export async function startTap(targetPort, pids, count = /^(GET|POST|PUT|DELETE) /gm) {
  const requests = new Map();
  const sockets = new Set();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    const owner = ownerOfConnection(client.remotePort, server.address().port, pids());
    const upstream = net.connect(targetPort, '127.0.0.1');
    client.on('data', (d) => {
      const n = (d.toString('latin1').match(count) ?? []).length;
      if (n) requests.set(owner, (requests.get(owner) ?? 0) + n);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    requests,
    close() {
      return new Promise((r) => { server.close(() => r()); for (const s of sockets) s.destroy(); });
    },
  };
}

/**
 * Adds an image model `dall-e-tap` served by the mock through a tap (startTap on `mockPort`), so
 * a test can tell which instance's worker called the provider, and waits until every instance of
 * `cl` lists it for `key`. Returns the tap.
 */
export async function addTappedImageModel(cl, mockPort, key) {
  const tap = await startTap(mockPort, () => cl.instances.map((g) => g.proc.pid));
  const tapped = await cl.admin('POST', '/api/ProviderCredentials', {
    providerType: 'openai-compatible', providerName: 'mock-tap', baseUrl: `${tap.base}/v1`, apiKey: UPSTREAM_KEY,
  });
  await cl.admin('POST', '/api/ModelProviderMapping', {
    modelAlias: 'dall-e-tap', providerModelId: 'mock-image', providerId: tapped.id,
    supportsChat: false, supportsImageGeneration: true,
  });
  // The configuration written through instance 0 has reached every instance.
  await cl.onAll(async (g) => {
    const r = await apiCall(g.base, key, 'GET', '/v1/models');
    return r.status === 200 && r.json.data.some((m) => m.id === 'dall-e-tap');
  }, 5000, 'the seeded configuration on every instance');
  return tap;
}

// ---------------------------------------------------------------------------------------------
// CONDUIT_E2E_CLUSTER=N: harness.startGateway() starts an N-instance cluster behind nginx instead
// of one gateway, so the existing suites run with their requests spread over the instances.

/** Options that mean "this test manages its own engines, data directory or restarts". */
const SINGLE_ONLY = ['--database-url', '--redis-url', '--rabbitmq-host', '--listen', '--data-dir', '--roles'];

/** True when startGateway(extraArgs, opts) should start a cluster (see harness.startGateway). */
export function wantsCluster(extraArgs, opts) {
  const n = Number(process.env.CONDUIT_E2E_CLUSTER ?? 0);
  if (!(n > 1) || opts.single) return false;
  if (opts.dataDir || opts.keepData) return false;
  return !extraArgs.some((a) => SINGLE_ONLY.includes(String(a).split('=')[0]));
}

/**
 * A cluster with the interface of harness.startGateway's result: base/port are nginx's; proc,
 * dataDir and exited are instance 0's; output() joins every instance's log. admin() goes
 * through nginx and, after a write, waits until every instance has reloaded its configuration
 * (a sentinel key is toggled and probed on each instance: reloads are whole snapshots taken in
 * order, so once the sentinel change is visible everywhere the earlier write is too).
 */
export async function startClusterGateway(extraArgs, opts) {
  const n = Number(process.env.CONDUIT_E2E_CLUSTER);
  const cl = await startCluster({
    n, args: extraArgs, env: opts.env ? { ...opts.env } : {}, name: 'e2e',
  });
  const masterKey = opts.masterKey ?? opts.env?.CONDUIT_MASTER_KEY ?? MASTER_KEY;
  const [first] = cl.instances;
  const call = (base, method, route, body) => adminCall(base, masterKey, method, route, body);
  let sentinel = null;
  const barrier = async () => {
    if (!sentinel) {
      const g = await call(first.base, 'POST', '/api/VirtualKeyGroups', { groupName: '__e2e_cluster_barrier', initialBalance: 0 });
      const k = await call(first.base, 'POST', '/api/VirtualKeys', { keyName: '__e2e_cluster_barrier', virtualKeyGroupId: g.id });
      sentinel = { id: k.keyInfo.id, key: k.virtualKey, enabled: true };
    } else {
      sentinel.enabled = !sentinel.enabled;
      await call(first.base, 'PUT', `/api/VirtualKeys/${sentinel.id}`, { isEnabled: sentinel.enabled });
    }
    const want = sentinel.enabled ? 200 : 401;
    await waitFor(async () => {
      const got = await Promise.all(cl.instances.map(async (g) => {
        const r = await fetch(`${g.base}/v1/models`, { headers: { Authorization: `Bearer ${sentinel.key}` } });
        await r.arrayBuffer();
        return r.status;
      }));
      return got.every((s) => s === want);
    }, 5000, 'the configuration on every instance');
  };
  return {
    proc: first.proc,
    port: cl.port,
    base: cl.base,
    dataDir: first.dataDir,
    output: cl.output,
    exited: first.exited,
    cluster: cl,
    async admin(method, route, body) {
      const json = await call(cl.base, method, route, body);
      if (method !== 'GET') await barrier();
      return json;
    },
    async stop() {
      const result = await first.stop();
      await cl.stop();
      return result;
    },
  };
}
