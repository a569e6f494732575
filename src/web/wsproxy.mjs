/**
 * wsproxy.mjs — the ES-module face of wsproxy.js.
 *
 *   import WsProxy, { connect, utf8Encode } from "/wsproxy.mjs";
 *
 * The implementation lives in wsproxy.js, a classic script that sets
 * globalThis.WsProxy; importing it for that side effect and re-exporting
 * keeps a single copy of the code for both loading styles. (Side effect:
 * ES-module users get the WsProxy global too.)
 */
import "./wsproxy.js";

const WsProxy = globalThis.WsProxy;

export default WsProxy;
export const {
  version,
  connect,
  WsProxySocket,
  DEFAULT_PROTOCOLS,
  MAX_DATAGRAM,
  CLOSE_CODES,
  framingFor,
  buildUrl,
  targetPath,
  describeClose,
  utf8Encode,
  utf8Decode,
  Utf8Decoder,
  base64Encode,
  base64Decode,
} = WsProxy;
