"""Link cipher benchmark: the CPU one hop would spend sealing and opening a frame (issue 10).

In one process, no network. With links encrypted, a relay opens each frame it receives and
seals the one it sends on, so one frame costs ``seal + open`` per hop (the codec's decode and
encode come on top, see codec_bench.py). Also a link's setup: an X25519 key made, the
exchange and the HKDF of ``derive_link_keys`` (once per link, not per frame). Medians of
``--runs`` runs of ``--rounds`` loops each; bounded, nothing timed in the test suite.

    python bench/cipher_bench.py [--rounds 5000] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

from xio.peering.cipher import EphemeralKey, derive_link_keys, transcript_hash

I_ID, R_ID = "a" * 32, "b" * 32  # node-id shaped; the cipher does not check them
NONCE = bytes(32)


def link():
    i_eph, r_eph = EphemeralKey(), EphemeralKey()
    salt = transcript_hash(I_ID, NONCE, i_eph.public, R_ID, NONCE, r_eph.public)
    i_pub = i_eph.public
    return (
        derive_link_keys(i_eph, r_eph.public, salt, "initiator"),
        derive_link_keys(r_eph, i_pub, salt, "responder"),
    )


def seal_open(size: int, rounds: int) -> float:
    """Return seconds per ``seal`` + ``open`` of a ``size``-byte frame."""
    initiator, responder = link()
    seal, open_ = initiator.send.seal, responder.receive.open
    frame = bytes(size)
    start = time.perf_counter()
    for _ in range(rounds):
        open_(seal(frame))
    return (time.perf_counter() - start) / rounds


def peek(rounds: int) -> float:
    """Return seconds per ``peek`` of a 64-byte prefix (admission of a large frame)."""
    initiator, responder = link()
    prefix = initiator.send.seal(bytes(1024))[:64]
    peek_ = responder.receive.peek
    start = time.perf_counter()
    for _ in range(rounds):
        peek_(prefix)
    return (time.perf_counter() - start) / rounds


def setup(rounds: int) -> float:
    """Return seconds for one end's link setup: key generation, X25519 and HKDF."""
    peer = EphemeralKey().public
    salt = bytes(32)
    start = time.perf_counter()
    for _ in range(rounds):
        derive_link_keys(EphemeralKey(), peer, salt, "initiator")
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cases = {
        "seal+open 200 B": lambda: seal_open(200, args.rounds),
        "seal+open 64 KiB": lambda: seal_open(64 * 1024, max(1, args.rounds // 10)),
        "peek 64 B (unauthenticated)": lambda: peek(args.rounds),
        "link setup (X25519 keygen + exchange + HKDF)": lambda: setup(max(1, args.rounds // 5)),
    }
    for name, case in cases.items():
        runs = sorted(case() for _ in range(args.runs))
        print(f"{name:46} {statistics.median(runs) * 1e6:8.2f} µs  (min {runs[0] * 1e6:.2f})")


if __name__ == "__main__":
    main()
