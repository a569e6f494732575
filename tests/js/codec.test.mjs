/**
 * Unit tests of wsproxy.js's codecs, under Node's own test runner:
 *
 *   node --test tests/js/
 *
 * The UTF-8 codec is checked against the platform's TextEncoder/TextDecoder
 * (the WHATWG Encoding spec both follow), and the Base64 codec against
 * btoa/atob (WHATWG forgiving-base64) and Node's Buffer, on fixed vectors
 * and on random inputs of many lengths, up to 1 MiB.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import WsProxy, {
  utf8Encode,
  utf8Decode,
  Utf8Decoder,
  base64Encode,
  base64Decode,
} from "../../src/web/wsproxy.mjs";

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const enc = new TextEncoder();
/** A reference decoder that, like ours, keeps a leading BOM. */
const refDecoder = () => new TextDecoder("utf-8", { ignoreBOM: true });

test("the ES module and the classic-script global are the same object", () => {
  assert.equal(globalThis.WsProxy, WsProxy);
  assert.equal(typeof WsProxy.connect, "function");
  assert.ok(Object.isFrozen(WsProxy));
});

test("UTF-8: fixed vectors (ASCII, accents, CJK, emoji)", () => {
  const cases = [
    ["", ""],
    ["A", "41"],
    ["é", "c3a9"],
    ["€", "e282ac"],
    ["中文", "e4b8ade69687"],
    ["😀", "f09f9880"],
    ["\u0000\u007f\u0080\u07ff\u0800\uffff", "007fc280dfbfe0a080efbfbf"],
    ["\u{10ffff}", "f48fbfbf"],
  ];
  for (const [str, want] of cases) {
    assert.equal(hex(utf8Encode(str)), want, `encode ${JSON.stringify(str)}`);
    assert.equal(utf8Decode(Buffer.from(want, "hex")), str, `decode ${want}`);
  }
});

test("UTF-8: mixed text round trips and matches TextEncoder", () => {
  const s = "Grüße, café, naïve — 日本語のテキスト, 한국어, 中文 🎉👩‍👩‍👧 ∑ x² ¿qué?";
  const bytes = utf8Encode(s);
  assert.deepEqual(bytes, enc.encode(s));
  assert.equal(utf8Decode(bytes), s);
});

test("UTF-8: lone surrogates encode as U+FFFD, like TextEncoder", () => {
  for (const s of ["\ud800", "\udc00", "a\ud83dz", "\ude00\ud83d", "x\ud83d", "\ud83d\ud83d\ude00"]) {
    assert.deepEqual(utf8Encode(s), enc.encode(s), JSON.stringify(s));
  }
  assert.equal(hex(utf8Encode("\ud800")), "efbfbd");
  assert.equal(utf8Decode(utf8Encode("a\udc00b")), "a\ufffdb");
});

test("UTF-8: malformed input decodes like TextDecoder (U+FFFD per maximal subpart)", () => {
  const cases = [
    "80", "bf", "c0af", "c1bf", "e080af", "eda080", "f08080af", "f4908080", "f5", "ff", "fe",
    "c3", "e282", "f09f98", "c328", "e228a1", "f0289f98", "61f09f", "f09f41", "e0a0", "ed9f",
    "c3a9c3", "eda0bdedb880", // CESU-8 surrogate pair
  ];
  for (const h of cases) {
    const bytes = Buffer.from(h, "hex");
    assert.equal(utf8Decode(bytes), refDecoder().decode(bytes), h);
  }
});

test("UTF-8: random byte soup decodes exactly like TextDecoder", () => {
  for (let i = 0; i < 300; i++) {
    const bytes = randomBytes(1 + (i % 64));
    assert.equal(utf8Decode(bytes), refDecoder().decode(bytes), hex(bytes));
  }
});

test("UTF-8: random strings of every plane round trip", () => {
  for (let i = 0; i < 200; i++) {
    let s = "";
    const n = i % 50;
    for (let j = 0; j < n; j++) {
      const r = Math.random();
      const cp = r < 0.3 ? Math.floor(Math.random() * 0x80)
        : r < 0.5 ? 0x80 + Math.floor(Math.random() * 0x780)
        : r < 0.8 ? 0xe000 + Math.floor(Math.random() * 0x2000)
        : 0x10000 + Math.floor(Math.random() * 0x100000);
      s += String.fromCodePoint(cp);
    }
    const bytes = utf8Encode(s);
    assert.deepEqual(bytes, enc.encode(s));
    assert.equal(utf8Decode(bytes), s);
  }
});

test("UTF-8: the streaming decoder handles characters split across chunks", () => {
  const s = "añb中c😀d";
  const bytes = utf8Encode(s);
  // Split the bytes at every possible pair of points.
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j++) {
      const d = new Utf8Decoder();
      const out = d.decode(bytes.subarray(0, i), { stream: true }) +
        d.decode(bytes.subarray(i, j), { stream: true }) +
        d.decode(bytes.subarray(j));
      assert.equal(out, s, `split at ${i},${j}`);
    }
  }
  // A truncated sequence at the very end becomes U+FFFD on the final call.
  const d = new Utf8Decoder();
  assert.equal(d.decode(Buffer.from("61f09f", "hex"), { stream: true }), "a");
  assert.equal(d.decode(), "\ufffd");
});

