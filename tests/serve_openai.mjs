// serve_openai.mjs — the official OpenAI client library (npm `openai`) against `msrnn serve`.
// Usage: node tests/serve_openai.mjs BASE_URL API_KEY MODEL_ID PROMPT
// Runs each call below and prints one JSON object of what came back; tests/test_serve.py holds the
// checks (so a failure there shows the whole answer).
import OpenAI from "openai";

const [baseURL, apiKey, model, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const out = {};

async function attempt(name, fn) {
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { error: true, status: e.status ?? null, name: e.constructor?.name, message: String(e.message) };
  }
}

await attempt("models", async () => (await client.models.list()).data.map((m) => m.id));
await attempt("completion", async () =>
  client.completions.create({ model, prompt, max_tokens: 24, temperature: 0 }));
await attempt("completion_stream", async () => {
  const stream = await client.completions.create({ model, prompt, max_tokens: 24, temperature: 0, stream: true });
  let text = "", chunks = 0, finish = null;
  for await (const c of stream) {
    chunks++;
    text += c.choices[0]?.text ?? "";
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  return { text, chunks, finish };
});
await attempt("chat", async () =>
  client.chat.completions.create({
    model, temperature: 0, max_tokens: 20,
    messages: [{ role: "system", content: "A story." }, { role: "user", content: prompt }],
  }));
await attempt("chat_stream", async () => {
  const stream = await client.chat.completions.create({
    model, temperature: 0, max_tokens: 20, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "system", content: "A story." }, { role: "user", content: prompt }],
  });
  let text = "", chunks = 0, usage = null, finish = null, role = null;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    const d = c.choices[0]?.delta;
    if (d?.role) role = d.role;
    text += d?.content ?? "";
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  return { text, chunks, usage, finish, role };
});
await attempt("stop", async () =>
  client.completions.create({ model, prompt, max_tokens: 64, temperature: 0, stop: ["\n"] }));
await attempt("seed_a", async () =>
  client.completions.create({ model, prompt, max_tokens: 24, temperature: 1.0, seed: 7 }));
await attempt("seed_b", async () =>
  client.completions.create({ model, prompt, max_tokens: 24, temperature: 1.0, seed: 7 }));
await attempt("seed_c", async () =>
  client.completions.create({ model, prompt, max_tokens: 24, temperature: 1.0, seed: 8 }));
await attempt("logprobs", async () =>
  client.completions.create({ model, prompt, max_tokens: 5, temperature: 0, logprobs: 3 }));
await attempt("chat_logprobs", async () =>
  client.chat.completions.create({
    model, temperature: 0, max_tokens: 5, logprobs: true, top_logprobs: 2,
    messages: [{ role: "user", content: prompt }],
  }));
await attempt("err_model", async () =>
  client.completions.create({ model: "no-such-model", prompt, max_tokens: 4 }));
await attempt("err_type", async () =>
  client.completions.create({ model, prompt, max_tokens: "many" }));
await attempt("err_key", async () =>
  new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).completions.create({ model, prompt, max_tokens: 4 }));
await attempt("err_n", async () => client.completions.create({ model, prompt, max_tokens: 4, n: 3 }));
console.log(JSON.stringify(out));
