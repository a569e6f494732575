/**
 * UDP through wsproxy in a real browser (issue 14): wsproxy.js with
 * `transport: "udp"` in Chromium, the real wsproxy binary, and a UDP echo on
 * loopback started by the test. Datagram boundaries must survive the whole
 * way: one send() → one WebSocket message → one datagram at the echo → one
 * datagram back → one message → one data event, in every framing, for sizes
 * 0, 1, 1,000 and 65,507; 65,508 bytes is refused by the library itself.
 *
 *   node --test tests/browser/
 *
 * Until the proxy serves /udp/HOST:PORT, it refuses that path with 400, and
 * these tests skip with that reason (see UDP_PENDING below); every other
 * answer runs them.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import {
  startProxy,
  startUdpEchoServer,
  launchBrowser,
  openPage,
  withTimeout,
  artifactsDir,
} from "./harness.mjs";

let proxy, echo, browser, page;
/** Why the tests skip (the proxy has no UDP yet), or false. */
let udpPending = false;

/**
 * The HTTP status wsproxy answers to a WebSocket handshake for `path`
 * (a raw request from Node, because the browser hides the status).
 */
async function handshakeStatus(addr, path) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  const sock = net.connect(port, host);
  try {
    return await withTimeout(new Promise((resolve, reject) => {
      let head = "";
      sock.setEncoding("latin1");
      sock.on("error", reject);
      sock.on("connect", () => sock.write(
        `GET ${path} HTTP/1.1\r\nHost: ${addr}\r\nOrigin: http://${addr}\r\nUpgrade: websocket\r\n` +
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
      sock.on("data", (chunk) => {
        head += chunk;
        const m = /^HTTP\/1\.1 (\d{3})[^\r\n]*\r\n/.exec(head);
        if (m) resolve({ status: Number(m[1]), line: head.split("\r\n")[0] });
      });
      sock.on("end", () => reject(new Error(`no status line, got ${JSON.stringify(head)}`)));
    }), 10_000, `the answer to GET ${path}`);
  } finally {
    sock.destroy();
  }
}

before(async () => {
  proxy = await startProxy({ name: "wsproxy-udp" });
  echo = await startUdpEchoServer();
  const probe = await handshakeStatus(proxy.addr, `/udp/127.0.0.1:${echo.port}`);
  // UDP_PENDING: the proxy side of issue 14 has not landed while wsproxy refuses the
  // path with 400. Remove this skip when it has: then a 400 must fail the tests.
  if (probe.status === 400) {
    udpPending = `wsproxy answers /udp/HOST:PORT with "${probe.line}": its UDP support (issue 14) ` +
      "has not landed yet; these tests run once it has";
    return;
  }
  browser = await launchBrowser();
  page = await openPage(browser);
  await page.goto(proxy.httpUrl + "/");
  await page.waitForFunction(() => typeof globalThis.WsProxy === "object");
});

after(async () => {
  await browser?.close();
  await echo?.close();
  await proxy?.stop();
});

const proxyLog = () => `\n--- proxy log ---\n${proxy.log()}`;

const FRAMINGS = [
  { name: "binary (default offer)", protocols: undefined, protocol: "binary", type: "binary" },
  { name: "base64", protocols: ["base64"], protocol: "base64", type: "text" },
  { name: "websockets-proxy", protocols: ["websockets-proxy"], protocol: "websockets-proxy", type: "text" },
  { name: "no subprotocol", protocols: [], protocol: "", type: "binary" },
];

/**
 * In the page: opens a UDP tunnel to the echo, sends one datagram of random
 * bytes per entry of `sizes`, one after the other, and waits until as many
 * data events came back. Returns what each event carried (size, and whether
 * it equals the datagram sent at that place) and the frame counts.
 */
function echoDatagrams({ protocols, sizes }) {
  return page.evaluate(async ({ port, protocols, sizes }) => {
    const s = WsProxy.connect({ host: "127.0.0.1", port, protocols, transport: "udp" });
    const sent = sizes.map((n) => {
      const d = new Uint8Array(n);
      for (let off = 0; off < n; off += 65536) crypto.getRandomValues(d.subarray(off, Math.min(off + 65536, n)));
      return d;
    });
    const got = [];
    const frames = { in: [], out: [] };
    s.addEventListener("frame", (f) => frames[f.direction].push({ size: f.size, type: f.type }));
    const timer = new Promise((_, reject) => setTimeout(() =>
      reject(new Error("in-page timeout: " + got.length + " of " + sizes.length + " datagrams back")), 30_000));
    const back = new Promise((resolve, reject) => {
      s.ondata = (bytes) => { got.push(bytes); if (got.length === sizes.length) resolve(); };
      s.onclose = (e) => reject(new Error("closed after " + got.length + " datagrams: " + e.message));
    });
    await Promise.race([new Promise((resolve) => { s.onopen = resolve; }), back, timer]);
    for (const d of sent) s.send(d);
    await Promise.race([back, timer]);
    // Anything extra (a split datagram) would arrive as more events: give it a moment.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    const result = {
      transport: s.transport,
      protocol: s.protocol,
      url: s.url,
      received: got.map((b, i) => ({ size: b.length, equal: i < sent.length && same(b, sent[i]) })),
      frames,
      bytesSent: s.bytesSent,
      bytesReceived: s.bytesReceived,
    };
    const closed = new Promise((resolve) => { s.onclose = resolve; });
    s.close();
    const close = await Promise.race([closed, timer]);
    result.close = { code: close.code, message: close.message };
    return result;
  }, { port: echo.port, protocols, sizes });
}

