"""A real third-party client for wsproxy's Base64 mode: Python's `websockets` package.

Sends Base64 the way line-oriented tools do (`websocat -t --protocol base64` sends each line
with its newline): lines ending in LF and CRLF, groups separated by spaces and tabs, Base64
wrapped at 76 columns (RFC 2045), and one message fragmented with whitespace at the fragment
boundaries. Checks that the echo target's bytes come back exactly, then sends a bad byte at
offset 8 and prints the Close it gets: `close CODE REASON`.

Usage: python3 base64_lines.py ws://PROXY/HOST:PORT
"""

import asyncio
import base64
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def spaced(text):
    """The Base64 text with a space or a tab after every group of four."""
    groups = [text[i : i + 4] for i in range(0, len(text), 4)]
    return "".join(g + (" " if n % 2 else "\t") for n, g in enumerate(groups))


def wrapped(text):
    """The Base64 text in lines of 76 characters, CRLF-terminated (RFC 2045 §6.8)."""
    return "".join(text[i : i + 76] + "\r\n" for i in range(0, len(text), 76))


async def main(url):
    async with connect(url, subprotocols=["base64"], max_size=None) as ws:
        assert ws.subprotocol == "base64", ws.subprotocol
        expected = b""
        payloads = [b"hello, line one", b"second\twith a tab", bytes(range(256)) * 3]
        for data in payloads:
            text = base64.b64encode(data).decode()
            for message in (text + "\n", text + "\r\n", spaced(text) + "\n", wrapped(text)):
                await ws.send(message)
                expected += data
        # One message in three fragments, whitespace at every boundary.
        await ws.send(["aGVs", "\nbG8", "=\r\n"])
        expected += b"hello"
        got = b""
        while len(got) < len(expected):
            message = await asyncio.wait_for(ws.recv(), 10)
            got += base64.b64decode(message, validate=True)
        assert got == expected, (len(got), len(expected))
        print(f"echoed {len(got)} bytes in {len(payloads) * 4 + 1} messages")
        await ws.send("aGVsbG8g*xyz\n")
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            print(f"close {closed.rcvd.code} {closed.rcvd.reason}")


asyncio.run(main(sys.argv[1]))
