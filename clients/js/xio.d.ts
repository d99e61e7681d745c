// Types of xio.js, the xio client for browsers and Node (>= 18). See xio.js for how it works.

/** The xio client's version, the Python package's (xio/version.py). */
export declare const version: string;

/** A call that could not complete an exchange; every HTTP status resolves instead. */
export declare class TransportError extends Error {
  constructor(message?: string, options?: { cause?: unknown });
}

/** No connection to any entry, or one lost before any answer. */
export declare class ConnectError extends TransportError {
  constructor(message?: string, options?: { cause?: unknown; nothingSent?: boolean });
  /** True when the request cannot have left (a failover client tried the next entry). */
  readonly nothingSent: boolean;
}

/** No answer within the client's own timeout (the call's, or the client's: default 30 s). */
export declare class Timeout extends TransportError {}

/** An answer that is not HTTP or a channel message, cut short, or a body that does not decode. */
export declare class ResponseError extends TransportError {}

/** A request body: JSON for structures, numbers, booleans and null; UTF-8 text for a string. */
export type Data =
  | string
  | number
  | boolean
  | null
  | ArrayBuffer
  | ArrayBufferView
  | readonly unknown[]
  | { readonly [name: string]: unknown };

/** A decoded body: JSON's value, a string for text/*, bytes for anything else. */
export type Content = unknown;

/** A name's value, or a list of values that repeats the name; a ready string is sent as is. */
export type Query =
  | string
  | URLSearchParams
  | Readonly<Record<string, QueryValue | readonly QueryValue[]>>
  | ReadonlyArray<readonly [string, QueryValue | readonly QueryValue[]]>;
export type QueryValue = string | number | boolean | null | undefined;

/** Header names to values; a null or undefined value removes the client's own. */
export type HeaderInit =
  | Headers
  | Readonly<Record<string, string | number | null | undefined>>
  | ReadonlyArray<readonly [string, string]>;

export interface ClientOptions {
  /** Seconds for each call (default 30); null for none. */
  timeout?: number | null;
  /** Headers sent with every call. */
  headers?: HeaderInit;
  /** The WebSocket constructor for ws:// URLs where the runtime has no global one. */
  WebSocket?: typeof WebSocket | (new (url: string) => WebSocket);
}

export interface CallOptions {
  query?: Query;
  headers?: HeaderInit;
  /** Seconds for this call; null for none. */
  timeout?: number | null;
}

export interface RequestOptions extends CallOptions {
  data?: Data;
}

export interface StreamOptions extends RequestOptions {
  /** The HTTP method (default GET). */
  method?: string;
}

/** What every call resolves to, whatever the status. */
export interface Response<T = Content> {
  status: number;
  content: T;
  contentType: string | null;
  headers: Headers;
}

/** An answer whose body arrives as it comes. */
export interface StreamedResponse {
  status: number;
  contentType: string | null;
  headers: Headers;
  /** The body's chunks, in order; leaving the loop early drops the rest. */
  body: AsyncIterableIterator<Uint8Array>;
  /** Drop what is still to come, when the body will not be read. */
  cancel(): void;
}

/** One server-sent event. */
export interface ServerEvent {
  /** The event's type: "message" unless the stream named it. */
  event: string;
  data: string;
  /** The last event id the stream set, or null. */
  id: string | null;
  retry: number | null;
  /** data, parsed as JSON. */
  json(): unknown;
}

export declare class Client {
  /** A base URL (http(s)://, ws(s)://, or host[:port][/path]), or a list of them to fail over. */
  constructor(url: string | readonly string[], options?: ClientOptions);
  readonly urls: string[];
  timeout: number | null;
  get(path: string, options?: CallOptions): Promise<Response>;
  post(path: string, data?: Data, options?: CallOptions): Promise<Response>;
  put(path: string, data?: Data, options?: CallOptions): Promise<Response>;
  patch(path: string, data?: Data, options?: CallOptions): Promise<Response>;
  delete(path: string, data?: Data, options?: CallOptions): Promise<Response>;
  about(path: string, options?: CallOptions): Promise<Response>;
  request(method: string, path: string, options?: RequestOptions): Promise<Response>;
  stream(path: string, options?: StreamOptions): Promise<StreamedResponse>;
  /** GET path as server-sent events, as they come; a non-200 answer throws a ResponseError. */
  events(path: string, options?: CallOptions): AsyncIterableIterator<ServerEvent>;
  /** Close the WebSocket (calls in flight on it reject); later calls reconnect. */
  close(): void;
}

/** Return a Client for url (or a list of URLs to fail over). */
export declare function client(url: string | readonly string[], options?: ClientOptions): Client;
