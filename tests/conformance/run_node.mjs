// The JavaScript client's conformance runner, under Node: `node run_node.mjs PLAN.json`.
//
// It follows the runner contract of tests/test_conformance.py, as runners.py does for Python:
// each case's call is made in order with clients/js/xio.js, and what came back is printed as
// {"results": [...]}; it reports and never judges (check.py judges).

import { readFileSync } from 'node:fs';
import { client, TransportError } from '../../clients/js/xio.js';

function dataOf(data) {
  if (data && typeof data === 'object' && '$bytes' in data) return new Uint8Array(Buffer.from(data.$bytes, 'base64'));
  if (data && typeof data === 'object' && '$repeat' in data) return data.$repeat.repeat(data.count);
  return data;
}

function observation(id, response) {
  let content = response.content;
  if (content instanceof Uint8Array) content = { $bytes: Buffer.from(content).toString('base64') };
  // A Headers object yields each Set-Cookie on its own and every other name once, joined.
  const headers = [...response.headers].map(([name, value]) => [name.toLowerCase(), value]);
  return { id, status: response.status, contentType: response.contentType, headers, content };
}

async function runCase(entries, one) {
  const entry = one.entry ?? 'a';
  const url = Array.isArray(entry) ? entry.map((name) => entries[name]) : entries[entry];
  const c = client(url, 'timeout' in one ? { timeout: one.timeout } : {});
  const options = { query: one.query, headers: one.headers };
  try {
    let response;
    if (one.call === 'get') response = await c.get(one.path ?? '', options);
    else if (one.call === 'about') response = await c.about(one.path ?? '');
    else if (one.call === 'request') {
      const data = 'data' in one ? dataOf(one.data) : undefined;
      response = await c.request(one.method, one.path ?? '', { ...options, data });
    } else {
      const data = 'data' in one ? dataOf(one.data) : undefined;
      response = await c[one.call](one.path ?? '', data, options);
    }
    return observation(one.id, response);
  } catch (error) {
    if (!(error instanceof TransportError)) throw error;
    return { id: one.id, error: error.name, message: error.message };
  } finally {
    c.close();
  }
}

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = [];
for (const one of plan.cases) results.push(await runCase(plan.entries, one));
process.stdout.write(JSON.stringify({ results }) + '\n');
