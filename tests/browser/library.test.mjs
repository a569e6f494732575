/**
 * wsproxy.js in a real browser, against the real wsproxy binary and real TCP
 * targets on loopback. The page is wsproxy's own built-in demo page (so the
 * library is the one compiled into the binary, loaded same-origin from
 * /wsproxy.js); the tests then drive the WsProxy global or /wsproxy.mjs.
 *
 *   node --test tests/browser/
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startProxy,
  startEchoServer,
  closedPort,
  launchBrowser,
  openPage,
} from "./harness.mjs";

let proxy, echo, browser, page;

before(async () => {
  proxy = await startProxy({ name: "wsproxy-library" });
  echo = await startEchoServer();
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

/** Context for a failure message: what the proxy logged. */
const proxyLog = () => `\n--- proxy log ---\n${proxy.log()}`;

/**
 * In the page: sends `size` random bytes through the echo target with the
 * given subprotocol offer, honouring backpressure, and compares what comes
 * back byte for byte.
 */
async function roundTrip({ protocols, size }) {
  return page.evaluate(async ({ port, protocols, size }) => {
    const data = new Uint8Array(size);
    for (let off = 0; off < size; off += 65536) {
      crypto.getRandomValues(data.subarray(off, Math.min(off + 65536, size)));
    }
    const s = WsProxy.connect({ host: "127.0.0.1", port, protocols });
    const received = new Uint8Array(size);
    let got = 0;
    let framesIn = 0;
    let framesOut = 0;
    s.addEventListener("frame", (f) => { if (f.direction === "in") framesIn++; else framesOut++; });
    const echoed = new Promise((resolve, reject) => {
      s.ondata = (bytes) => {
        if (got + bytes.length > size) return reject(new Error("more bytes came back than were sent"));
        received.set(bytes, got);
        got += bytes.length;
        if (got === size) resolve();
      };
      s.onclose = (e) => reject(new Error("closed after " + got + " bytes: " + e.message));
    });
    const timer = new Promise((_, reject) => setTimeout(() => reject(new Error("in-page timeout after " + got + " bytes")), 45_000));
    await Promise.race([new Promise((resolve) => { s.onopen = resolve; }), echoed, timer]);
    // Write in 64 KiB pieces; wait whenever send() says the buffer is full.
    let waits = 0;
    for (let off = 0; off < size; off += 65536) {
      if (!s.send(data.subarray(off, Math.min(off + 65536, size)))) {
        waits++;
        await s.drain(256 * 1024);
      }
    }
    await Promise.race([echoed, timer]);
    let mismatch = -1;
    for (let i = 0; i < size; i++) if (data[i] !== received[i]) { mismatch = i; break; }
    const closed = new Promise((resolve) => { s.onclose = (e) => resolve(e); });
    s.close();
    const close = await Promise.race([closed, timer]);
    return {
      protocol: s.protocol, framing: s.framing, got, mismatch, framesIn, framesOut, waits,
      bytesSent: s.bytesSent, bytesReceived: s.bytesReceived,
      close: { code: close.code, wasClean: close.wasClean, message: close.message },
    };
  }, { port: echo.port, protocols, size });
}

const MODES = [
  { name: "binary (default offer)", protocols: undefined, protocol: "binary", framing: "binary" },
  { name: "base64", protocols: ["base64"], protocol: "base64", framing: "base64" },
  { name: "websockets-proxy", protocols: ["websockets-proxy"], protocol: "websockets-proxy", framing: "base64" },
  { name: "no subprotocol", protocols: [], protocol: "", framing: "binary" },
];

