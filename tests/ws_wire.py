"""WebSocket frames built by hand, as a misbehaving peer would send them.

Written apart from ``xio.peering.websocket`` on purpose: a test that built its input with the
code under test could not catch that code's mistakes.
"""

from __future__ import annotations

import struct


def raw_frame(opcode, payload=b"", *, fin=True, rsv=0, key=None, length=None) -> bytes:
    """Build one frame with any bit set; ``key`` masks it; ``length`` overrides the header's."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if key is not None else 0
    if size < 126:
        head = struct.pack("!BB", first, bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if key is None:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
