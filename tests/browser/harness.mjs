/**
 * Shared helpers for wsproxy's real-browser tests (node --test tests/browser/).
 *
 * Build-free: plain Node plus playwright-core driving Debian's chromium.
 *
 *   startProxy()       runs the real wsproxy binary on 127.0.0.1, port 0
 *                      ($WSPROXY_BIN, default target/debug/wsproxy under the repo root)
 *                      and learns its address from the "listening on ADDR" line
 *   startEchoServer()  a loopback TCP target that echoes bytes back
 *   startUdpEchoServer()  a loopback UDP target that sends every datagram back
 *                      to where it came from, and records their sizes
 *   startHttpServer()  a loopback TCP target that answers any request (even the
 *                      HTTP/0.9-style "GET /\r\n\r\n" of the prototype's README)
 *                      with a small HTTP/1.0 response, then closes
 *   closedPort()       a loopback port with nothing listening (connect is refused)
 *   launchBrowser()    headless chromium (/usr/bin/chromium, or $CHROMIUM_PATH)
 *   openPage()         a page that records console lines and page errors
 *   artifactsDir       target/test-artifacts/ (screenshots, proxy logs), created on import
 *
 * Everything started here is stopped by its own stop()/close(), and any child
 * process still alive when Node exits is killed, so a failing test leaves
 * nothing behind.
 */
import { spawn } from "node:child_process";
import dgram from "node:dgram";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

/** The repository root (two levels above this file). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Where tests save screenshots and other artifacts. */
export const artifactsDir = path.join(repoRoot, "target", "test-artifacts");
mkdirSync(artifactsDir, { recursive: true });

/** The wsproxy binary under test. */
export const wsproxyBin = path.resolve(repoRoot, process.env.WSPROXY_BIN || "target/debug/wsproxy");

/** Flags for a quiet, offline, sandbox-free chromium (we run as root in CI). */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-proxy-server", // never send test traffic to an HTTP proxy from the environment
];

const children = new Set();
process.on("exit", () => {
  for (const child of children) {
    try { child.kill("SIGKILL"); } catch { /* already gone */ }
  }
});

/** Rejects with a clear message if `promise` takes longer than `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` (sync or async) every 20 ms until it returns truthy; rejects after `ms`. */
export async function waitUntil(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Starts wsproxy on 127.0.0.1 with an ephemeral port, with -v.
 * @param {{args?: string[], name?: string, timeoutMs?: number}} [options]
 *   args: extra flags; name: if given, stop() saves the proxy's log as
 *   target/test-artifacts/NAME.log (handy when a test fails in CI)
 * @returns {Promise<{addr: string, port: number, wsUrl: string, httpUrl: string,
 *   log: () => string, stop: () => Promise<void>}>}
 */
export async function startProxy({ args = [], name, timeoutMs = 10_000 } = {}) {
  if (!existsSync(wsproxyBin)) {
    throw new Error(`wsproxy binary not found at ${wsproxyBin}: run \`cargo build\` first, or set WSPROXY_BIN`);
  }
  const child = spawn(wsproxyBin, ["-p", "0", "-l", "127.0.0.1", "-v", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let output = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stdout.on("data", (s) => { output += s; });
  // "close", not "exit": it comes after the last of stderr has been read.
  const exited = new Promise((resolve) => child.once("close", (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));

  const listening = withTimeout(new Promise((resolve, reject) => {
    child.stderr.on("data", (s) => {
      output += s;
      // Match whole lines only: stderr can arrive in pieces, and a chunk
      // ending in "listening on 127" must not be taken for an address.
      const m = /listening on (\S+)\r?\n/.exec(output);
      if (m) resolve(m[1]);
    });
    child.once("error", reject);
    exited.then(({ code, signal }) =>
      reject(new Error(`wsproxy exited early (code ${code}, signal ${signal}):\n${output}`)));
  }), timeoutMs, "wsproxy to print 'listening on'");
  let addr;
  try {
    addr = await listening;
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }

  const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
  return {
    addr,
    port,
    wsUrl: `ws://${addr}`,
    httpUrl: `http://${addr}`,
    log: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
        await exited;
        clearTimeout(timer);
      }
      if (name) writeFileSync(path.join(artifactsDir, `${name}.log`), output);
    },
  };
}

/** Listens on 127.0.0.1:0 with `onConnection`; close() also ends open sockets. */
async function listen(onConnection) {
  const sockets = new Set();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {}); // a reset by the proxy is not a test failure
    onConnection(sock);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    host: "127.0.0.1",
    port,
    connections: () => sockets.size,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A TCP echo server; it ends its side when the client ends (half-close). */
export function startEchoServer() {
  return listen((sock) => sock.pipe(sock));
}

/**
 * A UDP echo on 127.0.0.1: each datagram goes back, as one datagram of the
 * same bytes, to its sender. `sizes` lists the size of every datagram that
 * arrived, in order (so a test can see boundaries on the UDP side too).
 */
export async function startUdpEchoServer() {
  const socket = dgram.createSocket("udp4");
  const sizes = [];
  socket.on("message", (msg, from) => {
    sizes.push(msg.length);
    socket.send(msg, from.port, from.address);
  });
  socket.on("error", () => {}); // e.g. ICMP "port unreachable" after a tunnel went away
  await new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", resolve);
  });
  return {
    host: "127.0.0.1",
    port: socket.address().port,
    sizes,
    close: () => new Promise((resolve) => socket.close(resolve)),
  };
}

/**
 * A tiny HTTP server on raw TCP. It reads until the end of the request head
 * (a blank line), records the raw request, answers with an HTTP/1.0 200 and
 * `body`, and closes. Raw TCP so that HTTP/0.9-style requests work too.
 */
export async function startHttpServer({ body = "Hello from the test HTTP server!\n" } = {}) {
  const requests = [];
  const server = await listen((sock) => {
    let head = Buffer.alloc(0);
    sock.on("data", (chunk) => {
      head = Buffer.concat([head, chunk]);
      const text = head.toString("latin1");
      if (!/\r?\n\r?\n/.test(text)) return;
      requests.push(text);
      const bytes = Buffer.from(body, "utf8");
      sock.end(Buffer.concat([
        Buffer.from("HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n" +
          `Content-Length: ${bytes.length}\r\nServer: wsproxy-test\r\n\r\n`, "latin1"),
        bytes,
      ]));
    });
  });
  return { ...server, body, requests };
}

/** A loopback port that refuses connections (bound once, then released). */
export async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Headless chromium, via playwright-core (no browser download). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

/**
 * A new page (in its own context) that records console lines and page
 * errors: page.consoleLines and page.pageErrors. Default timeouts are short,
 * so a stuck step fails instead of hanging.
 */
export async function openPage(browser, { viewport = { width: 1100, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.consoleLines = [];
  page.pageErrors = [];
  page.on("console", (msg) => page.consoleLines.push(msg.text()));
  page.on("pageerror", (err) => page.pageErrors.push(err.message));
  return page;
}