test("UTF-8: the streaming decoder matches TextDecoder on random chunkings", () => {
  for (let i = 0; i < 100; i++) {
    const bytes = randomBytes(200);
    const ours = new Utf8Decoder();
    const ref = refDecoder();
    let a = "";
    let b = "";
    for (let off = 0; off < bytes.length;) {
      const end = Math.min(bytes.length, off + 1 + Math.floor(Math.random() * 7));
      a += ours.decode(bytes.subarray(off, end), { stream: true });
      b += ref.decode(bytes.subarray(off, end), { stream: true });
      off = end;
    }
    a += ours.decode();
    b += ref.decode();
    assert.equal(a, b);
  }
});

test("UTF-8: a leading byte order mark is kept", () => {
  assert.equal(utf8Decode(Buffer.from("efbbbf41", "hex")), "\ufeffA");
});

test("UTF-8: big strings (1 MiB and more) round trip", () => {
  const s = "héllo wörld 中文 😀 ".repeat(50_000); // about 1.2 MB of UTF-8
  const bytes = utf8Encode(s);
  assert.ok(bytes.length > 1024 * 1024);
  assert.deepEqual(bytes, enc.encode(s));
  assert.equal(utf8Decode(bytes), s);
});

test("Base64: RFC 4648 §10 test vectors", () => {
  const vectors = [["", ""], ["f", "Zg=="], ["fo", "Zm8="], ["foo", "Zm9v"], ["foob", "Zm9vYg=="],
    ["fooba", "Zm9vYmE="], ["foobar", "Zm9vYmFy"]];
  for (const [plain, b64] of vectors) {
    assert.equal(base64Encode(utf8Encode(plain)), b64);
    assert.equal(utf8Decode(base64Decode(b64)), plain);
  }
});

test("Base64: all byte values, and agreement with btoa", () => {
  const all = new Uint8Array(256).map((_, i) => i);
  const latin1 = String.fromCharCode(...all);
  assert.equal(base64Encode(all), btoa(latin1));
  assert.deepEqual(base64Decode(btoa(latin1)), all);
});

test("Base64: random bytes of many lengths round trip (0 … 1 MiB)", () => {
  const lengths = [];
  for (let n = 0; n <= 70; n++) lengths.push(n);
  lengths.push(255, 256, 257, 4095, 4096, 4097, 49151, 49152, 49153, 65536, 1024 * 1024 - 1, 1024 * 1024);
  for (const n of lengths) {
    const bytes = new Uint8Array(randomBytes(n));
    const b64 = base64Encode(bytes);
    assert.equal(b64, Buffer.from(bytes).toString("base64"), `encode length ${n}`);
    assert.equal(b64.length, Math.ceil(n / 3) * 4);
    const back = base64Decode(b64);
    assert.ok(back instanceof Uint8Array);
    assert.equal(back.length, n);
    assert.ok(Buffer.from(back).equals(Buffer.from(bytes)), `round trip length ${n}`);
  }
});

test("Base64: accepts ArrayBuffer and typed-array views (only the view's bytes)", () => {
  const buf = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]).buffer;
  assert.equal(base64Encode(buf), "AAECAwQFBgc=");
  assert.equal(base64Encode(new Uint8Array(buf, 2, 3)), "AgME");
  assert.equal(base64Encode(new DataView(buf, 1, 2)), "AQI=");
});

test("Base64: decoding is forgiving like atob (whitespace, missing padding)", () => {
  const ok = ["Zm9v YmFy", "Zm9v\r\nYmFy", " Zm8", "Zm8=", "Zg", "Zg==", "\tZg==\n", ""];
  for (const s of ok) {
    assert.equal(Buffer.from(base64Decode(s)).toString("latin1"), atob(s), JSON.stringify(s));
  }
});

test("Base64: invalid input throws, wherever atob throws", () => {
  const bad = ["Z", "Zm9vY", "Zm=9", "Z===", "Zg=", "Zm8==", "Zm9v!", "Zm9v-_", "é", "=Zm8", "Zm8=Zm8="];
  for (const s of bad) {
    assert.throws(() => atob(s), undefined, `atob should reject ${JSON.stringify(s)}`);
    assert.throws(() => base64Decode(s), SyntaxError, JSON.stringify(s));
  }
});

test("Base64: fuzz decode against atob on random strings", () => {
  const alphabet = "ABCZabcz0189+/= \n-_!";
  for (let i = 0; i < 2000; i++) {
    let s = "";
    const n = Math.floor(Math.random() * 12);
    for (let j = 0; j < n; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
    let want;
    try { want = atob(s); } catch { want = null; }
    let got;
    try { got = Buffer.from(base64Decode(s)).toString("latin1"); } catch { got = null; }
    assert.equal(got, want, JSON.stringify(s));
  }
});

test("UTF-8 then Base64: what base64 framing sends for a string", () => {
  // Never btoa(rawString): btoa throws on anything outside Latin-1.
  const s = "naïve 中文 😀";
  assert.throws(() => btoa(s));
  const b64 = base64Encode(utf8Encode(s));
  assert.equal(b64, Buffer.from(s, "utf8").toString("base64"));
  assert.equal(utf8Decode(base64Decode(b64)), s);
});
