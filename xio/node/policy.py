"""Resilience policies: retries at the ingress, breakers per destination, bulkheads per app.

Theory of operation
-------------------
The ingress carries a client's request to a host of its app and gets back a ``res``: the
app's answer, or an error the mesh made in its place (xio.peering.forwarding). ``classify``
reads that answer and says what it proves about the request:

    ANSWERED   the destination answered: the app's own answer, whatever its status
    BUSY       the destination refused it, signed, without running it (its bulkhead is full)
    UNSENT     this node could not send it (no route, no hops, no key, a congested link):
               no app can have seen it
    LOST       it may have reached the app, and no answer came back (the link closed on the
               way), or a node on the way said "not sent" without proof (unauthenticated)
    TIMED_OUT  the deadline passed: no time is left to try again
    FINAL      any other error of the mesh (too large, altered on the way): a retry cannot help

``RetryPolicy.should_retry`` decides on that: BUSY and UNSENT go again whatever the method
(the app never ran the request), LOST only for the retry methods (idempotent ones by
default), and nothing goes again whose body was streamed (it cannot be read twice) or past
the attempts. The ingress sends a retry to another host of the app when there is one (never
one that failed this request, nor one whose breaker is open), else again to the same node
after a short pause, along whatever route the table has by then; never past the deadline.

``CircuitBreaker`` watches one destination node. Closed, it lets everything through and
counts failures (UNSENT, LOST: the node or the way to it failed) in a sliding window; the
``failures``-th within ``window`` seconds opens it. Open, it refuses for ``cooloff`` seconds,
then half-opens: exactly one request (the probe) goes through; the probe's success closes
it, its failure opens it again. A BUSY or ANSWERED outcome is a success (the node is there
and answers, even with a 500 of its app); TIMED_OUT and FINAL say nothing sure of the node
(a deadline is the client's budget) and count neither way.

``Bulkhead`` bounds the requests an app hosted here runs at once; the one past the limit is
answered 503 at once, with ``Retry-After``, and counted.

Pure: the clock is passed in (``now``, monotonic seconds); no gevent, no IO.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from ..errors import BadRequest, ConfigError

__all__ = [
    "DEFAULT_BREAKER_COOLOFF",
    "DEFAULT_BREAKER_FAILURES",
    "DEFAULT_BREAKER_WINDOW",
    "DEFAULT_BULKHEAD",
    "DEFAULT_RETRIES",
    "DEFAULT_RETRY_METHODS",
    "MAX_RETRIES",
    "REFUSED",
    "RETRIES_HEADER",
    "Admission",
    "AppPolicy",
    "Breakers",
    "BreakerState",
    "Bulkhead",
    "CircuitBreaker",
    "Outcome",
    "Policies",
    "PolicySettings",
    "RetryPolicy",
    "classify",
    "parse_methods",
    "parse_retries",
    "policy_settings",
]

DEFAULT_RETRIES = 2  # so at most three attempts
MAX_RETRIES = 5  # what X-Xio-Retries or --retries may ask for
DEFAULT_RETRY_METHODS = ("ABOUT", "DELETE", "GET", "HEAD", "OPTIONS", "PUT")
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_WINDOW = 10.0
DEFAULT_BREAKER_COOLOFF = 5.0
#: Requests one app runs here at once: a quarter of the node's default in-flight budget, so
#: one slow app cannot hold every request the node may take.
DEFAULT_BULKHEAD = 1024
#: Breakers kept at once (one per destination node asked); idle ones go first.
MAX_BREAKERS = 1024
#: Before a retry to the node that just failed: the table may have a new route by then.
RETRY_PAUSE = 0.1
RETRIES_HEADER = "X-Xio-Retries"
ATTEMPTS_HEADER = "X-Xio-Attempts"
#: Says which of our policies refused a request unrun (a bulkhead, a breaker).
REFUSED = "X-Xio-Refused"
#: What xio.peering.integrity appends to an error it cannot authenticate.
_UNAUTHENTICATED = "(said by a node on the way, unauthenticated)"
#: Errors the ingress makes itself before a request leaves (xio.peering.forwarding.route).
_NOT_SENT = ("no route to node", "hop limit reached", "no record of node")
_METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class Outcome(Enum):
    """What an answer from the mesh proves about the request (see the module docstring)."""

    ANSWERED = "answered"
    BUSY = "busy"
    UNSENT = "unsent"
    LOST = "lost"
    TIMED_OUT = "timed_out"
    FINAL = "final"


#: What each outcome tells a breaker: True a success, False a failure, None nothing.
_VERDICT = {
    Outcome.ANSWERED: True, Outcome.BUSY: True, Outcome.UNSENT: False, Outcome.LOST: False,
    Outcome.TIMED_OUT: None, Outcome.FINAL: None,
}  # fmt: skip


def _description(headers: Iterable[tuple[str, str]], body: bytes) -> str:
    """Return the ``description`` of xio's JSON error body, or '' if it is not one."""
    if len(body) > 8192 or not any(
        name.lower() == "content-type" and value.startswith("application/json")
        for name, value in headers
    ):
        return ""
    try:
        found = json.loads(body)
    except ValueError:
        return ""
    text = found.get("description") if isinstance(found, dict) else None
    return text if isinstance(text, str) else ""


