/**
 * TypeScript declarations for wsproxy.js / wsproxy.mjs — a TCP-socket-shaped
 * client for WebSocket-to-TCP proxies (wsproxy, websockify), and a
 * datagram-shaped one for UDP (`transport: "udp"`).
 *
 * As a module:   import { connect } from "./wsproxy.mjs";
 * As a global:   <script src="/wsproxy.js"></script> then WsProxy.connect(…)
 *                (this file declares the `WsProxy` global via `export as namespace`).
 */

export as namespace WsProxy;

/** How bytes travel in WebSocket messages. */
export type Framing = "binary" | "base64";

/** What a tunnel carries: a TCP byte stream, or UDP datagrams (one per send() and per data event). */
export type Transport = "tcp" | "udp";

/** The socket's life cycle. */
export type ReadyState = "connecting" | "open" | "closing" | "closed";

/** Anything send() accepts. Strings are sent as UTF-8. */
export type SendData = string | Uint8Array | ArrayBuffer | ArrayBufferView;

/** Options naming the endpoint (one of: url, path, target, host+port) and tuning the socket. */
export interface ConnectOptions {
  /** Proxy base URL, e.g. "ws://localhost:8080" (http(s):// is turned into ws(s)://).
   *  Defaults to the page's own origin. */
  proxy?: string;
  /** Target host name or IP address (IPv6 with or without brackets). Used with `port`. */
  host?: string;
  /** Target port, 1–65535. */
  port?: number | string;
  /** "tcp" (default) or "udp". With "udp", host+port and target become the path
   *  "/udp/host:port"; `path` and `url` are used as given. */
  transport?: Transport;
  /** Target as one "host:port" string ("[::1]:22" for IPv6). */
  target?: string;
  /** A fixed path on the proxy, for servers with a fixed target (websockify: "/websockify"). */
  path?: string;
  /** A complete WebSocket URL, used as is. */
  url?: string;
  /** Subprotocols to offer, most preferred first.
   *  Default ["binary", "base64", "websockets-proxy"]; [] offers none (binary frames). */
  protocols?: string[] | string;
  /** Largest payload per outgoing TCP frame, in bytes. Default 49152 (64 KiB as Base64).
   *  UDP datagrams are never split. */
  chunkSize?: number;
  /** send() returns false when bufferedAmount exceeds this. Default 1 MiB. */
  highWaterMark?: number;
  /** A WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: { new (url: string, protocols?: string | string[]): WebSocket };
}

export interface OpenEvent extends Event {
  /** The subprotocol the server picked ("" for none). */
  readonly protocol: string;
  readonly framing: Framing;
}

export interface DataEvent extends Event {
  /** The bytes of one WebSocket message from the target (with transport "udp": one datagram). */
  readonly data: Uint8Array;
}

export interface FrameEvent extends Event {
  /** "out": to the target; "in": from the target. */
  readonly direction: "in" | "out";
  /** Payload bytes. */
  readonly size: number;
  /** Size of the WebSocket message (Base64 text is 4/3 of the payload). */
  readonly wireSize: number;
  readonly type: "binary" | "text";
  /** Date.now() when the frame was sent or received. */
  readonly time: number;
}

export interface CloseEvent extends Event {
  /** The WebSocket close code (1000 normal, 1006 abnormal, 1011 server error such as a failed connect, …). */
  readonly code: number;
  /** The reason the proxy gave, e.g. "connect 127.0.0.1:9: Connection refused (os error 111)". */
  readonly reason: string;
  /** Whether the closing handshake completed. */
  readonly wasClean: boolean;
  /** Whether the socket was ever open (false: the handshake failed). */
  readonly opened: boolean;
  /** Code, name and reason in words, e.g. "1011 Internal Error: connect 127.0.0.1:9: connection refused". */
  readonly message: string;
}

export interface ErrorEvent extends Event {
  readonly message: string;
}

export interface WsProxySocketEventMap {
  open: OpenEvent;
  data: DataEvent;
  frame: FrameEvent;
  close: CloseEvent;
  error: ErrorEvent;
}

/** A TCP connection (or a UDP association) through a WebSocket proxy. */
export class WsProxySocket extends EventTarget {
  constructor(options: ConnectOptions);
  /** "tcp" or "udp", as asked for in the options. */
  readonly transport: Transport;
  /** The WebSocket URL in use. */
  readonly url: string;
  /** The subprotocols offered. */
  readonly protocols: string[];
  /** The subprotocol the server picked ("" for none); set on open. */
  readonly protocol: string;
  /** "binary" or "base64"; null until open. */
  readonly framing: Framing | null;
  readonly readyState: ReadyState;
  /** Bytes accepted by send() and not yet handed to the network
   *  (encoded size: 4/3 of the payload in base64 framing). */
  readonly bufferedAmount: number;
  /** Payload bytes sent to / received from the target. */
  readonly bytesSent: number;
  readonly bytesReceived: number;
  chunkSize: number;
  highWaterMark: number;

