/**
 * noVNC end to end: a real VNC server, the real noVNC client in headless Chromium, wsproxy between.
 *
 * This is the proof for "drop-in for websockify users" (issue 7). For each case the test:
 *   1. uses one TigerVNC `Xvnc` on loopback (no password: `-SecurityTypes None`), whose root
 *      window `xsetroot` paints a known colour (#3366cc), with an `xmessage` label on it and `xev`
 *      watching the root window for key presses;
 *   2. serves noVNC (npm `@novnc/novnc`, which ships only the library: `core/` and `vendor/`) plus a
 *      small `vnc.html` of our own from a temporary folder, through wsproxy's `--web`;
 *   3. starts wsproxy as a websockify user would: `--target HOST:PORT`, websockify's positional
 *      `LISTEN TARGET` form, or `--token-file FILE|DIR` with `?token=` in the WebSocket path
 *      (noVNC's `vnc.html?path=websockify?token=vnc1` habit) or with `--host-token`;
 *   4. opens the page in headless Chromium (Debian's `/usr/bin/chromium`, driven by playwright-core),
 *      waits for noVNC's `connect` event, checks the framebuffer canvas shows #3366cc (so pixels
 *      really flowed VNC server → wsproxy → browser), types a key and waits for the X server to
 *      report it (so input flowed the other way), and saves a screenshot under
 *      `target/test-artifacts/`.
 *
 * A `wss://` case runs when the wsproxy binary's `--help` mentions `--cert` (TLS landed) and
 * `openssl` is available to make a throw-away certificate; otherwise it is skipped with a reason.
 *
 * Run from the repo root (after `cargo build` and `npm ci --prefix tests/browser`):
 *     node --test tests/browser/
 * Environment: WSPROXY_BIN (default target/debug/wsproxy), CHROMIUM_BIN (default /usr/bin/chromium).
 * Needs Debian packages: tigervnc-standalone-server x11-xserver-utils x11-utils xfonts-base chromium
 * openssl (see APT_PACKAGES).
 * When Xvnc, xsetroot, xev, xmessage or chromium is missing, the suite is skipped with that list;
 * anything else that goes wrong is a failure.
 *
 * The file depends on nothing but Node, playwright-core and @novnc/novnc: helpers are below.
 */

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const WSPROXY = path.resolve(REPO, process.env.WSPROXY_BIN || 'target/debug/wsproxy');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'target', 'test-artifacts');

/** The colour painted on the VNC desktop, and what the canvas must show. */
const DESKTOP_COLOUR = '#3366cc';
const DESKTOP_RGB = [0x33, 0x66, 0xcc];
const DESKTOP_NAME = 'wsproxy-novnc-test';
const GEOMETRY = { width: 640, height: 480 };

/** Chromium flags for a quiet, sandbox-less CI run (no network calls home, no GPU). */
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** The programs this suite needs, with the Debian package that provides each. */
const REQUIRED_PROGRAMS = [
  ['Xvnc', 'tigervnc-standalone-server'],
  ['xsetroot', 'x11-xserver-utils'],
  ['xev', 'x11-utils'],
  ['xmessage', 'x11-utils'],
  [CHROMIUM, 'chromium'],
];
/** What CI installs: the packages above, plus fonts for xmessage and openssl for the wss:// case. */
const APT_PACKAGES = [...new Set(REQUIRED_PROGRAMS.map(([, pkg]) => pkg)), 'xfonts-base', 'openssl'];

/**
 * The cases; add one here to cover another way of starting the proxy. Fields:
 * - `id`: names the screenshot, `target/test-artifacts/novnc-<id>.png`.
 * - `proxyArgs(fx)`: wsproxy's target options, built from the fixture.
 * - `positional`: `proxyArgs` ends with websockify's `LISTEN TARGET` pair, so the test does not
 *   add its usual `-p 0 -l 127.0.0.1`.
 * - `wsPath`: what the page puts after `ws://host:port/` (noVNC's `path` parameter).
 * - `pageHost`: a name to use instead of the proxy's address in the page URL (the port stays).
 * - `protocols`: the subprotocols noVNC offers. Absent means none, noVNC ≥1.2's default;
 *   `['binary']` is what noVNC 0.6–1.1 always sent.
 * - `tokenChecks`: also check the answers to an unknown token (404) and a missing one (400).
 * - `tls`: serve over https:// and wss:// (skipped until wsproxy has `--cert`).
 */
