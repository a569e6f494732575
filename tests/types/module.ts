/**
 * Uses wsproxy.d.ts as an ES module (`import … from "/wsproxy.mjs"` in a page; "wsproxy"
 * here, mapped to the declarations by tsconfig.json). Type-checked only, never run.
 */
import WsProxy, {
  connect,
  targetPath,
  buildUrl,
  MAX_DATAGRAM,
  type ConnectOptions,
  type DataEvent,
  type Transport,
  type WsProxySocket,
} from "wsproxy";

// TCP, as before: a byte stream.
const tcp: WsProxySocket = connect({ proxy: "ws://localhost:8080", host: "example.com", port: 80 });
tcp.onopen = (e) => {
  const framing: "binary" | "base64" = e.framing;
  tcp.send("GET / HTTP/1.0\r\n\r\n");
  console.log(framing, e.protocol);
};
tcp.ondata = (bytes: Uint8Array) => console.log(WsProxy.utf8Decode(bytes));
tcp.onclose = (e) => console.log(e.code, e.reason, e.wasClean, e.opened, e.message);

// UDP: one datagram per send() and per data event.
const options: ConnectOptions = { host: "::1", port: 5353, transport: "udp", protocols: ["base64"] };
const udp = connect(options);
const transport: Transport = udp.transport;
udp.onopen = async () => {
  udp.send(new Uint8Array(0)); // a zero-length datagram
  const ok: boolean = udp.send(new Uint8Array(MAX_DATAGRAM));
  if (!ok) await udp.drain(64 * 1024);
  try {
    udp.send(new Uint8Array(MAX_DATAGRAM + 1));
  } catch (err) {
    if (err instanceof RangeError) console.log("too big:", err.message);
  }
};
udp.addEventListener("data", (e: DataEvent) => console.log("datagram of", e.data.length, "bytes"));
udp.addEventListener("frame", (f) => console.log(f.direction, f.size, f.wireSize, f.type));
const buffered: number = udp.bufferedAmount;

const paths: string[] = [
  targetPath("10.0.0.1", 53, "udp"),
  targetPath("example.com", "80"),
  buildUrl({ proxy: "ws://h", target: "[::1]:53", transport: "udp" }),
  buildUrl({ path: "/websockify", transport: "udp" }),
];
console.log(transport, buffered, paths);

// Misuse the declarations must reject.
// @ts-expect-error: only "tcp" and "udp" are transports
connect({ host: "h", port: 1, transport: "sctp" });
// @ts-expect-error: the transport is fixed when the socket is made
udp.transport = "tcp";
// @ts-expect-error: a data handler gets bytes, not a string
udp.ondata = (text: string) => console.log(text);
// @ts-expect-error: targetPath's third argument is a Transport
targetPath("h", 1, "UDP/IP");
