/**
 * wss:// and https:// in a real browser (issue 6): Chromium loads the demo
 * page from wsproxy over https://, opens wss:// tunnels to an echo target and
 * round-trips data, and drives the demo page over TLS.
 *
 *   node --test tests/browser/
 *
 * Trust: the test makes its own CA and server certificate with the `openssl`
 * command, and installs the CA as a trusted root in a private NSS database
 * ($HOME/.pki/nssdb, with HOME pointed at a temporary directory for the
 * browser only) using `certutil` (Debian package libnss3-tools). Chromium on
 * Linux honours user-installed NSS roots, so certificate verification stays
 * fully on: no --ignore-certificate-errors. A last test proves it, by showing
 * that a proxy whose certificate comes from another (untrusted) CA is refused.
 * If openssl or certutil is missing, the tests are skipped with that reason.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import {
  CHROMIUM_ARGS,
  startProxy,
  startEchoServer,
  startHttpServer,
  openPage,
  artifactsDir,
} from "./harness.mjs";

function have(command, args) {
  try {
    execFileSync(command, args, { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const missing = [
  have("openssl", ["version"]) ? null : "openssl (apt: openssl)",
  have("sh", ["-c", "command -v certutil"]) ? null : "certutil (apt: libnss3-tools)",
].filter(Boolean);
const skip = missing.length ? `needs ${missing.join(" and ")}` : false;

const tmp = mkdtempSync(path.join(os.tmpdir(), "wsproxy-wss-browser-"));

/** Writes a CA and a server certificate for localhost/127.0.0.1 into `dir`. */
function makePki(dir, name) {
  const run = (args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
    "-subj", `/O=wsproxy tests/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  run(["req", "-new", ...ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"]);
  writeFileSync(path.join(dir, "leaf.ext"), [
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth",
    "",
  ].join("\n"));
  run(["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"]);
  // The chain the proxy serves: leaf first, then the CA.
  writeFileSync(path.join(dir, "cert.pem"),
    readFileSync(path.join(dir, "leaf.pem"), "utf8") + readFileSync(path.join(dir, "ca.pem"), "utf8"));
  return { cert: path.join(dir, "cert.pem"), key: path.join(dir, "key.pem"), ca: path.join(dir, "ca.pem") };
}

let trusted, untrusted, home, proxy, echo, http, browser;

before(async () => {
  if (skip) return;
  for (const d of ["trusted", "untrusted", "home"]) {
    execFileSync("mkdir", ["-p", path.join(tmp, d)]);
  }
  trusted = makePki(path.join(tmp, "trusted"), "wsproxy browser test CA");
  untrusted = makePki(path.join(tmp, "untrusted"), "someone else's CA");
  // A private NSS database that trusts only our test CA (as a TLS server CA: "C,,").
  home = path.join(tmp, "home");
  const db = `sql:${path.join(home, ".pki", "nssdb")}`;
  execFileSync("mkdir", ["-p", path.join(home, ".pki", "nssdb")]);
  execFileSync("certutil", ["-d", db, "-N", "--empty-password"]);
  execFileSync("certutil", ["-d", db, "-A", "-t", "C,,", "-n", "wsproxy test CA", "-i", trusted.ca]);

  proxy = await startProxy({ args: ["--cert", trusted.cert, "--key", trusted.key] });
  echo = await startEchoServer();
  http = await startHttpServer({ body: "<html><body>Hello over wss!</body></html>\n" });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    env: { ...process.env, HOME: home },
    timeout: 30_000,
  });
});

after(async () => {
  await browser?.close();
  await http?.close();
  await echo?.close();
  await proxy?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** https://localhost:PORT for a proxy (the certificate names localhost and 127.0.0.1). */
const httpsUrl = (p) => `https://localhost:${p.port}`;
const wssUrl = (p) => `wss://localhost:${p.port}`;

test("the demo page loads over https:// and defaults to wss://", { skip, timeout: 30_000 }, async () => {
  const page = await openPage(browser);
  const response = await page.goto(httpsUrl(proxy) + "/");
  assert.equal(response.status(), 200);
  const security = await response.securityDetails();
  assert.ok(security, "the page came over TLS");
  // The certificate verified against the NSS-installed test CA.
  assert.match(security.protocol, /TLS/, JSON.stringify(security));
  assert.equal(security.subjectName, "localhost", JSON.stringify(security));
  assert.equal(security.issuer, "wsproxy browser test CA", JSON.stringify(security));
  assert.equal(await page.inputValue("#proxy"), wssUrl(proxy), "the proxy field follows the page's scheme");
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});

test("Chromium round-trips data over wss:// (binary and base64)", { skip, timeout: 60_000 }, async () => {
  const page = await openPage(browser);
  await page.goto(httpsUrl(proxy) + "/");
  const result = await page.evaluate(async ({ url, size }) => {
    // One tunnel per subprotocol: send `size` random bytes in pieces, expect them back.
    async function roundTrip(protocol) {
      const ws = new WebSocket(url, protocol);
      ws.binaryType = "arraybuffer";
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error(`${protocol}: wss open failed`));
      });
      const data = new Uint8Array(size);
      for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, Math.min(size, i + 65536)));
      const got = new Uint8Array(size);
      let filled = 0;
      const done = new Promise((resolve, reject) => {
        ws.onmessage = (e) => {
          let bytes;
          if (protocol === "binary") {
            bytes = new Uint8Array(e.data);
          } else {
            const text = atob(e.data);
            bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
          }
          got.set(bytes, filled);
          filled += bytes.length;
          if (filled >= size) resolve();
        };
        ws.onclose = (e) => reject(new Error(`${protocol}: closed early (${e.code} ${e.reason}) after ${filled} bytes`));
      });
      for (let i = 0; i < size; i += 50_000) {
        const piece = data.subarray(i, Math.min(size, i + 50_000));
        if (protocol === "binary") {
          ws.send(piece);
        } else {
          let s = "";
          for (const b of piece) s += String.fromCharCode(b);
          ws.send(btoa(s));
        }
      }
      await done;
      ws.onclose = null;
      ws.close(1000);
      let same = filled === size;
      for (let i = 0; same && i < size; i++) same = got[i] === data[i];
      return { protocol: ws.protocol, filled, same };
    }
    return [await roundTrip("binary"), await roundTrip("base64")];
  }, { url: `${wssUrl(proxy)}/127.0.0.1:${echo.port}`, size: 1 << 20 });
  for (const r of result) {
    assert.equal(r.filled, 1 << 20, `${r.protocol}: bytes echoed`);
    assert.ok(r.same, `${r.protocol}: the echo matches`);
  }
  assert.deepEqual(result.map((r) => r.protocol), ["binary", "base64"]);
  await page.context().close();
});

