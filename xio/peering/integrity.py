"""End-to-end integrity of forwarding: seal a req at the ingress, check it at the destination.

Theory of operation (docs/PROTOCOL.md section 11.1)
---------------------------------------------------
``EndToEnd`` is what one node does with ``xio.peering.e2e`` for the requests it forwards or
serves; the forwarder calls it at four points, and relays never do (they pass ``src``, ``n``
and ``mac`` on untouched):

1. **The ingress seals the req** (``seal_request``): ``src`` is its own id, ``n`` a fresh
   nonce (8 bytes of its wall clock in ms, big-endian, then 8 random bytes), ``mac`` the
   request MAC under the pairwise key of ``dst``, whose Ed25519 key comes from ``dst``'s
   record. No record of ``dst``: the request is not sent (502, ``e2e_unknown_node``).
2. **The destination opens it** (``open_request``), before the app runs: no ``src``/``n``/
   ``mac`` (there is no unauthenticated fallback) or a MAC that does not verify, 502
   ``bad_e2e_mac``; no record of ``src``, 502 ``e2e_unknown_node``; a nonce from over
   ``MAX_AGE_MS`` ago or over ``MAX_AHEAD_MS`` ahead, 502 ``e2e_stale``; a ``(src, n)`` seen
   within the window, 502 ``e2e_replay``. Only then is ``src`` the authenticated caller.
3. **The destination seals its answer** (``seal_response``), the app's and its own errors
   (404, 500, the refusals of step 2) alike, bound to ``n``: except the answer to a replay,
   which only a replayer ever reads and which must not give it a second signed answer to ``n``.
4. **The ingress opens the answer** (``open_response``): a MAC that does not verify is a 502
   "altered on the way" (``bad_e2e_mac``). A ``res`` with no MAC is a node's own error on the
   way (a relay's 502 no route, 503, 504, 508; nobody there holds the key): it is passed on only
   as such an error (status in ``UNSIGNED_STATUSES``), rebuilt here with its description
   marked as unauthenticated and no header but the trail, counted ``e2e_unsigned_error``
   (a body over ``MAX_UNSIGNED_BODY`` is no such error);
   anything else without a MAC is ``bad_e2e_mac``. So a relay can still answer in place of the
   destination with an error, as it can drop the request, but never with an answer of the app.

Why the clock in the nonce: ``ttl`` is not covered (relays lower it), so the window alone would
let a relay replay a request once its pair has left the window. With the issue time inside
the MAC a pair need only be remembered for ``MAX_AGE_MS + MAX_AHEAD_MS``, the time a nonce is
accepted at all. Clocks must agree within a minute, as they must for records (8.4).

Bounds (ours, not a peer's to choose): ``KEY_CACHE`` pairwise keys (~100 B each) and
``REPLAY_PAIRS`` (src, n) pairs (~300 B each: ~20 MiB when full), which span the 180 s a nonce
is accepted up to ~360 requests a second. Past that the window forgets its oldest pairs early,
counted ``e2e_window_full``, and fails closed: each forgotten pair raises its ``src``'s floor
(``e2e.ReplayWindow``), and a nonce of that ``src`` issued no later is refused as a replay, so
what the window forgot cannot be replayed, at the price of refusing an honest request held
back on the way for longer than the window then spans (~20 s at 3,000 requests a second).

Pure: no sockets, no clock (``now_ms`` is a parameter; wall-clock milliseconds).
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Callable

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering import e2e
from xio.peering.codec import RequestFrame, ResponseFrame
from xio.peering.link_events import error_frame
from xio.peering.via import judge_trail

__all__ = [
    "KEY_CACHE",
    "MAX_AGE_MS",
    "MAX_AHEAD_MS",
    "REPLAY_PAIRS",
    "UNSIGNED_STATUSES",
    "EndToEnd",
    "Sealed",
    "nonce_time_ms",
]

#: Pairwise keys kept (e2e.PairwiseKeys): a miss costs one X25519, ~0.3 ms.
KEY_CACHE = 4096
#: (src, n) pairs the replay window holds at most (~300 B each).
REPLAY_PAIRS = 65536
#: How old a nonce may be on arrival: clock skew (60 s, as records allow) and the trip.
MAX_AGE_MS = 120_000
#: How far ahead of our clock a nonce may be: clock skew.
MAX_AHEAD_MS = 60_000
#: The statuses a node on the way answers with on its own, without the key (section 11).
UNSIGNED_STATUSES = frozenset({400, 502, 503, 504, 508})
#: How much of an unauthenticated error's description is passed on, and the largest body read
#: for it (xio's error bodies are a few hundred bytes; a 16 MiB one is not parsed).
MAX_UNSIGNED_DESCRIPTION = 300
MAX_UNSIGNED_BODY = 16 * 1024

_TIME_BYTES = 8


def nonce_time_ms(nonce: bytes) -> int:
    """Return the issue time (wall-clock ms) a nonce starts with."""
    return int.from_bytes(nonce[:_TIME_BYTES], "big")


class Sealed:
    """What the ingress keeps of a sealed request to check its answer: key and nonce."""

    __slots__ = ("key", "nonce", "mac")

    def __init__(self, key: bytes, nonce: bytes, mac: bytes) -> None:
        self.key = key
        self.nonce = nonce
        self.mac = mac


class EndToEnd:
    """One node's end of the MACs of section 11.1; see the module docstring.

    ``public_key_of(node_id)`` returns the Ed25519 key of a node's record, or None when this
    node holds no record of it. ``counts`` is where refusals are counted (the forwarder's).
    """

    def __init__(
        self,
        identity,
        public_key_of: Callable[[str], bytes | None],
        counts: Counter[str] | None = None,
        *,
        key_cache: int = KEY_CACHE,
        replay_pairs: int = REPLAY_PAIRS,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.own_id = identity.node_id
        self._public_key_of = public_key_of
        self.counts: Counter[str] = Counter() if counts is None else counts
        self.keys = e2e.PairwiseKeys(identity, key_cache)
        self.window = e2e.ReplayWindow(
            replay_pairs, MAX_AGE_MS + MAX_AHEAD_MS, issued_of=nonce_time_ms, max_floors=key_cache
        )
        self._random_bytes = random_bytes

    def key_of(self, node_id: str) -> bytes | None:
        """Return the key shared with ``node_id``, or None: no record, or a key refused."""
        public_key = self._public_key_of(node_id)
        if public_key is None:
            return None
        try:
            return self.keys.key_for(public_key)
        except LocalProtocolError:  # a small-order or non-canonical key: no key at all
            return None

    # -- the ingress ---------------------------------------------------------------------

    def seal_request(self, frame: RequestFrame, now_ms: int) -> Sealed | None:
        """Return the ``n`` and ``mac`` for ``frame`` from here, or None: ``dst`` is unknown.

        The MAC does not cover ``X-Xio-Via``, ``hops`` or ``ttl``: ``frame`` may be sealed
        before they are set.
        """
        key = self.key_of(frame.dst)
        if key is None:
            self.counts["e2e_unknown_node"] += 1
            return None
        nonce = now_ms.to_bytes(_TIME_BYTES, "big") + self._random_bytes(8)
        if frame.more:  # its body follows, under a MAC of its own (e2e.BodyMac)
            mac = e2e.upload_head_mac(
                key, self.own_id, frame.dst, frame.app, frame.method, frame.path, frame.query,
                frame.headers, nonce,
            )  # fmt: skip
        else:
            mac = e2e.request_mac(
                key, self.own_id, frame.dst, frame.app, frame.method, frame.path, frame.query,
                frame.headers, frame.body, nonce,
            )  # fmt: skip
        return Sealed(key, nonce, mac)

    def open_response(self, sealed: Sealed, frame: ResponseFrame) -> ResponseFrame:
        """Return the answer to pass on, or a 502 in its place (see the module docstring)."""
        if frame.mac is None:
            return self._unsigned(frame)
        try:
            if frame.more:  # a streamed head: its body is checked at its end (streams.py)
                e2e.verify_head(sealed.key, sealed.nonce, frame.status, frame.headers, frame.mac)
            else:
                e2e.verify_response(sealed.key, sealed.nonce, frame.status, frame.headers,
                                    frame.body, frame.mac)  # fmt: skip
        except RemoteProtocolError:
            self.counts["bad_e2e_mac"] += 1
            return self._altered("its end-to-end MAC does not verify")
        return frame

    def _altered(self, why: str) -> ResponseFrame:
        # Made here once the request left: this node's id alone on the trail (section 11).
        description = f"bad_e2e_mac: the response was altered on the way ({why})"
        return error_frame(502, description, via=self.own_id)

    def _unsigned(self, frame: ResponseFrame) -> ResponseFrame:
        description = _error_description(frame.body) if frame.status in UNSIGNED_STATUSES else None
        if description is None:
            self.counts["bad_e2e_mac"] += 1
            return self._altered(f"a {frame.status} without an end-to-end MAC")
        self.counts["e2e_unsigned_error"] += 1
        trail, problem = judge_trail(frame.headers, "")
        text = f"{description} (said by a node on the way, unauthenticated)"
        return error_frame(frame.status, text, via=trail if problem is None else "")

    # -- the destination -----------------------------------------------------------------

    def open_request(
        self, frame: RequestFrame, now_ms: int, via: str = ""
    ) -> tuple[bytes | None, ResponseFrame | None]:
        """Judge a req for this node: ``(key, None)`` to serve it, else ``(key, refusal)``.

        The refusal (502, its trail ``via``) is to be sealed with ``key`` when it is not None,
        like any answer of this node.
        """
        src, nonce, mac = frame.src, frame.nonce, frame.mac
        if src is None or nonce is None or mac is None:
            why = "the request carries no end-to-end MAC (docs/PROTOCOL.md 11.1): not served"
            return None, self._refused("bad_e2e_mac", why, via)
        key = self.key_of(src)
        if key is None:
            why = f"node {src} that sent the request has no record here: not authenticated"
            return None, self._refused("e2e_unknown_node", f"{why}, not served", via)
        try:
            if frame.more:
                e2e.verify_upload_head(
                    key, src, frame.dst, frame.app, frame.method, frame.path, frame.query,
                    frame.headers, nonce, mac,
                )  # fmt: skip
            else:
                e2e.verify_request(
                    key, src, frame.dst, frame.app, frame.method, frame.path, frame.query,
                    frame.headers, frame.body, nonce, mac,
                )  # fmt: skip
        except RemoteProtocolError:
            why = "bad_e2e_mac: the request was altered on the way (its MAC does not verify)"
            return key, self._refused("bad_e2e_mac", f"{why}: not served", via)
        age = now_ms - nonce_time_ms(nonce)
        if not -MAX_AHEAD_MS <= age <= MAX_AGE_MS:
            why = f"the request was issued {age / 1000:.0f} s ago by the ingress's clock"
            why += ": a replay, or clocks a minute apart; not served"
            return key, self._refused("e2e_stale", why, via)
        evicted = self.window.early_evictions
        replayed = self.window.seen(src, nonce, now_ms)
        if self.window.early_evictions != evicted:
            self.counts["e2e_window_full"] += 1
        if replayed:
            why = "the request was served here already (a replay), or is older than what the "
            why += "full replay window had to forget: not served"
            return None, self._refused("e2e_replay", why, via)
        return key, None

    def _refused(self, reason: str, description: str, via: str) -> ResponseFrame:
        self.counts[reason] += 1
        return error_frame(502, description, via=via)

    def seal_response(
        self, key: bytes, frame: RequestFrame, answer: ResponseFrame
    ) -> ResponseFrame:
        """Return ``answer`` to ``frame`` with its MAC and ``frame``'s request id (a streamed
        head gets the head's MAC; its body's is ``e2e.BodyMac``'s, in the end)."""
        if answer.more:
            mac = e2e.head_mac(key, frame.nonce, answer.status, answer.headers)
        else:
            mac = e2e.response_mac(key, frame.nonce, answer.status, answer.headers, answer.body)
        return answer.signed(frame.request_id, mac)


def _error_description(body: bytes) -> str | None:
    """Return the description of xio's JSON error body, or None if ``body`` is not one."""
    if len(body) > MAX_UNSIGNED_BODY:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("description"), str):
        return None
    return data["description"][:MAX_UNSIGNED_DESCRIPTION]
