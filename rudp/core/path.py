"""Path validation, the connection's part (specs/protocol.md section 6.7; RFC 9000 section 8.2).

``PathValidator`` is a component of ``rudp.core.connection.SansIOConnection``, like
``Opening`` for the handshake.  The endpoint, which alone knows addresses, starts it
when the peer appears at a new address (``start``); the validator then sends a
PATH_CHALLENGE carrying 8 unpredictable bytes from the connection's injected random
source, resends it on a probe-timeout timer and gives up after three times the
larger of the current PTO and the initial one (RFC 9000 section 8.2.4).  A
PATH_RESPONSE echoing the outstanding bytes validates the path.  Independently, it
answers every PATH_CHALLENGE the peer sends with one PATH_RESPONSE echoing its bytes
(RFC 9000 section 8.2.2).

Memory is bounded: at most ``MAX_CHALLENGES`` challenges of the current validation are
remembered, and at most ``MAX_OWED_RESPONSES`` responses owed at once (a peer flooding
challenges gets the newest ones answered).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable
from typing import Final

from rudp.config import Config
from rudp.core.recovery import RttEstimator
from rudp.core.state import Input, StateMachine
from rudp.core.wire import PATH_DATA_SIZE, PacketType

__all__ = [
    "MAX_CHALLENGES",
    "MAX_OWED_RESPONSES",
    "VALIDATION_TIMEOUT_PTOS",
    "PathState",
    "PathValidator",
]

MAX_OWED_RESPONSES: Final = 4
"""PATH_RESPONSEs queued at once; older owed ones are forgotten (RFC 9000 section 8.2.2
asks for one response per challenge, and the newest is the one the peer waits for)."""

MAX_CHALLENGES: Final = 8
"""Challenges of one validation remembered: a response to any of them validates (RFC
9000 section 8.2.3), so a late answer on a slow path is not wasted.  The give-up
deadline allows about three transmissions, so eight is never reached in practice."""

VALIDATION_TIMEOUT_PTOS: Final = 3
"""A validation is abandoned after this many times max(current PTO, initial PTO)
(RFC 9000 section 8.2.4: the new path may have a longer round trip than the old one)."""


class PathState(enum.Enum):
    """Where the latest path validation stands."""

    IDLE = "idle"
    """No validation was ever started."""
    VALIDATING = "validating"
    """A challenge is outstanding."""
    VALIDATED = "validated"
    """The peer echoed the latest challenge."""
    FAILED = "failed"
    """The latest challenge went unanswered until the give-up deadline."""


Encode = Callable[[PacketType, float, bytes], bytes]
"""``encode(type, now, payload)``: the connection's encoder of a control packet."""


class PathValidator:
    """One connection's PATH_CHALLENGE / PATH_RESPONSE state (see the module docs)."""

    __slots__ = (
        "_challenge",
        "_challenge_due",
        "_challenges",
        "_config",
        "_give_up_at",
        "_owed",
        "_retransmit_at",
        "_rng",
        "_rtt",
        "_sm",
        "_timeouts",
        "challenges_sent",
        "state",
        "validations",
    )

    def __init__(
        self, config: Config, rng: random.Random, machine: StateMachine, rtt: RttEstimator
    ) -> None:
        self._config = config
        self._rng = rng
        self._sm = machine
        self._rtt = rtt
        self._challenge: bytes | None = None
        self._challenge_due = False
        self._challenges: deque[bytes] = deque(maxlen=MAX_CHALLENGES)
        self._retransmit_at: float | None = None
        self._give_up_at: float | None = None
        self._timeouts = 0
        self._owed: deque[bytes] = deque(maxlen=MAX_OWED_RESPONSES)
        self.state = PathState.IDLE
        """The latest validation's outcome (``PathState``)."""
        self.validations = 0
        """Validations started (each ``start`` that was allowed)."""
        self.challenges_sent = 0
        """PATH_CHALLENGE transmissions, retransmissions included."""

    # --- the endpoint's calls ---------------------------------------------------------

    def start(self, now: float) -> bool:
        """Challenge the peer's (new) address.  False if the state allows no path packets.

        A validation already under way is replaced: RFC 9000 section 9.3 validates the
        address the peer was last seen at, and only the newest challenge is accepted.
        """
        if not self._sm.allows(Input.RECV_PATH_RESPONSE):
            return False  # section 6.7: only after the handshake and before TIME_WAIT
        self._challenges.clear()
        self._new_challenge()
        self._timeouts = 0
        pto = self._pto()
        self._retransmit_at = now + pto
        self._give_up_at = now + VALIDATION_TIMEOUT_PTOS * max(pto, self._config.initial_rto)
        self.state = PathState.VALIDATING
        self.validations += 1
        return True

    @property
    def deadline(self) -> float | None:
        """When ``on_timer`` must run next (a retransmission or the give-up), or None."""
        if self._challenge is None:
            return None
        retransmit, give_up = self._retransmit_at, self._give_up_at
        if retransmit is None or give_up is None:  # pragma: no cover - set together
            return None
        return retransmit if retransmit < give_up else give_up

    @property
    def has_output(self) -> bool:
        """A PATH_CHALLENGE or PATH_RESPONSE waits for ``flush``."""
        return self._challenge_due or bool(self._owed)

    # --- the connection's calls -------------------------------------------------------

    def on_challenge(self, data: bytes) -> None:
        """The peer challenges us: echo its bytes once (RFC 9000 section 8.2.2)."""
        self._owed.append(bytes(data))

    def on_response(self, data: bytes) -> bool:
        """A PATH_RESPONSE: True if it echoes the outstanding challenge (path validated).

        Any challenge of the current validation counts (RFC 9000 section 8.2.3); one of
        an earlier, replaced validation does not, nor one after the validation ended.
        """
        if self._challenge is None or bytes(data) not in self._challenges:
            return False
        self._stop()
        self.state = PathState.VALIDATED
        return True

    def on_timer(self, now: float) -> None:
        """Resend the challenge at its deadline, or give up (RFC 9000 section 8.2.4)."""
        if self._challenge is None:
            return
        give_up = self._give_up_at
        if give_up is not None and now >= give_up:
            self._stop()
            self.state = PathState.FAILED
            return
        retransmit = self._retransmit_at
        if retransmit is not None and now >= retransmit:
            # Fresh unpredictable data in every PATH_CHALLENGE (RFC 9000 section 8.2.1);
            # the wait doubles like the probe timeout's backoff (RFC 9002 section 6.2.1).
            self._new_challenge()
            self._timeouts += 1
            self._retransmit_at = now + self._pto() * (1 << min(self._timeouts, 16))

    def flush(self, now: float, out: list[bytes], encode: Encode) -> None:
        """Append the owed PATH_RESPONSEs and a due PATH_CHALLENGE to ``out``."""
        while self._owed:
            out.append(encode(PacketType.PATH_RESPONSE, now, self._owed.popleft()))
        if self._challenge_due and self._challenge is not None:
            self._challenge_due = False
            self.challenges_sent += 1
            out.append(encode(PacketType.PATH_CHALLENGE, now, self._challenge))

    # --- internals --------------------------------------------------------------------

    def _new_challenge(self) -> None:
        data = self._rng.getrandbits(8 * PATH_DATA_SIZE).to_bytes(PATH_DATA_SIZE, "big")
        self._challenge = data
        self._challenges.append(data)
        self._challenge_due = True

    def _pto(self) -> float:
        return self._rtt.pto_base(self._config.max_ack_delay)

    def _stop(self) -> None:
        self._challenge = None
        self._challenges.clear()
        self._challenge_due = False
        self._retransmit_at = None
        self._give_up_at = None
