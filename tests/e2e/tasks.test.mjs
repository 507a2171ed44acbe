// Durable async image/video tasks, end to end: the real `conduit` binary (embedded mode: SQLite
// store + on-disk work queue) driving async jobs on the real mock provider. Every expectation is
// checked on observable state: the task routes, the mock's job records and counters, the bytes
// served under /v1/media.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startGateway, seed, seedVideo, waitFor, apiCall, rawHttp, sha256Hex, startReceiver,
  UPSTREAM_KEY,
} from './harness.mjs';

const POLL_MS = 100;
const GATEWAY_FLAGS = [
  '--task-poll-interval-ms', String(POLL_MS),
  '--task-retry-base-ms', '800',
  '--task-retry-max-ms', '1600',
  '--task-max-retries', '1',
  '--task-sweep-interval-ms', '200',
  '--max-body-bytes', String(64 * 1024),
];
const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'timedout']);

let mock;
let gw;
let fx;
let otherKey;

before(async () => {
  mock = await startMock(['--job-duration-ms', '1500']);
  gw = await startGateway(GATEWAY_FLAGS);
  fx = await seed(gw, mock);
  await seedVideo(gw, fx);
  const other = await gw.admin('POST', '/api/VirtualKeys', { keyName: 'other', virtualKeyGroupId: fx.group.id });
  otherKey = other.virtualKey;
});

after(async () => {
  await gw?.stop();
  mock?.stop();
});

// --- helpers ---------------------------------------------------------------------------------

const call = (method, route, opts = {}) => apiCall(gw.base, opts.key ?? fx.keys.main, method, route, opts);

function submitVideo(extra = {}, opts = {}) {
  return call('POST', '/v1/videos/generations/async', { body: { model: 'sora', prompt: 'a red fox', ...extra }, ...opts });
}

function submitImage(extra = {}, opts = {}) {
  return call('POST', '/v1/images/generations/async', { body: { model: 'dall-e-3', prompt: 'a lighthouse', ...extra }, ...opts });
}

async function accepted(resPromise) {
  const res = await resPromise;
  assert.equal(res.status, 202, res.text);
  return res.json;
}

async function task(id, key = fx.keys.main) {
  const res = await call('GET', `/v1/tasks/${id}`, { key });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

function waitTask(id, pred, ms = 10000, what = 'task state') {
  return waitFor(async () => {
    const t = await task(id);
    return pred(t) ? t : null;
  }, ms, `${what} of ${id}`);
}

const waitTerminal = (id, ms = 10000) => waitTask(id, (t) => TERMINAL.has(t.status), ms, 'terminal state');

async function mockStats() {
  return (await fetch(`${mock.base}/mock/stats`)).json();
}

async function mockJobs() {
  return (await (await fetch(`${mock.base}/mock/jobs`)).json()).data;
}

/** The mock jobs the gateway started for a task (submits carry Idempotency-Key `{task}-{attempt}`). */
async function jobsOf(taskId) {
  return (await mockJobs()).filter((j) => j.idempotency_key?.startsWith(`${taskId}-`));
}

async function mockJob(jobId) {
  const res = await fetch(`${mock.base}/mock/jobs/${jobId}`);
  assert.equal(res.status, 200);
  return res.json();
}

/** The upstream job of a task's attempt, once the mock has it. */
const waitJob = (taskId, attempt = 1, ms = 10000) => waitFor(async () => {
  const jobs = await jobsOf(taskId);
  return jobs.find((j) => j.idempotency_key === `${taskId}-${attempt}`);
}, ms, `mock job of ${taskId} attempt ${attempt}`);

async function setMock(cfg) {
  const res = await fetch(`${mock.base}/mock/config`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(cfg),
  });
  assert.equal(res.status, 200, await res.text());
}

