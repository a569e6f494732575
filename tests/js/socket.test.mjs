/**
 * Unit tests of wsproxy.js's connection logic, with a scripted stand-in for
 * the browser's WebSocket (no network, no proxy):
 *
 *   node --test tests/js/
 *
 * Covers URL building (wsproxy's /host:port paths, websockify's fixed
 * path), subprotocol offers and framing selection, what goes on the wire for
 * each framing, queueing before open, chunking, incoming-frame decoding,
 * close reasons in words, and drain().
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  connect,
  buildUrl,
  targetPath,
  framingFor,
  describeClose,
  DEFAULT_PROTOCOLS,
  utf8Encode,
  utf8Decode,
  base64Decode,
  base64Encode,
} from "../../src/web/wsproxy.mjs";
import { FakeWebSocket } from "./fake-websocket.mjs";

const open = (opts = {}) => {
  const s = connect({ proxy: "ws://proxy.test:8080", host: "example.com", port: 80, WebSocket: FakeWebSocket, ...opts });
  return { s, ws: FakeWebSocket.last };
};

test("targetPath: hosts, IPv6 literals, escaping, port checks", () => {
  assert.equal(targetPath("example.com", 80), "/example.com:80");
  assert.equal(targetPath("127.0.0.1", "5900"), "/127.0.0.1:5900");
  assert.equal(targetPath("::1", 22), "/[::1]:22");
  assert.equal(targetPath("[fe80::1]", 22), "/[fe80::1]:22");
  assert.equal(targetPath("a b/c?", 1), "/a%20b%2Fc%3F:1");
  for (const bad of [0, 65536, -1, 1.5, "x", ""]) assert.throws(() => targetPath("h", bad), RangeError);
  assert.throws(() => targetPath(" ", 80), TypeError);
});

test("buildUrl: proxy + host/port, target, path, url", () => {
  assert.equal(buildUrl({ proxy: "ws://localhost:8080", host: "example.com", port: 80 }),
    "ws://localhost:8080/example.com:80");
  assert.equal(buildUrl({ proxy: "ws://localhost:8080/", host: "::1", port: 5900 }),
    "ws://localhost:8080/[::1]:5900");
  assert.equal(buildUrl({ proxy: "wss://h.example/tunnel", target: "db:5432" }), "wss://h.example/tunnel/db:5432");
  assert.equal(buildUrl({ proxy: "ws://h", target: "[::1]:22" }), "ws://h/[::1]:22");
  assert.equal(buildUrl({ proxy: "http://h:6080", path: "/websockify" }), "ws://h:6080/websockify");
  assert.equal(buildUrl({ proxy: "https://h", path: "websockify?token=abc" }), "wss://h/websockify?token=abc");
  assert.equal(buildUrl({ url: "ws://h:6080/websockify", host: "ignored", port: 1 }), "ws://h:6080/websockify");
  assert.throws(() => buildUrl({ proxy: "ws://h" }), TypeError);
  assert.throws(() => buildUrl({ proxy: "ftp://h", host: "a", port: 1 }), TypeError);
  assert.throws(() => buildUrl({ proxy: "ws://h", target: "nohostport" }), TypeError);
});

test("buildUrl: the proxy defaults to the page's own origin", () => {
  const saved = globalThis.location;
  try {
    globalThis.location = { protocol: "https:", host: "demo.example:8443" };
    assert.equal(buildUrl({ host: "a", port: 1 }), "wss://demo.example:8443/a:1");
    globalThis.location = { protocol: "http:", host: "127.0.0.1:8080" };
    assert.equal(buildUrl({ host: "a", port: 1 }), "ws://127.0.0.1:8080/a:1");
  } finally {
    if (saved === undefined) delete globalThis.location; else globalThis.location = saved;
  }
  assert.throws(() => buildUrl({ host: "a", port: 1 }), TypeError); // no page, no proxy
});

test("framingFor: which subprotocol means which framing", () => {
  assert.equal(framingFor("binary"), "binary");
  assert.equal(framingFor(""), "binary");           // none picked (websockify ≥ 0.9, noVNC ≥ 1.2)
  assert.equal(framingFor(undefined), "binary");
  assert.equal(framingFor("base64"), "base64");       // websockify's text mode
  assert.equal(framingFor("websockets-proxy"), "base64"); // the Ruby prototype
  assert.equal(framingFor("chat"), "binary");         // an application protocol: raw bytes
});

test("connect: offers the default protocols, binaryType arraybuffer", () => {
  const { s, ws } = open();
  assert.deepEqual(ws.offered, ["binary", "base64", "websockets-proxy"]);
  assert.deepEqual(DEFAULT_PROTOCOLS, ["binary", "base64", "websockets-proxy"]);
  assert.equal(ws.binaryType, "arraybuffer");
  assert.equal(ws.url, "ws://proxy.test:8080/example.com:80");
  assert.equal(s.readyState, "connecting");
  const custom = open({ protocols: ["websockets-proxy"] });
  assert.deepEqual(custom.ws.offered, ["websockets-proxy"]);
  const none = open({ protocols: [] });
  assert.deepEqual(none.ws.offered, []);
});

test("binary framing: strings go out as UTF-8 binary frames", () => {
  const { s, ws } = open();
  const events = [];
  s.onopen = (e) => events.push(["open", e.protocol, e.framing]);
  ws.serverOpens("binary");
  assert.deepEqual(events, [["open", "binary", "binary"]]);
  assert.equal(s.readyState, "open");
  assert.equal(s.framing, "binary");
  s.send("héllo 中 😀");
  s.send(new Uint8Array([0, 255]));
  s.send(new Uint8Array([9, 8, 7, 6]).buffer);
  s.send(new Uint8Array([1, 2, 3, 4, 5]).subarray(1, 3)); // only the view's bytes
  assert.equal(ws.sent.length, 4);
  assert.ok(ws.sent.every((f) => f instanceof Uint8Array));
  assert.equal(utf8Decode(ws.sent[0]), "héllo 中 😀");
  assert.deepEqual([...ws.sent[1]], [0, 255]);
  assert.deepEqual([...ws.sent[2]], [9, 8, 7, 6]);
  assert.deepEqual([...ws.sent[3]], [2, 3]);
  assert.equal(s.bytesSent, utf8Encode("héllo 中 😀").length + 2 + 4 + 2);
});

test("base64 framing (base64 and websockets-proxy): UTF-8, then Base64 in text frames", () => {
  for (const proto of ["base64", "websockets-proxy"]) {
    const { s, ws } = open();
    ws.serverOpens(proto);
    assert.equal(s.framing, "base64");
    s.send("naïve 中文 😀");
    s.send(new Uint8Array([0, 1, 2, 253, 254, 255]));
    assert.equal(typeof ws.sent[0], "string");
    assert.equal(ws.sent[0], Buffer.from("naïve 中文 😀").toString("base64"));
    assert.equal(ws.sent[1], "AAEC/f7/");
  }
});

test("no subprotocol picked (plain websockify): binary frames", () => {
  const { s, ws } = open({ url: "ws://h:6080/websockify", protocols: [] });
  ws.serverOpens("");
  assert.equal(s.framing, "binary");
  assert.equal(s.protocol, "");
  s.send("x");
  assert.ok(ws.sent[0] instanceof Uint8Array);
});

test("data sent while connecting is queued (copied) and flushed on open", () => {
  const { s, ws } = open();
  const buf = new Uint8Array([1, 2, 3]);
  s.send(buf);
  s.send("ab");
  buf[0] = 99; // the caller reuses its buffer: must not affect what was queued
  assert.equal(ws.sent.length, 0);
  assert.equal(s.bufferedAmount, 5);
  ws.serverOpens("base64");
  assert.deepEqual(ws.sent, ["AQID", "YWI="]);
  assert.equal(s.bufferedAmount, 0);
});

test("big sends are split into chunkSize frames; empty sends send nothing", () => {
  const { s, ws } = open({ chunkSize: 1000 });
  ws.serverOpens("base64");
  const frames = [];
  s.onframe = (f) => frames.push(f);
  const data = new Uint8Array(2500).map((_, i) => i & 255);
  s.send(data);
  s.send(new Uint8Array(0));
  s.send("");
  assert.equal(ws.sent.length, 3);
  assert.deepEqual(ws.sent.map((t) => base64Decode(t).length), [1000, 1000, 500]);
  const joined = new Uint8Array(2500);
  let off = 0;
  for (const t of ws.sent) { const b = base64Decode(t); joined.set(b, off); off += b.length; }
  assert.deepEqual(joined, data);
  assert.deepEqual(frames.map((f) => [f.direction, f.size, f.wireSize, f.type]),
    [["out", 1000, 1336, "text"], ["out", 1000, 1336, "text"], ["out", 500, 668, "text"]]);
});

test("incoming frames are decoded by type: binary as is, text as Base64", () => {
  const { s, ws } = open();
  ws.serverOpens("binary");
  const got = [];
  s.ondata = (bytes) => got.push(bytes);
  const listened = [];
  s.addEventListener("data", (e) => listened.push(e.data));
  ws.serverSends(new Uint8Array([1, 2, 3]).buffer);
  ws.serverSends("BAUG"); // a text frame is Base64, whatever was negotiated
  ws.serverSends(new ArrayBuffer(0)); // zero-length message: data, not close
  assert.deepEqual(got.map((b) => [...b]), [[1, 2, 3], [4, 5, 6], []]);
  assert.ok(got.every((b) => b instanceof Uint8Array));
  assert.equal(listened.length, 3);
  assert.equal(listened[1], got[1]);
  assert.equal(s.bytesReceived, 6);
});

test("invalid Base64 from the server: error event, then we close", () => {
  const { s, ws } = open();
  ws.serverOpens("base64");
  const errors = [];
  s.onerror = (e) => errors.push(e.message);
  s.ondata = () => assert.fail("no data expected");
  ws.serverSends("not base64!");
  assert.equal(errors.length, 1);
  assert.match(errors[0], /invalid Base64/);
  assert.equal(ws.closedWith.code, 1000);
  assert.equal(s.readyState, "closing");
});

test("close: the proxy's reason reaches the caller, in words", () => {
  const { s, ws } = open();
  ws.serverOpens("binary");
  let closed;
  s.onclose = (e) => { closed = e; };
  let listenerSaw;
  s.addEventListener("close", (e) => { listenerSaw = e; });
  ws.serverCloses(1011, "connect 127.0.0.1:9: connection refused");
  assert.equal(closed.code, 1011);
  assert.equal(closed.reason, "connect 127.0.0.1:9: connection refused");
  assert.equal(closed.wasClean, true);
  assert.equal(closed.message, "1011 Internal Error: connect 127.0.0.1:9: connection refused");
  assert.equal(describeClose(1014, "connect x:1: refused", true), "1014 Bad Gateway: connect x:1: refused");
  assert.equal(listenerSaw, closed);
  assert.equal(s.readyState, "closed");
  assert.throws(() => s.send("late"), /closed/);
});

test("close: a failed handshake is explained (the browser hides the HTTP status)", () => {
  const { s, ws } = open();
  const seen = [];
  s.onerror = (e) => seen.push(["error", e.message]);
  s.onclose = (e) => seen.push(["close", e.code, e.wasClean, e.opened, e.message]);
  ws.fails();
  assert.equal(seen[0][0], "error");
  assert.match(seen[0][1], /could not open/);
  assert.equal(seen[1][1], 1006);
  assert.equal(seen[1][2], false);
  assert.equal(seen[1][3], false);
  assert.match(seen[1][4], /^1006 Abnormal Closure: could not open the WebSocket/);
});

test("close(): sends a normal closure with our reason", () => {
  const { s, ws } = open();
  ws.serverOpens("binary");
  s.close("bye");
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "bye" });
  let msg;
  s.onclose = (e) => { msg = e.message; };
  ws.serverCloses(1000, "");
  assert.equal(msg, "1000 Normal Closure: bye");
});

test("describeClose", () => {
  assert.equal(describeClose(1000, "target closed", true), "1000 Normal Closure: target closed");
  assert.equal(describeClose(1009, "", true), "1009 Message Too Big");
  assert.equal(describeClose(4001, "x", true), "4001 Application Code: x");
  assert.match(describeClose(1006, "", true), /without a closing handshake/);
});

test("send() returns false above highWaterMark; drain() waits for the buffer", async () => {
  const { s, ws } = open({ highWaterMark: 10 });
  ws.serverOpens("binary");
  ws.bufferedAmount = 5;
  assert.equal(s.send("x"), true);
  ws.bufferedAmount = 50;
  assert.equal(s.send("x"), false);
  let drained = false;
  const p = s.drain().then(() => { drained = true; });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(drained, false);
  ws.bufferedAmount = 0;
  await p;
  assert.equal(drained, true);
  ws.bufferedAmount = 7;
  await s.drain(10); // already below the threshold
  // A socket that closes with data still buffered rejects the wait.
  const q = s.drain();
  ws.serverCloses(1006, "", false);
  await assert.rejects(q, /closed/);
});

test("errors thrown by handlers do not break the socket", async () => {
  const { s, ws } = open();
  ws.serverOpens("binary");
  const reported = [];
  const saved = globalThis.reportError;
  globalThis.reportError = (e) => reported.push(e.message);
  try {
    s.ondata = () => { throw new Error("boom"); };
    const seen = [];
    s.addEventListener("data", (e) => seen.push(e.data.length));
    ws.serverSends(new Uint8Array(3).buffer);
    assert.deepEqual(seen, [3]);
    assert.deepEqual(reported, ["boom"]);
  } finally {
    globalThis.reportError = saved;
  }
});

test("a missing WebSocket implementation is a clear error", () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
  delete globalThis.WebSocket; // Node 20 has none; newer Node does
  try {
    assert.throws(() => connect({ proxy: "ws://h", host: "a", port: 1 }), /no WebSocket implementation/);
  } finally {
    if (saved) Object.defineProperty(globalThis, "WebSocket", saved);
  }
});

test("base64Encode is what a text frame carries; round trip through the fake", () => {
  const { s, ws } = open();
  ws.serverOpens("websockets-proxy");
  const payload = new Uint8Array(70000).map(() => Math.floor(Math.random() * 256));
  s.send(payload);
  const got = [];
  s.ondata = (b) => got.push(b);
  for (const frame of ws.sent) ws.serverSends(frame); // echo
  const total = got.reduce((n, b) => n + b.length, 0);
  assert.equal(total, payload.length);
  const joined = new Uint8Array(total);
  let off = 0;
  for (const b of got) { joined.set(b, off); off += b.length; }
  assert.deepEqual(joined, payload);
  assert.equal(ws.sent[0], base64Encode(payload.subarray(0, 49152)));
});

test("protocols option: array, single string, empty", () => {
  assert.deepEqual(open({ protocols: "base64" }).ws.offered, ["base64"]);
  assert.deepEqual(open({ protocols: "" }).ws.offered, []);
  assert.deepEqual(open({ protocols: null }).ws.offered, ["binary", "base64", "websockets-proxy"]);
});

test("a connection that never opens drops queued data", async () => {
  const { s, ws } = open();
  s.send("queued");
  assert.equal(s.bufferedAmount, 6);
  ws.fails();
  assert.equal(s.bufferedAmount, 0);
  assert.equal(ws.sent.length, 0);
});
