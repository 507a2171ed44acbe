// The gateway foundation, end to end: the official `openai` npm client against the real
// `conduit` binary and the real mock provider.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  startMock, startGateway, seed, rawConnect, readUntilClose, waitFor, UPSTREAM_KEY,
} from './harness.mjs';

let mock;
let gw;
let fx;
let client;

const chatBody = (content) => ({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content }],
});

before(async () => {
  mock = await startMock();
  gw = await startGateway([
    '--max-body-bytes', String(256 * 1024),
    '--header-timeout-ms', '700',
    '--upstream-first-byte-timeout-ms', '1500',
  ]);
  fx = await seed(gw, mock);
  client = new OpenAI({ apiKey: fx.keys.main, baseURL: `${gw.base}/v1`, maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
  mock?.stop();
});

describe('chat completions', () => {
  it('non-stream: the upstream sees the provider model and key, the client gets OpenAI JSON', async () => {
    const res = await client.chat.completions.create(chatBody('hello there'));
    assert.equal(res.object, 'chat.completion');
    assert.ok(res.choices[0].message.content.length > 0);
    assert.ok(res.usage.prompt_tokens > 0 && res.usage.completion_tokens > 0);
    const stats = await mock.stats();
    assert.equal(stats.last_model, 'mock-gpt');
    assert.equal(stats.last_authorization, `Bearer ${UPSTREAM_KEY}`);
    assert.ok(!String(stats.last_authorization).includes(fx.keys.main));
  });

  it('headers: X-Request-Id is echoed (or generated) and X-Conduit-Overhead-Us is set', async () => {
    const { response } = await client.chat.completions
      .create(chatBody('headers'), { headers: { 'X-Request-Id': 'e2e-req-42' } })
      .withResponse();
    assert.equal(response.headers.get('x-request-id'), 'e2e-req-42');
    const overhead = Number(response.headers.get('x-conduit-overhead-us'));
    assert.ok(Number.isInteger(overhead) && overhead >= 0);
    const { response: r2 } = await client.chat.completions.create(chatBody('gen')).withResponse();
    assert.match(r2.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
  });

  it('stream: chunks arrive while the mock is still producing (proved by ordering)', async () => {
    const token = `hold-${Date.now()}`;
    const stream = await client.chat.completions.create({
      ...chatBody('stream please'), stream: true, mock_hold: token,
    });
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.done, false);
    // The first chunk is in our hands, yet the mock still holds back the end of the stream.
    const stats = await mock.stats();
    assert.ok(stats.held.includes(token), `mock should still hold ${token}: ${JSON.stringify(stats.held)}`);
    const chunks = [first.value];
    assert.equal(await mock.release(token), 200);
    for (;;) {
      const n = await it.next();
      if (n.done) break;
      chunks.push(n.value);
    }
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    const full = await client.chat.completions.create(chatBody('stream please'));
    assert.equal(text, full.choices[0].message.content);
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    assert.ok(chunks.every((c) => !c.usage), 'no usage chunk unless asked for');
  });

  it('stream with include_usage ends with a usage chunk', async () => {
    const stream = await client.chat.completions.create({
      ...chatBody('count me'), stream: true, stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.ok(last.usage.total_tokens > 0);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  });

  it('100 concurrent streams all complete intact', async () => {
    const expected = (await client.chat.completions.create(chatBody('concurrent'))).choices[0].message.content;
    const runs = Array.from({ length: 100 }, async () => {
      const stream = await client.chat.completions.create({ ...chatBody('concurrent'), stream: true });
      let text = '';
      let finish = null;
      for await (const c of stream) {
        text += c.choices[0]?.delta?.content ?? '';
        finish = c.choices[0]?.finish_reason ?? finish;
      }
      return { text, finish };
    });
    const results = await Promise.all(runs);
    for (const r of results) {
      assert.equal(r.text, expected);
      assert.equal(r.finish, 'stop');
    }
  });

  it('legacy completions pass through', async () => {
    const res = await client.completions.create({ model: 'gpt-4o-mini', prompt: 'Say this' });
    assert.equal(res.object, 'text_completion');
    assert.ok(res.choices[0].text.length > 0);
  });
});

describe('embeddings, models, images', () => {
  it('embeddings: base64 decodes to the same values as float', async () => {
    const input = ['the quick brown fox', 'jumps'];
    const asFloat = await client.embeddings.create({
      model: 'text-embedding-3-small', input, encoding_format: 'float',
    });
    // With no encoding_format the SDK asks for base64 and decodes it itself.
    const viaBase64 = await client.embeddings.create({ model: 'text-embedding-3-small', input });
    assert.equal(asFloat.data.length, 2);
    for (let i = 0; i < 2; i++) {
      const a = asFloat.data[i].embedding;
      const b = viaBase64.data[i].embedding;
      assert.equal(a.length, b.length);
      assert.ok(a.length > 0);
      for (let j = 0; j < a.length; j++) {
        assert.equal(Math.fround(a[j]), b[j]);
      }
    }
    // And raw base64 is passed through untouched.
    const raw = await fetch(`${gw.base}/v1/embeddings`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${fx.keys.main}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'text-embedding-3-small', input: 'jumps', encoding_format: 'base64' }),
    }).then((r) => r.json());
    const buf = Buffer.from(raw.data[0].embedding, 'base64');
    const floats = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    assert.deepEqual(Array.from(floats), viaBase64.data[1].embedding);
  });

  it('models: only the aliases the key may use', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids.sort(), ['dall-e-3', 'gpt-4o-mini', 'text-embedding-3-small']);
    const restricted = new OpenAI({ apiKey: fx.keys.restricted, baseURL: `${gw.base}/v1`, maxRetries: 0 });
    const rids = [];
    for await (const m of restricted.models.list()) rids.push(m.id);
    assert.deepEqual(rids, ['text-embedding-3-small']);
    const one = await client.models.retrieve('gpt-4o-mini');
    assert.equal(one.id, 'gpt-4o-mini');
    assert.equal(one.object, 'model');
    await assert.rejects(restricted.models.retrieve('gpt-4o-mini'), (e) => e.status === 404);
  });

  it('images: sync generation returns data', async () => {
    const res = await client.images.generate({ model: 'dall-e-3', prompt: 'a cat', n: 2 });
    assert.equal(res.data.length, 2);
    assert.ok(res.data[0].url || res.data[0].b64_json);
  });
});