const CASES = [
  {
    id: 'target',
    name: '--target, no subprotocol (noVNC 1.2+ default)',
    proxyArgs: (fx) => ['--target', fx.vncAddr],
    wsPath: 'websockify',
  },
  {
    id: 'positional',
    name: "websockify's positional form: wsproxy --web DIR 127.0.0.1:0 HOST:PORT",
    // Options first, then [LISTEN_ADDR:]LISTEN_PORT TARGET_HOST:TARGET_PORT, as websockify takes them.
    proxyArgs: (fx) => ['127.0.0.1:0', fx.vncAddr],
    positional: true,
    wsPath: 'websockify',
  },
  {
    id: 'target-binary',
    name: '--target, subprotocol "binary" (noVNC 0.6-1.1)',
    proxyArgs: (fx) => ['--target', fx.vncAddr],
    wsPath: 'websockify',
    protocols: ['binary'],
  },
  {
    id: 'token-file',
    name: '--token-file FILE, ?token= in the WebSocket path',
    proxyArgs: (fx) => ['--token-file', fx.tokenFile],
    wsPath: 'websockify?token=vnc1',
    tokenChecks: true,
  },
  {
    id: 'token-dir',
    name: '--token-file DIR (every file in it)',
    proxyArgs: (fx) => ['--token-file', fx.tokenDir],
    wsPath: 'websockify?token=vnc2',
  },
  {
    id: 'host-token',
    name: '--host-token: the Host name is the token (vnc1.localhost)',
    proxyArgs: (fx) => ['--token-file', fx.tokenFile, '--host-token'],
    wsPath: 'websockify',
    // Chromium resolves every *.localhost name to loopback (RFC 6761), so no DNS set-up is needed.
    pageHost: 'vnc1.localhost',
  },
  {
    id: 'wss-target',
    name: 'wss:// with --cert/--key and --target',
    proxyArgs: (fx) => ['--target', fx.vncAddr, '--cert', fx.tls.cert, '--key', fx.tls.key],
    wsPath: 'websockify',
    tls: true,
  },
];

// ---------------------------------------------------------------------------------------------
// Small helpers: processes, ports, waiting.

/** Is `program` runnable (an absolute path that exists, or a name on PATH)? */
function haveProgram(program) {
  if (path.isAbsolute(program)) return fs.existsSync(program);
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', program]).status === 0;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** Rejects after `ms` with `what` in the message, unless `promise` settles first. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Children still running; killed when this process exits, whatever happened. */
const children = new Set();
const killChildren = () => { for (const child of children) child.kill('SIGKILL'); };
process.on('exit', killChildren);
// On a signal Node exits without 'exit' handlers; clean up first (e.g. under `timeout`).
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => { killChildren(); process.exit(128 + os.constants.signals[signal]); });
}

/**
 * Starts a child process and keeps everything it prints (both streams, and fd 3 if asked for) in
 * `child.output`, so failures can show it. `child.stop()` ends it and waits.
 */
function startProcess(command, args, { extraFd = false } = {}) {
  const stdio = ['ignore', 'pipe', 'pipe'];
  if (extraFd) stdio.push('pipe');
  const child = spawn(command, args, { stdio });
  child.output = '';
  child.fd3 = '';
  children.add(child);
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  child.on('error', (e) => { child.output += `\n[spawn error: ${e.message}]`; });
  child.stdout.on('data', (d) => { child.output += d; });
  child.stderr.on('data', (d) => { child.output += d; });
  if (extraFd) child.stdio[3].on('data', (d) => { child.fd3 += d; });
  child.stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await child.exited;
      clearTimeout(timer);
    }
  };
  return child;
}