def _last_hop(headers: Iterable[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "x-xio-via":
            return value.rsplit(",", 1)[-1]
    return ""


def classify(
    status: int, headers: Iterable[tuple[str, str]], body: bytes, own_id: str, dst: str
) -> Outcome:
    """Say what the answer ``(status, headers, body)`` to a request for ``dst`` proves.

    The last id on the answer's ``X-Xio-Via`` trail is the node that made it: ``dst`` for
    the app's answers (signed end to end), this node (``own_id``) for the forwarder's own.
    """
    if status not in (502, 503, 504):
        return Outcome.ANSWERED
    headers = tuple(headers)
    description = _description(headers, body)
    last = _last_hop(headers)
    if description.endswith(_UNAUTHENTICATED):  # a node on the way said so: no proof
        return Outcome.TIMED_OUT if status == 504 else Outcome.LOST
    if last == dst:  # signed by the destination: its app ran, unless our bulkhead said no
        refused = any(name.lower() == "x-xio-refused" for name, _ in headers)
        return Outcome.BUSY if status == 503 and refused else Outcome.ANSWERED
    if last != own_id:  # a relay's, yet authenticated: not made by xio as we know it
        return Outcome.FINAL
    if status == 504:
        return Outcome.TIMED_OUT
    if status == 503 or description.startswith(_NOT_SENT):
        return Outcome.UNSENT
    if description.startswith("link to ") and description.endswith("closed, request lost"):
        return Outcome.LOST
    return Outcome.FINAL  # bad_e2e_mac, bad_response, too large...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a request gets, and which methods go again when it may have run."""

    attempts: int
    methods: frozenset[str]

    def should_retry(
        self, outcome: Outcome, method: str, attempt: int, replayable: bool = True
    ) -> bool:
        """Tell whether a request whose ``attempt``-th try ended in ``outcome`` goes again."""
        return self.refusal(outcome, method, attempt, replayable) is None

    def refusal(
        self, outcome: Outcome, method: str, attempt: int, replayable: bool = True
    ) -> str | None:
        """Return why that request does not go again, or None if it does.

        ``done``: its outcome is an answer, or leaves no time; ``attempts``: it had them
        all; ``streamed``: its body cannot be sent twice; ``unsafe``: it may have run, and
        its method may not run twice.
        """
        if outcome not in (Outcome.UNSENT, Outcome.BUSY, Outcome.LOST):
            return "done"
        if attempt >= self.attempts:
            return "attempts"
        if not replayable:
            return "streamed"
        if outcome is Outcome.LOST and method not in self.methods:
            return "unsafe"
        return None  # UNSENT and BUSY: no app ran it, safe for any method


# -- circuit breakers ------------------------------------------------------------------------


class BreakerState(Enum):
    """Where a breaker is: letting requests through, refusing them, or trying one."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(Enum):
    """A breaker's answer to one request: through, through as the probe, or refused."""

    PASS = "pass"
    PROBE = "probe"
    REFUSE = "refuse"


class CircuitBreaker:
    """The breaker of one destination node (see the module docstring)."""

    __slots__ = ("failures", "window", "cooloff", "state", "opened_at", "opens", "_recent",
                 "_probing")  # fmt: skip

    def __init__(
        self,
        failures: int = DEFAULT_BREAKER_FAILURES,
        window: float = DEFAULT_BREAKER_WINDOW,
        cooloff: float = DEFAULT_BREAKER_COOLOFF,
    ) -> None:
        self.failures = failures
        self.window = window
        self.cooloff = cooloff
        self.state = BreakerState.CLOSED
        self.opened_at = 0.0
        self.opens = 0  # times it opened, half-open probes that failed included
        self._recent: deque[float] = deque()  # times of the failures within the window
        self._probing = False

    def admit(self, now: float) -> Admission:
        """Return whether a request may go to this node now; a PROBE must be recorded."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Admission.PASS
        if state is BreakerState.OPEN:
            if now < self.opened_at + self.cooloff:
                return Admission.REFUSE
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return Admission.REFUSE
        self._probing = True
        return Admission.PROBE

    def record(self, admission: Admission, verdict: bool | None, now: float) -> None:
        """Take the end of a request ``admit`` let through: success, failure or neither."""
        if admission is Admission.PROBE:
            self._probing = False
            if verdict is True:
                self.state = BreakerState.CLOSED
                self._recent.clear()
            elif verdict is False:
                self._open(now)
            return  # neither: still half-open, the next request is the probe
        if admission is not Admission.PASS or verdict is not False:
            return
        if self.state is not BreakerState.CLOSED:
            return  # let through before it opened: old news
        recent = self._recent
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.opens += 1
        self._recent.clear()

    def retry_after(self, now: float) -> float:
        """Return the seconds until this breaker may let a request through again."""
        if self.state is BreakerState.OPEN:
            return max(self.opened_at + self.cooloff - now, 0.0)
        return 0.0 if not self._probing else min(self.cooloff, 1.0)

    def idle(self, now: float) -> bool:
        """Tell whether forgetting this breaker loses nothing: closed, no recent failure."""
        if self.state is not BreakerState.CLOSED:
            return False
        return not self._recent or self._recent[-1] <= now - self.window

    def describe(self, now: float) -> dict:
        recent = sum(1 for moment in self._recent if moment > now - self.window)
        return {"state": self.state.value, "failures": recent, "opens": self.opens,
                "retry_in_s": round(self.retry_after(now), 3)}  # fmt: skip


class Breakers:
    """One breaker per destination node, made on first use, at most ``capacity`` of them."""

    def __init__(self, failures: int, window: float, cooloff: float,
                 capacity: int = MAX_BREAKERS) -> None:  # fmt: skip
        self.failures, self.window, self.cooloff = failures, window, cooloff
        self.capacity = capacity
        self.by_node: dict[str, CircuitBreaker] = {}
        self.opens = 0  # every breaker's, forgotten ones too

    def configure(self, failures: int, window: float, cooloff: float) -> None:
        """Take new thresholds (a reload): every breaker keeps its state."""
        self.failures, self.window, self.cooloff = failures, window, cooloff
        for breaker in self.by_node.values():
            breaker.failures, breaker.window, breaker.cooloff = failures, window, cooloff

    def admit(self, node: str, now: float) -> Admission:
        """Return the admission of a request to ``node``."""
        breaker = self.by_node.get(node)
        if breaker is None:
            return Admission.PASS  # made when the first failure is recorded
        return breaker.admit(now)

    def record(self, node: str, admission: Admission, verdict: bool | None, now: float) -> None:
        """Take the end of a request to ``node`` that ``admit`` let through."""
        breaker = self.by_node.get(node)
        if breaker is None:
            if verdict is not False:
                return  # a success of a node never failing: nothing to keep
            breaker = self._make(node, now)
            if breaker is None:
                return
        before = breaker.opens
        breaker.record(admission, verdict, now)
        self.opens += breaker.opens - before

    def _make(self, node: str, now: float) -> CircuitBreaker | None:
        if len(self.by_node) >= self.capacity:
            for idle in [key for key, value in self.by_node.items() if value.idle(now)]:
                del self.by_node[idle]
            if len(self.by_node) >= self.capacity:
                return None  # every one of them is busy failing: this node goes unwatched
        breaker = self.by_node[node] = CircuitBreaker(self.failures, self.window, self.cooloff)
        return breaker

    def retry_after(self, nodes: Iterable[str], now: float) -> float:
        """Return the soonest any of ``nodes`` may be asked again (seconds)."""
        waits = [self.by_node[n].retry_after(now) for n in nodes if n in self.by_node]
        return min(waits, default=0.0)

    def describe(self, now: float, name_of: Callable[[str], str | None]) -> dict[str, dict]:
        return {node: {"name": name_of(node), **breaker.describe(now)}
                for node, breaker in sorted(self.by_node.items())}  # fmt: skip


# -- bulkheads -------------------------------------------------------------------------------


class Bulkhead:
    """The requests one app runs here at once, at most ``limit``; the rest are refused."""

    __slots__ = ("limit", "in_use", "rejected")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.rejected = 0

    def enter(self) -> bool:
        """Take a place, or count a refusal and return False."""
        if self.in_use >= self.limit:
            self.rejected += 1
            return False
        self.in_use += 1
        return True

    def leave(self) -> None:
        """Give back a place ``enter`` took."""
        self.in_use -= 1

    def describe(self) -> dict:
        return {"in_use": self.in_use, "limit": self.limit, "rejected": self.rejected}


# -- the settings and the node's set of policies ---------------------------------------------


@dataclass(frozen=True, slots=True)
class AppPolicy:
    """The policies of one app: its defaults with its overrides."""

    timeout: float | None  # None: the node's --request-timeout
    retries: int
    retry_methods: frozenset[str]
    bulkhead: int


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Every policy's figures: the node's defaults and the overrides per app."""

    retries: int = DEFAULT_RETRIES
    retry_methods: tuple[str, ...] = DEFAULT_RETRY_METHODS
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_window: float = DEFAULT_BREAKER_WINDOW
    breaker_cooloff: float = DEFAULT_BREAKER_COOLOFF
    bulkhead: int = DEFAULT_BULKHEAD
    app_timeouts: Mapping[str, float] = field(default_factory=dict)
    app_retries: Mapping[str, int] = field(default_factory=dict)
    app_bulkheads: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("retries", self.retries), *self.app_retries.items()):
            if not 0 <= value <= MAX_RETRIES:
                raise ConfigError(f"retries of {name}: {value} is not 0 to {MAX_RETRIES}")
        for name, value in (("bulkhead", self.bulkhead), ("breaker_failures",
                            self.breaker_failures), *self.app_bulkheads.items()):  # fmt: skip
            if value < 1:
                raise ConfigError(f"{name}: {value} must be at least 1")
        for name, value in (("breaker_window", self.breaker_window),
                            ("breaker_cooloff", self.breaker_cooloff),
                            *self.app_timeouts.items()):  # fmt: skip
            if not value > 0:
                raise ConfigError(f"{name}: {value} must be a positive number of seconds")

    def for_app(self, app: str) -> AppPolicy:
        """Return ``app``'s policies: an override where one is set, else the default."""
        return AppPolicy(self.app_timeouts.get(app), self.app_retries.get(app, self.retries),
                         frozenset(self.retry_methods),
                         self.app_bulkheads.get(app, self.bulkhead))  # fmt: skip

    def describe(self) -> dict:
        defaults = {"retries": self.retries, "retry_methods": list(self.retry_methods),
                    "bulkhead": self.bulkhead,
                    "breaker": {"failures": self.breaker_failures,
                                "window_s": self.breaker_window,
                                "cooloff_s": self.breaker_cooloff}}  # fmt: skip
        apps: dict[str, dict] = {}
        for key, overrides in (("timeout_s", self.app_timeouts), ("retries", self.app_retries),
                               ("bulkhead", self.app_bulkheads)):  # fmt: skip
            for app, value in overrides.items():
                apps.setdefault(app, {})[key] = value
        return {"defaults": defaults, "apps": dict(sorted(apps.items()))}


def policy_settings(config) -> PolicySettings:
    """Return the policy figures of a ``NodeConfig``."""
    return PolicySettings(
        retries=config.retries, retry_methods=tuple(config.retry_methods),
        breaker_failures=config.breaker_failures, breaker_window=config.breaker_window,
        breaker_cooloff=config.breaker_cooloff, bulkhead=config.bulkhead,
        app_timeouts=dict(config.app_timeouts), app_retries=dict(config.app_retries),
        app_bulkheads=dict(config.app_bulkheads),
    )  # fmt: skip


#: What the retry counters count (shown under /_xio/node "policy", "retries").
RETRY_COUNTS = ("retried", "recovered", "exhausted", "unsafe", "streamed")


class Policies:
    """A node's policies: its settings, breakers per destination, bulkheads per app here."""

    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings = settings or PolicySettings()
        self.breakers = Breakers(settings.breaker_failures, settings.breaker_window,
                                 settings.breaker_cooloff)  # fmt: skip
        self.bulkheads: dict[str, Bulkhead] = {}
        self._retry_policies: dict[str, RetryPolicy] = {}  # per app: one per request is waste
        # retried: attempts after the first; recovered: requests answered after a retry;
        # exhausted: retried and failed all the same; unsafe: lost on the way and not sent
        # again, for their method may not run twice; streamed: not sent again, for their
        # body was streamed.
        self.retries: Counter[str] = Counter({name: 0 for name in RETRY_COUNTS})

    def configure(self, settings: PolicySettings) -> None:
        """Take new settings (a reload); breakers and bulkheads keep what they hold."""
        self.settings = settings
        self._retry_policies.clear()
        self.breakers.configure(settings.breaker_failures, settings.breaker_window,
                                settings.breaker_cooloff)  # fmt: skip
        for app, bulkhead in self.bulkheads.items():
            bulkhead.limit = settings.for_app(app).bulkhead

    def retry_policy(self, app: str, retries: int | None = None) -> RetryPolicy:
        """Return the retry policy of a request for ``app`` (``retries``: the call's own)."""
        known = self._retry_policies.get(app)
        if known is None:
            policy = self.settings.for_app(app)
            known = RetryPolicy(1 + policy.retries, policy.retry_methods)
            if len(self._retry_policies) < MAX_BREAKERS:  # apps come from peers' records
                self._retry_policies[app] = known
        return known if retries is None else RetryPolicy(1 + retries, known.methods)

    def timeout(self, app: str) -> float | None:
        """Return ``app``'s own default timeout, or None for the node's."""
        return self.settings.app_timeouts.get(app)

    def bulkhead(self, app: str) -> Bulkhead:
        """Return the bulkhead of ``app`` (hosted here), made on its first request."""
        bulkhead = self.bulkheads.get(app)
        if bulkhead is None:
            bulkhead = self.bulkheads[app] = Bulkhead(self.settings.for_app(app).bulkhead)
        return bulkhead

    def describe(self, now: float, name_of: Callable[[str], str | None]) -> dict:
        """Return the settings and the state of every policy (``/_xio/node`` "policy")."""
        return {
            **self.settings.describe(),
            "retries": dict(self.retries),
            "breakers": self.breakers.describe(now, name_of),
            "breaker_opens": self.breakers.opens,
            "bulkheads": {app: b.describe() for app, b in sorted(self.bulkheads.items())},
        }


def verdict_of(outcome: Outcome) -> bool | None:
    """Return what ``outcome`` tells a breaker: success, failure, or nothing."""
    return _VERDICT[outcome]


def parse_retries(raw: str) -> int:
    """Return the count of ``X-Xio-Retries: N``, or raise ``BadRequest`` naming the rule."""
    text = raw.strip()
    if not (text.isdigit() and text.isascii() and int(text) <= MAX_RETRIES):
        raise BadRequest(f"{RETRIES_HEADER} must be a whole number from 0 to {MAX_RETRIES}")
    return int(text)


def parse_methods(text: str) -> tuple[str, ...]:
    """Return the methods of ``GET,PUT,...`` (upper-cased, sorted); ValueError if malformed."""
    methods = {part.strip().upper() for part in text.split(",") if part.strip()}
    if not methods or any(not set(method) <= _METHOD_CHARS for method in methods):
        raise ValueError(f"{text!r}: expected methods separated by commas, e.g. GET,HEAD,PUT")
    return tuple(sorted(methods))


def retry_after_header(seconds: float) -> str:
    """Return a ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
