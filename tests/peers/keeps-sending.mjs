// A real WebSocket client (Node's `ws` package) that keeps sending while the tunnel ends,
// for tests/endings.rs: it opens `COUNT` tunnels to `URL`, one after another, and on each
// one sends 8 KiB binary messages as fast as the socket takes them until the proxy closes.
// For every tunnel it prints one line, `code=N error=E data=BASE64 reason=TEXT`: the close
// code and reason `ws` reports, every byte received, and the socket error if there was one
// ("-" if none; a reset shows up here, and as code 1006).
//
// Usage: node keeps-sending.mjs URL COUNT
import WebSocket from "ws";

const [url, count] = process.argv.slice(2);
const payload = Buffer.alloc(8192, 0x61);

function oneTunnel() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { handshakeTimeout: 10000 });
    ws.binaryType = "nodebuffer";
    const received = [];
    let error = null;
    const pump = () => {
      // Keep at most 256 KiB queued in ws, as an application that respects backpressure.
      while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 256 * 1024) {
        ws.send(payload);
      }
      if (ws.readyState === WebSocket.OPEN) setTimeout(pump, 1);
    };
    ws.on("open", pump);
    ws.on("message", (data) => received.push(data));
    ws.on("error", (e) => {
      error = e.code || e.message;
    });
    ws.on("close", (code, reason) => {
      const data = Buffer.concat(received).toString("base64") || "-";
      resolve(`code=${code} error=${error ?? "-"} data=${data} reason=${reason}`);
    });
  });
}

for (let i = 0; i < Number(count); i++) {
  console.log(await oneTunnel());
}
