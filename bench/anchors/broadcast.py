"""The anchor: a bare `websockets` server that sends recorded frames to every client with
`websockets.broadcast`, the library's own fan-out, at the cadence they were recorded at.

bench/fanout.py records a channel's messages from the gateway (the Opus frames and the note
events a player gets) and starts this with them; each loop of the recording continues the
frames' u64 positions, so the load generator times both servers the same way.

Usage: python bench/anchors/broadcast.py PORT RECORDING (a pickle of [(seconds, message)])
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import sys
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve

POSITION = struct.Struct("<Q")


async def main(port: int, recording: list[tuple[float, bytes | str]], span: int) -> None:
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, backlog=8192):
        print("ready", flush=True)
        start, length, loop = time.time(), recording[-1][0] + 0.05, 0
        while True:
            for at, message in recording:
                wait = start + loop * length + at - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if isinstance(message, bytes):  # the timeline goes on: positions too
                    pos = POSITION.unpack_from(message)[0] + loop * span
                    message = POSITION.pack(pos) + message[POSITION.size:]
                broadcast(clients, message)
            loop += 1


if __name__ == "__main__":
    with open(sys.argv[2], "rb") as f:
        recorded = pickle.load(f)
    rate = 48000  # Opus frames' positions are at 48 kHz
    loop_span = round((recorded[-1][0] + 0.05) * rate)
    asyncio.run(main(int(sys.argv[1]), recorded, loop_span))
