// xio-client: call xio services from a browser or Node (>= 18) with the verbs of the Python client.
//
//     import { client } from './xio.js';          // or from 'http://node:7700/_xio/client.js'
//     const inventory = client('http://127.0.0.1:7700/inventory');
//     const r = await inventory.get('items/42');  // GET /inventory/items/42
//     r.status, r.content, r.contentType, r.headers
//
// Theory of operation
// -------------------
// A call is rendered once, with no IO, into a request: the method, the path below the base
// URL's path (percent-encoded UTF-8), the query string, a list of header pairs and the body
// bytes (JSON for structures, UTF-8 text for strings, raw for bytes). A transport then opens
// the exchange and answers with the status, the headers and a reader of body chunks:
//
//   HttpTransport  (http://, https://) one fetch() per call; an AbortController bounds it.
//   WsTransport    (ws://, wss://) one WebSocket per client to /_xio/client-ws, every call a
//                  numbered REQ message on it, many in flight; the node answers with a HEAD
//                  message and DATA messages until one carries END (docs/PROTOCOL.md, 16).
//
// request() reads every chunk and decodes the body by its Content-Type, as the Python
// client's xio/content.py decode_answer does; stream() hands the chunks out as they come.
// The timeout covers the whole exchange for request(); for stream() it covers the wait for
// the head and then each wait for a chunk. Every HTTP status resolves; only a failed exchange
// rejects, with one of the TransportError subclasses below, translated where it happens.
//
// A client made with a list of URLs fails over: entries are tried in order from the last one
// that worked, and the next is tried only when nothing was sent (ConnectError with
// nothingSent). fetch() does not say whether a request left: in Node the cause of its
// TypeError names a refused or failed connection, and only those move on; in a browser the
// TypeError carries no cause, so every network failure is taken as "nothing sent".
//
// The WebSocket is opened on first use. When it closes, every call in flight rejects with
// ConnectError (ResponseError for an answer cut short) and the next call opens a new one;
// failed attempts back off (0.1 s doubling to 5 s), and a call made during a backoff waits
// for it when its timeout allows, else fails at once with ConnectError (nothing sent).

export const version = '0.1.0';

const DEFAULT_ACCEPT = 'application/json, */*;q=0.5';
const DEFAULT_TIMEOUT = 30;
const CLIENT_WS_PATH = '/_xio/client-ws';
// setTimeout fires at once for a delay above this; a longer timeout means none.
const MAX_TIMER_MS = 2 ** 31 - 1;
// Node, Deno and Bun may do what a page (or a worker) may not: set User-Agent, see Set-Cookie,
// take a redirect's own answer.
const IN_BROWSER = !(globalThis.process?.versions?.node || globalThis.Deno);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Characters a request target keeps as they are; '%' stays so that an already encoded path
// passes through unchanged (as in the Python client).
const TARGET_SAFE = /[A-Za-z0-9/?&=:@!$'()*+,;%\-._~]/;

// -- errors ------------------------------------------------------------------------------------
//
//   TransportError   a call that could not complete an exchange
//   ├── ConnectError  no connection, or one lost before any answer (nothingSent: none left)
//   ├── Timeout       no answer within the client's own timeout
//   └── ResponseError an answer that is not HTTP or a channel message, cut short, or undecodable
//
// A local misuse (a bad method, header or timeout) is a TypeError, thrown before any IO.

export class TransportError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'TransportError';
  }
}

export class ConnectError extends TransportError {
  constructor(message, options = {}) {
    super(message, options);
    this.name = 'ConnectError';
    // True when the request cannot have left: a failover client may try the next entry.
    this.nothingSent = Boolean(options.nothingSent);
  }
}

export class Timeout extends TransportError {
  constructor(message, options) {
    super(message, options);
    this.name = 'Timeout';
  }
}

export class ResponseError extends TransportError {
  constructor(message, options) {
    super(message, options);
    this.name = 'ResponseError';
  }
}

// -- rendering a call (pure) ------------------------------------------------------------------

