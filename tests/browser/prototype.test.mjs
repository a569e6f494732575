/**
 * The Ruby prototype's own README snippet, run in a real browser against
 * wsproxy: a raw WebSocket offering the `websockets-proxy` subprotocol,
 * Base64 via btoa/atob, output via console.log. Only the URL differs (our
 * proxy and a local HTTP server instead of localhost:8080 and google.com:80).
 *
 *   node --test tests/browser/
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startProxy, startHttpServer, launchBrowser, openPage, waitUntil } from "./harness.mjs";

let proxy, http, browser;

before(async () => {
  proxy = await startProxy({ name: "wsproxy-prototype" });
  http = await startHttpServer({ body: "Hello from the test HTTP server!\n" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await http?.close();
  await proxy?.stop();
});

test("the prototype's README snippet fetches the HTTP server's response", { timeout: 30_000 }, async () => {
  const page = await openPage(browser);
  await page.goto(proxy.httpUrl + "/"); // same origin as the proxy
  const url = `${proxy.wsUrl}/127.0.0.1:${http.port}`;
  await page.evaluate((url) => {
    // --- verbatim from dmajda/websockets-proxy's README, except the URL ---
    /* eslint-disable */
    ws = new WebSocket(url, "websockets-proxy");
    ws.onopen    = function()  { ws.send(btoa("GET /\r\n\r\n"));     };
    ws.onmessage = function(e) { console.log(atob(e.data));          };
    ws.onerror   = function()  { console.log("WebSocket error.")     };
    ws.onclose   = function()  { console.log("Connection closed.");  };
  }, url);
  await waitUntil(() => page.consoleLines.includes("Connection closed."), 15_000,
    "the snippet to log \"Connection closed.\"").catch((err) => {
    throw new Error(`${err.message}\nconsole: ${JSON.stringify(page.consoleLines)}\nproxy log:\n${proxy.log()}`);
  });
  const lines = page.consoleLines;
  assert.ok(lines.includes("Connection closed."), `console: ${JSON.stringify(lines)}\nproxy log:\n${proxy.log()}`);
  assert.ok(!lines.includes("WebSocket error."), `console: ${JSON.stringify(lines)}`);
  const response = lines.filter((l) => l !== "Connection closed.").join("");
  assert.match(response, /^HTTP\/1\.0 200 OK\r\n/);
  assert.ok(response.endsWith("\r\n\r\nHello from the test HTTP server!\n"), JSON.stringify(response));
  assert.deepEqual(http.requests, ["GET /\r\n\r\n"], "the target got the snippet's request");
  assert.equal(await page.evaluate(() => ws.protocol), "websockets-proxy");
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
