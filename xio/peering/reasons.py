"""Every reason a node counts, in one registry: what it means and where it is reported.

Theory of operation. A node never raises or logs a peer's mistake or a refusal of its own
without counting it by a short snake_case *reason*, and an operator reads those counts under
``/_xio/node`` (and per link under ``/_xio/peers``). The reasons used to be spread over six
tuples and many string literals, so a new one could be counted and never documented. Here each
one is listed once, with a one-line meaning, in the group of counters it is reported in:

* ``FRAME_REJECTIONS``: a peer's frame or handshake broke a rule (``rejected``; per link in
  ``/_xio/peers``). Each closes the link with ``bye(reason)`` except those in
  ``NON_FATAL_REJECTIONS`` (``duplicate_request_id`` and the stream rules);
  the WebSocket-level ones close with a close frame and no ``bye``.
* ``RECORD_VERDICTS``: what the record store decided about a record (``records_judged``), of
  which ``RECORD_REJECTIONS`` are a peer's fault (also under ``rejected``), ``RECORD_REFUSALS``
  are our budgets at work (also under ``refused``) and ``RECORD_NORMAL`` is healthy traffic.
* ``REFUSALS``: a budget or cap of ours said no (``refused``).
* ``FORWARDING``: what became of requests crossing links (``forwarding``); the ones in
  ``FORWARDING_REFUSALS`` show under ``refused`` too.
* ``LINK_CLOSES``: why a link closed besides a frame rejection (``closed_links``).
* ``MEMBERSHIP``: verdicts on certificates and revocations of a closed mesh (``membership``).

The modules that count (codec, handshake, records, store, session, links, forwarding, the
node) take their tuples from here; ``tests/test_reasons.py`` checks that every reason is
documented in docs/PROTOCOL.md section 12.1 and every string counted in ``xio/`` is listed.
Pure: imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reason:
    """One counted reason: its name on the wire and in the counters, and what it means."""

    name: str
    meaning: str


def _names(group: tuple[Reason, ...]) -> tuple[str, ...]:
    return tuple(reason.name for reason in group)


# -- frame rejections: under "rejected" ------------------------------------------------------

DECODE = (
    Reason("frame_too_large", "a frame over its type's size cap or the link's message limit"),
    Reason("malformed_msgpack", "not exactly one valid msgpack object within the str limits"),
    Reason("not_a_map", "the frame is not a msgpack map"),
    Reason("unknown_type", '"t" names no message type'),
    Reason("missing_field", "a required field is absent"),
    Reason("bad_field", "a field has the wrong type or breaks its rule"),
)
HANDSHAKE = (
    Reason("bad_version", "the peer's hello speaks no protocol version we speak"),
    Reason("role_conflict", "both ends claim the same role"),
    Reason("id_mismatch", "the hello's id is not the digest of its key"),
    Reason("self_link", "the peer is this node"),
    Reason("pinned_id_mismatch", "the peer is not the node its URL's #id pinned"),
    Reason("bad_signature", "the auth signature does not verify"),
    Reason("unexpected_frame", "a frame out of order, before or after the handshake"),
    Reason("peer_bye", "the peer said bye before the handshake was done"),
)
LINK_RULES = (
    Reason("handshake_timeout", "no handshake within the handshake timeout (10 s)"),
    Reason("duplicate_request_id", "a req reuses an id still in flight: dropped, link kept"),
    Reason(
        "credit_exceeded",
        "data past the credit granted: that request cancelled and ended, link kept",
    ),
    Reason(
        "unexpected_stream",
        "a streamed head, data or res against the stream rules: that request ended, link kept",
    ),
)
#: Frame rejections that end one request, not the link.
NON_FATAL_REJECTIONS = frozenset({"duplicate_request_id", "credit_exceeded", "unexpected_stream"})
WEBSOCKET = (
    Reason("text_frame", "a WebSocket text frame (close 1003, no bye)"),
    Reason("protocol_error", "a WebSocket frame against RFC 6455 (close 1002, no bye)"),
)
CIPHER = (
    Reason(
        "bad_key_exchange",
        "the peer's hello has no ephemeral X25519 key, or one giving an all-zero secret",
    ),
    Reason("bad_frame_mac", "an encrypted frame failed its tag: tampered, replayed or reordered"),
)
FRAME_REJECTIONS = (*DECODE, *HANDSHAKE, *LINK_RULES, *WEBSOCKET, *CIPHER)

# -- record verdicts: under "records_judged" -----------------------------------------------

RECORD_PARSE = (
    Reason("too_large", "the record body or one of its lists is over its cap"),
    Reason("malformed_record", "the record body breaks the canonical form or a field rule"),
    Reason("bad_version", "the record's version is not 1"),
    Reason("id_mismatch", "the record's id is not the digest of its key"),
    Reason("expired", "the record expired already"),
    Reason("from_future", "the record was issued more than 60 s ahead of our clock"),
    Reason("bad_signature", "the record's signature does not verify"),
)
RECORD_VERDICTS = (
    Reason("accepted", "stored and flooded on"),
    *RECORD_PARSE,
    Reason("stale", "older than the record we hold, or than a tombstone"),
    Reason("duplicate", "the very record we hold"),
    Reason("own_record", "a record of our own origin, not newer than ours"),
    Reason("origin_quota", "its source holds its share of the store already"),
    Reason("store_full", "the store is full of records that may not be evicted"),
    Reason("evicted", "not a verdict: a stored record dropped to make room for a newcomer"),
)
RECORD_REASONS = _names(RECORD_PARSE)
RECORD_REJECTIONS = RECORD_REASONS  # the peer's fault: also under "rejected"
RECORD_REFUSALS = ("origin_quota", "store_full")  # our budgets: also under "refused"
RECORD_NORMAL = ("accepted", "duplicate", "stale", "own_record")  # a healthy mesh

# -- refusals by a budget or cap of ours: under "refused" ----------------------------------

REFUSALS = (
    Reason("in_flight_budget", "the node-wide budget of requests in flight is spent (503)"),
    Reason("body_budget", "the node-wide budget of buffered bodies is spent (503)"),
    Reason("queue_full", "a link's send queue is full: the request is answered 503"),
    Reason("overloaded", "a link has 1024 requests in flight from its peer (503)"),
    Reason("threads_full", "an app's threads and their queue are busy (503)"),
    Reason("bulkhead_full", "an app hosted here runs its --bulkhead of requests already (503)"),
    Reason("breaker_open", "every host of the app has its circuit open at the ingress (503)"),
    Reason("handshake_rate", "too many links being set up at once: one refused"),
    Reason("inbound_links_full", "--max-inbound-links reached: an inbound link refused"),
    Reason("flood_queue_full", "a record not flooded to a link whose queue is full"),
    Reason("summary_budget", "a summary past the peer's allowance, ignored"),
    Reason("want_budget", "a want past the peer's allowance, ignored"),
    Reason("want_queue_full", "a want not sent: the link's queue is full or it closed"),
    Reason("origin_quota", "a record refused: its source holds its share of the store"),
    Reason("store_full", "a record refused: the store is full"),
    Reason("http_<status>", "the HTTP front refused a request with that status (http_413)"),
    Reason("http_connections", "a connection over the HTTP front's caps, refused with 503"),
    Reason("admin_forbidden", "/_xio/ asked from off loopback with no --admin-token set (403)"),
    Reason("admin_unauthorized", "/_xio/ asked without the --admin-token bearer token (401)"),
    Reason("client_ws_origin", "a browser page's client channel from an origin not allowed (403)"),
    Reason("client_ws_in_flight", "a client channel has 128 requests in flight: one more is a 503"),
    Reason("client_ws_body_budget", "a client channel's body the body budget cannot hold (503)"),
    Reason("client_ws_not_reading", "a client channel closed: its answers waited 30 s unread"),
)
#: Forwarding counts that are refusals by a budget or cap (shown under "refused" too).
FORWARDING_REFUSALS = ("in_flight_budget", "body_budget", "queue_full", "overloaded")

# -- requests crossing links: under "forwarding" -------------------------------------------

FORWARDING = (
    Reason("forwarded", "a request of this node's HTTP front sent on a link"),
    Reason("relayed", "a request from one link passed on to another"),
    Reason("served", "a request from a link answered by an app here"),
    Reason("cancelled", "the asker withdrew a request (cancel)"),
    Reason("deadline", "a request out of time before it could go on (504)"),
    Reason("hop_limit", "a request out of hops before its destination (502)"),
    Reason("no_route", "no route to the request's destination (502)"),
    Reason("next_hop_lost", "the link a request left on closed before its answer (502)"),
    Reason("too_large", "a request that this node's id on its trail made too large (502)"),
    Reason("in_flight_budget", "the node-wide budget of requests in flight is spent (503)"),
    Reason("body_budget", "a body over the node-wide budget, read past and refused (503)"),
    Reason("queue_full", "a link's send queue is full: answered 503 or not sent"),
    Reason("overloaded", "a link has 1024 requests in flight from its peer (503)"),
    Reason("ttl_clamped", "a request's ttl cut to this node's --max-ttl"),
    Reason("expired", "a request forgotten past its deadline"),
    Reason("late_response", "a res for no request in flight (it raced a cancel or deadline)"),
    Reason("late_cancel", "a cancel for no request in flight"),
    Reason("late_data", "a data piece for no stream in flight (it raced a cancel)"),
    Reason("late_end", "an end for no stream in flight"),
    Reason("late_credit", "a credit for no stream in flight (it raced the end or a cancel)"),
    Reason("streams_out", "a streamed answer begun here, by an app on this node"),
    Reason("streams_in", "a streamed answer received here, as the ingress"),
    Reason("streamed", "a streamed answer that reached its client whole, its MAC checked"),
    Reason("bodies_out", "a request body streamed from here, as the ingress"),
    Reason("bodies_in", "a streamed request body received here, for an app on this node"),
    Reason("no_upload", "a streamed request body for a next hop that takes none (502)"),
    Reason(
        "stream_broken",
        "a streamed answer ended by an error on the way (a link lost, a congested relay, the app)",
    ),
    Reason("stream_idle", "a streamed answer with no piece for the request's timeout: aborted"),
    Reason("stream_abandoned", "the client went away mid-stream: the stream cancelled"),
    Reason("bad_via", "a request with an unreadable X-Xio-Via trail (400)"),
    Reason("loop", "a request whose trail holds this node already (508)"),
    Reason("bad_response", "an answer from the mesh that HTTP cannot carry (502)"),
    Reason("bad_trace", "a traced res whose trace is malformed: dropped, the answer passed on"),
    Reason("response_too_large", "an app's answer that no res frame can carry (502)"),
    Reason(
        "bad_e2e_mac",
        "a req without a valid end-to-end MAC (destination), a res without one (ingress): 502",
    ),
    Reason(
        "e2e_unknown_node",
        "no record of the other end's key: the ingress's dst, or the destination's src (502)",
    ),
    Reason(
        "e2e_stale", "a req whose nonce was issued over 120 s before or 60 s after our clock (502)"
    ),
    Reason(
        "e2e_replay",
        "a req whose (src, n) this node has served already, or older than its src's floor (502, unsigned)",
    ),
    Reason(
        "e2e_window_full",
        "the replay window full: its oldest (src, n) forgotten early, its src's floor raised",
    ),
    Reason(
        "e2e_unsigned_error",
        "an error of a node on the way, without a MAC, passed on marked as such",
    ),
)

# -- why links closed: under "closed_links", besides every frame rejection that closes -------

LINK_CLOSES = (
    Reason("shutting_down", "this node is stopping"),
    Reason("duplicate_link", "the loser of two links between the same nodes"),
    Reason("peer_gone", "mDNS said the peer left, or it stayed unreachable"),
    Reason("peer_bye", "the peer said bye (its reason follows in the log)"),
    Reason("keepalive_timeout", "nothing arrived, or no pong, for the link timeout"),
    Reason("write_timeout", "the peer stopped reading: our queue did not drain in time"),
    Reason("body_budget", "a frame the body budget cannot hold that is not a req or res"),
    Reason("peer_closed", "the peer closed the WebSocket without a bye"),
    Reason("connection_lost", "the connection broke (reset, end of stream)"),
    Reason("internal_error", "a bug of ours while handling the link (close 1011)"),
    Reason("local_close", "closed by this node without a reason given"),
    Reason("peer_removed", "the peer was taken out of --peers by a reload (SIGHUP)"),
)

# -- membership of a closed mesh: under "membership" -----------------------------------------

MEMBERSHIP = (
    Reason("no_certificate", "a node in a closed mesh presented no certificate"),
    Reason("bad_certificate", "a certificate that is malformed or whose signature fails"),
    Reason("wrong_authority", "a certificate or revocation of another mesh authority"),
    Reason("wrong_node", "a certificate that admits another node than the one presenting it"),
    Reason("expired", "a certificate past its expires_ms"),
    Reason("not_yet_valid", "a certificate or revocation issued over 60 s ahead of our clock"),
    Reason("revoked", "a certificate of a node revoked since it was issued"),
    Reason("app_not_allowed", "a claim on an app the node's certificate does not list"),
    Reason("bad_revocation", "a revocation that is malformed or whose signature fails"),
)
MEMBERSHIP_REASONS = _names(MEMBERSHIP)

# -- a client channel's faults (/_xio/client-ws, PROTOCOL.md 16.3): under "rejected" ---------

CLIENT_REJECTIONS = (
    Reason("client_ws_bad_message", "a client channel's message that is not one: closed, 1002"),
    Reason("client_ws_bad_request", "a REQ whose fields break the rules: answered 400"),
    Reason("client_ws_body_too_large", "a REQ's body over --max-body: answered 413"),
)

#: Every group by the ``/_xio/node`` key its counters are reported under.
GROUPS: dict[str, tuple[Reason, ...]] = {
    "rejected": FRAME_REJECTIONS + CLIENT_REJECTIONS,
    "records_judged": RECORD_VERDICTS,
    "refused": REFUSALS,
    "forwarding": FORWARDING,
    "closed_links": LINK_CLOSES,
    "membership": MEMBERSHIP,
}

DECODE_REASONS = _names(DECODE)
HANDSHAKE_REASONS = _names(HANDSHAKE) + ("bad_key_exchange",)  # the handshake derives keys
STORE_REASONS = _names(RECORD_VERDICTS)[:-1]  # the verdicts, without "evicted"
WEBSOCKET_REASONS = _names(WEBSOCKET) + ("frame_too_large",)
CIPHER_REASONS = _names(CIPHER)
#: Every reason a link may close for: its own, and every frame rejection but one.
CLOSE_REASONS = frozenset(_names(LINK_CLOSES)) | (
    frozenset(_names(FRAME_REJECTIONS)) - NON_FATAL_REJECTIONS
)
ALL_REASONS = frozenset(reason.name for group in GROUPS.values() for reason in group)
