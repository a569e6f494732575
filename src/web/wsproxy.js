/*!
 * wsproxy.js — a TCP-socket-shaped client for WebSocket-to-TCP proxies
 * (and a datagram-shaped one for UDP).
 *
 * Works with wsproxy (the target goes in the URL path: ws://proxy/host:port,
 * or ws://proxy/udp/host:port for UDP) and with websockify (a fixed target:
 * pass `url` or `path`). No dependencies, no build step.
 *
 * How to load it:
 *   - classic script:  <script src="/wsproxy.js"></script>  → globalThis.WsProxy
 *   - ES module:       import { connect } from "/wsproxy.mjs";
 *     (wsproxy.mjs imports this file for its side effect and re-exports
 *     globalThis.WsProxy, so both forms share one implementation.)
 *
 * Quick start:
 *   const s = WsProxy.connect({ proxy: "ws://localhost:8080", host: "example.com", port: 80 });
 *   s.onopen  = () => s.send("GET / HTTP/1.0\r\n\r\n");      // strings go out as UTF-8
 *   s.ondata  = (bytes) => console.log(WsProxy.utf8Decode(bytes));
 *   s.onclose = (e) => console.log("closed:", e.message);    // e.g. "1011 Internal Error: connect …: connection refused"
 *
 * UDP. With `transport: "udp"` the proxy relays datagrams instead of a byte
 * stream (path /udp/host:port): every send() is exactly one datagram, sent as
 * one WebSocket message (never split, never joined; zero-length works), and
 * every `data` event is exactly one datagram from the target. A datagram holds
 * at most 65,507 bytes (MAX_DATAGRAM, the IPv4 limit); send() throws a
 * RangeError for a larger one rather than splitting it. UDP has no close: the
 * tunnel lasts until close() or until the proxy's idle timeout.
 *   const d = WsProxy.connect({ host: "127.0.0.1", port: 53, transport: "udp" });
 *   d.onopen = () => d.send(query);                         // one datagram
 *   d.ondata = (datagram) => console.log(datagram.length);  // one datagram each
 *
 * Framing. A WebSocket carries messages, TCP carries a byte stream. The proxy
 * and this library agree on one of two ways to carry bytes, chosen during the
 * WebSocket handshake through the subprotocol (Sec-WebSocket-Protocol):
 *   - "binary", or no subprotocol at all: bytes travel as binary frames;
 *   - "base64" (websockify) or "websockets-proxy" (the original Ruby
 *     prototype): bytes travel Base64-encoded in text frames, one
 *     independently padded Base64 string per frame.
 * We offer ["binary", "base64", "websockets-proxy"] by default (most
 * preferred first) and adapt to whatever the server picked. Incoming frames
 * are decoded by their type (binary frame → raw bytes, text frame → Base64),
 * which is robust even against servers that answer with the "wrong" kind.
 *
 * The codecs (UTF-8 and Base64 for Uint8Array) are written out here rather
 * than borrowed from TextEncoder/btoa: btoa only takes Latin-1 strings (the
 * prototype's README admitted it was "blissfully unaware of UTF-8"), and
 * spreading a big array into String.fromCharCode overflows the stack. They
 * follow the WHATWG Encoding spec (UTF-8 with U+FFFD replacement) and the
 * WHATWG "forgiving-base64" algorithm (what atob implements), so the unit
 * tests can check them against TextEncoder/TextDecoder/atob/btoa.
 */