for (const framing of FRAMINGS) {
  test(`datagrams of 0, 1, 1000 and 65507 bytes keep their boundaries: ${framing.name}`,
    { timeout: 60_000 }, async (t) => {
      if (udpPending) return t.skip(udpPending);
      const sizes = [0, 1, 1000, 65507];
      const before = echo.sizes.length;
      const r = await echoDatagrams({ protocols: framing.protocols, sizes });
      assert.equal(r.transport, "udp");
      assert.equal(r.url, `${proxy.wsUrl}/udp/127.0.0.1:${echo.port}`);
      assert.equal(r.protocol, framing.protocol, proxyLog());
      assert.deepEqual(echo.sizes.slice(before), sizes, "the echo got one datagram per send()" + proxyLog());
      assert.deepEqual(r.received, sizes.map((size) => ({ size, equal: true })),
        "one data event per datagram, bytes intact" + proxyLog());
      assert.deepEqual(r.frames.out, sizes.map((size) => ({ size, type: framing.type })));
      assert.deepEqual(r.frames.in.map((f) => f.size), sizes, "one message per datagram from the proxy");
      assert.equal(r.bytesSent, 66508);
      assert.equal(r.bytesReceived, 66508);
      assert.equal(r.close.code, 1000, JSON.stringify(r.close) + proxyLog());
    });
}

test("200 small datagrams in a row are neither joined nor split", { timeout: 60_000 }, async (t) => {
  if (udpPending) return t.skip(udpPending);
  const sizes = Array.from({ length: 200 }, (_, i) => (i * 37) % 500);
  const before = echo.sizes.length;
  const r = await echoDatagrams({ protocols: ["binary"], sizes });
  assert.deepEqual(echo.sizes.slice(before), sizes, proxyLog());
  assert.deepEqual(r.received.map((x) => x.size), sizes);
  assert.ok(r.received.every((x) => x.equal), "every datagram came back intact, in order");
});

test("65508 bytes is refused by the library; the tunnel stays usable", { timeout: 30_000 }, async (t) => {
  if (udpPending) return t.skip(udpPending);
  const before = echo.sizes.length;
  const r = await page.evaluate(async (port) => {
    const s = WsProxy.connect({ host: "127.0.0.1", port, transport: "udp" });
    await new Promise((resolve, reject) => {
      s.onopen = resolve;
      s.onclose = (e) => reject(new Error(e.message));
      setTimeout(() => reject(new Error("no open")), 15_000);
    });
    let error = null;
    try {
      s.send(new Uint8Array(65508));
    } catch (err) {
      error = { name: err.name, message: err.message };
    }
    const after = { state: s.readyState, bytesSent: s.bytesSent, bufferedAmount: s.bufferedAmount };
    const reply = await new Promise((resolve, reject) => {
      s.ondata = (b) => resolve(Array.from(b));
      s.onclose = (e) => reject(new Error(e.message));
      s.send(new Uint8Array([42]));
      setTimeout(() => reject(new Error("no reply")), 15_000);
    });
    s.close();
    return { error, after, reply };
  }, echo.port);
  assert.equal(r.error?.name, "RangeError");
  assert.match(r.error.message, /at most 65507 bytes, got 65508/);
  assert.deepEqual(r.after, { state: "open", bytesSent: 0, bufferedAmount: 0 });
  assert.deepEqual(r.reply, [42]);
  assert.deepEqual(echo.sizes.slice(before), [1], "only the 1-byte datagram reached the echo");
});

test("demo page: UDP shows one transcript entry per datagram, with its size", { timeout: 45_000 }, async (t) => {
  if (udpPending) return t.skip(udpPending);
  const demo = await openPage(browser);
  try {
    await demo.goto(proxy.httpUrl + "/");
    await demo.fill("#host", "127.0.0.1");
    await demo.fill("#port", String(echo.port));
    await demo.selectOption("#transport", "udp");
    assert.equal(await demo.isDisabled("#try-it"), true, "Try it (an HTTP request) is for TCP");
    await demo.click("#connect");
    await demo.waitForSelector("#status[data-state=open]");
    assert.match(await demo.textContent("#status"), /UDP/);
    await demo.uncheck("#crlf");
    // A client-controlled string that must be shown as text, not parsed as HTML.
    for (const text of ["hello", "<img src=x onerror=alert(1)>", ""]) {
      await demo.fill("#message", text);
      await demo.click("#send");
    }
    const recv = demo.locator("#transcript .entry.recv");
    await demo.waitForFunction(() => document.querySelectorAll("#transcript .entry.recv").length >= 3);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const entries = await recv.evaluateAll((els) => els.map((e) => ({
      datagram: e.dataset.datagram,
      bytes: e.dataset.bytes,
      meta: e.querySelector(".meta").textContent,
      text: e.querySelector("pre").textContent,
    })));
    assert.deepEqual(entries, [
      { datagram: "1", bytes: "5", meta: "← received datagram 1 · 5 bytes", text: "hello" },
      { datagram: "2", bytes: "28", meta: "← received datagram 2 · 28 bytes", text: "<img src=x onerror=alert(1)>" },
      { datagram: "3", bytes: "0", meta: "← received datagram 3 · 0 bytes", text: "" },
    ]);
    assert.equal(await demo.locator("#transcript img").count(), 0, "nothing was parsed as HTML");
    const sent = await demo.locator("#transcript .entry.sent .meta").allTextContents();
    assert.deepEqual(sent, ["→ sent datagram 1 · 5 bytes", "→ sent datagram 2 · 28 bytes", "→ sent datagram 3 · 0 bytes"]);
    await demo.screenshot({ path: path.join(artifactsDir, "demo-page-udp.png"), fullPage: true });
    assert.deepEqual(demo.pageErrors, []);
  } finally {
    await demo.context().close();
  }
});

test("no page errors", (t) => {
  if (udpPending) return t.skip(udpPending);
  assert.deepEqual(page.pageErrors, []);
});
