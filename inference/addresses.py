"""Which network addresses a server-side fetch may reach: public unicast only, by default."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from inference.errors import BlockedAddressError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The ipaddress tables differ between Python releases; these ranges are refused on every one.
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in (
        *("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4"),
        *("fc00::/7", "fe80::/10", "fec0::/10"),  # unique local, link-local, old site-local
        *("169.254.169.254/32", "fd00:ec2::254/128"),  # cloud metadata, IPv4 and IPv6
        *("64:ff9b::/96", "64:ff9b:1::/48"),  # NAT64 reaches IPv4 hosts, private ones too
    )
)


def is_blocked_address(addr: IPAddress) -> bool:
    """True for any address that is not plainly public unicast."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return is_blocked_address(addr.ipv4_mapped)
        if addr.sixtofour is not None and is_blocked_address(addr.sixtofour):
            return True
    return (
        not addr.is_global
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local)
        or any(addr in net for net in _EXTRA_BLOCKED)
    )


@dataclass(frozen=True)
class AddressPolicy:
    """Which peer addresses a fetch may connect to."""

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_strings(cls, networks: Sequence[str]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(net, strict=False) for net in networks))

    def check(self, host: str, address: str) -> None:
        """Raise BlockedAddressError unless ``address`` is public or explicitly allowed."""
        try:
            addr = ipaddress.ip_address(address)
        except ValueError as exc:
            raise BlockedAddressError(f"{host} resolved to a non-IP answer {address!r}.") from exc
        plain = _unmapped(addr)
        if any(plain in net for net in self.allowed):
            return
        if is_blocked_address(plain):
            raise BlockedAddressError(f"{host} resolves to the blocked address {address}.")


def _unmapped(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) as the IPv4 address it carries."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr
