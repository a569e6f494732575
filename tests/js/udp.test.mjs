/**
 * Unit tests of wsproxy.js's UDP transport (`transport: "udp"`), with the
 * scripted WebSocket stand-in (no network, no proxy):
 *
 *   node --test tests/js/
 *
 * The contract with the proxy: the path is /udp/HOST:PORT; one WebSocket
 * message is exactly one datagram, both ways, in every framing (binary
 * frames, or Base64 text frames for the base64 and websockets-proxy
 * subprotocols); a zero-length message is a zero-length datagram; a datagram
 * holds at most 65,507 bytes. The real round trip through wsproxy is in
 * tests/browser/udp.test.mjs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  connect,
  buildUrl,
  targetPath,
  MAX_DATAGRAM,
  base64Decode,
  base64Encode,
  utf8Encode,
} from "../../src/web/wsproxy.mjs";
import { FakeWebSocket } from "./fake-websocket.mjs";

const open = (opts = {}) => {
  const s = connect({
    proxy: "ws://proxy.test:8080", host: "127.0.0.1", port: 5353, transport: "udp",
    WebSocket: FakeWebSocket, ...opts,
  });
  return { s, ws: FakeWebSocket.last };
};

/** The framings a server can pick: [offer, picked subprotocol, framing]. */
const FRAMINGS = [
  [undefined, "binary", "binary"],
  [["base64"], "base64", "base64"],
  [["websockets-proxy"], "websockets-proxy", "base64"],
  [[], "", "binary"],
];

/** The payload of one recorded message, whatever its framing. */
const payload = (message) => (typeof message === "string" ? base64Decode(message) : message);

test("MAX_DATAGRAM is the IPv4 UDP limit", () => {
  assert.equal(MAX_DATAGRAM, 65535 - 8 - 20);
});

test("udp paths: IPv4, IPv6 (bare and bracketed), names that need percent-encoding", () => {
  assert.equal(targetPath("127.0.0.1", 53, "udp"), "/udp/127.0.0.1:53");
  assert.equal(targetPath("dns.example", "5353", "udp"), "/udp/dns.example:5353");
  assert.equal(targetPath("::1", 53, "udp"), "/udp/[::1]:53");
  assert.equal(targetPath("[fe80::1]", 53, "udp"), "/udp/[fe80::1]:53");
  assert.equal(targetPath("2001:db8::53", 53, "udp"), "/udp/[2001:db8::53]:53");
  assert.equal(targetPath("a b/c?#", 1, "udp"), "/udp/a%20b%2Fc%3F%23:1");
  assert.equal(targetPath("bücher.example", 9, "udp"), "/udp/b%C3%BCcher.example:9");
  assert.equal(targetPath("x%y", 9, "udp"), "/udp/x%25y:9");
  // TCP keeps its path, and no TCP host can spell a UDP path: its "/" is encoded.
  assert.equal(targetPath("127.0.0.1", 53), "/127.0.0.1:53");
  assert.equal(targetPath("127.0.0.1", 53, "tcp"), "/127.0.0.1:53");
  assert.equal(targetPath("udp/127.0.0.1", 53), "/udp%2F127.0.0.1:53");
  // The same checks as for TCP.
  for (const bad of [0, 65536, -1, 1.5, "x", ""]) assert.throws(() => targetPath("h", bad, "udp"), RangeError);
  assert.throws(() => targetPath(" ", 53, "udp"), TypeError);
  assert.throws(() => targetPath("h", 53, "sctp"), /transport must be "tcp" or "udp"/);
});

test("udp URLs from host+port and target; path and url are the caller's choice", () => {
  const base = { proxy: "ws://localhost:8080", transport: "udp" };
  assert.equal(buildUrl({ ...base, host: "127.0.0.1", port: 53 }), "ws://localhost:8080/udp/127.0.0.1:53");
  assert.equal(buildUrl({ ...base, host: "::1", port: 53 }), "ws://localhost:8080/udp/[::1]:53");
  assert.equal(buildUrl({ ...base, target: "[::1]:53" }), "ws://localhost:8080/udp/[::1]:53");
  assert.equal(buildUrl({ ...base, target: "dns.example:53" }), "ws://localhost:8080/udp/dns.example:53");
  assert.equal(buildUrl({ ...base, proxy: "https://h/tunnel/", host: "a b", port: 7 }), "wss://h/tunnel/udp/a%20b:7");
  assert.equal(buildUrl({ ...base, path: "/websockify" }), "ws://localhost:8080/websockify");
  assert.equal(buildUrl({ ...base, url: "ws://h:6080/dns" }), "ws://h:6080/dns");
  assert.equal(buildUrl({ ...base, transport: "UDP", host: "h", port: 1 }), "ws://localhost:8080/udp/h:1");
  assert.equal(buildUrl({ ...base, transport: undefined, host: "h", port: 1 }), "ws://localhost:8080/h:1");
  assert.throws(() => buildUrl({ ...base, transport: "quic", host: "h", port: 1 }), TypeError);
  assert.throws(() => buildUrl({ ...base, transport: "quic", url: "ws://h/" }), TypeError);
  assert.throws(() => connect({ ...base, transport: "", host: "h", port: 1, WebSocket: FakeWebSocket }), TypeError);
});

test("connect: the socket says its transport; the WebSocket gets the udp URL", () => {
  const { s, ws } = open();
  assert.equal(s.transport, "udp");
  assert.equal(ws.url, "ws://proxy.test:8080/udp/127.0.0.1:5353");
  assert.deepEqual(ws.offered, ["binary", "base64", "websockets-proxy"]);
  assert.equal(open({ transport: undefined }).s.transport, "tcp");
  assert.equal(open({ transport: "tcp" }).ws.url, "ws://proxy.test:8080/127.0.0.1:5353");
});

for (const [offer, picked, framing] of FRAMINGS) {
  test(`one send, one message, never split or joined (${picked || "no subprotocol"})`, () => {
    // A small chunkSize proves that UDP ignores it (TCP would split at 1000 bytes).
    const { s, ws } = open({ protocols: offer, chunkSize: 1000 });
    ws.serverOpens(picked);
    assert.equal(s.framing, framing);
    const frames = [];
    s.onframe = (f) => frames.push(f);
    const sizes = [0, 1, 2, 3, 64, 999, 1000, 1001, 49152, 49153, 65506, MAX_DATAGRAM];
    const datagrams = sizes.map((n) => new Uint8Array(randomBytes(n)));
    for (const d of datagrams) s.send(d);
    s.send("héllo 中 😀"); // a string is one datagram of its UTF-8 bytes
    s.send("");
    assert.equal(ws.sent.length, sizes.length + 2);
    for (const [i, message] of ws.sent.entries()) {
      assert.equal(typeof message, framing === "base64" ? "string" : "object", `message ${i}`);
    }
    assert.deepEqual(ws.sent.slice(0, sizes.length).map(payload), datagrams);
    assert.deepEqual(payload(ws.sent[sizes.length]), utf8Encode("héllo 中 😀"));
    assert.deepEqual(payload(ws.sent[sizes.length + 1]), new Uint8Array(0));
    if (framing === "base64") assert.equal(ws.sent[0], "", "a zero-length datagram is an empty text message");
    const total = sizes.reduce((a, b) => a + b, 0) + utf8Encode("héllo 中 😀").length;
    assert.equal(s.bytesSent, total);
    assert.deepEqual(frames.map((f) => f.size), [...sizes, utf8Encode("héllo 中 😀").length, 0]);
    assert.ok(frames.every((f) => f.direction === "out" && f.type === (framing === "base64" ? "text" : "binary")));
  });
}

test("datagrams sent while connecting keep their boundaries (zero-length too) and go out on open", () => {
  for (const [offer, picked] of FRAMINGS) {
    const { s, ws } = open({ protocols: offer });
    const buf = new Uint8Array([1, 2, 3]);
    s.send(buf);
    s.send(new Uint8Array(0));
    s.send(new Uint8Array([4]));
    buf[0] = 99; // the caller reuses its buffer: what was queued must not change
    assert.equal(ws.sent.length, 0);
    assert.equal(s.bufferedAmount, 4);
    ws.serverOpens(picked);
    assert.deepEqual(ws.sent.map((m) => [...payload(m)]), [[1, 2, 3], [], [4]], picked);
    assert.equal(s.bufferedAmount, 0);
  }
});

test("more than 65,507 bytes is a RangeError, not a split, and nothing is sent", () => {
  for (const [offer, picked] of FRAMINGS) {
    const { s, ws } = open({ protocols: offer });
    // While connecting: refused at once, not queued.
    assert.throws(() => s.send(new Uint8Array(MAX_DATAGRAM + 1)), RangeError);
    assert.equal(s.bufferedAmount, 0);
    ws.serverOpens(picked);
    for (const big of [MAX_DATAGRAM + 1, 65535, 100_000, 1 << 20]) {
      assert.throws(() => s.send(new Uint8Array(big)), (err) => {
        assert.ok(err instanceof RangeError);
        assert.match(err.message, new RegExp(`at most 65507 bytes, got ${big}`));
        return true;
      });
    }
    // The limit counts UTF-8 bytes, not characters: 32,754 × "é" is 65,508 bytes.
    assert.throws(() => s.send("é".repeat(32754)), RangeError);
    assert.throws(() => s.send(new Uint16Array(32754)), RangeError); // a view's byteLength counts
    assert.equal(ws.sent.length, 0);
    assert.equal(s.bytesSent, 0);
    assert.equal(s.readyState, "open", "a refused send leaves the socket open");
    s.send("é".repeat(32753) + "x"); // 65,507 bytes: fits
    s.send(new Uint8Array(MAX_DATAGRAM));
    assert.deepEqual(ws.sent.map((m) => payload(m).length), [MAX_DATAGRAM, MAX_DATAGRAM]);
  }
});

test("TCP is unchanged: big sends are still chunked, no size limit", () => {
  const { s, ws } = open({ transport: "tcp", chunkSize: 1000 });
  ws.serverOpens("binary");
  s.send(new Uint8Array(MAX_DATAGRAM + 1));
  assert.equal(ws.sent.length, Math.ceil((MAX_DATAGRAM + 1) / 1000));
  s.send(new Uint8Array(0));
  assert.equal(ws.sent.length, Math.ceil((MAX_DATAGRAM + 1) / 1000), "an empty TCP send sends nothing");
});

test("one data event per incoming message, in every framing (zero-length included)", () => {
  for (const [offer, picked, framing] of FRAMINGS) {
    const { s, ws } = open({ protocols: offer });
    ws.serverOpens(picked);
    const handler = [];
    const listener = [];
    s.ondata = (bytes) => handler.push(bytes);
    s.addEventListener("data", (e) => listener.push(e.data));
    const datagrams = [0, 1, 3, 1000, MAX_DATAGRAM].map((n) => new Uint8Array(randomBytes(n)));
    for (const d of datagrams) {
      // The proxy sends what its framing says; the library decodes by frame type.
      ws.serverSends(framing === "base64" ? base64Encode(d) : d.slice().buffer);
    }
    assert.equal(handler.length, datagrams.length, picked);
    assert.deepEqual(handler, datagrams);
    assert.equal(listener.length, datagrams.length);
    assert.ok(listener.every((b, i) => b === handler[i]), "handler and listeners get the same bytes");
    assert.equal(s.bytesReceived, datagrams.reduce((a, d) => a + d.length, 0));
  }
});

test("bufferedAmount and drain() work for datagrams", async () => {
  const { s, ws } = open({ highWaterMark: 100 });
  s.send(new Uint8Array(60));
  assert.equal(s.send(new Uint8Array(60)), false, "above highWaterMark while queued");
  assert.equal(s.bufferedAmount, 120);
  ws.serverOpens("binary");
  assert.equal(ws.sent.length, 2);
  assert.equal(s.bufferedAmount, 0);
  ws.bufferedAmount = 500; // the browser has not sent them yet
  assert.equal(s.send(new Uint8Array(10)), false);
  let drained = false;
  const p = s.drain(50).then(() => { drained = true; });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(drained, false);
  ws.bufferedAmount = 40;
  await p;
  assert.equal(drained, true);
  const q = s.drain();
  ws.serverCloses(1009, "datagram larger than 65507 bytes");
  await assert.rejects(q, /closed/);
});

test("the proxy's 1009 close (a datagram too big for it) reaches the caller in words", () => {
  const { s, ws } = open();
  ws.serverOpens("binary");
  let closed;
  s.onclose = (e) => { closed = e; };
  ws.serverCloses(1009, "datagram of 70000 bytes: UDP allows at most 65507");
  assert.equal(closed.message, "1009 Message Too Big: datagram of 70000 bytes: UDP allows at most 65507");
  assert.throws(() => s.send("late"), /closed/);
});
