// Signed task webhooks (Standard Webhooks), end to end: the real `conduit` binary finishing
// async tasks on the real mock provider and delivering to a local node:http receiver, which
// verifies every signature with Node's own crypto (an implementation independent of the
// gateway's). Retries, Retry-After, dead letters and redelivery, the per-host circuit breaker,
// secret rotation and the admin routes.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startGateway, seed, seedVideo, waitFor, apiCall, startReceiver, freePort,
  verifyWebhookSignature, metricValue, MASTER_KEY,
} from './harness.mjs';

const FLAGS = [
  '--task-poll-interval-ms', '100',
  '--task-sweep-interval-ms', '200',
  '--webhook-max-retries', '3',
  '--webhook-retry-base-ms', '200',
  // Above 1 s so that an honoured `Retry-After: 1` is not capped (the flag's help says it caps
  // Retry-After too).
  '--webhook-retry-max-ms', '2000',
  '--webhook-timeout-ms', '3000',
  // Each test has its own receiver (its own host:port breaker); the breaker test runs its own
  // gateway with a low threshold.
  '--webhook-breaker-failures', '1000',
];

let mock;
let gw;
let fx;
const receivers = [];

before(async () => {
  mock = await startMock(['--job-duration-ms', '800']);
  gw = await startGateway(FLAGS);
  fx = await seed(gw, mock);
  await seedVideo(gw, fx);
});

after(async () => {
  await gw?.stop();
  mock?.stop();
});

afterEach(async () => {
  while (receivers.length) await receivers.pop().close();
});

// --- helpers ---------------------------------------------------------------------------------

async function receiver(respond, opts) {
  const r = await startReceiver(respond, opts);
  receivers.push(r);
  return r;
}

async function newKey(name) {
  const k = await gw.admin('POST', '/api/VirtualKeys', { keyName: name, virtualKeyGroupId: fx.group.id });
  return { key: k.virtualKey, id: k.keyInfo.id };
}

