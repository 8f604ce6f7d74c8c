"""``EndpointStats``: the counters of one ``rudp.core.endpoint.Endpoint``.

Their own module so the endpoint's helpers (``rudp.core.stateless_reset``,
``rudp.core.migration``) count into them without importing the endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EndpointStats"]


@dataclass(slots=True)
class EndpointStats:
    """Counters of one endpoint (connection-level counters live in each core's ``stats``)."""

    datagrams_received: int = 0
    """Every datagram handed to ``receive_datagram``."""
    datagrams_sent: int = 0
    """Datagrams returned by ``datagrams_to_send``."""
    bad_datagrams: int = 0
    """Failed ``wire.decode`` (length, checksum, version, type, flags)."""
    unknown_connection: int = 0
    """Valid packet for no live connection (or a SYN while not accepting)."""
    stateless_resets_sent: int = 0
    """Stateless resets sent in answer to a packet for an unknown id (section 6.6.2)."""
    stateless_resets_suppressed: int = 0
    """Stateless resets owed but withheld by the rate limit."""
    stateless_resets_routed: int = 0
    """Received stateless resets handed to the connection whose peer id they name
    (its core checks the token)."""
    wrong_address: int = 0
    """Packet from another address than its connection's peer that could not move it:
    dropped before the handshake finished (RFC 9000 section 9), or processed without
    moving it in a state that allows no path validation (TIME_WAIT)."""
    migrations: int = 0
    """Connections moved to a new peer address (section 6.7), returns excluded."""
    nat_rebindings: int = 0
    """Of ``migrations``, those where only the port changed (RFC 9000 section 9.4)."""
    migrations_reverted: int = 0
    """Connections moved back to their validated address before the new one was
    validated (a packet with a newer number came from it)."""
    paths_validated: int = 0
    """New addresses that echoed our PATH_CHALLENGE."""
    path_validations_failed: int = 0
    """New addresses that did not: the connection went back to its validated address."""
    amplification_held: int = 0
    """Datagrams held back by the anti-amplification limit (three times the bytes
    received from an unvalidated address, RFC 9000 section 8.1)."""
    amplification_dropped: int = 0
    """Held datagrams dropped (the hold was full, or the path failed validation)."""
    syn_refused: int = 0
    """SYN dropped because the backlog was full (of validated or established connections;
    nothing is evicted for it, but with ``retry="never"``)."""
    syn_refused_limit: int = 0
    """SYN refused because the endpoint holds ``Config.max_connections`` connections or
    its receivers' shared ``max_buffered_bytes`` is used up (answered with a RESET)."""
    syn_unauthenticated: int = 0
    """SYNs the new connection refused at once (with ``Config.psk``: a Noise message that
    did not authenticate, section 6.8-1): no state is kept for them."""
    half_open_evicted: int = 0
    """Handshaking connections aborted to make room for a new SYN (``retry="never"`` only)."""
    retries_sent: int = 0
    """RETRYs sent, statelessly, in answer to SYNs without a token (section 6.2.1)."""
    retry_tokens_invalid: int = 0
    """SYNs whose retry token was forged, expired, or for another address or client id."""
    addresses_validated: int = 0
    """Server connections created by a SYN with a valid retry token."""
    connections_opened: int = 0
    """Client connections made with ``connect``."""
    connections_created: int = 0
    """Server connections created by a SYN."""
    connections_removed: int = 0
    """Connections that terminated and left the routing tables."""