// Percent-encode as UTF-8 what a request target cannot carry as it is.
function quoteTarget(text) {
  let out = '';
  for (const char of text) {
    if (TARGET_SAFE.test(char)) out += char;
    else if (char.length === 1 && char >= '\ud800' && char <= '\udfff') {
      throw new TypeError(`${JSON.stringify(text)} has a lone surrogate`);
    } else out += encodeURIComponent(char);
  }
  return out;
}

function encodeQuery(query) {
  if (query === undefined || query === null) return '';
  if (typeof query === 'string') return quoteTarget(query.replace(/^\?/, ''));
  if (query instanceof URLSearchParams) return query.toString();
  const params = new URLSearchParams();
  const pairs = Array.isArray(query) ? query : Object.entries(query);
  for (const [name, value] of pairs) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined) params.append(name, one === null ? '' : String(one));
    }
  }
  return params.toString();
}

function encodeBody(data) {
  if (data === undefined) return { body: null, type: null };
  if (typeof data === 'string') {
    return { body: new TextEncoder().encode(data), type: 'text/plain; charset=utf-8' };
  }
  if (data instanceof ArrayBuffer) {
    return { body: new Uint8Array(data), type: 'application/octet-stream' };
  }
  if (ArrayBuffer.isView(data)) {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return { body: bytes, type: 'application/octet-stream' };
  }
  const text = JSON.stringify(data);
  if (text === undefined) throw new TypeError(`cannot send a ${typeof data} as a body`);
  return { body: new TextEncoder().encode(text), type: 'application/json' };
}

// Return header pairs: each later layer replaces a name (any case) of the earlier ones, and
// a null or undefined value removes it.
function mergeHeaders(...layers) {
  const merged = new Map();
  for (const layer of layers) {
    if (!layer) continue;
    const pairs =
      layer instanceof Headers || Array.isArray(layer) ? [...layer] : Object.entries(layer);
    for (const [name, value] of pairs) {
      if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
      if (value === undefined || value === null) {
        merged.delete(name.toLowerCase());
        continue;
      }
      const text = String(value);
      if (/[\r\n\0]/.test(text)) throw new TypeError(`invalid value for header ${name}`);
      merged.set(name.toLowerCase(), [name, text]);
    }
  }
  return [...merged.values()];
}

// Return the call as a request, everything but the base path a transport puts in front.
function render(method, path, options, clientHeaders) {
  method = String(method).toUpperCase();
  if (!TOKEN.test(method)) throw new TypeError(`invalid HTTP method ${JSON.stringify(method)}`);
  const { body, type } = encodeBody(options.data);
  let headers = mergeHeaders(clientHeaders, options.headers);
  if (type && !headers.some(([name]) => name.toLowerCase() === 'content-type')) {
    headers.push(['Content-Type', type]);
  }
  let relative = quoteTarget(String(path ?? '').replace(/^\/+/, ''));
  let query = encodeQuery(options.query);
  const mark = relative.indexOf('?');
  if (mark >= 0) {
    const inPath = relative.slice(mark + 1);
    query = inPath && query ? `${inPath}&${query}` : inPath || query;
    relative = relative.slice(0, mark);
  }
  return { method, relative, query, headers, body };
}

function targetOf(basePath, request) {
  const path = request.relative ? `${basePath}/${request.relative}` : basePath || '/';
  return { path, query: request.query };
}

function timeoutMs(seconds) {
  if (seconds === null || seconds === Infinity) return Infinity;
  if (typeof seconds !== 'number' || !(seconds > 0)) {
    throw new TypeError(`a timeout is a number of seconds above 0, or null: ${seconds}`);
  }
  return seconds * 1000 > MAX_TIMER_MS ? Infinity : seconds * 1000;
}

// -- reading an answer (pure) -----------------------------------------------------------------

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function mediaType(contentType) {
  return contentType ? contentType.split(';', 1)[0].trim().toLowerCase() : '';
}

function decodeAnswer(bytes, contentType, method, status, where) {
  const kind = mediaType(contentType);
  const isJson = kind === 'application/json' || kind.endsWith('+json');
  if (bytes.length === 0) {
    if (method === 'HEAD' || status === 204 || status === 304 || isJson) return null;
    return kind.startsWith('text/') ? '' : bytes;
  }
  if (isJson) {
    try {
      return JSON.parse(strictUtf8.decode(bytes));
    } catch (error) {
      throw new ResponseError(`${where}: malformed JSON body: ${error.message}`, { cause: error });
    }
  }
  if (kind.startsWith('text/')) return new TextDecoder('utf-8').decode(bytes);
  return bytes;
}