describe('errors the SDK sees', () => {
  const make = (apiKey) => new OpenAI({ apiKey, baseURL: `${gw.base}/v1`, maxRetries: 0 });
  const expectApiError = async (promise, status, code) => {
    await assert.rejects(promise, (e) => {
      assert.ok(e instanceof OpenAI.APIError, `expected APIError, got ${e}`);
      assert.equal(e.status, status);
      assert.equal(e.code, code);
      return true;
    });
  };

  it('401 for an unknown or disabled key', async () => {
    await expectApiError(make('condt_nope').chat.completions.create(chatBody('x')), 401, 'invalid_api_key');
    await expectApiError(make(fx.keys.disabled).chat.completions.create(chatBody('x')), 401, 'invalid_api_key');
  });

  it('402 when the group balance is exhausted', async () => {
    await expectApiError(make(fx.keys.broke).chat.completions.create(chatBody('x')), 402, 'insufficient_balance');
  });

  it('403 for a model outside allowedModels', async () => {
    await expectApiError(make(fx.keys.restricted).chat.completions.create(chatBody('x')), 403, 'model_not_allowed');
  });

  it('404 for an unknown model alias', async () => {
    await expectApiError(
      client.chat.completions.create({ ...chatBody('x'), model: 'no-such-model' }), 404, 'model_not_found',
    );
  });
});

describe('bad input and failures', () => {
  const post = (body, headers = {}) => fetch(`${gw.base}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${fx.keys.main}`, 'Content-Type': 'application/json', ...headers },
    body,
  });

  it('malformed JSON → 400', async () => {
    const res = await post('{"model": "gpt-4o-mini", "messages": [');
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.equal(body.error.type, 'invalid_request_error');
  });

  it('missing model → 400 naming the param', async () => {
    const res = await post(JSON.stringify({ messages: [] }));
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.param, 'model');
  });

  it('body over the limit → 413 request_too_large', async () => {
    const res = await post(JSON.stringify({ ...chatBody('x'.repeat(300 * 1024)) }));
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error.code, 'request_too_large');
  });

  it('slow or partial headers time out with 408', async () => {
    const s = await rawConnect(gw.port);
    s.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n');  // never finished
    const started = Date.now();
    const data = await readUntilClose(s, 5000);
    assert.match(data, /^HTTP\/1\.1 408 /);
    assert.ok(Date.now() - started >= 600);
  });

  it('unknown route → 404 JSON, wrong method → 405 with Allow', async () => {
    const r1 = await fetch(`${gw.base}/v1/nope`);
    assert.equal(r1.status, 404);
    assert.equal((await r1.json()).error.code, 'not_found');
    const r2 = await fetch(`${gw.base}/v1/chat/completions`);
    assert.equal(r2.status, 405);
    assert.match(r2.headers.get('allow'), /POST/);
  });

  it('upstream down → 502 upstream_error', async () => {
    const closed = await gw.admin('POST', '/api/ProviderCredentials', {
      providerType: 'openai-compatible', providerName: 'down', baseUrl: 'http://127.0.0.1:9/v1', apiKey: 'x',
    });
    await gw.admin('POST', '/api/ModelProviderMapping', {
      modelAlias: 'down-model', providerModelId: 'x', providerId: closed.id,
    });
    const res = await post(JSON.stringify({ ...chatBody('x'), model: 'down-model' }));
    assert.equal(res.status, 502);
    assert.equal((await res.json()).error.code, 'upstream_error');
  });

  it('upstream hangs → 504 upstream_timeout within the configured timeout', async () => {
    const started = Date.now();
    const res = await post(JSON.stringify({ ...chatBody('x'), mock_hang: true }));
    assert.equal(res.status, 504);
    assert.equal((await res.json()).error.code, 'upstream_timeout');
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 1400, `answered after ${elapsed} ms, before the 1500 ms timeout`);
  });

  it('upstream 4xx passes through with its status and body', async () => {
    const res = await post(JSON.stringify({ ...chatBody('x'), mock_error_status: 400 }));
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.ok(body.error.message.length > 0);
  });

  it('client disconnect mid-stream releases the upstream request', async () => {
    const before = (await mock.stats()).streams_aborted;
    const controller = new AbortController();
    const token = `abort-${Date.now()}`;
    const stream = await client.chat.completions.create(
      { ...chatBody('abort me'), stream: true, mock_hold: token },
      { signal: controller.signal },
    );
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    controller.abort();
    await waitFor(async () => (await mock.stats()).streams_aborted > before, 5000, 'upstream stream abort');
    await mock.release(token);
  });
});

