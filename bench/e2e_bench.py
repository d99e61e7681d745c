"""End-to-end MAC benchmark: what xio/peering/e2e.py adds to a request, in one process.

Prints µs, each the median of ``--runs`` runs of bounded loops: a cold pairwise key (X25519 and
HKDF, what a cache miss costs), a cached key, and request MAC + verify for a request of 200 body
bytes and 10 headers and for one with a 64 KiB body; and, for the choice of MAC, keyed BLAKE2b
against HMAC-SHA256 on the same encodings, and the two MACs alone on 100 B, 4 KiB, 64 KiB and
1 MiB of data, hashed in the three parts ``e2e._mac`` feeds (head, body, nonce).

    python bench/e2e_bench.py [--rounds 2000] [--runs 7]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import time

from xio.peering import e2e
from xio.peering.identity import Identity


def timed(function, rounds: int, runs: int) -> float:
    """Return the median over ``runs`` of the µs one call of ``function`` takes."""
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(rounds):
            function()
        results.append((time.perf_counter() - start) / rounds * 1e6)
    return statistics.median(results)


def request(alice: Identity, bob: Identity, body: bytes) -> dict:
    headers = tuple((f"X-Header-{i}", f"v{i}") for i in range(10))
    return {
        "src": alice.node_id,
        "dst": bob.node_id,
        "app": "echo",
        "method": "POST",
        "path": "/items/42",
        "query": "a=1",
        "headers": headers,
        "body": body,
        "nonce": bytes(16),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args(argv)
    rounds, runs = options.rounds, options.runs
    alice, bob = Identity.generate(), Identity.generate()
    peers = [Identity.generate().public_key for _ in range(min(rounds, 500))]
    key = e2e.pairwise_key(alice, bob.public_key)
    cache = e2e.PairwiseKeys(alice)
    cache.key_for(bob.public_key)

    peer_iter = iter(peers * runs)
    print(
        f"key, cold (X25519 + HKDF): {timed(lambda: e2e.pairwise_key(alice, next(peer_iter)), len(peers), runs):8.1f} µs"
    )  # noqa: E501
    print(
        f"key, cached:               {timed(lambda: cache.key_for(bob.public_key), rounds, runs):8.2f} µs"
    )  # noqa: E501

    small = request(alice, bob, bytes(200))
    large = request(alice, bob, bytes(65536))
    for label, fields in (("200 B body, 10 headers", small), ("64 KiB body", large)):
        mac = e2e.request_mac(key, **fields)

        def both(fields=fields, mac=mac):
            e2e.request_mac(key, **fields)
            e2e.verify_request(key, **fields, mac=mac)

        data = e2e.encode_request(**fields)
        print(f"{label} ({len(data)} B encoded):")
        print(
            f"  encode only:             {timed(lambda f=fields: e2e.encode_request(**f), rounds, runs):8.2f} µs"
        )  # noqa: E501
        print(f"  request MAC + verify:    {timed(both, rounds, runs):8.2f} µs")
        blake = timed(
            lambda d=data: hashlib.blake2b(d, key=key, digest_size=16).digest(), rounds, runs
        )  # noqa: E501
        sha = timed(lambda d=data: hmac.digest(key, d, "sha256")[:16], rounds, runs)
        print(f"  one MAC: BLAKE2b {blake:.2f} µs, HMAC-SHA256 {sha:.2f} µs")
    compare_macs(key, rounds, runs)


def blake2b_mac(key: bytes, parts) -> bytes:
    hasher = hashlib.blake2b(key=key, digest_size=16)
    for part in parts:
        hasher.update(part)
    return hasher.digest()


def hmac_sha256_mac(key: bytes, parts) -> bytes:
    hasher = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        hasher.update(part)
    return hasher.digest()[:16]


def compare_macs(key: bytes, rounds: int, runs: int) -> None:
    """Print keyed BLAKE2b-128 against HMAC-SHA256-128 over bodies of typical sizes."""
    print("MAC alone, head 300 B + body + nonce 20 B (BLAKE2b-128 / HMAC-SHA256-128, µs):")
    for size in (100, 4096, 65536, 1 << 20):
        parts = [bytes(300), bytes(size), bytes(20)]
        loops = max(rounds * 4096 // max(size, 4096), 20)
        blake = timed(lambda p=parts: blake2b_mac(key, p), loops, runs)
        sha = timed(lambda p=parts: hmac_sha256_mac(key, p), loops, runs)
        print(f"  {size:>8} B body: {blake:10.2f} / {sha:10.2f}   ratio {sha / blake:.2f}")


if __name__ == "__main__":
    main()
