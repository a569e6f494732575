/**
 * A scripted stand-in for the browser's WebSocket, for the unit tests of
 * wsproxy.js's connection logic (socket.test.mjs, udp.test.mjs). It records
 * every message the library sends, one array entry per ws.send() call, and
 * lets the test play the server: open with a subprotocol, send messages,
 * close, fail. (Real WebSockets, against the real proxy, are in
 * tests/browser/.)
 */
export class FakeWebSocket {
  static last = null;
  constructor(url, protocols) {
    this.url = url;
    this.offered = protocols;
    this.readyState = 0;
    this.protocol = "";
    this.binaryType = "blob";
    this.bufferedAmount = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.last = this;
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("InvalidStateError");
    // Copy, as a real WebSocket does when it queues the data.
    this.sent.push(typeof data === "string" ? data : new Uint8Array(data));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 2;
  }
  // -- test drivers --
  serverOpens(protocol = "") {
    this.protocol = protocol;
    this.readyState = 1;
    this.onopen({ type: "open" });
  }
  serverSends(data) { this.onmessage({ type: "message", data }); }
  serverCloses(code, reason, wasClean = true) {
    this.readyState = 3;
    this.onclose({ type: "close", code, reason, wasClean });
  }
  fails() {
    this.readyState = 3;
    this.onerror({ type: "error" });
    this.onclose({ type: "close", code: 1006, reason: "", wasClean: false });
  }
}
