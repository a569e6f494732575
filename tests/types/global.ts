/**
 * Uses wsproxy.d.ts through the `WsProxy` global that `<script src="/wsproxy.js">` defines
 * (declared by `export as namespace WsProxy`). A script, not a module. Type-checked only.
 */
/// <reference path="../../src/web/wsproxy.d.ts" />

const datagrams: WsProxy.WsProxySocket = WsProxy.connect({
  host: "127.0.0.1",
  port: 9,
  transport: "udp",
});
datagrams.ondata = function (datagram) {
  const size: number = datagram.byteLength;
  const self: WsProxy.WsProxySocket = this;
  console.log(size, self.transport === "udp", WsProxy.MAX_DATAGRAM);
};
const t: WsProxy.Transport = "tcp";
console.log(WsProxy.targetPath("::1", 22, t), WsProxy.version);