async function download(url, headers = {}) {
  const res = await fetch(url, { headers });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

function assertError(res, status, code, param) {
  assert.equal(res.status, status, res.text);
  assert.ok(res.json?.error, `expected an error body, got: ${res.text}`);
  const e = res.json.error;
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  assert.equal(typeof e.type, 'string');
  assert.equal(e.code, code, res.text);
  if (param !== undefined) assert.equal(e.param, param, res.text);
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

// --- tests -----------------------------------------------------------------------------------

describe('video task through REST polling', () => {
  it('pending → running (rising progress) → completed; media downloadable with the exact bytes and ranges', async () => {
    const before = await mockStats();
    const acc = await accepted(submitVideo({ duration: 4, mock_job_duration_ms: 1500 }));
    assert.match(acc.task_id, /^task_[0-9a-f]+$/);
    assert.equal(acc.status, 'pending');
    assert.equal(acc.progress, 0);
    assert.ok(!Number.isNaN(Date.parse(acc.created_at)) && !Number.isNaN(Date.parse(acc.updated_at)));
    assert.equal(acc.check_status_url, `${gw.base}/v1/videos/generations/tasks/${acc.task_id}`);

    // Follow check_status_url as a client would, recording every state seen.
    const seen = [];
    const final = await waitFor(async () => {
      const res = await apiCall('', fx.keys.main, 'GET', acc.check_status_url);
      assert.equal(res.status, 200, res.text);
      seen.push(res.json);
      return TERMINAL.has(res.json.status) ? res.json : null;
    }, 15000, 'video completion');
    assert.equal(final.status, 'completed', JSON.stringify(final));

    const order = ['pending', 'running', 'completed'];
    for (let i = 1; i < seen.length; i++) {
      assert.ok(order.indexOf(seen[i].status) >= order.indexOf(seen[i - 1].status), 'status never goes backwards');
      assert.ok(seen[i].progress >= seen[i - 1].progress, 'progress never goes backwards');
    }
    const running = seen.filter((t) => t.status === 'running' && t.progress > 0 && t.progress < 100);
    const distinct = new Set(running.map((t) => t.progress));
    assert.ok(distinct.size >= 3, `progress should rise while running, saw ${[...distinct]}`);

    assert.equal(final.progress, 100);
    assert.equal(final.model, 'sora');
    assert.equal(final.task_id, acc.task_id);
    assert.ok(final.completed_at && Date.parse(final.completed_at) >= Date.parse(final.created_at));
    assert.equal(final.result.model, 'sora');
    assert.equal(final.result.data.length, 1);
    const url = final.result.data[0].url;
    assert.ok(url.startsWith(`${gw.base}/v1/media/`), url);

    // Exactly one upstream job, started once, downloaded once.
    const jobs = await jobsOf(acc.task_id);
    assert.equal(jobs.length, 1, JSON.stringify(jobs));
    assert.equal(jobs[0].status, 'completed');
    assert.equal(jobs[0].model, 'sora-2', 'the provider sees its own model id');
    const job = await mockJob(jobs[0].id);
    const after = await mockStats();
    assert.equal(after.video_jobs_started - before.video_jobs_started, 1);
    assert.equal(job.content_downloads, 1);

    // The media: same bytes as the provider's content.
    const full = await download(url);
    assert.equal(full.status, 200);
    assert.equal(full.headers.get('content-type'), 'video/mp4');
    assert.equal(full.headers.get('accept-ranges'), 'bytes');
    assert.equal(full.body.length, job.content_bytes);
    assert.equal(sha256Hex(full.body), job.content_sha256);
    const upstream = await fetch(`${mock.base}/v1/videos/${job.id}/content`, {
      method: 'HEAD', headers: { Authorization: `Bearer ${UPSTREAM_KEY}` },
    });
    assert.equal(upstream.headers.get('x-content-sha256'), sha256Hex(full.body));

    const part = await download(url, { Range: 'bytes=1000-1999' });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 1000-1999/${job.content_bytes}`);
    assert.ok(part.body.equals(full.body.subarray(1000, 2000)));
    const tail = await download(url, { Range: 'bytes=-100' });
    assert.equal(tail.status, 206);
    assert.ok(tail.body.equals(full.body.subarray(full.body.length - 100)));
    const past = await download(url, { Range: `bytes=${job.content_bytes}-` });
    assert.equal(past.status, 416);
    const head = await fetch(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers.get('content-length')), job.content_bytes);
  });
});

describe('image task', () => {
  it('completes through the image status route; every image is stored and billed', async () => {
    const group = await gw.admin('POST', '/api/VirtualKeyGroups', { groupName: 'images', initialBalance: 10 });
    const key = (await gw.admin('POST', '/api/VirtualKeys', { keyName: 'images', virtualKeyGroupId: group.id })).virtualKey;
    const before = await mockStats();
    const acc = await accepted(submitImage({ n: 2, mock_job_duration_ms: 600 }, { key }));
    assert.equal(acc.status, 'pending');
    assert.equal(acc.check_status_url, `${gw.base}/v1/images/generations/${acc.task_id}/status`);

    const final = await waitFor(async () => {
      const res = await call('GET', `/v1/images/generations/${acc.task_id}/status`, { key });
      assert.equal(res.status, 200, res.text);
      return TERMINAL.has(res.json.status) ? res.json : null;
    }, 10000, 'image completion');
    assert.equal(final.status, 'completed', JSON.stringify(final));
    assert.equal(final.model, 'dall-e-3');
    assert.equal(final.result.data.length, 2);
    assert.ok(Number.isInteger(final.result.created));

    const after = await mockStats();
    assert.equal(after.image_jobs_started - before.image_jobs_started, 1);
    const [job] = await jobsOf(acc.task_id);
    assert.equal(job.kind, 'image');
    assert.equal(job.n, 2);
    for (let i = 0; i < 2; i++) {
      const { url } = final.result.data[i];
      assert.ok(url.startsWith(`${gw.base}/v1/media/`), url);
      const got = await download(url);
      assert.equal(got.status, 200);
      assert.equal(got.headers.get('content-type'), 'image/png');
      const original = await download(`${mock.base}/mock/files/${job.id}-${i}.png`, { Authorization: `Bearer ${UPSTREAM_KEY}` });
      assert.equal(original.status, 200);
      assert.ok(got.body.length > 0);
      assert.equal(sha256Hex(got.body), sha256Hex(original.body), `image ${i} bytes`);
    }

    // Billed per image on completion ($0.04 each), in exact micro-units.
    const g = await waitFor(async () => {
      const row = await gw.admin('GET', `/api/VirtualKeyGroups/${group.id}`);
      return row.lifetimeSpent > 0 ? row : null;
    }, 5000, 'image spend flush');
    assert.equal(Math.round(g.lifetimeSpent * 1e6), 80000);
  });
});

describe('generic task view and long-poll', () => {
  it('/v1/tasks/{id} has every documented field; /poll returns at its timeout unchanged, then as soon as the task ends', async () => {
    const acc = await accepted(submitVideo({ mock_job_duration_ms: 2500 }));
    const t = await task(acc.task_id);
    for (const k of ['task_id', 'task_type', 'status', 'progress', 'message', 'result', 'error',
      'created_at', 'updated_at', 'completed_at', 'retry_count', 'max_retries']) {
      assert.ok(k in t, `generic view lacks ${k}: ${JSON.stringify(t)}`);
    }
    assert.equal(t.task_type, 'video_generation');
    assert.equal(t.result, null);
    assert.equal(t.error, null);
    assert.equal(t.completed_at, null);
    assert.equal(t.retry_count, 0);
    assert.equal(t.max_retries, 1);

    // Not terminal within the timeout: answered at the timeout, state left alone.
    let started = Date.now();
    const early = await call('GET', `/v1/tasks/${acc.task_id}/poll?timeout=1&interval=0.2`);
    let took = Date.now() - started;
    assert.equal(early.status, 200, early.text);
    assert.ok(['pending', 'running'].includes(early.json.status), early.text);
    assert.ok(took >= 900 && took < 2500, `poll with timeout=1 took ${took} ms`);
    assert.ok(!TERMINAL.has((await task(acc.task_id)).status));

    // Terminal: answered as soon as it is (well before the 30 s timeout, and woken by the
    // completion itself, not by the default 1 s re-check interval).
    started = Date.now();
    const done = await call('GET', `/v1/tasks/${acc.task_id}/poll?timeout=30`);
    took = Date.now() - started;
    assert.equal(done.status, 200, done.text);
    assert.equal(done.json.status, 'completed');
    assert.equal(done.json.task_type, 'video_generation');
    assert.ok(done.json.result.data[0].url.includes('/v1/media/'));
    assert.ok(done.json.completed_at);
    assert.ok(took < 5000, `poll returned ${took} ms after the call`);
    const lag = Date.now() - Date.parse(done.json.completed_at);
    assert.ok(lag < 400, `poll answered ${lag} ms after completion`);

    // A terminal task answers at once.
    started = Date.now();
    const again = await call('GET', `/v1/tasks/${acc.task_id}/poll?timeout=30`);
    assert.equal(again.json.status, 'completed');
    assert.ok(Date.now() - started < 1000);

    assertError(await call('GET', `/v1/tasks/${acc.task_id}/poll?timeout=abc`), 400, 'invalid_request', 'timeout');
    assertError(await call('GET', `/v1/tasks/${acc.task_id}/poll?interval=-1`), 400, 'invalid_request', 'interval');
  });
});

describe('cancellation', () => {
  it('cancel mid-run: 200 cancelled, the upstream job is cancelled and never polled again', async () => {
    const acc = await accepted(submitVideo({ mock_job_duration_ms: 20000 }));
    const job = await waitJob(acc.task_id);
    await waitTask(acc.task_id, (t) => t.status === 'running' && t.progress > 0, 10000, 'running with progress');
    const before = await mockStats();

    const res = await call('DELETE', `/v1/videos/generations/${acc.task_id}`);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { task_id: acc.task_id, status: 'cancelled' });

    const cancelled = await waitFor(async () => {
      const j = await mockJob(job.id);
      return j.status === 'cancelled' ? j : null;
    }, 5000, 'upstream job cancelled');
    assert.ok(cancelled.cancelled_at_ms);
    const t = await task(acc.task_id);
    assert.equal(t.status, 'cancelled');
    assert.ok(t.completed_at);
    assert.ok(t.progress > 0 && t.progress < 100);

    // Several poll intervals later the gateway still has not polled the job again.
    const polls = cancelled.poll_count;
    await delay(8 * POLL_MS);
    const later = await mockJob(job.id);
    assert.equal(later.poll_count, polls, 'no polls after the cancel');
    assert.equal(later.polls_after_cancel, 0);
    const after = await mockStats();
    assert.equal(after.polls_after_cancel, 0);
    assert.equal(after.jobs_cancelled - before.jobs_cancelled, 1);
    assert.equal((await task(acc.task_id)).status, 'cancelled', 'stays cancelled');

    // Cancelling again: the task is terminal.
    assertError(await call('DELETE', `/v1/videos/generations/${acc.task_id}`), 409, 'conflict');
  });

  it('image DELETE and the generic cancel route also stop the work; a terminal task → 409', async () => {
    const img = await accepted(submitImage({ mock_job_duration_ms: 20000 }));
    const imgJob = await waitJob(img.task_id);
    const res = await call('DELETE', `/v1/images/generations/${img.task_id}`);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { task_id: img.task_id, status: 'cancelled' });
    await waitFor(async () => (await mockJob(imgJob.id)).status === 'cancelled', 5000, 'image job cancelled');

    const vid = await accepted(submitVideo({ mock_job_duration_ms: 20000 }));
    const vidJob = await waitJob(vid.task_id);
    const gen = await call('POST', `/v1/tasks/${vid.task_id}/cancel`);
    assert.equal(gen.status, 200, gen.text);
    assert.equal(gen.json.task_id, vid.task_id);
    assert.equal(gen.json.task_type, 'video_generation');
    assert.equal(gen.json.status, 'cancelled');
    await waitFor(async () => (await mockJob(vidJob.id)).status === 'cancelled', 5000, 'video job cancelled');

    // Completed tasks cannot be cancelled, on either route that sees them.
    const quick = await accepted(submitVideo({ mock_job_duration_ms: 0 }));
    const done = await waitTerminal(quick.task_id);
    assert.equal(done.status, 'completed');
    assertError(await call('DELETE', `/v1/videos/generations/${quick.task_id}`), 409, 'conflict');
    // (the image route does not see video tasks at all)
    assertError(await call('DELETE', `/v1/images/generations/${quick.task_id}`), 404, 'not_found');
    assertError(await call('POST', `/v1/tasks/${quick.task_id}/cancel`), 409, 'conflict');
    assert.equal((await task(quick.task_id)).status, 'completed', 'a refused cancel changes nothing');
  });
});

describe('failures and retries', () => {
  it('automatic retry: a failed attempt is retried once and the second attempt completes', async () => {
    await setMock({ job_failure_rate: 1 });
    try {
      const acc = await accepted(submitVideo({ mock_job_duration_ms: 300 }));
      // Attempt 1 fails at the provider; the task goes back to pending with a retry scheduled.
      const waiting = await waitTask(acc.task_id, (t) => t.retry_count === 1 && t.status === 'pending', 10000, 'retry scheduled');
      assert.match(waiting.message, /Retry 1\/1/);
      const first = (await jobsOf(acc.task_id)).find((j) => j.idempotency_key === `${acc.task_id}-1`);
      assert.equal(first.status, 'failed');
      // The provider recovers before the retry is due (retry base 800 ms, jitter ≥ 50 %).
      await setMock({ job_failure_rate: 0 });
      const done = await waitTerminal(acc.task_id);
      assert.equal(done.status, 'completed', JSON.stringify(done));
      assert.equal(done.retry_count, 1);
      const jobs = await jobsOf(acc.task_id);
      assert.deepEqual(jobs.map((j) => [j.idempotency_key, j.status]).sort(), [
        [`${acc.task_id}-1`, 'failed'], [`${acc.task_id}-2`, 'completed'],
      ]);
    } finally {
      await setMock({ job_failure_rate: 0 });
    }
  });

  it('manual retry: failed + retryable after the automatic retries; POST retry completes on a new job', async () => {
    await setMock({ job_failure_rate: 1 });
    let acc;
    try {
      acc = await accepted(submitVideo({ mock_job_duration_ms: 200 }));
      const failed = await waitTerminal(acc.task_id);
      assert.equal(failed.status, 'failed', JSON.stringify(failed));
      assert.equal(failed.retryable, true);
      assert.ok(failed.error && failed.error.length > 0);
      assert.equal(failed.retry_count, 1, 'max_retries=1 automatic retry was spent');
      assert.equal((await jobsOf(acc.task_id)).length, 2);
      // The video status route reports the error too.
      const vs = await call('GET', `/v1/videos/generations/tasks/${acc.task_id}`);
      assert.equal(vs.json.status, 'failed');
      assert.equal(typeof vs.json.error, 'string');
    } finally {
      await setMock({ job_failure_rate: 0 });
    }
    const before = await mockStats();
    const res = await call('POST', `/v1/videos/generations/tasks/${acc.task_id}/retry`);
    assert.equal(res.status, 202, res.text);
    assert.equal(res.json.status, 'pending');
    const done = await waitTerminal(acc.task_id);
    assert.equal(done.status, 'completed', JSON.stringify(done));
    assert.equal(done.error, null);
    assert.ok(done.result.data[0].url.includes('/v1/media/'));
    const after = await mockStats();
    assert.equal(after.video_jobs_started - before.video_jobs_started, 1, 'the retry started one more job');
    const jobs = await jobsOf(acc.task_id);
    assert.equal(jobs.length, 3);
    assert.equal(jobs.filter((j) => j.status === 'completed').length, 1);
    const media = await download(done.result.data[0].url);
    const job = await mockJob(jobs.find((j) => j.status === 'completed').id);
    assert.equal(sha256Hex(media.body), job.content_sha256);

    // Only a failed task can be retried.
    assertError(await call('POST', `/v1/videos/generations/tasks/${acc.task_id}/retry`), 409, 'conflict');
  });

  it('a provider that refuses the submit (4xx) fails the task at once, not retryable', async () => {
    const acc = await accepted(submitVideo({ mock_job_fail_status: 400 }));
    const t = await waitTerminal(acc.task_id);
    assert.equal(t.status, 'failed');
    assert.equal(t.retryable, false);
    assert.equal(t.retry_count, 0);
    assert.match(t.error, /400/);
    assertError(await call('POST', `/v1/videos/generations/tasks/${acc.task_id}/retry`), 409, 'conflict');
  });

  it('timeout_seconds: a job that outlives it → timedout and the upstream job is cancelled', async () => {
    const acc = await accepted(submitVideo({ mock_job_duration_ms: 30000, timeout_seconds: 1 }));
    const job = await waitJob(acc.task_id);
    const t = await waitTerminal(acc.task_id, 8000);
    assert.equal(t.status, 'timedout', JSON.stringify(t));
    assert.match(t.error, /1 s/);
    assert.ok(Date.parse(t.completed_at) - Date.parse(t.created_at) >= 1000);
    const cancelled = await waitFor(async () => {
      const j = await mockJob(job.id);
      return j.status === 'cancelled' ? j : null;
    }, 5000, 'upstream job cancelled after the timeout');
    const polls = cancelled.poll_count;
    await delay(5 * POLL_MS);
    assert.equal((await mockJob(job.id)).poll_count, polls);
    assertError(await call('POST', `/v1/tasks/${acc.task_id}/cancel`), 409, 'conflict');
  });
});

describe('ownership and unknown ids', () => {
  const routes = (id) => [
    ['GET', `/v1/images/generations/${id}/status`],
    ['GET', `/v1/videos/generations/tasks/${id}`],
    ['GET', `/v1/tasks/${id}`],
    ['GET', `/v1/tasks/${id}/poll?timeout=0`],
    ['DELETE', `/v1/images/generations/${id}`],
    ['DELETE', `/v1/videos/generations/${id}`],
    ['POST', `/v1/tasks/${id}/cancel`],
    ['POST', `/v1/videos/generations/tasks/${id}/retry`],
  ];

  it("another key's task is 404 on every task route, and is left untouched", async () => {
    const acc = await accepted(submitVideo({ mock_job_duration_ms: 20000 }));
    await waitJob(acc.task_id);
    for (const [method, route] of routes(acc.task_id)) {
      const res = await call(method, route, { key: otherKey });
      assertError(res, 404, 'not_found');
      assert.ok(!res.text.includes(acc.task_id) || res.json.error, 'no task data leaks');
      assert.ok(!('status' in res.json), `${method} ${route} leaked a task view`);
    }
    const t = await task(acc.task_id);
    assert.equal(t.status, 'running', 'the foreign cancel did nothing');
    assert.equal((await call('DELETE', `/v1/videos/generations/${acc.task_id}`)).status, 200);
  });

  it('the image routes do not see video tasks (404), and a typed cancel leaves the other type alone', async () => {
    const acc = await accepted(submitVideo({ mock_job_duration_ms: 20000 }));
    await waitJob(acc.task_id);
    for (const [method, route] of [
      ['GET', `/v1/images/generations/${acc.task_id}/status`],
      ['DELETE', `/v1/images/generations/${acc.task_id}`],
    ]) {
      assertError(await call(method, route), 404, 'not_found');
    }
    assert.equal((await task(acc.task_id)).status, 'running', 'the image cancel route did nothing');
    assert.equal((await call('DELETE', `/v1/videos/generations/${acc.task_id}`)).status, 200);
  });

  it('an unknown task id is 404 on every task route; no key is 401', async () => {
    for (const id of ['task_00000000000000000000000000000000', 'nope']) {
      for (const [method, route] of routes(id)) {
        assertError(await call(method, route), 404, 'not_found');
      }
    }
    for (const [method, route] of routes('task_00000000000000000000000000000000')) {
      assertError(await apiCall(gw.base, null, method, route), 401, 'invalid_api_key');
    }
  });
});

describe('Idempotency-Key', () => {
  it('same key and body → the same task and one upstream job; a different body → 409; keys are per virtual key', async () => {
    const before = await mockStats();
    const idem = `idem-${Date.now()}`;
    const body = JSON.stringify({ model: 'sora', prompt: 'idempotent otter', mock_job_duration_ms: 800 });
    const a = await call('POST', '/v1/videos/generations/async', { body, headers: { 'Idempotency-Key': idem } });
    assert.equal(a.status, 202, a.text);
    assert.equal(a.headers.get('idempotent-replayed'), null);
    const b = await call('POST', '/v1/videos/generations/async', { body, headers: { 'Idempotency-Key': idem } });
    assert.equal(b.status, 202, b.text);
    assert.equal(b.json.task_id, a.json.task_id);
    assert.equal(b.headers.get('idempotent-replayed'), 'true');

    const changed = JSON.stringify({ model: 'sora', prompt: 'a different otter', mock_job_duration_ms: 800 });
    assertError(await call('POST', '/v1/videos/generations/async', { body: changed, headers: { 'Idempotency-Key': idem } }), 409, 'conflict');

    // Another virtual key with the same Idempotency-Key gets its own task.
    const other = await call('POST', '/v1/videos/generations/async', { body, key: otherKey, headers: { 'Idempotency-Key': idem } });
    assert.equal(other.status, 202, other.text);
    assert.notEqual(other.json.task_id, a.json.task_id);

    const done = await waitTerminal(a.json.task_id);
    assert.equal(done.status, 'completed');
    // A replay after completion still answers with the task (now completed).
    const c = await call('POST', '/v1/videos/generations/async', { body, headers: { 'Idempotency-Key': idem } });
    assert.equal(c.json.task_id, a.json.task_id);
    assert.equal(c.json.status, 'completed');
    const otherDone = await waitFor(async () => {
      const t = await task(other.json.task_id, otherKey);
      return TERMINAL.has(t.status) ? t : null;
    }, 10000, 'the other key\'s task');
    assert.equal(otherDone.status, 'completed');

    assert.equal((await jobsOf(a.json.task_id)).length, 1, 'one upstream job for the replayed task');
    const after = await mockStats();
    assert.equal(after.video_jobs_started - before.video_jobs_started, 2, 'one job per task (main + other key)');
  });

  it('concurrent submits with one key → one task, one upstream job', async () => {
    const before = await mockStats();
    const idem = `race-${Date.now()}`;
    const body = JSON.stringify({ model: 'sora', prompt: 'racing otters', mock_job_duration_ms: 300 });
    const all = await Promise.all(Array.from({ length: 8 }, () =>
      call('POST', '/v1/videos/generations/async', { body, headers: { 'Idempotency-Key': idem } })));
    for (const r of all) assert.equal(r.status, 202, r.text);
    const ids = new Set(all.map((r) => r.json.task_id));
    assert.equal(ids.size, 1, `one task for one key: ${[...ids]}`);
    assert.equal(all.filter((r) => r.headers.get('idempotent-replayed') === 'true').length, 7);
    const [id] = ids;
    assert.equal((await waitTerminal(id)).status, 'completed');
    assert.equal((await mockStats()).video_jobs_started - before.video_jobs_started, 1);
  });
});

describe('input validation', () => {
  const post = (route, body, opts = {}) => call('POST', route, { body, ...opts });

  it('malformed JSON, missing or empty fields, bad options → 400 with the OpenAI error shape', async () => {
    const before = await mockStats();
    for (const route of ['/v1/videos/generations/async', '/v1/images/generations/async']) {
      const model = route.includes('videos') ? 'sora' : 'dall-e-3';
      const bad = await post(route, '{"model": "sora", "prompt": ');
      assertError(bad, 400, 'invalid_request');
      assert.equal(bad.json.error.type, 'invalid_request_error');
      assertError(await post(route, '[1,2]'), 400, 'invalid_request');
      assertError(await post(route, { prompt: 'x' }), 400, 'invalid_request', 'model');
      assertError(await post(route, { model }), 400, 'invalid_request', 'prompt');
      assertError(await post(route, { model, prompt: '   ' }), 400, 'invalid_request', 'prompt');
      assertError(await post(route, { model, prompt: 'x', timeout_seconds: 0 }), 400, 'invalid_request', 'timeout_seconds');
      assertError(await post(route, { model, prompt: 'x', webhook_url: 'ftp://example.com/x' }), 400, 'invalid_request', 'webhook_url');
      assertError(await post(route, { model, prompt: 'x', webhook_headers: { 'Bad Header': 'v' } }), 400, 'invalid_request', 'webhook_headers');
    }
    assertError(await post('/v1/images/generations/async', { model: 'dall-e-3', prompt: 'x', n: 11 }), 400, 'invalid_request', 'n');
    // A chat model cannot generate videos.
    assertError(await post('/v1/videos/generations/async', { model: 'gpt-4o-mini', prompt: 'x' }), 400, 'invalid_request', 'model');
    assertError(await post('/v1/videos/generations/async', { model: 'dall-e-3', prompt: 'x' }), 400, 'invalid_request', 'model');
    assert.equal((await mockStats()).jobs_started, before.jobs_started, 'no job for a refused request');
  });

  it('unknown model → 404 model_not_found; no/disabled key → 401; broke group → 402; oversized body → 413', async () => {
    const unknown = await post('/v1/videos/generations/async', { model: 'no-such-model', prompt: 'x' });
    assertError(unknown, 404, 'model_not_found', 'model');
    assert.equal(unknown.json.error.type, 'invalid_request_error');
    assertError(await post('/v1/images/generations/async', { model: 'no-such-model', prompt: 'x' }), 404, 'model_not_found', 'model');
    assertError(await apiCall(gw.base, null, 'POST', '/v1/videos/generations/async', { body: { model: 'sora', prompt: 'x' } }), 401, 'invalid_api_key');
    assertError(await post('/v1/videos/generations/async', { model: 'sora', prompt: 'x' }, { key: fx.keys.disabled }), 401, 'invalid_api_key');
    assertError(await post('/v1/videos/generations/async', { model: 'sora', prompt: 'x' }, { key: fx.keys.broke }), 402, 'insufficient_balance');
    const big = await post('/v1/videos/generations/async', { model: 'sora', prompt: 'x'.repeat(80 * 1024) });
    assertError(big, 413, 'request_too_large');
  });
});

describe('media route', () => {
  it('path traversal never serves files outside the media store', async () => {
    // Make sure the media directory exists and holds a real file.
    const acc = await accepted(submitVideo({ mock_job_duration_ms: 0 }));
    const done = await waitTerminal(acc.task_id);
    const good = new URL(done.result.data[0].url).pathname;
    assert.equal((await rawHttp(gw.port, 'GET', good)).status, 200);

    const attempts = [
      '/v1/media/../conduit.db',
      '/v1/media/../../conduit.db',
      '/v1/media/%2e%2e/conduit.db',
      '/v1/media/%2E%2E%2Fconduit.db',
      '/v1/media/..%2fconduit.db',
      '/v1/media/..%2Fqueue.db',
      '/v1/media/..%5cconduit.db',
      '/v1/media/tasks/../../conduit.db',
      '/v1/media/tasks/%2e%2e/%2e%2e/conduit.db',
      `/v1/media/tasks/${acc.task_id}/../../../conduit.db`,
      '/v1/media/%2fetc%2fpasswd',
      '/v1/media//etc/passwd',
      '/v1/media/../../../../../../etc/passwd',
      '/v1/media/%252e%252e/conduit.db',
      '/v1/media/.%2e/master.key',
      '/v1/media/tasks%00/x',
    ];
    for (const p of attempts) {
      for (const method of ['GET', 'HEAD']) {
        const res = await rawHttp(gw.port, method, p);
        assert.ok([400, 404].includes(res.status), `${method} ${p} → ${res.status}`);
        const text = res.body.toString('latin1');
        assert.ok(!text.includes('SQLite format 3'), `${p} served a database`);
        assert.ok(!/root:.*:0:0:/.test(text), `${p} served /etc/passwd`);
      }
    }
    const missing = await rawHttp(gw.port, 'GET', '/v1/media/tasks/nope/1-0.mp4');
    assert.equal(missing.status, 404);
    assert.equal(JSON.parse(missing.body.toString()).error.code, 'not_found');
  });
});

describe('durability across a restart', () => {
  it('tasks running at SIGTERM finish after a restart on the same data dir, without a second upstream job', async () => {
    const gw1 = await startGateway(GATEWAY_FLAGS, { keepData: true });
    const hooks = await startReceiver();
    let gw2;
    try {
      const f = await seed(gw1, mock);
      await seedVideo(gw1, f);
      const before = await mockStats();
      const post = (g, route, body) => apiCall(g.base, f.keys.main, 'POST', route, {
        body: { ...body, webhook_url: hooks.url('/restart') },
      });
      const ids = [];
      for (let i = 0; i < 3; i++) {
        const r = await post(gw1, '/v1/videos/generations/async', { model: 'sora', prompt: `durable ${i}`, mock_job_duration_ms: 2500 });
        assert.equal(r.status, 202, r.text);
        ids.push(r.json.task_id);
      }
      const img = await post(gw1, '/v1/images/generations/async', { model: 'dall-e-3', prompt: 'durable image', mock_job_duration_ms: 2500 });
      assert.equal(img.status, 202, img.text);
      ids.push(img.json.task_id);

      // All four are running upstream when the gateway is stopped.
      for (const id of ids) await waitJob(id);
      await waitFor(async () => {
        for (const id of ids) {
          const t = (await apiCall(gw1.base, f.keys.main, 'GET', `/v1/tasks/${id}`)).json;
          if (t.status !== 'running' || t.progress === 0) return false;
        }
        return true;
      }, 10000, 'all tasks running');
      const stopped = await gw1.stop({ keepData: true });
      assert.equal(stopped.code, 0, `gateway exit: ${JSON.stringify(stopped)}`);

      gw2 = await startGateway(GATEWAY_FLAGS, { dataDir: gw1.dataDir });
      for (const id of ids) {
        const t = await waitFor(async () => {
          const r = await apiCall(gw2.base, f.keys.main, 'GET', `/v1/tasks/${id}`);
          assert.equal(r.status, 200, r.text);
          return TERMINAL.has(r.json.status) ? r.json : null;
        }, 15000, `${id} after the restart`);
        assert.equal(t.status, 'completed', JSON.stringify(t));
        assert.equal(t.retry_count, 0);
        const jobs = await jobsOf(id);
        assert.equal(jobs.length, 1, `${id}: one upstream job, got ${JSON.stringify(jobs.map((j) => j.idempotency_key))}`);
        const url = t.result.data[0].url;
        assert.ok(url.startsWith(`${gw2.base}/v1/media/`), url);
        const media = await download(url);
        assert.equal(media.status, 200);
        if (t.task_type === 'video_generation') {
          assert.equal(sha256Hex(media.body), (await mockJob(jobs[0].id)).content_sha256);
        }
      }
      const after = await mockStats();
      assert.equal(after.video_jobs_started - before.video_jobs_started, 3);
      assert.equal(after.image_jobs_started - before.image_jobs_started, 1);

      // Each completion reaches the webhook receiver (at least once; copies share the id).
      const completed = await waitFor(() => {
        const got = hooks.requests.filter((r) => JSON.parse(r.body).type === 'task.completed');
        return new Set(got.map((r) => JSON.parse(r.body).task_id)).size === ids.length ? got : null;
      }, 10000, 'task.completed webhooks after the restart');
      for (const id of ids) {
        const mine = completed.filter((r) => JSON.parse(r.body).task_id === id);
        assert.equal(new Set(mine.map((r) => r.headers['webhook-id'])).size, 1, `${id}: one webhook-id`);
      }
    } finally {
      await hooks.close();
      await gw1.stop({ keepData: Boolean(gw2) });
      await gw2?.stop();  // removes the shared data directory
    }
  });
});