function concat(chunks) {
  if (chunks.length === 1) return chunks[0];
  const whole = new Uint8Array(chunks.reduce((size, chunk) => size + chunk.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    whole.set(chunk, at);
    at += chunk.length;
  }
  return whole;
}

// -- the client channel's messages (pure) -----------------------------------------------------

const [REQ, CANCEL, HEAD, DATA] = [1, 2, 3, 4];
const END = 0x01;
// With END on a node's DATA: the body broke off (a stream lost on the way); fields.error says why.
const ABORT = 0x02;
const PREFIX_SIZE = 10;
const MAX_ID = 2 ** 32 - 1;

// A body over one piece goes as a REQ without END and DATA pieces: browsers fragment large
// WebSocket messages, and a node takes fragmented ones only up to 64 KiB (PROTOCOL.md 16.1).
const BODY_PIECE = 32 * 1024;

function requestMessages(id, fields, body) {
  body = body || new Uint8Array(0);
  if (body.length <= BODY_PIECE) return [encodeMessage(REQ, id, fields, body, END)];
  const messages = [encodeMessage(REQ, id, fields, body.subarray(0, BODY_PIECE))];
  for (let start = BODY_PIECE; start < body.length; start += BODY_PIECE) {
    const end = start + BODY_PIECE >= body.length ? END : 0;
    messages.push(encodeMessage(DATA, id, null, body.subarray(start, start + BODY_PIECE), end));
  }
  return messages;
}

function encodeMessage(kind, id, fields, body, flags = 0) {
  const json =
    fields && Object.keys(fields).length
      ? new TextEncoder().encode(JSON.stringify(fields))
      : new Uint8Array(0);
  body = body || new Uint8Array(0);
  const message = new Uint8Array(PREFIX_SIZE + json.length + body.length);
  const view = new DataView(message.buffer);
  view.setUint8(0, kind);
  view.setUint8(1, flags);
  view.setUint32(2, id);
  view.setUint32(6, json.length);
  message.set(json, PREFIX_SIZE);
  message.set(body, PREFIX_SIZE + json.length);
  return message;
}

// Return {kind, flags, id, fields, body}; throw ResponseError for what is not a message.
function decodeMessage(data) {
  if (!(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) {
    throw new ResponseError('the node sent a text message on the client channel');
  }
  const bytes =
    data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.length < PREFIX_SIZE) {
    throw new ResponseError(`a channel message is at least ${PREFIX_SIZE} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = view.getUint8(0);
  const flags = view.getUint8(1);
  const id = view.getUint32(2); // big-endian, as DataView reads by default
  const hlen = view.getUint32(6);
  if (kind < REQ || kind > DATA) throw new ResponseError(`unknown channel message kind ${kind}`);
  if (id === 0) throw new ResponseError('channel message id 0 is reserved');
  if (bytes.length < PREFIX_SIZE + hlen) {
    throw new ResponseError("a channel message's JSON is cut short");
  }
  let fields = {};
  if (hlen) {
    try {
      fields = JSON.parse(strictUtf8.decode(bytes.subarray(PREFIX_SIZE, PREFIX_SIZE + hlen)));
    } catch (error) {
      throw new ResponseError(`a channel message's JSON does not parse: ${error.message}`, {
        cause: error,
      });
    }
    if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
      throw new ResponseError("a channel message's JSON is not an object");
    }
  }
  return { kind, flags, id, fields, body: bytes.slice(PREFIX_SIZE + hlen) };
}

// -- HTTP transport ---------------------------------------------------------------------------

// Causes (Node's undici) of a fetch TypeError from before a request could leave.
const UNSENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EAI_NONAME',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
]);