describe('spend', () => {
  it('requests are billed in exact micro-units and a drained group is refused', async () => {
    // 100 µ$: enough for the worst case of one request capped at 10 completion tokens.
    const group = await gw.admin('POST', '/api/VirtualKeyGroups', { groupName: 'tiny', initialBalance: 0.0001 });
    const key = await gw.admin('POST', '/api/VirtualKeys', { keyName: 'tiny', virtualKeyGroupId: group.id });
    const c = new OpenAI({ apiKey: key.virtualKey, baseURL: `${gw.base}/v1`, maxRetries: 0 });
    const res = await c.chat.completions.create({ ...chatBody('spend it'), max_tokens: 10 });
    const expected = Math.round(res.usage.prompt_tokens * 1.0) + Math.round(res.usage.completion_tokens * 2.0);
    // A request whose worst case no longer fits is refused at once, before any upstream call.
    await assert.rejects(c.chat.completions.create({ ...chatBody('again'), max_tokens: 50 }),
      (e) => e.status === 402 && e.code === 'insufficient_balance');
    // After the flush the ledger shows the debit, exactly.
    const after = await waitFor(async () => {
      const g = await gw.admin('GET', `/api/VirtualKeyGroups/${group.id}`);
      return g.lifetimeSpent > 0 ? g : null;
    }, 5000, 'spend flush');
    assert.equal(Math.round(after.lifetimeSpent * 1e6), expected);
    assert.equal(Math.round(after.balance * 1e6), 100 - expected);
    assert.ok(after.balance >= 0, 'never below zero');
    const logs = await gw.admin('GET', `/api/Analytics/logs?virtualKeyId=${key.keyInfo.id}`);
    assert.equal(logs.data.length, 1);
    assert.equal(logs.data[0].statusCode, 200);
    assert.equal(logs.data[0].inputTokens, res.usage.prompt_tokens);
  });
});

describe('operations', () => {
  it('health endpoints report JSON; ready checks the store', async () => {
    const ready = await (await fetch(`${gw.base}/health/ready`)).json();
    assert.equal(ready.status, 'Healthy');
    const store = ready.checks.find((c) => c.name === 'store');
    assert.equal(store.status, 'Healthy');
    const live = await fetch(`${gw.base}/health/live`);
    assert.equal(live.status, 200);
  });

  it('metrics expose the gateway families in Prometheus text', async () => {
    const text = await (await fetch(`${gw.base}/metrics`)).text();
    for (const name of [
      'conduit_http_requests_total', 'conduit_http_request_duration_seconds_bucket',
      'conduit_upstream_request_duration_seconds_bucket', 'conduit_gateway_overhead_seconds_bucket',
      'conduit_http_connections_open', 'process_resident_memory_bytes', 'process_open_fds',
    ]) {
      assert.ok(text.includes(name), `missing ${name}`);
    }
    assert.match(text, /conduit_http_requests_total\{route="\/v1\/chat\/completions",status="200"\} \d+/);
  });

  it('admin API requires the master key', async () => {
    const res = await fetch(`${gw.base}/api/VirtualKeys`);
    assert.equal(res.status, 401);
  });
});