async function rotate(g, keyId, body) {
  const res = await fetch(`${g.base}/api/VirtualKeys/${keyId}/webhook-secret`, {
    method: 'POST',
    headers: { 'X-API-Key': MASTER_KEY, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  assert.equal(res.headers.get('cache-control'), 'no-store');
  assert.match(json.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
  assert.ok(Buffer.from(json.secret.slice(6), 'base64').length >= 24, 'a strong HMAC key');
  return json;
}

async function submit(g, key, extra = {}) {
  const res = await apiCall(g.base, key, 'POST', '/v1/videos/generations/async', {
    body: { model: 'sora', prompt: 'a webhook heron', mock_job_duration_ms: 0, ...extra },
  });
  assert.equal(res.status, 202, res.text);
  return res.json.task_id;
}

const bodyOf = (req) => JSON.parse(req.body);
const ofTask = (recv, taskId) => recv.requests.filter((r) => bodyOf(r).task_id === taskId);

async function deliveries(g, query = '') {
  const res = await fetch(`${g.base}/api/webhooks/deliveries${query}`, { headers: { 'X-API-Key': MASTER_KEY } });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json.data;
}

async function delivery(g, id) {
  const res = await fetch(`${g.base}/api/webhooks/deliveries/${encodeURIComponent(id)}`, { headers: { 'X-API-Key': MASTER_KEY } });
  return { status: res.status, json: await res.json() };
}

const waitDelivery = (g, id, pred, ms = 10000, what = 'delivery state') => waitFor(async () => {
  const d = await delivery(g, id);
  return d.status === 200 && pred(d.json) ? d.json : null;
}, ms, `${what} of ${id}`);

const nowS = () => Math.floor(Date.now() / 1000);

// --- tests -----------------------------------------------------------------------------------

describe('signed deliveries', () => {
  it('a completed task → one signed task.completed with exactly the documented fields and the caller headers', async () => {
    const { key, id: keyId } = await newKey('signed');
    const { secret } = await rotate(gw, keyId);
    const recv = await receiver();
    const taskId = await submit(gw, key, {
      mock_job_duration_ms: 1000,
      webhook_url: recv.url('/done?src=e2e'),
      webhook_headers: { 'X-Tenant': 'acme', Authorization: 'Bearer caller-token' },
    });

    const completed = await waitFor(
      () => recv.requests.find((r) => bodyOf(r).type === 'task.completed'), 10000, 'task.completed webhook');
    const task = (await apiCall(gw.base, key, 'GET', `/v1/tasks/${taskId}`)).json;
    assert.equal(task.status, 'completed');

    // Headers: Standard Webhooks + the caller's own.
    const h = completed.headers;
    assert.equal(completed.method, 'POST');
    assert.equal(completed.path, '/done?src=e2e');
    assert.match(h['content-type'], /^application\/json/);
    assert.match(h['webhook-id'], /^msg_/);
    assert.match(h['webhook-timestamp'], /^\d+$/);
    assert.ok(Math.abs(Number(h['webhook-timestamp']) - nowS()) <= 5, 'timestamp is the send time');
    assert.match(h['webhook-signature'], /^v1,[A-Za-z0-9+/]+=*$/);
    assert.ok(verifyWebhookSignature(secret, h, completed.body), 'signature verifies with the key secret');
    assert.equal(h['x-tenant'], 'acme');
    assert.equal(h.authorization, 'Bearer caller-token');

    // The verifier is not a rubber stamp.
    assert.ok(!verifyWebhookSignature(secret, h, completed.body.replace('completed', 'c0mpleted')));
    assert.ok(!verifyWebhookSignature(secret, { ...h, 'webhook-timestamp': String(Number(h['webhook-timestamp']) + 1) }, completed.body));
    assert.ok(!verifyWebhookSignature(`whsec_${Buffer.alloc(32, 7).toString('base64')}`, h, completed.body));

    // Payload: exactly the documented fields.
    const p = bodyOf(completed);
    assert.deepEqual(Object.keys(p).sort(), ['progress', 'result', 'status', 'task_id', 'task_type', 'timestamp', 'type']);
    assert.equal(p.type, 'task.completed');
    assert.equal(p.task_id, taskId);
    assert.equal(p.task_type, 'video_generation');
    assert.equal(p.status, 'completed');
    assert.equal(p.progress, 100);
    assert.deepEqual(p.result, task.result);
    assert.ok(p.result.data[0].url.startsWith(`${gw.base}/v1/media/`));
    assert.ok(Math.abs(Date.parse(p.timestamp) - Date.now()) < 10000, p.timestamp);

    // Progress webhooks (quarter marks) are signed the same way, with ids of their own.
    const progress = recv.requests.filter((r) => bodyOf(r).type === 'task.progress');
    assert.ok(progress.length >= 1, 'at least one task.progress webhook for a 1 s job polled every 100 ms');
    const ids = new Set([h['webhook-id']]);
    for (const r of progress) {
      assert.ok(verifyWebhookSignature(secret, r.headers, r.body));
      const b = bodyOf(r);
      assert.deepEqual(Object.keys(b).sort(), ['progress', 'status', 'task_id', 'task_type', 'timestamp', 'type']);
      assert.equal(b.status, 'running');
      assert.ok(b.progress >= 25 && b.progress < 100, `progress ${b.progress}`);
      assert.equal(r.headers['x-tenant'], 'acme');
      assert.ok(!ids.has(r.headers['webhook-id']), 'each event has its own webhook-id');
      ids.add(r.headers['webhook-id']);
    }

    // The delivery record: delivered in one attempt; header names only, never their values.
    const rec = await waitDelivery(gw, h['webhook-id'], (d) => d.status === 'delivered', 5000);
    assert.equal(rec.taskId, taskId);
    assert.equal(rec.virtualKeyId, keyId);
    assert.equal(rec.eventType, 'task.completed');
    assert.equal(rec.url, recv.url('/done?src=e2e'));
    assert.equal(rec.attempts, 1);
    assert.equal(rec.lastStatusCode, 200);
    assert.ok(rec.deliveredAt);
    assert.deepEqual([...rec.headerNames].sort(), ['Authorization', 'X-Tenant']);
    assert.deepEqual(rec.payload, p);
    const listed = await deliveries(gw, `?taskId=${taskId}`);
    assert.equal(listed.length, 1 + progress.length);
    assert.ok(listed.every((d) => d.status === 'delivered' && d.taskId === taskId));
    assert.ok(!JSON.stringify(listed).includes('caller-token'), 'header values are not listed');
    // Exactly one completed event reached the receiver.
    assert.equal(ofTask(recv, taskId).filter((r) => bodyOf(r).type === 'task.completed').length, 1);
  });

  it('failed and cancelled tasks → task.failed (with error, no result) and task.cancelled', async () => {
    const { key, id: keyId } = await newKey('failures');
    const { secret } = await rotate(gw, keyId);
    const recv = await receiver();
    const failedId = await submit(gw, key, { mock_job_fail_status: 400, webhook_url: recv.url('/f') });
    const failed = await waitFor(() => ofTask(recv, failedId)[0], 10000, 'task.failed webhook');
    assert.ok(verifyWebhookSignature(secret, failed.headers, failed.body));
    const fp = bodyOf(failed);
    assert.deepEqual(Object.keys(fp).sort(), ['error', 'progress', 'status', 'task_id', 'task_type', 'timestamp', 'type']);
    assert.equal(fp.type, 'task.failed');
    assert.equal(fp.status, 'failed');
    assert.match(fp.error, /400/);

    const cancelId = await submit(gw, key, { mock_job_duration_ms: 20000, webhook_url: recv.url('/c') });
    const res = await apiCall(gw.base, key, 'POST', `/v1/tasks/${cancelId}/cancel`);
    assert.equal(res.status, 200, res.text);
    const cancelled = await waitFor(
      () => ofTask(recv, cancelId).find((r) => bodyOf(r).type === 'task.cancelled'), 10000, 'task.cancelled webhook');
    assert.ok(verifyWebhookSignature(secret, cancelled.headers, cancelled.body));
    const cp = bodyOf(cancelled);
    assert.equal(cp.status, 'cancelled');
    assert.equal(cp.task_id, cancelId);
    assert.equal(cp.task_type, 'video_generation');
    assert.ok(!('result' in cp));
  });

  it('a timed-out task → a documented webhook type (task.failed) with status timedout', async () => {
    // specs/api.md §6: type is task.completed | task.failed | task.cancelled | task.progress;
    // status values include timedout.
    const { key, id: keyId } = await newKey('timeout');
    const { secret } = await rotate(gw, keyId);
    const recv = await receiver();
    const taskId = await submit(gw, key, { mock_job_duration_ms: 30000, timeout_seconds: 1, webhook_url: recv.url('/t') });
    const req = await waitFor(() => ofTask(recv, taskId).find((r) => bodyOf(r).status === 'timedout'), 10000, 'timeout webhook');
    assert.ok(verifyWebhookSignature(secret, req.headers, req.body));
    const p = bodyOf(req);
    assert.equal(p.type, 'task.failed');
    assert.equal(p.status, 'timedout');
    assert.match(p.error, /1 s/);
    assert.ok(!('result' in p));
  });

  it('caller headers cannot override the protocol headers', async () => {
    const { key, id: keyId } = await newKey('override');
    const { secret } = await rotate(gw, keyId);
    const recv = await receiver();
    const taskId = await submit(gw, key, {
      webhook_url: recv.url('/o'),
      webhook_headers: {
        'webhook-id': 'msg_forged', 'Webhook-Signature': 'v1,Zm9yZ2Vk', 'webhook-timestamp': '1',
        'Content-Type': 'text/plain', Host: 'evil.example', 'User-Agent': 'forged', 'X-Kept': 'yes',
      },
    });
    const req = await waitFor(() => ofTask(recv, taskId).find((r) => bodyOf(r).type === 'task.completed'), 10000, 'webhook');
    assert.notEqual(req.headers['webhook-id'], 'msg_forged');
    assert.match(req.headers['webhook-signature'], /^v1,[A-Za-z0-9+/]+=*$/);
    assert.ok(!req.headers['webhook-signature'].includes('Zm9yZ2Vk'));
    assert.ok(Math.abs(Number(req.headers['webhook-timestamp']) - nowS()) <= 5);
    assert.ok(verifyWebhookSignature(secret, req.headers, req.body));
    assert.match(req.headers['content-type'], /^application\/json/);
    assert.equal(req.headers.host, `127.0.0.1:${recv.port}`);
    assert.notEqual(req.headers['user-agent'], 'forged');
    assert.equal(req.headers['x-kept'], 'yes');
  });

  it('a key without a secret: deliveries carry webhook-id and webhook-timestamp but no signature', async () => {
    const { key } = await newKey('unsigned');
    const recv = await receiver();
    const taskId = await submit(gw, key, { webhook_url: recv.url('/u') });
    const req = await waitFor(() => ofTask(recv, taskId).find((r) => bodyOf(r).type === 'task.completed'), 10000, 'webhook');
    assert.match(req.headers['webhook-id'], /^msg_/);
    assert.match(req.headers['webhook-timestamp'], /^\d+$/);
    assert.equal(req.headers['webhook-signature'], undefined, 'unsigned: no secret was ever created');
  });
});

describe('retries', () => {
  it('429 with Retry-After: 1 is honoured, a 503 backs off briefly; one webhook-id, fresh timestamps, recorded attempts', async () => {
    const { key, id: keyId } = await newKey('retries');
    const { secret } = await rotate(gw, keyId);
    const retriedBefore = await metricValue(gw.base, 'conduit_webhook_requests_total', { outcome: 'retry' });
    const recv = await receiver((req, n) => {
      if (n === 0) return { status: 429, headers: { 'Retry-After': '1' }, body: 'slow down' };
      if (n === 1) return { status: 503, body: 'busy' };
      return { status: 200 };
    });
    const taskId = await submit(gw, key, { webhook_url: recv.url('/flaky') });
    await waitFor(() => recv.requests.length >= 3, 15000, 'three attempts');
    const rec = await waitDelivery(gw, recv.requests[0].headers['webhook-id'], (d) => d.status === 'delivered', 5000);
    const [a, b, c] = recv.requests;
    for (const r of [a, b, c]) {
      assert.equal(bodyOf(r).task_id, taskId);
      assert.equal(r.headers['webhook-id'], a.headers['webhook-id'], 'the same webhook-id on every attempt');
      assert.equal(r.body, a.body, 'the same payload on every attempt');
      assert.ok(verifyWebhookSignature(secret, r.headers, r.body), 'every attempt is signed for its own timestamp');
      assert.ok(Math.abs(Number(r.headers['webhook-timestamp']) - Math.floor(r.at / 1000)) <= 1);
    }
    const gap1 = b.at - a.at;
    const gap2 = c.at - b.at;
    assert.ok(gap1 >= 950, `Retry-After: 1 honoured (waited ${gap1} ms)`);
    assert.ok(gap2 < 900, `a 503 without Retry-After uses the short backoff (waited ${gap2} ms)`);
    assert.ok(Number(b.headers['webhook-timestamp']) > Number(a.headers['webhook-timestamp']), 'timestamp updated on retry');

    assert.equal(rec.attempts, 3);
    assert.equal(rec.lastStatusCode, 200);
    assert.equal(rec.lastError ?? null, null);
    assert.equal(recv.requests.length, 3, 'nothing after the success');
    const retriedAfter = await metricValue(gw.base, 'conduit_webhook_requests_total', { outcome: 'retry' });
    assert.ok(retriedAfter - retriedBefore >= 2);
  });

  it('a receiver that always fails → dead after max retries, listed as dead; redeliver after the fix → delivered', async () => {
    const { key, id: keyId } = await newKey('dead');
    const { secret } = await rotate(gw, keyId);
    let healthy = false;
    const recv = await receiver(() => (healthy ? { status: 204 } : { status: 500, body: 'receiver broken' }));
    const taskId = await submit(gw, key, { webhook_url: recv.url('/dead') });

    const dead = await waitFor(async () => {
      const rows = await deliveries(gw, `?status=dead&taskId=${taskId}`);
      return rows.length ? rows[0] : null;
    }, 15000, 'dead delivery');
    assert.equal(dead.status, 'dead');
    assert.equal(dead.attempts, 4, '1 + --webhook-max-retries 3');
    assert.equal(dead.lastStatusCode, 500);
    assert.match(dead.lastError, /HTTP 500/);
    assert.equal(dead.eventType, 'task.completed');
    assert.equal(recv.requests.length, 4);
    assert.ok(recv.requests.every((r) => r.headers['webhook-id'] === dead.id));
    assert.ok((await deliveries(gw, '?status=dead')).some((d) => d.id === dead.id));
    assert.ok(!(await deliveries(gw, '?status=delivered')).some((d) => d.id === dead.id));
    assert.ok((await deliveries(gw, `?virtualKeyId=${keyId}`)).some((d) => d.id === dead.id));

    // The operator fixes the receiver and redelivers.
    healthy = true;
    const res = await fetch(`${gw.base}/api/webhooks/deliveries/${dead.id}/redeliver`, {
      method: 'POST', headers: { 'X-API-Key': MASTER_KEY },
    });
    const pending = await res.json();
    assert.equal(res.status, 202, JSON.stringify(pending));
    assert.equal(pending.id, dead.id);
    assert.equal(pending.status, 'pending');
    await waitFor(() => recv.requests.length >= 5, 10000, 'redelivery');
    const again = recv.requests[4];
    assert.equal(again.headers['webhook-id'], dead.id);
    assert.ok(verifyWebhookSignature(secret, again.headers, again.body));
    assert.equal(bodyOf(again).task_id, taskId);
    const rec = await waitDelivery(gw, dead.id, (d) => d.status === 'delivered', 5000);
    assert.equal(rec.lastStatusCode, 204);
    assert.ok(rec.deliveredAt);
    assert.equal(recv.requests.length, 5);
  });
});

describe('permanent failures', () => {
  it('a 4xx answer is not retried: dead after one attempt', async () => {
    const { key } = await newKey('gone');
    const recv = await receiver(() => ({ status: 410, body: 'gone' }));
    const taskId = await submit(gw, key, { webhook_url: recv.url('/gone') });
    const dead = await waitFor(async () => {
      const rows = await deliveries(gw, `?status=dead&taskId=${taskId}`);
      return rows.length ? rows[0] : null;
    }, 10000, 'dead delivery');
    assert.equal(dead.attempts, 1);
    assert.equal(dead.lastStatusCode, 410);
    assert.equal(recv.requests.length, 1);
  });
});

describe('per-host circuit breaker', () => {
  it('a dead host opens the breaker (deliveries deferred), which closes after the open period once the host is back', async () => {
    const OPEN_MS = 1500;
    const g = await startGateway([
      ...FLAGS,
      '--webhook-breaker-failures', '2',
      '--webhook-breaker-open-ms', String(OPEN_MS),
      '--webhook-max-retries', '10',
      '--webhook-retry-base-ms', '100',
      '--webhook-retry-max-ms', '200',
    ]);
    try {
      const f = await seed(g, mock);
      await seedVideo(g, f);
      const port = await freePort();  // nothing listens here yet: connection refused
      const host = `127.0.0.1:${port}`;
      const url = `http://${host}/breaker`;
      const deferredBefore = await metricValue(g.base, 'conduit_webhook_requests_total', { outcome: 'breaker_open' });
      const ids = [];
      for (let i = 0; i < 3; i++) ids.push(await submit(g, f.keys.main, { webhook_url: url }));

      const openedSeen = await waitFor(async () => {
        const state = await metricValue(g.base, 'conduit_webhook_breaker_state', { host });
        return state === 2 ? Date.now() : null;
      }, 10000, 'breaker open');
      // The host comes back right away, but the breaker keeps refusing for the open period.
      const recv = await receiver(() => ({ status: 200 }), { port });
      // When it opened: the last recorded failure (≈ the failure that tripped it), or when the
      // gauge was seen open (a little later than the trip).
      const failures = [];
      for (const id of ids) {
        for (const row of await deliveries(g, `?taskId=${id}`)) {
          if (row.status === 'failed') failures.push(Date.parse(row.updatedAt));
        }
      }
      assert.ok(failures.length >= 1, 'failed attempts are recorded before the breaker opens');
      const openedAt = Math.min(openedSeen, Math.max(...failures));
      await waitFor(async () => (await metricValue(g.base, 'conduit_webhook_requests_total', { outcome: 'breaker_open' })) > deferredBefore,
        5000, 'deferred deliveries');

      await waitFor(() => new Set(recv.requests.map((r) => r.headers['webhook-id'])).size >= 3, 15000, 'all three delivered');
      const first = recv.requests[0].at;
      assert.ok(first - openedAt >= OPEN_MS - 150,
        `no request while the breaker was open (first after ${first - openedAt} ms)`);
      await waitFor(async () => (await metricValue(g.base, 'conduit_webhook_breaker_state', { host })) === 0, 5000, 'breaker closed');

      const completed = recv.requests.filter((r) => bodyOf(r).type === 'task.completed');
      assert.deepEqual(completed.map((r) => bodyOf(r).task_id).sort(), [...ids].sort());
      for (const id of ids) {
        const [row] = await deliveries(g, `?taskId=${id}`);
        const rec = await waitDelivery(g, row.id, (d) => d.status === 'delivered', 5000);
        // Deferrals do not spend attempts: the failed tries before the breaker opened + the
        // successful one, far fewer than the retries a 4 s outage would otherwise burn.
        assert.ok(rec.attempts >= 1 && rec.attempts <= 3, `attempts ${rec.attempts}`);
      }
      assert.ok((await metricValue(g.base, 'conduit_webhook_requests_total', { outcome: 'breaker_open' })) > deferredBefore);
    } finally {
      await g.stop();
    }
  });
});

describe('secret rotation', () => {
  it('during the grace period both secrets sign; after a rotation without grace only the new one does', async () => {
    const { key, id: keyId } = await newKey('rotation');
    const s1 = (await rotate(gw, keyId)).secret;
    const r2 = await rotate(gw, keyId, { gracePeriodSeconds: 120 });
    const s2 = r2.secret;
    assert.notEqual(s1, s2);
    assert.ok(Date.parse(r2.previousValidUntil) - Date.now() > 100000, 'previous secret valid for the grace period');
    const recv = await receiver();

    const t1 = await submit(gw, key, { webhook_url: recv.url('/rot') });
    const d1 = await waitFor(() => ofTask(recv, t1)[0], 10000, 'webhook during grace');
    const sigs = d1.headers['webhook-signature'].split(' ');
    assert.equal(sigs.length, 2, d1.headers['webhook-signature']);
    assert.ok(sigs.every((s) => /^v1,[A-Za-z0-9+/]+=*$/.test(s)));
    assert.ok(verifyWebhookSignature(s1, d1.headers, d1.body), 'a receiver still on the old secret verifies');
    assert.ok(verifyWebhookSignature(s2, d1.headers, d1.body), 'a receiver on the new secret verifies');

    const r3 = await rotate(gw, keyId, { gracePeriodSeconds: 0 });
    const s3 = r3.secret;
    const t2 = await submit(gw, key, { webhook_url: recv.url('/rot') });
    const d2 = await waitFor(() => ofTask(recv, t2)[0], 10000, 'webhook after the rotation');
    assert.equal(d2.headers['webhook-signature'].split(' ').length, 1);
    assert.ok(verifyWebhookSignature(s3, d2.headers, d2.body));
    assert.ok(!verifyWebhookSignature(s2, d2.headers, d2.body), 'the replaced secret no longer signs');
    assert.ok(!verifyWebhookSignature(s1, d2.headers, d2.body));
  });
});

describe('webhook admin routes', () => {
  it('need the master key: 401 without it or with a virtual key', async () => {
    const routes = [
      ['POST', `/api/VirtualKeys/${fx.keys.mainId}/webhook-secret`],
      ['GET', '/api/webhooks/deliveries'],
      ['GET', '/api/webhooks/deliveries/msg_x'],
      ['POST', '/api/webhooks/deliveries/msg_x/redeliver'],
    ];
    for (const [method, route] of routes) {
      for (const headers of [{}, { 'X-API-Key': 'wrong-master-key' }, { Authorization: `Bearer ${fx.keys.main}` }]) {
        const res = await fetch(`${gw.base}${route}`, { method, headers });
        assert.equal(res.status, 401, `${method} ${route} with ${JSON.stringify(Object.keys(headers))}`);
        const body = await res.json();
        assert.equal(body.error.code, 'invalid_api_key');
      }
    }
  });

  it('unknown deliveries and keys → 404; a bad filter → 400', async () => {
    const post = (route) => fetch(`${gw.base}${route}`, { method: 'POST', headers: { 'X-API-Key': MASTER_KEY } });
    for (const id of ['msg_does_not_exist', 'msg_00000000-0000-7000-8000-000000000000', 'bad%20id', 'x'.repeat(200)]) {
      const r1 = await post(`/api/webhooks/deliveries/${id}/redeliver`);
      assert.equal(r1.status, 404, `redeliver ${id}`);
      assert.equal((await r1.json()).error.code, 'not_found');
      assert.equal((await delivery(gw, decodeURIComponent(id))).status, 404, `get ${id}`);
    }
    const rot = await post('/api/VirtualKeys/999999/webhook-secret');
    assert.equal(rot.status, 404);
    const bad = await fetch(`${gw.base}/api/webhooks/deliveries?status=bogus`, { headers: { 'X-API-Key': MASTER_KEY } });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.param, 'status');
    const grace = await fetch(`${gw.base}/api/VirtualKeys/${fx.keys.mainId}/webhook-secret`, {
      method: 'POST', headers: { 'X-API-Key': MASTER_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ gracePeriodSeconds: -1 }),
    });
    assert.equal(grace.status, 400);
  });
});