function fetchFailure(error, where, aborted, ms) {
  if (aborted) return new Timeout(`${where}: no answer within ${ms / 1000} s`, { cause: error });
  const cause = error && error.cause;
  const code =
    (cause && (cause.code || (cause.errors && cause.errors[0] && cause.errors[0].code))) || '';
  if (code.startsWith('HPE_')) {
    return new ResponseError(`${where}: malformed response (${code})`, { cause: error });
  }
  // No cause: a browser, which never says why. No code: a local refusal (fetch's "bad port").
  // A refused TLS handshake sends nothing either.
  const tls = /CERT|TLS|SSL|UNABLE_TO|EPROTO/.test(code);
  const unsent = !cause || !code || UNSENT_CODES.has(code) || tls;
  let why = cause ? cause.message || code : error.message;
  if (why === 'bad port') why = "fetch() refuses this port (a 'bad port' of the Fetch standard)";
  return new ConnectError(`cannot reach ${where}: ${why}`, { cause: error, nothingSent: unsent });
}

class HttpTransport {
  constructor(url) {
    this.url = url;
    this.origin = url.origin;
    this.basePath = url.pathname.replace(/\/+$/, '');
  }

  async open(request, ms) {
    const { path, query } = targetOf(this.basePath, request);
    const where = `${request.method} ${this.origin}${path}`;
    if (request.body && (request.method === 'GET' || request.method === 'HEAD')) {
      throw new TypeError(`fetch() cannot send a body with ${request.method}`);
    }
    if (['CONNECT', 'TRACE', 'TRACK'].includes(request.method)) {
      throw new TypeError(`fetch() cannot send a ${request.method} request`);
    }
    const headers = new Headers(request.headers);
    const controller = new AbortController();
    const timer = ms === Infinity ? null : setTimeout(() => controller.abort(), ms);
    let response;
    try {
      response = await fetch(`${this.origin}${path}${query ? '?' + query : ''}`, {
        method: request.method,
        headers,
        body: request.body,
        signal: controller.signal,
        // Outside a browser 'manual' hands back the 3xx itself, as the Python client does; in a
        // browser it would hide the answer (an opaque redirect), so redirects are followed.
        redirect: IN_BROWSER ? 'follow' : 'manual',
        cache: 'no-store',
      });
    } catch (error) {
      throw fetchFailure(error, where, controller.signal.aborted, ms);
    } finally {
      clearTimeout(timer);
    }
    const reader = response.body ? response.body.getReader() : null;
    return {
      status: response.status,
      headers: response.headers,
      where,
      async read(ms) {
        if (!reader) return { done: true };
        const timer = ms === Infinity ? null : setTimeout(() => controller.abort(), ms);
        try {
          return await reader.read();
        } catch (error) {
          if (controller.signal.aborted) {
            const late = `${where}: the body did not arrive within ${ms / 1000} s`;
            throw new Timeout(late, { cause: error });
          }
          const why = error.cause ? error.cause.message : error.message;
          throw new ResponseError(`${where}: the body is cut short: ${why}`, { cause: error });
        } finally {
          clearTimeout(timer);
        }
      },
      cancel() {
        if (reader) reader.cancel().catch(() => {});
      },
    };
  }

  close() {}
}

// -- WebSocket transport ----------------------------------------------------------------------

// What one request in flight on the channel has received, handed out in order by take().
class Inbox {
  constructor() {
    this.items = [];
    this.waiter = null;
    this.error = null;
    this.ended = false;
    this.head = null;
  }

  put(item) {
    this.items.push(item);
    this.wake();
  }

  end() {
    this.ended = true;
    this.wake();
  }

  fail(error) {
    if (!this.error) this.error = error;
    this.wake();
  }

  wake() {
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter) waiter();
  }

  // Return the next item ({done: true} after the last); throw the failure, or Timeout.
  async take(ms, onTimeout) {
    for (;;) {
      if (this.items.length) return { done: false, value: this.items.shift() };
      if (this.error) throw this.error;
      if (this.ended) return { done: true };
      let timer = null;
      const expired = await new Promise((resolve) => {
        this.waiter = () => resolve(false);
        if (ms !== Infinity) timer = setTimeout(() => resolve(true), ms);
      });
      clearTimeout(timer);
      if (expired) {
        this.waiter = null;
        throw onTimeout();
      }
    }
  }
}