  onopen: ((this: WsProxySocket, ev: OpenEvent) => void) | null;
  /** Called with the bytes of each message (listeners get a DataEvent). */
  ondata: ((this: WsProxySocket, data: Uint8Array) => void) | null;
  onframe: ((this: WsProxySocket, ev: FrameEvent) => void) | null;
  onclose: ((this: WsProxySocket, ev: CloseEvent) => void) | null;
  onerror: ((this: WsProxySocket, ev: ErrorEvent) => void) | null;

  /** Sends bytes; strings as UTF-8. Queued while connecting.
   *  Returns false when bufferedAmount is above highWaterMark.
   *  With transport "udp": one call is one datagram (one message, even when empty);
   *  throws a RangeError above MAX_DATAGRAM bytes. */
  send(data: SendData): boolean;
  /** Resolves when bufferedAmount <= threshold (default 0); rejects if the socket closes first. */
  drain(threshold?: number): Promise<void>;
  /** Closes with code 1000 and an optional reason (≤ 123 bytes of UTF-8). */
  close(reason?: string): void;

  addEventListener<K extends keyof WsProxySocketEventMap>(
    type: K,
    listener: (this: WsProxySocket, ev: WsProxySocketEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof WsProxySocketEventMap>(
    type: K,
    listener: (this: WsProxySocket, ev: WsProxySocketEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions): void;
}

/** A streaming UTF-8 decoder (WHATWG semantics; keeps a leading BOM). */
export class Utf8Decoder {
  constructor();
  /** stream: more bytes follow, keep a split character for the next call. */
  decode(bytes?: Uint8Array | ArrayBuffer, options?: { stream?: boolean }): string;
}

/** The library version. */
export const version: string;
/** ["binary", "base64", "websockets-proxy"] */
export const DEFAULT_PROTOCOLS: readonly string[];
/** The largest UDP datagram send() accepts: 65507 bytes (the IPv4 limit). */
export const MAX_DATAGRAM: number;
/** Close code → name, e.g. 1011 → "Internal Error". */
export const CLOSE_CODES: Readonly<Record<number, string>>;

/** Opens a TCP connection (or with transport "udp", a UDP one) through a WebSocket proxy. */
export function connect(options: ConnectOptions): WsProxySocket;
/** The framing a negotiated subprotocol means ("" and "binary" → "binary"; "base64", "websockets-proxy" → "base64"). */
export function framingFor(protocol: string | null | undefined): Framing;
/** The WebSocket URL connect() would use. */
export function buildUrl(options: ConnectOptions): string;
/** "/host:port" ("/udp/host:port" for UDP), IPv6 in brackets. Throws on an empty host,
 *  a bad port or an unknown transport. */
export function targetPath(host: string, port: number | string, transport?: Transport): string;
/** A close code and reason in words. */
export function describeClose(code: number, reason?: string, opened?: boolean): string;
/** String → UTF-8 (lone surrogates become U+FFFD). */
export function utf8Encode(str: string): Uint8Array;
/** UTF-8 → string (invalid bytes become U+FFFD). */
export function utf8Decode(bytes: Uint8Array | ArrayBuffer): string;
/** Bytes → padded standard Base64, any size. */
export function base64Encode(bytes: Uint8Array | ArrayBuffer | ArrayBufferView): string;
/** Base64 → bytes, forgiving like atob; throws SyntaxError on invalid input. */
export function base64Decode(str: string): Uint8Array;

declare const WsProxy: {
  version: typeof version;
  connect: typeof connect;
  WsProxySocket: typeof WsProxySocket;
  DEFAULT_PROTOCOLS: typeof DEFAULT_PROTOCOLS;
  MAX_DATAGRAM: typeof MAX_DATAGRAM;
  CLOSE_CODES: typeof CLOSE_CODES;
  framingFor: typeof framingFor;
  buildUrl: typeof buildUrl;
  targetPath: typeof targetPath;
  describeClose: typeof describeClose;
  utf8Encode: typeof utf8Encode;
  utf8Decode: typeof utf8Decode;
  Utf8Decoder: typeof Utf8Decoder;
  base64Encode: typeof base64Encode;
  base64Decode: typeof base64Decode;
};
export default WsProxy;