/** Waits until `check()` returns something truthy (polled), or the child exits, or time runs out. */
async function waitFor(child, check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what}: process exited (${child.exitCode ?? child.signalCode}). Output:\n${child.output}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}. Output so far:\n${child.output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------------------------
// The fixture: VNC server, key watcher, web folder, token files, browser.

/** Starts Xvnc on a free display (`-displayfd`) and a free loopback port; paints the desktop. */
async function startVncServer() {
  const port = await freePort();
  const xvnc = startProcess('Xvnc', [
    '-displayfd', '3', // Xvnc picks a free display number and writes it to fd 3
    '-rfbport', String(port), '-localhost', '-interface', '127.0.0.1',
    '-SecurityTypes', 'None', '-nolisten', 'tcp',
    '-geometry', `${GEOMETRY.width}x${GEOMETRY.height}`, '-depth', '24',
    '-desktop', DESKTOP_NAME,
  ], { extraFd: true });
  try {
    const display = ':' + await waitFor(xvnc, () => xvnc.fd3.match(/^(\d+)\n/)?.[1], 15000, 'Xvnc to start');
    const paint = spawnSync('xsetroot', ['-display', display, '-solid', DESKTOP_COLOUR], { encoding: 'utf8', timeout: 10000 });
    assert.equal(paint.status, 0, `xsetroot failed: ${paint.stderr}`);
    // A window with text, so the screenshot shows a real remote desktop (top-left, away from the
    // spots whose colour the test reads).
    const label = startProcess('xmessage', [
      '-display', display, '-geometry', '+60+60', '-buttons', '',
      `${DESKTOP_NAME}\n\nTigerVNC Xvnc on display ${display}\n-> wsproxy -> noVNC in Chromium`,
    ]);
    return { xvnc, label, display, port };
  } catch (e) {
    await xvnc.stop();
    throw e;
  }
}

/** `xev` on the root window: with no window manager, key presses land there. */
async function startKeyWatcher(display) {
  // stdbuf makes xev's stdout line-buffered although it is a pipe.
  const xev = startProcess('stdbuf', ['-oL', 'xev', '-display', display, '-root', '-event', 'keyboard']);
  // xev prints nothing until the first event; give it a moment to select input on the root window.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(xev.exitCode, null, `xev exited early:\n${xev.output}`);
  return xev;
}

/** The page: noVNC's RFB object on a `<div>`, honouring noVNC's `path` and `password` parameters. */
const VNC_HTML = `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>wsproxy noVNC test</title>
<style>body { margin: 0; background: #222; } #screen { width: ${GEOMETRY.width}px; height: ${GEOMETRY.height}px; }</style>
</head>
<body>
<div id="screen"></div>
<script type="module">
// Query parameters, as in noVNC's own vnc.html: path (default "websockify"), password; plus
// protocols (comma-separated WebSocket subprotocols to offer, default none).
import RFB from './core/rfb.js';
const params = new URLSearchParams(location.search);
const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const url = scheme + '://' + location.host + '/' + (params.get('path') ?? 'websockify');
const protocols = (params.get('protocols') || '').split(',').filter(Boolean);
const status = window.vncStatus = { state: 'connecting', url, protocols, desktopName: null, detail: null };
const rfb = window.rfb = new RFB(document.getElementById('screen'), url, {
  credentials: { password: params.get('password') || '' },
  wsProtocols: protocols,
});
rfb.addEventListener('connect', () => { status.state = 'connected'; });
rfb.addEventListener('disconnect', (e) => { status.state = e.detail.clean ? 'disconnected' : 'failed'; });
rfb.addEventListener('securityfailure', (e) => { status.detail = 'security failure: ' + e.detail.reason; });
rfb.addEventListener('credentialsrequired', () => { status.detail = 'credentials required'; });
rfb.addEventListener('desktopname', (e) => { status.desktopName = e.detail.name; });
</script>
</body>
</html>
`;

/** A folder for `--web`: noVNC's `core/` and `vendor/` copied from the npm package, plus vnc.html. */
async function prepareWebRoot(dir) {
  // The package's only export is core/rfb.js; its root is two levels up.
  const rfbJs = fileURLToPath(import.meta.resolve('@novnc/novnc'));
  const novnc = path.resolve(path.dirname(rfbJs), '..');
  const web = path.join(dir, 'web');
  fs.mkdirSync(web, { recursive: true });
  for (const part of ['core', 'vendor']) {
    fs.cpSync(path.join(novnc, part), path.join(web, part), { recursive: true });
  }
  fs.writeFileSync(path.join(web, 'vnc.html'), VNC_HTML);
  return web;
}

/** Token sources in websockify's TokenFile format: one file, and a directory of two files. */
function prepareTokens(dir, vncAddr) {
  const tokenFile = path.join(dir, 'tokens.conf');
  fs.writeFileSync(tokenFile, [
    '# websockify TokenFile format: "token: host:port"',
    `vnc1: ${vncAddr}`,
    `vnc1.localhost: ${vncAddr}`, // for --host-token
    'other:\t127.0.0.1:9', // a tab after the colon is allowed; never used
    '',
  ].join('\n'));
  const tokenDir = path.join(dir, 'tokens.d');
  fs.mkdirSync(tokenDir);
  fs.writeFileSync(path.join(tokenDir, 'a.conf'), 'unused: 127.0.0.1:9\n');
  fs.writeFileSync(path.join(tokenDir, 'b.conf'), `# second file\nvnc2: ${vncAddr}\n`);
  return { tokenFile, tokenDir };
}

/** A self-signed certificate for 127.0.0.1, or null when openssl is missing. */
function makeCertificate(dir) {
  if (!haveProgram('openssl')) return null;
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const r = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert,
  ], { encoding: 'utf8', timeout: 30000 });
  return r.status === 0 ? { cert, key } : null;
}