(function (global) {
  "use strict";

  // ---------------------------------------------------------------------
  // UTF-8
  // ---------------------------------------------------------------------

  /**
   * Encodes a JavaScript string as UTF-8 bytes (like TextEncoder).
   * Lone surrogates, which have no UTF-8 form, become U+FFFD (EF BF BD).
   * @param {string} str
   * @returns {Uint8Array}
   */
  function utf8Encode(str) {
    str = String(str);
    const n = str.length;
    // Pass 1: the exact output length, so we allocate once.
    let len = 0;
    for (let i = 0; i < n; i++) {
      const c = str.charCodeAt(i);
      if (c < 0x80) len += 1;
      else if (c < 0x800) len += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
        const d = str.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) { len += 4; i++; } else len += 3;
      } else len += 3; // BMP char, or a lone surrogate → U+FFFD (3 bytes)
    }
    // Pass 2: write the bytes.
    const out = new Uint8Array(len);
    let p = 0;
    for (let i = 0; i < n; i++) {
      let c = str.charCodeAt(i);
      if (c < 0x80) { out[p++] = c; continue; }
      if (c < 0x800) {
        out[p++] = 0xc0 | (c >> 6);
        out[p++] = 0x80 | (c & 0x3f);
        continue;
      }
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < n ? str.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          out[p++] = 0xf0 | (cp >> 18);
          out[p++] = 0x80 | ((cp >> 12) & 0x3f);
          out[p++] = 0x80 | ((cp >> 6) & 0x3f);
          out[p++] = 0x80 | (cp & 0x3f);
          i++;
          continue;
        }
        c = 0xfffd; // lone surrogate
      }
      out[p++] = 0xe0 | (c >> 12);
      out[p++] = 0x80 | ((c >> 6) & 0x3f);
      out[p++] = 0x80 | (c & 0x3f);
    }
    return out;
  }

  /** Turns an array of UTF-16 code units into a string, in slices that
   *  stay well below engines' limits on the number of call arguments. */
  function codeUnitsToString(units, length) {
    const SLICE = 0x2000;
    if (length <= SLICE) return String.fromCharCode.apply(null, units.subarray(0, length));
    const parts = [];
    for (let i = 0; i < length; i += SLICE) {
      parts.push(String.fromCharCode.apply(null, units.subarray(i, Math.min(i + SLICE, length))));
    }
    return parts.join("");
  }

  /**
   * A streaming UTF-8 decoder, the state machine of the WHATWG Encoding
   * spec ("UTF-8 decoder"): invalid bytes become U+FFFD exactly as
   * TextDecoder does, and a character split across two chunks (as TCP
   * will do) is decoded correctly when `{ stream: true }` is passed.
   * Unlike TextDecoder's default, a leading byte order mark is kept: a
   * byte stream transcript should show everything that arrived.
   */
  class Utf8Decoder {
    constructor() { this._reset(); }

    _reset() {
      this._cp = 0;        // code point being assembled
      this._needed = 0;    // continuation bytes still needed
      this._seen = 0;      // continuation bytes seen so far
      this._lower = 0x80;  // allowed range of the next continuation byte
      this._upper = 0xbf;
    }

    /**
     * @param {Uint8Array|ArrayBuffer} [bytes]
     * @param {{stream?: boolean}} [options] stream: more bytes will follow,
     *   so keep an incomplete trailing sequence for the next call.
     * @returns {string}
     */
    decode(bytes, options) {
      const input = bytes === undefined ? new Uint8Array(0) : toBytes(bytes);
      const stream = !!(options && options.stream);
      // Each byte yields at most one UTF-16 code unit (a 4-byte sequence
      // gives 2 units), except that the sequence carried over from the
      // previous call may add one unit: its U+FFFD if it breaks off, or its
      // second surrogate if its last byte is here. Hence length + 1.
      const units = new Uint16Array(input.length + 1);
      let u = 0;
      for (let i = 0; i < input.length; i++) {
        const b = input[i];
        if (this._needed === 0) {
          if (b < 0x80) { units[u++] = b; }
          else if (b >= 0xc2 && b <= 0xdf) { this._needed = 1; this._cp = b & 0x1f; }
          else if (b >= 0xe0 && b <= 0xef) {
            if (b === 0xe0) this._lower = 0xa0;       // no overlong forms
            if (b === 0xed) this._upper = 0x9f;       // no surrogates
            this._needed = 2; this._cp = b & 0x0f;
          } else if (b >= 0xf0 && b <= 0xf4) {
            if (b === 0xf0) this._lower = 0x90;       // no overlong forms
            if (b === 0xf4) this._upper = 0x8f;       // nothing above U+10FFFF
            this._needed = 3; this._cp = b & 0x07;
          } else { units[u++] = 0xfffd; }
          continue;
        }
        if (b < this._lower || b > this._upper) {
          // The sequence broke off: one U+FFFD for it, then reprocess b.
          this._reset();
          units[u++] = 0xfffd;
          i--;
          continue;
        }
        this._lower = 0x80; this._upper = 0xbf;
        this._cp = (this._cp << 6) | (b & 0x3f);
        if (++this._seen !== this._needed) continue;
        const cp = this._cp;
        this._reset();
        if (cp < 0x10000) units[u++] = cp;
        else {
          units[u++] = 0xd800 + ((cp - 0x10000) >> 10);
          units[u++] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
        }
      }
      if (!stream && this._needed !== 0) {
        this._reset();
        units[u++] = 0xfffd; // the input ended inside a sequence
      }
      return codeUnitsToString(units, u);
    }
  }

  /**
   * Decodes UTF-8 bytes to a string in one go (invalid bytes → U+FFFD).
   * @param {Uint8Array|ArrayBuffer} bytes
   * @returns {string}
   */
  function utf8Decode(bytes) {
    return new Utf8Decoder().decode(bytes);
  }

  // ---------------------------------------------------------------------
  // Base64 (RFC 4648 §4, standard alphabet, with padding)
  // ---------------------------------------------------------------------

  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const B64_CODES = new Uint8Array(64);
  const B64_VALUES = new Int16Array(128).fill(-1);
  for (let i = 0; i < 64; i++) {
    B64_CODES[i] = B64.charCodeAt(i);
    B64_VALUES[B64.charCodeAt(i)] = i;
  }
  const PAD = 0x3d; // '='

  /**
   * Encodes bytes as padded Base64. Works for arrays of any size (no
   * String.fromCharCode(...bigArray), no btoa).
   * @param {Uint8Array|ArrayBuffer} bytes
   * @returns {string}
   */
  function base64Encode(bytes) {
    const src = toBytes(bytes);
    const n = src.length;
    const out = new Uint16Array(Math.ceil(n / 3) * 4);
    let p = 0;
    let i = 0;
    for (; i + 2 < n; i += 3) {
      const v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];
      out[p++] = B64_CODES[v >> 18];
      out[p++] = B64_CODES[(v >> 12) & 63];
      out[p++] = B64_CODES[(v >> 6) & 63];
      out[p++] = B64_CODES[v & 63];
    }
    if (n - i === 1) {
      const v = src[i] << 16;
      out[p++] = B64_CODES[v >> 18];
      out[p++] = B64_CODES[(v >> 12) & 63];
      out[p++] = PAD;
      out[p++] = PAD;
    } else if (n - i === 2) {
      const v = (src[i] << 16) | (src[i + 1] << 8);
      out[p++] = B64_CODES[v >> 18];
      out[p++] = B64_CODES[(v >> 12) & 63];
      out[p++] = B64_CODES[(v >> 6) & 63];
      out[p++] = PAD;
    }
    return codeUnitsToString(out, p);
  }

  /**
   * Decodes Base64 the way atob does (WHATWG "forgiving-base64 decode"):
   * ASCII whitespace is ignored, padding is optional, and anything else
   * outside the standard alphabet is an error.
   * @param {string} str
   * @returns {Uint8Array}
   * @throws {SyntaxError} on invalid input
   */
  function base64Decode(str) {
    str = String(str);
    // Collect the 6-bit values, skipping ASCII whitespace (TAB LF FF CR SP).
    const vals = new Uint8Array(str.length);
    let n = 0;
    let pads = 0;
    for (let i = 0; i < str.length; i++) {
      const c = str.charCodeAt(i);
      if (c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d || c === 0x20) continue;
      if (c === PAD) { pads++; continue; }
      const v = c < 128 ? B64_VALUES[c] : -1;
      if (v < 0 || pads > 0) throw new SyntaxError("invalid Base64 at offset " + i);
      vals[n++] = v;
    }
    // Padding may only fill the last group up to a multiple of 4.
    if (pads > 2 || (pads > 0 && (n + pads) % 4 !== 0) || n % 4 === 1) {
      throw new SyntaxError("invalid Base64 length or padding");
    }
    const out = new Uint8Array(Math.floor((n * 3) / 4));
    let p = 0;
    let i = 0;
    for (; i + 3 < n; i += 4) {
      const v = (vals[i] << 18) | (vals[i + 1] << 12) | (vals[i + 2] << 6) | vals[i + 3];
      out[p++] = v >> 16;
      out[p++] = (v >> 8) & 255;
      out[p++] = v & 255;
    }
    if (n - i === 2) {
      out[p++] = ((vals[i] << 18) | (vals[i + 1] << 12)) >> 16;
    } else if (n - i === 3) {
      const v = (vals[i] << 18) | (vals[i + 1] << 12) | (vals[i + 2] << 6);
      out[p++] = v >> 16;
      out[p++] = (v >> 8) & 255;
    }
    return out;
  }

  // ---------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------

  /** Views any binary-ish value as a Uint8Array, without copying. */
  function toBytes(data) {
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (typeof SharedArrayBuffer !== "undefined" && data instanceof SharedArrayBuffer) return new Uint8Array(data);
    throw new TypeError("expected a Uint8Array, ArrayBuffer, typed array or string");
  }

  /** The largest UDP payload (65,535 − 8 bytes of UDP header − 20 of IPv4 header). */
  const MAX_DATAGRAM = 65507;

  /** What a tunnel carries: a TCP byte stream or UDP datagrams. */
  const TRANSPORTS = Object.freeze(["tcp", "udp"]);

  /** Checks a `transport` option; undefined means "tcp". */
  function transportOf(transport) {
    if (transport === undefined || transport === null) return "tcp";
    const t = String(transport).toLowerCase();
    if (!TRANSPORTS.includes(t)) {
      throw new TypeError("transport must be \"tcp\" or \"udp\", got " + JSON.stringify(transport));
    }
    return t;
  }

  /** The subprotocols offered when none are configured, most preferred first. */
  const DEFAULT_PROTOCOLS = Object.freeze(["binary", "base64", "websockets-proxy"]);

  /**
   * How bytes travel once the server has picked `protocol` (the value of
   * WebSocket#protocol after the handshake; "" when it picked none).
   * @param {string} protocol
   * @returns {"binary"|"base64"}
   */
  function framingFor(protocol) {
    switch (String(protocol || "").trim().toLowerCase()) {
      case "base64":
      case "websockets-proxy":
        return "base64";
      default: // "binary", none, or an application protocol of the caller's own
        return "binary";
    }
  }

  /**
   * The path that names a target on wsproxy: "/host:port" for TCP and
   * "/udp/host:port" for UDP, with IPv6 literals in brackets ("/[::1]:22")
   * and anything unusual percent-encoded (so a host can never add a "/").
   */
  function targetPath(host, port, transport) {
    const prefix = transportOf(transport) === "udp" ? "/udp" : "";
    host = String(host).trim();
    if (host === "") throw new TypeError("host must not be empty");
    const p = Number(port);
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      throw new RangeError("port must be an integer from 1 to 65535, got " + JSON.stringify(port));
    }
    if (host.includes(":") && !host.startsWith("[")) host = "[" + host + "]"; // bare IPv6
    const encoded = encodeURIComponent(host)
      .replace(/%3A/gi, ":").replace(/%5B/gi, "[").replace(/%5D/gi, "]");
    return prefix + "/" + encoded + ":" + p;
  }

  /** The page's own origin as a ws:// or wss:// URL, if there is a page. */
  function defaultProxy() {
    const loc = global.location;
    if (!loc || !/^https?:$/.test(loc.protocol)) return undefined;
    return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host;
  }

  /**
   * The WebSocket URL for connect() options:
   *   { url }                       → url, as is (e.g. a websockify endpoint)
   *   { proxy?, path }              → proxy + path  (fixed target, e.g. "/websockify")
   *   { proxy?, target: "h:p" }     → proxy + "/h:p"
   *   { proxy?, host, port }        → proxy + targetPath(host, port)
   * With `transport: "udp"` the last two become "/udp/h:p"; `url` and `path`
   * are used as given (the caller chose the endpoint, e.g. a fixed UDP target).
   * `proxy` defaults to the page's own origin (ws://host:port of location).
   * http(s):// proxies are accepted and turned into ws(s)://.
   */
  function buildUrl(options) {
    const o = options || {};
    const transport = transportOf(o.transport);
    if (o.url) return String(o.url);
    let base = o.proxy !== undefined ? String(o.proxy) : defaultProxy();
    if (!base) throw new TypeError("connect(): give `proxy` (e.g. \"ws://localhost:8080\") or `url`");
    base = base.replace(/^http(s?):\/\//i, "ws$1://").replace(/\/+$/, "");
    if (!/^wss?:\/\//i.test(base)) throw new TypeError("proxy must be a ws:// or wss:// URL, got " + JSON.stringify(o.proxy));
    if (o.path !== undefined) {
      const path = String(o.path);
      return base + (path.startsWith("/") ? path : "/" + path);
    }
    if (o.target !== undefined) {
      const t = String(o.target);
      const m = /^\[?(.*?)\]?:(\d+)$/.exec(t);
      if (!m) throw new TypeError("target must look like \"host:port\", got " + JSON.stringify(t));
      return base + targetPath(m[1], m[2], transport);
    }
    if (o.host === undefined || o.port === undefined) {
      throw new TypeError("connect(): give host and port, target, path or url");
    }
    return base + targetPath(o.host, o.port, transport);
  }

  /** Names of the WebSocket close codes (RFC 6455 §7.4.1 and the IANA registry). */
  const CLOSE_CODES = Object.freeze({
    1000: "Normal Closure",
    1001: "Going Away",
    1002: "Protocol Error",
    1003: "Unsupported Data",
    1005: "No Status Received",
    1006: "Abnormal Closure",
    1007: "Invalid Payload Data",
    1008: "Policy Violation",
    1009: "Message Too Big",
    1010: "Mandatory Extension",
    1011: "Internal Error",
    1012: "Service Restart",
    1013: "Try Again Later",
    1014: "Bad Gateway",
    1015: "TLS Handshake Failure",
  });

  /**
   * Puts a close code and reason into words, e.g.
   * "1011 Internal Error: connect 127.0.0.1:9: connection refused".
   */
  function describeClose(code, reason, opened) {
    const name = CLOSE_CODES[code] || (code >= 4000 ? "Application Code" : "Code");
    let text = code + " " + name;
    if (reason) text += ": " + reason;
    else if (code === 1006 && !opened) {
      text += ": could not open the WebSocket (proxy unreachable, or it refused the handshake:" +
        " bad target, policy, Origin, or no common subprotocol; the browser hides the HTTP status," +
        " the proxy's log has it)";
    } else if (code === 1006) text += ": the connection dropped without a closing handshake";
    else if (code === 1000) text += ": closed";
    return text;
  }

  /** A tiny EventTarget for engines without one (very old runtimes). */
  class MiniEventTarget {
    constructor() { this._listeners = Object.create(null); }
    addEventListener(type, fn) {
      if (typeof fn !== "function") return;
      (this._listeners[type] = this._listeners[type] || []).push(fn);
    }
    removeEventListener(type, fn) {
      const list = this._listeners[type];
      if (list) this._listeners[type] = list.filter((f) => f !== fn);
    }
    dispatchEvent(event) {
      for (const fn of (this._listeners[event.type] || []).slice()) {
        try { fn.call(this, event); } catch (err) { reportAsync(err); }
      }
      return true;
    }
  }

  const EventTargetBase = typeof global.EventTarget === "function" ? global.EventTarget : MiniEventTarget;

  function makeEvent(type, fields) {
    const ev = typeof global.Event === "function" ? new global.Event(type) : { type: type };
    for (const key of Object.keys(fields || {})) {
      Object.defineProperty(ev, key, { value: fields[key], enumerable: true });
    }
    return ev;
  }

  /** Rethrows outside the current call stack, like an uncaught handler error. */
  function reportAsync(err) {
    if (typeof global.reportError === "function") global.reportError(err);
    else setTimeout(() => { throw err; }, 0);
  }

  // ---------------------------------------------------------------------
  // The socket
  // ---------------------------------------------------------------------

  const STATES = ["connecting", "open", "closing", "closed"];

  /**
   * A TCP connection (or, with transport "udp", a UDP association) through a
   * WebSocket proxy. Create it with WsProxy.connect(options). Events (both
   * `onX` properties and addEventListener("X", …)): open, data, frame, close,
   * error.
   */
  class WsProxySocket extends EventTargetBase {
    constructor(options) {
      super();
      const o = options || {};
      const WS = o.WebSocket || global.WebSocket;
      if (typeof WS !== "function") {
        throw new TypeError("no WebSocket implementation: pass options.WebSocket");
      }
      /** "tcp" (a byte stream) or "udp" (datagrams: one per send(), one per data event). */
      this.transport = transportOf(o.transport);
      /** The WebSocket URL in use. */
      this.url = buildUrl(o);
      /** The subprotocols offered, most preferred first. */
      const p = o.protocols;
      this.protocols = p === undefined || p === null ? DEFAULT_PROTOCOLS.slice()
        : Array.isArray(p) ? p.map(String)
        : String(p) ? [String(p)] : [];
      /** TCP sends larger than this are split into several frames (bytes of
       *  payload). UDP sends are never split. */
      this.chunkSize = Math.max(1, Math.floor(o.chunkSize || 48 * 1024)); // 48 KiB = 64 KiB of Base64
      /** send() returns false once bufferedAmount exceeds this. */
      this.highWaterMark = o.highWaterMark !== undefined ? o.highWaterMark : 1024 * 1024;
      /** The subprotocol the server picked ("" for none); set on open. */
      this.protocol = "";
      /** "binary" or "base64"; null until open. */
      this.framing = null;
      /** Payload bytes sent to / received from the target so far. */
      this.bytesSent = 0;
      this.bytesReceived = 0;
      /** Event handler properties. */
      this.onopen = null;
      this.ondata = null;
      this.onframe = null;
      this.onclose = null;
      this.onerror = null;

      this._pending = [];       // data sent before open, as Uint8Arrays
      this._pendingBytes = 0;
      this._opened = false;
      this._closed = false;
      this._localReason = "";   // why we closed, if we did
      this._hasFrameListeners = false;

      const ws = new WS(this.url, this.protocols);
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      ws.onopen = () => this._handleOpen();
      ws.onmessage = (e) => this._handleMessage(e.data);
      ws.onerror = () => this._emit("error", makeEvent("error", {
        message: this._opened ? "WebSocket error" : "could not open the WebSocket to " + this.url,
      }));
      ws.onclose = (e) => this._handleClose(e);
    }

    /** "connecting", "open", "closing" or "closed". */
    get readyState() {
      if (this._closed) return "closed";
      return STATES[this._ws.readyState] || "closed";
    }

    /**
     * Bytes accepted by send() but not yet handed to the network: data
     * queued before open plus the WebSocket's own buffer (which counts the
     * encoded size, i.e. 4/3 of the payload in base64 framing).
     */
    get bufferedAmount() {
      return this._pendingBytes + (this._ws.bufferedAmount || 0);
    }

    /**
     * Sends bytes to the target. Strings are encoded as UTF-8. Data sent
     * while still connecting is queued and goes out on open. With transport
     * "udp", each call is one datagram (one WebSocket message, even when
     * empty), and more than MAX_DATAGRAM bytes is a RangeError.
     * @param {Uint8Array|ArrayBuffer|ArrayBufferView|string} data
     * @returns {boolean} false when bufferedAmount is above highWaterMark:
     *   `await socket.drain()` before sending more.
     */
    send(data) {
      const bytes = typeof data === "string" ? utf8Encode(data) : toBytes(data);
      const state = this.readyState;
      if (state === "closing" || state === "closed") {
        throw new Error("wsproxy: send() on a " + state + " socket");
      }
      if (this.transport === "udp" && bytes.length > MAX_DATAGRAM) {
        throw new RangeError("wsproxy: a UDP datagram holds at most " + MAX_DATAGRAM +
          " bytes, got " + bytes.length + " (datagrams are never split)");
      }
      if (state === "connecting") {
        const copy = bytes.slice(); // the caller may reuse its buffer
        this._pending.push(copy);
        this._pendingBytes += copy.length;
      } else {
        this._write(bytes);
      }
      return this.bufferedAmount <= this.highWaterMark;
    }

    /**
     * Resolves once bufferedAmount is at or below `threshold` (default 0).
     * Rejects if the socket closes first. WebSocket has no "drain" event,
     * so this polls, starting at 1 ms and backing off to 50 ms.
     */
    drain(threshold) {
      const limit = threshold === undefined ? 0 : threshold;
      return new Promise((resolve, reject) => {
        let delay = 1;
        const check = () => {
          if (this.bufferedAmount <= limit) return resolve();
          const state = this.readyState;
          if (state === "closing" || state === "closed") {
            return reject(new Error("wsproxy: socket " + state + " with " + this.bufferedAmount + " bytes unsent"));
          }
          setTimeout(check, delay);
          delay = Math.min(delay * 2, 50);
        };
        check();
      });
    }

    /**
     * Closes the connection. The proxy delivers what was already sent, then
     * closes the TCP connection to the target (or its UDP socket).
     * @param {string} [reason] up to 123 bytes of UTF-8
     */
    close(reason) {
      if (this._closed) return;
      this._localReason = reason ? String(reason) : "";
      this._pending = [];
      this._pendingBytes = 0;
      try { this._ws.close(1000, this._localReason || undefined); } catch (err) { this._ws.close(); }
    }

    // -- internals -------------------------------------------------------

    /** Sends bytes as frames of at most chunkSize payload bytes. A TCP
     *  stream has no message boundaries, so splitting changes nothing for
     *  the target and keeps each frame small for the proxy. Nothing is
     *  sent for an empty array. A UDP datagram is always one message. */
    _write(bytes) {
      if (this.transport === "udp") return this._writeMessage(bytes);
      for (let off = 0; off < bytes.length; off += this.chunkSize) {
        const chunk = bytes.subarray(off, Math.min(off + this.chunkSize, bytes.length));
        const frame = this.framing === "base64" ? base64Encode(chunk) : chunk;
        this._ws.send(frame);
        this.bytesSent += chunk.length;
        this._frame("out", chunk.length, frame);
      }
    }

    /** Sends `bytes` as exactly one WebSocket message (empty included). */
    _writeMessage(bytes) {
      const frame = this.framing === "base64" ? base64Encode(bytes) : bytes;
      this._ws.send(frame);
      this.bytesSent += bytes.length;
      this._frame("out", bytes.length, frame);
    }

    _frame(direction, size, frame) {
      if (!this.onframe && !this._hasFrameListeners) return;
      const wire = typeof frame === "string" ? frame.length : frame.byteLength;
      this._emit("frame", makeEvent("frame", {
        direction: direction, // "out" (to the target) or "in" (from it)
        size: size,           // payload bytes
        wireSize: wire,       // bytes in the WebSocket message
        type: typeof frame === "string" ? "text" : "binary",
        time: Date.now(),
      }));
    }

    addEventListener(type, fn, opts) {
      if (type === "frame") this._hasFrameListeners = true;
      super.addEventListener(type, fn, opts);
    }

    _handleOpen() {
      this._opened = true;
      this.protocol = this._ws.protocol || "";
      this.framing = framingFor(this.protocol);
      const pending = this._pending;
      this._pending = [];
      this._pendingBytes = 0;
      for (const bytes of pending) this._write(bytes);
      this._emit("open", makeEvent("open", { protocol: this.protocol, framing: this.framing }));
    }

    _handleMessage(data) {
      let bytes;
      if (typeof data === "string") {
        try {
          bytes = base64Decode(data);
        } catch (err) {
          this._emit("error", makeEvent("error", { message: "invalid Base64 from the proxy: " + err.message }));
          this.close("invalid Base64 received");
          return;
        }
      } else {
        bytes = toBytes(data);
      }
      this.bytesReceived += bytes.length;
      this._frame("in", bytes.length, data);
      this._emit("data", makeEvent("data", { data: bytes }), bytes);
    }

    _handleClose(e) {
      if (this._closed) return;
      this._closed = true;
      this._pending = []; // never sent: the connection did not open
      this._pendingBytes = 0;
      const code = e.code || 1005;
      const reason = e.reason || "";
      this._emit("close", makeEvent("close", {
        code: code,
        reason: reason,
        wasClean: !!e.wasClean,
        opened: this._opened,
        message: describeClose(code, reason || this._localReason, this._opened),
      }));
    }

    /** Calls the onX handler (with `arg`, default the event), then listeners. */
    _emit(type, event, arg) {
      const handler = this["on" + type];
      if (typeof handler === "function") {
        try { handler.call(this, arg === undefined ? event : arg); } catch (err) { reportAsync(err); }
      }
      this.dispatchEvent(event);
    }
  }

  /**
   * Opens a TCP connection (or a UDP one) through a WebSocket proxy. See
   * buildUrl for the ways to name the endpoint. Other options:
   *   transport     "tcp" (default) or "udp": datagrams, one per send() and per data event
   *   protocols     subprotocols to offer (default ["binary","base64","websockets-proxy"];
   *                 [] offers none, which means binary frames)
   *   chunkSize     largest payload per TCP frame (default 49152; UDP sends are never split)
   *   highWaterMark send() returns false above this many buffered bytes (default 1 MiB)
   *   WebSocket     a WebSocket implementation (default globalThis.WebSocket)
   * @returns {WsProxySocket}
   */
  function connect(options) {
    return new WsProxySocket(options);
  }

  const WsProxy = Object.freeze({
    version: "0.1.0",
    connect: connect,
    WsProxySocket: WsProxySocket,
    DEFAULT_PROTOCOLS: DEFAULT_PROTOCOLS,
    MAX_DATAGRAM: MAX_DATAGRAM,
    CLOSE_CODES: CLOSE_CODES,
    framingFor: framingFor,
    buildUrl: buildUrl,
    targetPath: targetPath,
    describeClose: describeClose,
    utf8Encode: utf8Encode,
    utf8Decode: utf8Decode,
    Utf8Decoder: Utf8Decoder,
    base64Encode: base64Encode,
    base64Decode: base64Decode,
  });

  global.WsProxy = WsProxy;
  if (typeof module === "object" && module && typeof module.exports === "object") {
    module.exports = WsProxy; // CommonJS (require("./wsproxy.js"))
  }
})(typeof globalThis !== "undefined" ? globalThis : this);
