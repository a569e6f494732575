/**
 * The built-in demo page, served by wsproxy itself at "/", driven like a
 * person would: fill in the form, connect, press "Try it", read the HTTP
 * response in the transcript. Saves screenshots to target/test-artifacts/.
 *
 *   node --test tests/browser/
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import {
  startProxy,
  startHttpServer,
  launchBrowser,
  openPage,
  artifactsDir,
} from "./harness.mjs";

let proxy, http, browser;

before(async () => {
  proxy = await startProxy({ name: "wsproxy-demo" });
  http = await startHttpServer({ body: "<html><body>Hello, wsproxy! Grüße 中文 😀</body></html>\n" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await http?.close();
  await proxy?.stop();
});

test("the demo page and library are served by wsproxy", { timeout: 15_000 }, async () => {
  for (const [p, type] of [["/", "text/html"], ["/wsproxy.js", "text/javascript"], ["/wsproxy.mjs", "text/javascript"]]) {
    const res = await fetch(proxy.httpUrl + p);
    assert.equal(res.status, 200, p);
    assert.ok(res.headers.get("content-type").startsWith(type), `${p}: ${res.headers.get("content-type")}`);
    await res.arrayBuffer();
  }
});

test("demo page: fill the form, connect, Try it, see the HTTP response", { timeout: 45_000 }, async () => {
  const page = await openPage(browser);
  await page.goto(proxy.httpUrl + "/");
  assert.equal(await page.inputValue("#proxy"), proxy.wsUrl, "the proxy field defaults to the page's origin");

  await page.fill("#host", "127.0.0.1");
  await page.fill("#port", String(http.port));
  await page.selectOption("#mode", "auto");
  await page.click("#connect");
  await page.waitForSelector("#status[data-state=open]");
  assert.match(await page.textContent("#status"), /binary/);

  await page.click("#try-it");
  const recv = page.locator("#transcript .entry.recv pre");
  await recv.first().waitFor();
  // The HTTP server closes after answering; the proxy then closes the tunnel.
  await page.waitForSelector("#status[data-state=closed]");
  const received = (await recv.allTextContents()).join("");
  assert.match(received, /^HTTP\/1\.0 200 OK/);
  assert.ok(received.includes("Hello, wsproxy! Grüße 中文 😀"), received);

  assert.deepEqual(http.requests, ["GET / HTTP/1.0\r\n\r\n"], "Try it sends exactly the prototype's request");
  const sent = await page.locator("#transcript .entry.sent pre").allTextContents();
  assert.deepEqual(sent, ["GET / HTTP/1.0\r\n\r\n"]);
  assert.match(await page.textContent("#status"), /1000/);

  // The frame log shows the request going out and the response coming in.
  const dirs = await page.locator("#frame-log tr").evaluateAll((rows) => rows.map((r) => r.dataset.direction));
  assert.equal(dirs[0], "out");
  assert.ok(dirs.includes("in"));
  const firstRow = await page.locator("#frame-log tr").first().locator("td").allTextContents();
  assert.match(firstRow[0], /^\+\d+ ms$/);
  assert.equal(firstRow[2], "18"); // bytes of "GET / HTTP/1.0\r\n\r\n"

  await page.screenshot({ path: path.join(artifactsDir, "demo-page.png"), fullPage: true });

  // The hex toggle re-renders the same bytes as a hex dump, and back.
  await page.check("#hex");
  const hex = await page.locator("#transcript .entry.sent pre").textContent();
  assert.ok(hex.startsWith("000000  47 45 54 20 2f 20 48 54 54 50 2f 31 2e 30 0d 0a  GET / HTTP/1.0.."), hex);
  await page.screenshot({ path: path.join(artifactsDir, "demo-page-hex.png"), fullPage: true });
  await page.uncheck("#hex");
  assert.equal(await page.locator("#transcript .entry.sent pre").textContent(), "GET / HTTP/1.0\r\n\r\n");

  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});

test("demo page: Try it alone connects first (websockets-proxy framing)", { timeout: 45_000 }, async () => {
  const page = await openPage(browser);
  await page.goto(proxy.httpUrl + "/");
  await page.fill("#host", "127.0.0.1");
  await page.fill("#port", String(http.port));
  await page.selectOption("#mode", "websockets-proxy");
  await page.click("#try-it");
  await page.waitForSelector("#status[data-state=closed]");
  const info = (await page.locator("#transcript .entry.info").allTextContents()).join("\n");
  assert.match(info, /Connected \(websockets-proxy, base64 framing\)/);
  const received = (await page.locator("#transcript .entry.recv pre").allTextContents()).join("");
  assert.match(received, /^HTTP\/1\.0 200 OK/);
  const types = await page.locator("#frame-log tr td:nth-child(5)").allTextContents();
  assert.ok(types.length > 0 && types.every((t) => t === "text"), `frame types: ${types}`);
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});

test("demo page: the UDP choice asks for /udp/HOST:PORT and turns Try it off", { timeout: 45_000 }, async () => {
  const page = await openPage(browser);
  await page.goto(proxy.httpUrl + "/");
  assert.equal(await page.inputValue("#transport"), "tcp", "TCP is the default");
  assert.equal(await page.isDisabled("#try-it"), false);
  await page.selectOption("#transport", "udp");
  assert.equal(await page.isDisabled("#try-it"), true, "Try it sends an HTTP request: TCP only");
  await page.fill("#host", "::1");
  await page.fill("#port", "5353");
  await page.click("#connect");
  assert.match(await page.textContent("#ws-url"), new RegExp(`^${proxy.wsUrl}/udp/\\[::1\\]:5353 `));
  // Whether the proxy serves UDP or not, the attempt ends in a state the page shows.
  await page.waitForSelector("#status[data-state=open], #status[data-state=closed]");
  if (await page.getAttribute("#status", "data-state") === "open") {
    assert.equal(await page.isDisabled("#transport"), true, "the transport is fixed while connected");
    await page.click("#disconnect");
  }
  await page.waitForSelector("#status[data-state=closed]");
  await page.selectOption("#transport", "tcp");
  assert.equal(await page.isDisabled("#try-it"), false, "back to TCP, Try it is back");
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