for (const mode of MODES) {
  test(`1 MiB of random bytes round trip through echo: ${mode.name}`, { timeout: 60_000 }, async () => {
    const size = 1024 * 1024;
    const r = await roundTrip({ protocols: mode.protocols, size });
    assert.equal(r.protocol, mode.protocol, proxyLog());
    assert.equal(r.framing, mode.framing);
    assert.equal(r.got, size);
    assert.equal(r.mismatch, -1, "byte-for-byte equal");
    assert.equal(r.bytesSent, size);
    assert.equal(r.bytesReceived, size);
    assert.ok(r.framesOut >= size / 49152, `sends were split into frames (${r.framesOut})`);
    assert.ok(r.framesIn >= 1);
    assert.equal(r.close.code, 1000, JSON.stringify(r.close) + proxyLog());
  });
}

test("UTF-8 text (accents, CJK, emoji) round trips in binary and base64 framing", { timeout: 30_000 }, async () => {
  const text = "Grüße, café, naïve — 日本語, 中文, 한국어 — 😀🎉👩‍👩‍👧 — ∑ x² ¿qué?\r\n";
  for (const protocols of [["binary"], ["base64"], ["websockets-proxy"]]) {
    const r = await page.evaluate(async ({ port, protocols, text }) => {
      const s = WsProxy.connect({ host: "127.0.0.1", port, protocols });
      const decoder = new WsProxy.Utf8Decoder();
      let out = "";
      let sentBytes = 0;
      const done = new Promise((resolve, reject) => {
        s.onopen = () => {
          // Send it one string per character (pieces of a multi-byte
          // character never travel alone: each string is encoded whole).
          for (const ch of text) s.send(ch);
          sentBytes = s.bytesSent;
        };
        s.ondata = (bytes) => {
          out += decoder.decode(bytes, { stream: true });
          if (out.length >= text.length) resolve();
        };
        s.onclose = (e) => reject(new Error(e.message));
        setTimeout(() => reject(new Error("timeout; got " + JSON.stringify(out))), 15_000);
      });
      await done;
      s.close();
      return { out, protocol: s.protocol, sentBytes, utf8Length: WsProxy.utf8Encode(text).length };
    }, { port: echo.port, protocols, text });
    assert.equal(r.protocol, protocols[0]);
    assert.equal(r.out, text, `round trip with ${protocols[0]}`);
    assert.equal(r.sentBytes, r.utf8Length, "strings are sent as UTF-8");
  }
});

test("the ES module /wsproxy.mjs works like the global", { timeout: 30_000 }, async () => {
  const r = await page.evaluate(async (port) => {
    const mod = await import("/wsproxy.mjs");
    const s = mod.connect({ host: "127.0.0.1", port, protocols: ["base64"] });
    const text = "module ✓ 中文 😀";
    const reply = await new Promise((resolve, reject) => {
      let out = "";
      s.onopen = () => s.send(text);
      s.ondata = (b) => { out += mod.utf8Decode(b); if (out === text) resolve(out); };
      s.onclose = (e) => reject(new Error(e.message));
      setTimeout(() => reject(new Error("timeout")), 10_000);
    });
    s.close();
    return { same: mod.default === globalThis.WsProxy, reply, framing: s.framing };
  }, echo.port);
  assert.deepEqual(r, { same: true, reply: "module ✓ 中文 😀", framing: "base64" });
});

test("a fixed-path endpoint (websockify-style `path` option) works with the same calling code", { timeout: 30_000 }, async () => {
  const r = await page.evaluate(async (port) => {
    // As against websockify: a fixed path, no subprotocol, binary frames.
    const s = WsProxy.connect({ path: "/127.0.0.1:" + port, protocols: [] });
    const reply = await new Promise((resolve, reject) => {
      s.onopen = () => s.send(new Uint8Array([0, 1, 2, 254, 255]));
      s.ondata = (b) => resolve(Array.from(b));
      s.onclose = (e) => reject(new Error(e.message));
      setTimeout(() => reject(new Error("timeout")), 10_000);
    });
    s.close();
    return { reply, protocol: s.protocol, framing: s.framing, url: s.url };
  }, echo.port);
  assert.deepEqual(r.reply, [0, 1, 2, 254, 255]);
  assert.equal(r.protocol, "");
  assert.equal(r.framing, "binary");
  assert.equal(r.url, `${proxy.wsUrl}/127.0.0.1:${echo.port}`);
});

