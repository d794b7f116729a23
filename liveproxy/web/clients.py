"""Who a request comes from, for per-client limits: its IP, seen through trusted proxies only.

The client is the socket's peer; only when that peer is in ``TRUSTED_PROXIES`` is
``X-Forwarded-For`` read, right to left, and the first address that is not itself a trusted
proxy taken. From any other peer the header changes nothing (it is the client's to forge).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from liveproxy.config import IPNetwork


def client_ip(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[IPNetwork, ...]
) -> str:
    """The client's address: ``peer``, or what trusted proxies say they forwarded for.

    ``forwarded_for`` holds the ``X-Forwarded-For`` header values in order. A malformed entry
    ends the walk: the last address known to be good (a trusted proxy's) is the client.
    """
    if peer is None:
        return "unknown"
    if not is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        if not _is_ip(hop):
            break
        client = hop
        if not is_trusted(hop, trusted):
            break
    return client


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    """Whether ``address`` is in one of the ``trusted`` networks (False if not an address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def short_hash(text: str, chars: int) -> str:
    """The first ``chars`` hex digits of ``text``'s SHA-256 (any ``str``, lone surrogates too)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:chars]


def client_hash(client: str) -> str:
    """A short stable name of a client (an address, or ``sub:<hash>``) for logs: never the
    address itself (12 hex chars of its SHA-256)."""
    return short_hash(client, 12)
