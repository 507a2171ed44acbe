// Task work spreads over a three-instance cluster (issue 6 item 2): the RabbitMQ work queue
// splits its partitions between the instances (membership heartbeats through the broker,
// rendezvous hashing), so image tasks submitted through nginx run on more than one instance's
// worker. A relay in front of the mock provider tells which instance's process called it
// (tests/e2e/cluster.mjs startTap); /metrics shows each instance's share of the partitions.
// Needs CONDUIT_TEST_PG, CONDUIT_TEST_REDIS, CONDUIT_TEST_AMQP (scripts/engines.sh start all) and
// nginx; skipped otherwise.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, seed, waitFor, apiCall } from './harness.mjs';
import { startCluster, addTappedImageModel, clusterSkipReason } from './cluster.mjs';

const skip = clusterSkipReason();
const N = 3;
const PARTITIONS = 30; // the default PARTITIONCOUNT

let mock;
let cl;
let fx;
let tap;

before(async () => {
  if (skip) return;
  mock = await startMock(['--job-duration-ms', '200']);
  cl = await startCluster({
    n: N, name: 'tasks', args: ['--task-poll-interval-ms', '100', '--task-sweep-interval-ms', '200'],
  });
  fx = await seed(cl.instances[0], mock);
  tap = await addTappedImageModel(cl, mock.port, fx.keys.main);
});

after(async () => {
  await cl?.stop();
  await tap?.close();
  mock?.stop();
});

/** The value of `name{labels}` in an instance's /metrics, or null. */
async function metric(g, name, labels = '') {
  const text = await (await fetch(`${g.base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ').pop()) : null;
}

describe('cluster: task work by partition', { skip }, () => {
  it('every instance owns a share of the task partitions, together all of them', async () => {
    // The gauges are refreshed every 5 s.
    const owned = await waitFor(async () => {
      const counts = await Promise.all(cl.instances.map((g) => metric(g, 'conduit_queue_partitions_owned', '{topic="tasks"}')));
      const members = await Promise.all(cl.instances.map((g) => metric(g, 'conduit_queue_members')));
      const ok = members.every((m) => m === N) && counts.every((c) => c > 0)
        && counts.reduce((a, b) => a + b, 0) === PARTITIONS;
      return ok && counts;
    }, 15000, 'partitions split over the instances in /metrics');
    assert.equal(owned.length, N);
  });

  it('tasks submitted through nginx run on more than one instance\'s worker', async () => {
    // A task's queue messages are keyed by its virtual key (one partition per key): tasks of
    // several keys are needed to reach several partitions.
    const keys = [];
    for (let i = 0; i < 16; i++) {
      const k = await cl.admin('POST', '/api/VirtualKeys', { keyName: `spread-${i}`, virtualKeyGroupId: fx.group.id });
      keys.push(k.virtualKey);
    }
    await cl.onAll(async (g) => {
      const r = await Promise.all(keys.map((k) => apiCall(g.base, k, 'GET', '/v1/models')));
      return r.every((x) => x.status === 200);
    }, 5000, 'the new keys on every instance');
    const tasks = [];
    for (const key of keys) {
      const r = await apiCall(cl.base, key, 'POST', '/v1/images/generations/async', {
        body: { model: 'dall-e-tap', prompt: 'a harbour' },
      });
      assert.equal(r.status, 202, r.text);
      tasks.push({ key, id: r.json.task_id });
    }
    for (const { key, id } of tasks) {
      await waitFor(async () => {
        const r = await apiCall(cl.base, key, 'GET', `/v1/tasks/${id}`);
        assert.equal(r.status, 200, r.text);
        assert.notEqual(r.json.status, 'failed', r.text);
        return r.json.status === 'completed';
      }, 30000, `task ${id} completed`);
    }
    assert.ok(![...tap.requests.keys()].includes(null), `unknown caller: ${JSON.stringify([...tap.requests])}`);
    const calls = [...tap.requests.values()].reduce((a, b) => a + b, 0);
    assert.ok(calls >= tasks.length, `provider calls ${calls} for ${tasks.length} tasks`);
    // 16 keys hashed to 30 partitions split three ways: all on one instance's partitions has a
    // probability of (its share)^16, below 1e-4 for any share up to 1/2.
    console.log(`provider calls by worker pid: ${JSON.stringify([...tap.requests])}`);
    assert.ok(tap.requests.size >= 2, `provider calls by pid: ${JSON.stringify([...tap.requests])}`);
  });
});