/** Does this wsproxy binary have TLS yet? (Its `--help` mentions `--cert`.) Asked once. */
let hasTls;
function proxyHasTls() {
  if (hasTls === undefined) {
    const r = spawnSync(WSPROXY, ['--help'], { encoding: 'utf8', timeout: 10000 });
    hasTls = /--cert\b/.test(`${r.stdout}${r.stderr}`);
  }
  return hasTls;
}

// ---------------------------------------------------------------------------------------------
// wsproxy itself.

/**
 * Starts wsproxy on an ephemeral loopback port and returns it with its `host:port`. With
 * `positional`, `args` ends with websockify's `LISTEN TARGET` pair, so `-p`/`-l` are left out.
 */
async function startProxy(args, { positional = false } = {}) {
  const listen = positional ? [] : ['-p', '0', '-l', '127.0.0.1'];
  const proxy = startProcess(WSPROXY, [...listen, '-v', ...args]);
  try {
    const addr = await waitFor(proxy, () => proxy.output.match(/listening on (\S+)\r?\n/)?.[1], 10000,
      `wsproxy ${args.join(' ')} to print "listening on"`);
    return { proxy, addr };
  } catch (e) {
    await proxy.stop();
    throw e;
  }
}

/**
 * Sends a WebSocket upgrade request for `requestPath` straight over TCP and returns the status
 * code, to check answers given before the upgrade (unknown token etc.) without a browser.
 */
async function upgradeStatus(addr, requestPath) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const socket = net.connect(port, host.replace(/^\[|\]$/g, ''));
  await once(socket, 'connect');
  socket.write([
    `GET /${requestPath} HTTP/1.1`, `Host: ${addr}`, 'Upgrade: websocket', 'Connection: Upgrade',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', '', '',
  ].join('\r\n'));
  let head = '';
  socket.setEncoding('latin1');
  const readHead = (async () => {
    for await (const chunk of socket) {
      head += chunk;
      if (head.includes('\r\n')) break;
    }
  })();
  await withTimeout(readHead, 5000, `an HTTP response to GET /${requestPath}`).finally(() => socket.destroy());
  const status = head.match(/^HTTP\/1\.1 (\d{3})/)?.[1];
  assert.ok(status, `GET /${requestPath}: expected an HTTP status before the upgrade, got ${JSON.stringify(head)}` +
    (head ? '' : ' (connection closed without a response)'));
  return Number(status);
}

// ---------------------------------------------------------------------------------------------
// The suite.

const missing = REQUIRED_PROGRAMS.filter(([program]) => !haveProgram(program));
const skipReason = missing.length === 0 ? false
  : `missing ${missing.map(([p]) => p).join(', ')}; install with: apt-get install -y ${APT_PACKAGES.join(' ')}`;
if (skipReason) console.warn(`noVNC end-to-end tests skipped: ${skipReason}`);

