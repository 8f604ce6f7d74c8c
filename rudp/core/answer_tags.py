"""Answer tags: how a keyed client believes a server that answers without a handshake
(specs/protocol.md section 6.8.1).

A server answers some SYNs statelessly, before any Noise keys exist: a RESET when a cap
refuses it (section 13.4-5) and a RETRY when it wants the client's address validated
(section 6.2.1).  Nothing in those answers authenticates by itself, so with a key a client
used to drop the RESET (and hang until ``peer_timeout`` instead of hearing "refused") and
had to follow any RETRY (a stranger who saw the SYN could make the handshake fail with one
datagram).  An answer tag closes both: a truncated HMAC-SHA256 under a key derived from the
PSK, over the client's own Noise message, which is fresh per connection (its ephemeral
key).  Only a holder of the PSK can make one; it fits only the SYN it answers, so it
cannot be replayed to another connection; and it costs the server one HMAC, no
Diffie-Hellman, so refusing or retrying a flood of SYNs stays cheap.  QUIC's Retry
integrity tag (RFC 9001 section 5.8) protects a RETRY the same way against off-path
forgery; a PSK lets us make it a real authenticator.
"""

from __future__ import annotations

import hashlib
import hmac

from rudp.core.tokens import tokens_equal
from rudp.core.wire import ANSWER_TAG_SIZE, RETRY_TOKEN_SIZE, TAGGED_RETRY_SIZE, VERSION

__all__ = ["AnswerTags"]

_REFUSAL_LABEL = b"rudp/%d refusal tag key" % VERSION
_RETRY_LABEL = b"rudp/%d retry tag key" % VERSION


class AnswerTags:
    """The answer tags of one PSK: the server makes them, the client checks them."""

    __slots__ = ("_refusal_key", "_retry_key")

    def __init__(self, psk: bytes) -> None:
        # One key per kind of answer, so a refusal tag can never pass for a retry tag.
        self._refusal_key = hmac.digest(psk, _REFUSAL_LABEL, hashlib.sha256)
        self._retry_key = hmac.digest(psk, _RETRY_LABEL, hashlib.sha256)

    def refusal(self, noise_message: bytes) -> bytes:
        """The token of a RESET refusing the SYN that carried ``noise_message``."""
        return hmac.digest(self._refusal_key, noise_message, hashlib.sha256)[:ANSWER_TAG_SIZE]

    def retry(self, noise_message: bytes, token: bytes) -> bytes:
        """The tag after ``token`` in a RETRY answering the SYN that carried ``noise_message``."""
        mac = hmac.digest(self._retry_key, noise_message + token, hashlib.sha256)
        return mac[:ANSWER_TAG_SIZE]

    def is_refusal(self, payload: bytes, noise_message: bytes) -> bool:
        """``payload`` (a RESET's) is the refusal tag of ``noise_message``."""
        return tokens_equal(payload, self.refusal(noise_message))

    def retry_token(self, payload: bytes, noise_message: bytes) -> bytes | None:
        """The retry token of a RETRY ``payload`` whose tag fits ``noise_message``, or None
        (an untagged RETRY, or one whose tag does not verify)."""
        if len(payload) != TAGGED_RETRY_SIZE:
            return None
        token, tag = payload[:RETRY_TOKEN_SIZE], payload[RETRY_TOKEN_SIZE:]
        return bytes(token) if tokens_equal(tag, self.retry(noise_message, token)) else None