// Wait ms, or Infinity: forever; resolve true when the promise settled first (its value read later).
function within(promise, ms) {
  let timer = null;
  return Promise.race([
    promise.catch(() => {}).then(() => true),
    new Promise((resolve) => {
      if (ms !== Infinity) timer = setTimeout(() => resolve(false), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class WsTransport {
  constructor(url, WebSocketClass) {
    if (typeof WebSocketClass !== 'function') {
      throw new TypeError(
        'this runtime has no WebSocket: use Node >= 22, Node 20 or 21 with ' +
          '--experimental-websocket, or pass {WebSocket} to client()',
      );
    }
    this.WebSocket = WebSocketClass;
    this.url = url;
    this.origin = url.origin;
    this.socketUrl = `${url.protocol}//${url.host}${CLIENT_WS_PATH}`;
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.state = 'idle'; // idle | connecting | open
    this.generation = 0; // counts close() calls: a socket opened for an earlier one is dropped
    this.socket = null;
    this.connecting = null;
    this.inFlight = new Map(); // id -> Inbox
    this.lastId = 0;
    this.backoff = 0.1; // seconds before the next attempt, once one failed
    this.retryAt = 0; // time (ms) before which no attempt is made
  }

  async open(request, ms) {
    const { path, query } = targetOf(this.basePath, request);
    const where = `${request.method} ${this.origin}${path}`;
    const started = Date.now();
    const socket = await this.ready(ms, where);
    const left = ms === Infinity ? Infinity : Math.max(1, ms - (Date.now() - started));
    const id = this.nextId();
    const inbox = new Inbox();
    this.inFlight.set(id, inbox);
    const fields = { method: request.method, path, query, headers: request.headers };
    for (const message of requestMessages(id, fields, request.body)) socket.send(message);
    const expire = (what) => () => {
      this.cancel(id);
      return new Timeout(`${where}: ${what} within ${ms / 1000} s`);
    };
    const { value: head } = await inbox.take(left, expire('no answer'));
    return {
      status: head.status,
      headers: head.headers,
      where,
      read: (ms) => inbox.take(ms, expire('the body did not arrive')),
      cancel: () => this.cancel(id),
    };
  }

  nextId() {
    for (let tries = 0; tries <= this.inFlight.size; tries++) {
      this.lastId = this.lastId >= MAX_ID ? 1 : this.lastId + 1;
      if (!this.inFlight.has(this.lastId)) return this.lastId;
    }
    throw new TypeError('no free request id'); // unreachable below 2**32 - 1 calls in flight
  }

  cancel(id) {
    if (this.inFlight.delete(id) && this.state === 'open') {
      this.socket.send(encodeMessage(CANCEL, id));
    }
  }

  // Return the open socket, making one (after any backoff) if there is none.
  async ready(ms, where) {
    const started = Date.now();
    const left = () => (ms === Infinity ? Infinity : ms - (Date.now() - started));
    const late = () =>
      new Timeout(`${where}: no connection to ${this.socketUrl} within ${ms / 1000} s`);
    if (this.state === 'open') return this.socket;
    if (this.state === 'idle') {
      const wait = this.retryAt - Date.now();
      if (wait > 0) {
        if (wait > left()) {
          // as the Python client: fail now, and let failover move on
          throw new ConnectError(
            `${where}: ${this.socketUrl} failed; the next attempt is in ` +
              `${(wait / 1000).toFixed(1)} s, past this call's timeout`,
            { nothingSent: true },
          );
        }
        await sleep(wait);
      }
      if (this.state === 'idle') this.connect();
    }
    if (this.state === 'open') return this.socket;
    const connecting = this.connecting;
    if (!(await within(connecting, Math.max(0, left())))) throw late();
    return await connecting;
  }

  connect() {
    this.state = 'connecting';
    const generation = this.generation;
    this.connecting = new Promise((resolve, reject) => {
      let socket;
      try {
        socket = new this.WebSocket(this.socketUrl);
      } catch (error) {
        this.failed(generation);
        reject(
          new ConnectError(`cannot connect to ${this.socketUrl}: ${error.message}`, {
            cause: error,
            nothingSent: true,
          }),
        );
        return;
      }
      socket.binaryType = 'arraybuffer';
      let settled = false; // the attempt opened or failed
      socket.addEventListener('open', () => {
        if (settled) return; // the attempt already failed
        settled = true;
        if (generation !== this.generation) {
          socket.close(1000);
          reject(
            new ConnectError(`${this.socketUrl}: the client was closed`, { nothingSent: true }),
          );
          return;
        }
        this.state = 'open';
        this.socket = socket;
        this.backoff = 0.1;
        this.retryAt = 0;
        resolve(socket);
      });
      socket.addEventListener('message', (event) => this.receive(socket, event.data));
      // Node 20's WebSocket fires only 'error' (no 'close') when it cannot connect, so either
      // event ends an attempt, and both end an open socket; each acts once.
      const ended = (event) => {
        const why =
          event.type === 'close'
            ? `close code ${event.code}`
            : 'a network error or a refused upgrade';
        if (!settled) {
          settled = true;
          this.failed(generation);
          reject(
            new ConnectError(`cannot connect to ${this.socketUrl} (${why})`, { nothingSent: true }),
          );
        } else {
          this.lost(socket, `the connection to ${this.socketUrl} was lost (${why})`);
        }
      };
      socket.addEventListener('close', ended);
      socket.addEventListener('error', ended);
    });
    this.connecting.catch(() => {}); // the callers waiting on it see the failure
  }

  failed(generation) {
    if (generation !== this.generation) return; // close() was called meanwhile
    this.state = 'idle';
    this.retryAt = Date.now() + this.backoff * 1000;
    this.backoff = Math.min(this.backoff * 2, 5);
  }

  // The socket went away: every call in flight on it fails, the next call reconnects.
  lost(socket, why, error = null) {
    if (this.socket !== socket) return;
    this.socket = null;
    this.state = 'idle';
    const inFlight = [...this.inFlight.values()];
    this.inFlight.clear();
    for (const inbox of inFlight) {
      inbox.fail(
        error ||
          (inbox.head
            ? new ResponseError(`the answer is cut short: ${why}`)
            : new ConnectError(why)),
      );
    }
  }

  receive(socket, data) {
    if (socket !== this.socket) return; // a socket already given up: its ids are not ours now
    let message;
    try {
      message = decodeMessage(data);
      if (message.kind !== HEAD && message.kind !== DATA) {
        throw new ResponseError(
          `the node sent a message of kind ${message.kind}, which only a client sends`,
        );
      }
    } catch (error) {
      // The WebSocket API lets a script send only 1000 or 3000-4999, not 1002.
      socket.close(1000, 'not a channel message');
      const why = `${this.socketUrl}: ${error.message}`;
      this.lost(socket, why, new ResponseError(why, { cause: error }));
      return;
    }
    const inbox = this.inFlight.get(message.id);
    if (!inbox) return; // an answer to a call that was cancelled
    const end = Boolean(message.flags & END);
    if (message.kind === HEAD) {
      if (inbox.head) return this.refuse(message.id, 'a second HEAD for one request');
      const { status, headers: pairs = [] } = message.fields;
      if (!Number.isInteger(status) || status < 100 || status > 599 || !Array.isArray(pairs)) {
        return this.refuse(message.id, 'a HEAD without a status or a list of headers');
      }
      const headers = new Headers();
      try {
        for (const [name, value] of pairs) {
          // A browser never lets a page see Set-Cookie; over this channel neither.
          if (!(IN_BROWSER && /^set-cookie2?$/i.test(name))) headers.append(name, value);
        }
      } catch (error) {
        return this.refuse(message.id, `a bad header in a HEAD: ${error.message}`);
      }
      inbox.head = { status, headers };
      inbox.put(inbox.head);
    } else if (!inbox.head) {
      return this.refuse(message.id, 'DATA before HEAD');
    }
    if (message.flags & ABORT) {
      this.inFlight.delete(message.id);
      const why = String(message.fields.error ?? '').slice(0, 300);
      inbox.fail(new TransportError(`${this.socketUrl}: the answer broke off: ${why}`));
      return;
    }
    if (message.body.length) inbox.put(message.body);
    if (end) {
      this.inFlight.delete(message.id);
      inbox.end();
    }
  }

  // One answer broke the channel's rules: that call fails; the others go on.
  refuse(id, why) {
    const inbox = this.inFlight.get(id);
    this.cancel(id);
    inbox.fail(new ResponseError(`${this.socketUrl}: ${why}`));
  }

  close() {
    this.generation += 1;
    const socket = this.socket;
    if (socket) {
      this.lost(socket, 'the client was closed');
      socket.close(1000);
    } else if (this.state === 'connecting') {
      this.state = 'idle'; // the attempt's socket is closed when it opens
    }
  }
}

// -- the client -------------------------------------------------------------------------------

function transportFor(entry, options) {
  let url;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(entry) ? entry : `http://${entry}`);
  } catch (error) {
    throw new TypeError(`not a URL: ${JSON.stringify(entry)}`);
  }
  if (!/:\/\//.test(entry) && !url.port) url.port = '7700'; // host[/path], as --peers reads it
  if (url.protocol === 'http:' || url.protocol === 'https:') return new HttpTransport(url);
  if (url.protocol === 'ws:' || url.protocol === 'wss:') {
    return new WsTransport(url, options.WebSocket || globalThis.WebSocket);
  }
  throw new TypeError(`not an http(s):// or ws(s):// URL: ${JSON.stringify(entry)}`);
}

// Reads text/event-stream bytes as they arrive (the WHATWG HTML standard, 9.2).
class EventParser {
  #text = '';
  #decoder = new TextDecoder();
  #data = [];
  #event = null;
  #id = null;
  #retry = null;

  *feed(bytes) {
    this.#text += this.#decoder.decode(bytes, { stream: true });
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.#text);
      // A CR last may be the half of a CRLF: wait for what follows it.
      if (!match || (match[0] === '\r' && match.index === this.#text.length - 1)) {
        if (this.#text.length > MAX_EVENT_LINE) throw new ResponseError('an event line over 1 MiB');
        return;
      }
      const line = this.#text.slice(0, match.index);
      this.#text = this.#text.slice(match.index + match[0].length);
      const event = this.#line(line);
      if (event) yield event;
    }
  }

  #line(line) {
    if (!line) {
      if (!this.#data.length) {
        this.#event = null;
        return null;
      }
      const data = this.#data.join('\n');
      const event = { event: this.#event || 'message', data, id: this.#id, retry: this.#retry };
      event.json = () => JSON.parse(data);
      this.#data = [];
      this.#event = this.#retry = null;
      return event;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') this.#data.push(value);
    else if (name === 'event') this.#event = value;
    else if (name === 'id' && !value.includes('\0')) this.#id = value;
    else if (name === 'retry' && /^\d+$/.test(value)) this.#retry = Number(value);
    return null;
  }
}
const MAX_EVENT_LINE = 1024 * 1024;

export class Client {
  #transports;
  #failover;
  #good = 0;
  #headers;

  // url: a base URL, or a list of them to fail over; options {timeout, headers, WebSocket}.
  constructor(url, options = {}) {
    const entries = Array.isArray(url) ? url : [url];
    if (!entries.length) throw new TypeError('a client needs at least one URL');
    this.#failover = Array.isArray(url);
    this.#transports = entries.map((entry) => transportFor(String(entry), options));
    this.urls = entries.map(String);
    this.timeout = options.timeout === undefined ? DEFAULT_TIMEOUT : options.timeout;
    timeoutMs(this.timeout);
    const identity = IN_BROWSER ? {} : { 'User-Agent': `xio-client-js/${version}` };
    this.#headers = mergeHeaders({ Accept: DEFAULT_ACCEPT, ...identity }, options.headers);
  }

  get(path, options = {}) {
    return this.request('GET', path, { ...options, data: undefined });
  }

  post(path, data, options = {}) {
    return this.request('POST', path, { ...options, data });
  }

  put(path, data, options = {}) {
    return this.request('PUT', path, { ...options, data });
  }

  patch(path, data, options = {}) {
    return this.request('PATCH', path, { ...options, data });
  }

  delete(path, data, options = {}) {
    return this.request('DELETE', path, { ...options, data });
  }

  about(path, options = {}) {
    return this.request('ABOUT', path, options);
  }

  // Resolve to {status, content, contentType, headers} once the whole body is in.
  async request(method, path, options = {}) {
    const ms = timeoutMs(options.timeout === undefined ? this.timeout : options.timeout);
    const deadline = Date.now() + ms;
    const request = render(method, path, options, this.#headers);
    const answer = await this.#open(request, ms);
    const chunks = [];
    for (;;) {
      const { done, value } = await answer.read(
        ms === Infinity ? Infinity : Math.max(1, deadline - Date.now()),
      );
      if (done) break;
      chunks.push(value);
    }
    const contentType = answer.headers.get('content-type');
    const content = decodeAnswer(
      concat(chunks),
      contentType,
      request.method,
      answer.status,
      answer.where,
    );
    return { status: answer.status, content, contentType, headers: answer.headers };
  }

  // Resolve to {status, contentType, headers, body, cancel} as soon as the head is in; body is
  // an async iterable of Uint8Array chunks; leaving it early (or cancel()) drops the rest.
  async stream(path, options = {}) {
    const ms = timeoutMs(options.timeout === undefined ? this.timeout : options.timeout);
    const request = render(options.method || 'GET', path, options, this.#headers);
    const answer = await this.#open(request, ms);
    let finished = false;
    async function* chunks() {
      try {
        for (;;) {
          const { done, value } = await answer.read(ms);
          if (done) {
            finished = true;
            return;
          }
          if (value.length) yield value;
        }
      } finally {
        if (!finished) answer.cancel();
      }
    }
    const contentType = answer.headers.get('content-type');
    return {
      status: answer.status,
      contentType,
      headers: answer.headers,
      body: chunks(),
      cancel() {
        if (!finished) answer.cancel();
        finished = true;
      },
    };
  }

  // Server-sent events: an async iterable of {event, data, id, retry, json()} as they come,
  // over either transport (GET with Accept: text/event-stream). A non-200 answer throws a
  // ResponseError carrying its status and content; leaving the loop early drops the rest.
  async *events(path, options = {}) {
    const headers = mergeHeaders(options.headers, { Accept: 'text/event-stream' });
    const answer = await this.stream(path, { ...options, method: 'GET', headers });
    if (answer.status !== 200 || !/^text\/event-stream\b/i.test(answer.contentType || '')) {
      const chunks = [];
      for await (const chunk of answer.body) chunks.push(chunk);
      const content = decodeAnswer(concat(chunks), answer.contentType, 'GET', answer.status, path);
      const why = (content && content.description) || `status ${answer.status}`;
      const error = new ResponseError(`GET ${path}: ${answer.status}: ${why}`);
      Object.assign(error, { status: answer.status, content });
      throw error;
    }
    const parser = new EventParser();
    for await (const chunk of answer.body) yield* parser.feed(chunk);
  }

  // Open the exchange on the first entry that takes it (from the last one that worked).
  async #open(request, ms) {
    const started = Date.now();
    const failures = [];
    for (let step = 0; step < this.#transports.length; step++) {
      const index = (this.#good + step) % this.#transports.length;
      const left = ms === Infinity ? Infinity : ms - (Date.now() - started);
      if (left <= 0)
        throw new Timeout(`${request.method} ${this.urls[index]}: no answer within ${ms / 1000} s`);
      try {
        const answer = await this.#transports[index].open(request, left);
        this.#good = index;
        return answer;
      } catch (error) {
        if (!(error instanceof ConnectError && error.nothingSent && this.#failover)) throw error;
        failures.push(error.message);
      }
    }
    throw new ConnectError(`no entry took a connection: ${failures.join('; ')}`, {
      nothingSent: true,
    });
  }

  // Close the WebSocket (calls in flight on it reject); later calls reconnect.
  close() {
    for (const transport of this.#transports) transport.close();
  }
}

export function client(url, options = {}) {
  return new Client(url, options);
}

// The channel codec, for tests; not part of the API.
export const _channel = {
  encode: encodeMessage,
  decode: decodeMessage,
  REQ,
  CANCEL,
  HEAD,
  DATA,
  END,
};