test("the demo page works end to end over https:// + wss://", { skip, timeout: 45_000 }, async () => {
  const page = await openPage(browser);
  await page.goto(httpsUrl(proxy) + "/");
  await page.fill("#host", "127.0.0.1");
  await page.fill("#port", String(http.port));
  await page.selectOption("#mode", "auto");
  await page.click("#connect");
  await page.waitForSelector("#status[data-state=open]");
  await page.click("#try-it");
  const recv = page.locator("#transcript .entry.recv pre");
  await recv.first().waitFor();
  await page.waitForSelector("#status[data-state=closed]");
  const received = (await recv.allTextContents()).join("");
  assert.match(received, /^HTTP\/1\.0 200 OK/);
  assert.ok(received.includes("Hello over wss!"), received);
  await page.screenshot({ path: path.join(artifactsDir, "demo-page-https.png"), fullPage: true });
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});

test("certificate verification is really on: an untrusted CA is refused", { skip, timeout: 30_000 }, async () => {
  const other = await startProxy({ args: ["--cert", untrusted.cert, "--key", untrusted.key] });
  try {
    const page = await openPage(browser);
    await assert.rejects(page.goto(httpsUrl(other) + "/"), /ERR_CERT_AUTHORITY_INVALID/);
    await page.context().close();
  } finally {
    await other.stop();
  }
});
