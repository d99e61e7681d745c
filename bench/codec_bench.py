"""Codec benchmark: the CPU one hop spends decoding and re-encoding a ``req`` and its ``res``.

In one process, no network. A relay decodes each frame it receives and encodes the one it
sends on, so one hop costs ``encode(decode(req)) + encode(decode(res))``. This was once a
timed assertion in tests/test_peering_codec.py (under 60 µs per hop: a per-frame signature
check, ~100 µs, or a slow validation would break it); timings do not belong in the suite, so
the figure is printed here, as the median of ``--runs`` runs of ``--rounds`` hops each.

    python bench/codec_bench.py [--rounds 2000] [--runs 7] [--body 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

from xio.peering.codec import RequestFrame, ResponseFrame, decode, encode

NODE = "b" * 32


def per_hop(request: bytes, response: bytes, rounds: int) -> float:
    """Return the seconds one hop spends on the codec, averaged over ``rounds`` hops."""
    start = time.perf_counter()
    for _ in range(rounds):
        encode(decode(request))
        encode(decode(response))
    return (time.perf_counter() - start) / rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--body", type=int, default=0, help="body bytes of req and res")
    options = parser.parse_args(argv)
    body = bytes(options.body)
    headers = (("Accept", "*/*"), ("User-Agent", "bench"))
    request = encode(
        RequestFrame(7, NODE, "inventory", "GET", "/items/42", "a=1", headers, body, 16, 30_000)
    )
    response = encode(ResponseFrame(7, 200, (("Content-Type", "application/json"),), body))
    per_hop(request, response, options.rounds // 10)  # warm up
    runs = [per_hop(request, response, options.rounds) for _ in range(options.runs)]
    print(
        f"codec per req+res hop ({options.body} byte bodies): "
        f"median {statistics.median(runs) * 1e6:.1f} µs, best {min(runs) * 1e6:.1f} µs "
        f"over {options.runs} runs of {options.rounds} hops"
    )


if __name__ == "__main__":
    main()