describe('noVNC through wsproxy to a real VNC server', { skip: skipReason }, () => {
  /** Everything the cases share; filled by before(). */
  const fx = {};

  before(async () => {
    assert.ok(fs.existsSync(WSPROXY), `wsproxy binary not found at ${WSPROXY} (run cargo build, or set WSPROXY_BIN)`);
    let chromium;
    try {
      ({ chromium } = await import('playwright-core'));
    } catch (e) {
      throw new Error(`playwright-core is not installed: run "npm ci --prefix tests/browser" (${e.message})`);
    }
    fx.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsproxy-novnc-'));
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    Object.assign(fx, await startVncServer());
    fx.vncAddr = `127.0.0.1:${fx.port}`;
    fx.xev = await startKeyWatcher(fx.display);
    fx.web = await prepareWebRoot(fx.dir);
    Object.assign(fx, prepareTokens(fx.dir, fx.vncAddr));
    fx.tls = proxyHasTls() ? makeCertificate(fx.dir) : null;
    fx.browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  after(async () => {
    await fx.browser?.close();
    await fx.xev?.stop();
    await fx.label?.stop();
    await fx.xvnc?.stop();
    if (fx.dir) fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  for (const c of CASES) {
    test(c.name, { timeout: 90000 }, async (t) => {
      if (c.tls && !fx.tls) {
        t.skip(proxyHasTls() ? 'openssl could not make a certificate' : 'wsproxy has no --cert yet (TLS not landed)');
        return;
      }
      const timings = [];
      let lastMark = Date.now();
      /** Records how long the step just finished took (reported as one diagnostic line). */
      const mark = (step) => { const now = Date.now(); timings.push(`${step} ${now - lastMark} ms`); lastMark = now; };
      const { proxy, addr } = await startProxy(['--web', fx.web, ...c.proxyArgs(fx)], { positional: c.positional });
      mark('proxy start');
      const context = await fx.browser.newContext({
        viewport: { width: GEOMETRY.width, height: GEOMETRY.height },
        ignoreHTTPSErrors: true, // our throw-away certificate; applies to wss:// as well
      });
      const page = await context.newPage();
      const consoleLines = [];
      page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
      /** Fails the test with `message` plus everything that helps explain it. */
      const fail = async (message) => {
        const status = await page.evaluate(() => window.vncStatus).catch(() => null);
        assert.fail(`${message}\npage status: ${JSON.stringify(status)}` +
          `\nbrowser console:\n${consoleLines.join('\n')}\nwsproxy output:\n${proxy.output}`);
      };
      try {
        if (c.tokenChecks) {
          assert.equal(await upgradeStatus(addr, 'websockify?token=nope'), 404, 'unknown token → 404');
          assert.equal(await upgradeStatus(addr, 'websockify'), 400, 'missing token → 400');
        }

        const scheme = c.tls ? 'https' : 'http';
        const host = c.pageHost ? `${c.pageHost}:${addr.slice(addr.lastIndexOf(':') + 1)}` : addr;
        const url = `${scheme}://${host}/vnc.html?path=${c.wsPath}` + // unencoded, as noVNC users write it
          (c.protocols ? `&protocols=${c.protocols.join(',')}` : '');
        const response = await page.goto(url);
        if (response?.status() !== 200) await fail(`GET ${url} via --web: status ${response?.status()}`);
        mark('page load');

        // 1. noVNC reaches its connected state (RFB handshake through the proxy).
        await page.waitForFunction(() => ['connected', 'failed', 'disconnected'].includes(window.vncStatus?.state),
          null, { timeout: 20000 }).catch((e) => fail(`noVNC never settled: ${e.message}`));
        const status = await page.evaluate(() => window.vncStatus);
        if (status.state !== 'connected') await fail('noVNC did not connect');
        mark('connect');

        // 2. The framebuffer canvas shows the desktop colour (pixels came through the proxy).
        const pixels = await page.waitForFunction(({ rgb }) => {
          const canvas = document.querySelector('#screen canvas');
          if (!canvas || canvas.width === 0) return null;
          const ctx = canvas.getContext('2d');
          // Two corners and the lower middle: plain background (the xmessage window is top left).
          const spots = [[5, 5], [canvas.width >> 1, canvas.height - 100], [canvas.width - 5, canvas.height - 5]];
          const seen = spots.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
          const ok = seen.every((p) => p.every((v, i) => Math.abs(v - rgb[i]) <= 2));
          return ok ? { width: canvas.width, height: canvas.height, seen } : null;
        }, { rgb: DESKTOP_RGB }, { timeout: 20000, polling: 100 })
          .then((h) => h.jsonValue())
          .catch((e) => fail(`canvas never showed ${DESKTOP_COLOUR}: ${e.message}`));
        assert.deepEqual([pixels.width, pixels.height], [GEOMETRY.width, GEOMETRY.height], 'framebuffer size');
        const desktopName = await page.evaluate(() => window.vncStatus.desktopName);
        assert.equal(desktopName, DESKTOP_NAME, 'desktop name from ServerInit');
        mark('pixels');

        // 3. A key typed in the browser reaches the X server (input flows the other way).
        const xevBefore = fx.xev.output.length;
        await page.evaluate(() => window.rfb.focus());
        await page.keyboard.press('KeyQ');
        await waitFor(fx.xev, () => /KeyRelease event[\s\S]*keysym 0x71, q\)/.test(fx.xev.output.slice(xevBefore)),
          10000, 'xev to see "q" typed into noVNC')
          .catch((e) => fail(e.message));
        mark('key');

        // 4. The picture, for people and for CI artifacts.
        const file = path.join(ARTIFACTS, `novnc-${c.id}.png`);
        await page.screenshot({ path: file });
        mark('screenshot');
        t.diagnostic(`screenshot: ${path.relative(REPO, file)}`);

        // 5. A clean goodbye: noVNC disconnects and the proxy logs nothing alarming.
        await page.evaluate(() => window.rfb.disconnect());
        await page.waitForFunction(() => window.vncStatus.state !== 'connected', null, { timeout: 10000 });
        mark('disconnect');
      } finally {
        await context.close();
        await proxy.stop();
        mark('cleanup');
        t.diagnostic(`timings: ${timings.join(', ')}`);
      }
    });
  }
});