test("against a fixed-target proxy (websockify-style --target), `url` and `path` work too", { timeout: 30_000 }, async () => {
  const fixed = await startProxy({ name: "wsproxy-library-fixed", args: ["--target", `127.0.0.1:${echo.port}`] });
  const page2 = await openPage(browser);
  try {
    const res = await page2.goto(fixed.httpUrl + "/"); // same origin as this proxy
    assert.equal(res.status(), 200, fixed.log());
    await page2.waitForFunction(() => typeof globalThis.WsProxy === "object");
    const r = await page2.evaluate(async (wsUrl) => {
      const results = [];
      for (const options of [
        { url: wsUrl + "/websockify", protocols: [] },      // noVNC ≥ 1.2 style: no subprotocol
        { path: "/websockify", protocols: ["binary"] },     // noVNC 0.6–1.1 style
        { path: "/websockify" },                             // our default offer
      ]) {
        const s = WsProxy.connect(options);
        const reply = await new Promise((resolve, reject) => {
          let out = "";
          s.onopen = () => s.send("fixed ✓");
          s.ondata = (b) => { out += WsProxy.utf8Decode(b); if (out === "fixed ✓") resolve(out); };
          s.onclose = (e) => reject(new Error(e.message));
          setTimeout(() => reject(new Error("timeout")), 10_000);
        });
        s.close();
        results.push({ reply, protocol: s.protocol, framing: s.framing });
      }
      return results;
    }, fixed.wsUrl);
    assert.deepEqual(r, [
      { reply: "fixed ✓", protocol: "", framing: "binary" },
      { reply: "fixed ✓", protocol: "binary", framing: "binary" },
      { reply: "fixed ✓", protocol: "binary", framing: "binary" },
    ], fixed.log());
  } finally {
    await page2.context().close();
    await fixed.stop();
  }
});

test("a refused target: the proxy's reason reaches the caller in words", { timeout: 30_000 }, async () => {
  const port = await closedPort();
  const r = await page.evaluate(async (port) => {
    const s = WsProxy.connect({ host: "127.0.0.1", port });
    const errors = [];
    s.onerror = (e) => errors.push(e.message);
    let opened = false;
    s.onopen = () => { opened = true; };
    const e = await new Promise((resolve, reject) => {
      s.onclose = resolve;
      setTimeout(() => reject(new Error("no close event")), 15_000);
    });
    return { opened, code: e.code, reason: e.reason, wasClean: e.wasClean, message: e.message, errors };
  }, port);
  assert.equal(r.opened, true, "the WebSocket opens; the TCP connect fails after the handshake");
  // wsproxy sends 1011 (websockify does too); 1014 "Bad Gateway" would also fit.
  assert.ok([1011, 1014].includes(r.code), JSON.stringify(r) + proxyLog());
  assert.match(r.reason, /connect/i);
  assert.match(r.reason, new RegExp(`127\\.0\\.0\\.1:${port}`));
  assert.match(r.reason, /refused/i);
  const name = r.code === 1011 ? "Internal Error" : "Bad Gateway";
  assert.equal(r.message, `${r.code} ${name}: ${r.reason}`);
});

test("a rejected handshake (bad target) is reported as such", { timeout: 30_000 }, async () => {
  const r = await page.evaluate(async () => {
    const s = WsProxy.connect({ path: "/not-a-target" });
    const e = await new Promise((resolve, reject) => {
      s.onclose = resolve;
      setTimeout(() => reject(new Error("no close event")), 15_000);
    });
    return { code: e.code, opened: e.opened, message: e.message };
  });
  assert.equal(r.code, 1006);
  assert.equal(r.opened, false);
  assert.match(r.message, /could not open the WebSocket/);
});

test("no page errors", () => {
  assert.deepEqual(page.pageErrors, []);
});
