// An Anthropic provider behind the OpenAI API: the official openai client talks to the gateway,
// the gateway talks Anthropic's Messages API to the mock (POST /v1/messages), non-stream and
// stream, text and tool calls, usage billed, errors mapped.
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMock, startGateway, seed, waitFor, UPSTREAM_KEY } from './harness.mjs';

let mock;
let gw;
let fx;
let client;

const MESSAGES = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Tell me about lighthouses.' },
];
const TOOLS = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } },
  },
}];

before(async () => {
  mock = await startMock();
  gw = await startGateway();
  fx = await seed(gw, mock);
  const provider = await gw.admin('POST', '/api/ProviderCredentials', {
    providerType: 'anthropic', providerName: 'claude-mock', baseUrl: `${mock.base}/v1`, apiKey: UPSTREAM_KEY,
  });
  const mapping = await gw.admin('POST', '/api/ModelProviderMapping', {
    modelAlias: 'claude', providerModelId: 'claude-sonnet-4', providerId: provider.id,
  });
  await gw.admin('POST', '/api/ModelCosts', {
    costName: 'claude', modelProviderMappingIds: [mapping.id],
    inputCostPerMillionTokens: 3.0, outputCostPerMillionTokens: 15.0,
  });
  client = new OpenAI({ apiKey: fx.keys.main, baseURL: `${gw.base}/v1`, maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
  mock?.stop();
});

it('non-stream: translated both ways, with the Anthropic headers and usage', async () => {
  const res = await client.chat.completions.create({ model: 'claude', messages: MESSAGES, max_tokens: 200 });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.model, 'claude');
  assert.equal(res.choices[0].message.role, 'assistant');
  assert.ok(res.choices[0].message.content.length > 0);
  assert.equal(res.choices[0].finish_reason, 'stop');
  assert.ok(res.usage.prompt_tokens > 0 && res.usage.completion_tokens > 0);
  assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + res.usage.completion_tokens);
  const stats = await mock.stats();
  assert.equal(stats.last_api_key, UPSTREAM_KEY);
  assert.equal(stats.last_anthropic_version, '2023-06-01');
  assert.equal(stats.last_model, 'claude-sonnet-4');
  const sent = JSON.parse(stats.last_body);
  assert.equal(sent.system, 'You are terse.');
  assert.equal(sent.max_tokens, 200);
  assert.deepEqual(sent.messages, [{ role: 'user', content: [{ type: 'text', text: 'Tell me about lighthouses.' }] }]);
});

it('stream: chunks as they arrive, same text as non-stream, usage when asked', async () => {
  const whole = await client.chat.completions.create({ model: 'claude', messages: MESSAGES, max_tokens: 200 });
  const stream = await client.chat.completions.create({
    model: 'claude', messages: MESSAGES, max_tokens: 200, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let role = null;
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.model, 'claude');
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    role ??= c.delta.role ?? null;
    text += c.delta.content ?? '';
    finish = c.finish_reason ?? finish;
  }
  assert.ok(chunks > 3, `${chunks} chunks`);
  assert.equal(role, 'assistant');
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, 'stop');
  assert.deepEqual(
    { p: usage.prompt_tokens, c: usage.completion_tokens },
    { p: whole.usage.prompt_tokens, c: whole.usage.completion_tokens },
  );
});

it('tool calls round trip, non-stream and stream', async () => {
  const ask = [{ role: 'user', content: 'Weather in Oslo?' }];
  const res = await client.chat.completions.create({ model: 'claude', messages: ask, tools: TOOLS });
  const call = res.choices[0].message.tool_calls?.[0];
  assert.ok(call, JSON.stringify(res));
  assert.equal(res.choices[0].finish_reason, 'tool_calls');
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  const args = JSON.parse(call.function.arguments);
  assert.equal(typeof args.city, 'string');
  assert.equal(args.days, 42);

  // The same call streamed: argument fragments assemble to the same JSON.
  const stream = await client.chat.completions.create({ model: 'claude', messages: ask, tools: TOOLS, stream: true });
  let id = null;
  let name = null;
  let argText = '';
  let finish = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    for (const tc of c.delta.tool_calls ?? []) {
      assert.equal(tc.index, 0);
      id ??= tc.id ?? null;
      name ??= tc.function?.name ?? null;
      argText += tc.function?.arguments ?? '';
    }
    finish = c.finish_reason ?? finish;
  }
  assert.equal(name, 'get_weather');
  assert.ok(id);
  assert.deepEqual(JSON.parse(argText), args);
  assert.equal(finish, 'tool_calls');

  // The tool's result goes back; the model answers in text.
  const answer = await client.chat.completions.create({
    model: 'claude',
    tools: TOOLS,
    messages: [...ask, res.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temp": 3}' }],
  });
  assert.ok(answer.choices[0].message.content.length > 0);
  assert.equal(answer.choices[0].finish_reason, 'stop');
  const sent = JSON.parse((await mock.stats()).last_body);
  const last = sent.messages.at(-1);
  assert.equal(last.role, 'user');
  assert.equal(last.content[0].type, 'tool_result');
  assert.equal(last.content[0].tool_use_id, call.id);
});

it('Anthropic requests are billed from its usage', async () => {
  const { data: res, response } = await client.chat.completions
    .create({ model: 'claude', messages: MESSAGES, max_tokens: 50 })
    .withResponse();
  const requestId = response.headers.get('x-request-id');
  assert.ok(requestId);
  const expected = (res.usage.prompt_tokens * 3 + res.usage.completion_tokens * 15) / 1e6;
  let row;
  await waitFor(async () => {
    const logs = await gw.admin('GET', '/api/Analytics/logs?limit=50');
    row = logs.data.find((r) => r.requestId === requestId);
    return row !== undefined;
  }, 10000, 'the request log row');
  assert.equal(row.modelAlias, 'claude');
  assert.equal(row.inputTokens, res.usage.prompt_tokens);
  assert.equal(row.outputTokens, res.usage.completion_tokens);
  assert.equal(row.usageEstimated, false);
  assert.ok(Math.abs(row.cost - expected) < 1e-9, `cost ${row.cost} = ${expected}`);
});

it('what Anthropic cannot do is a clear 400; upstream errors are mapped', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'claude', messages: MESSAGES, n: 2 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'n');
    return true;
  });
  await assert.rejects(client.embeddings.create({ model: 'claude', input: 'x' }), (e) => {
    assert.equal(e.status, 400);
    assert.match(e.message, /chat completions only/);
    return true;
  });
  const calls = (await mock.stats()).requests_total;
  await assert.rejects(client.chat.completions.create({ model: 'claude', messages: [] }), (e) => {
    assert.equal(e.status, 400);
    return true;
  });
  assert.equal((await mock.stats()).requests_total, calls, 'invalid requests never reach the provider');
});
