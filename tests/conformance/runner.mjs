// The JavaScript client's conformance runner, for any runtime: runPlan(plan, xio) makes each
// case's call with the client module `xio` (clients/js/xio.js, or the node's /_xio/client.js)
// and resolves to {results: [...]}, the contract of tests/test_conformance.py. It reports,
// it never judges (tests/conformance/check.py judges). No import of its own, and nothing
// but what browsers and Node share (btoa, atob, TextEncoder), so a page and a Node script
// hand it the module they loaded.

const ERRORS = ['ConnectError', 'Timeout', 'ResponseError', 'TransportError'];

export async function runPlan(plan, xio) {
  const results = [];
  for (const item of plan.cases) results.push(await runCase(plan.entries, item, xio));
  return { results };
}

async function runCase(entries, item, xio) {
  const entry = item.entry ?? 'a';
  const url = Array.isArray(entry) ? entry.map((name) => entries[name]) : entries[entry];
  const options = item.timeout === undefined ? {} : { timeout: item.timeout };
  const client = xio.client(url, options);
  const call = { query: item.query ?? undefined, headers: item.headers ?? undefined };
  const path = item.path ?? '';
  const data = 'data' in item ? dataOf(item.data) : undefined;
  let answer;
  try {
    if (item.call === 'get') answer = await client.get(path, call);
    else if (item.call === 'about') answer = await client.about(path);
    else if (item.call === 'request') answer = await client.request(item.method, path, { ...call, data });
    else answer = await client[item.call](path, data, call);
  } catch (error) {
    const name = ERRORS.find((kind) => error instanceof xio[kind]);
    if (name === undefined) throw error; // not a TransportError: a bug the run must show
    return { id: item.id, error: name, message: String(error.message) };
  } finally {
    client.close();
  }
  return observation(item.id, answer);
}

function dataOf(data) {
  if (data !== null && typeof data === 'object' && '$bytes' in data) return fromBase64(data.$bytes);
  if (data !== null && typeof data === 'object' && '$repeat' in data) return data.$repeat.repeat(data.count);
  return data;
}

function observation(id, answer) {
  let content = answer.content;
  if (content instanceof Uint8Array) content = { $bytes: toBase64(content) };
  const headers = [];
  for (const [name, value] of answer.headers) headers.push([name.toLowerCase(), value]);
  return { id, status: answer.status, contentType: answer.contentType, headers, content };
}

function toBase64(bytes) {
  let text = '';
  for (let start = 0; start < bytes.length; start += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
}
