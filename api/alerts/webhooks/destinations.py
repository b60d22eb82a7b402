"""Where webhooks may be sent: public addresses only, unless a private network is allowed in the settings.

A webhook URL is chosen by whoever holds a `subscriptions:manage` key, and citywatch POSTs to it from
inside the city's network. Without a check, a subscription could make citywatch reach loopback services,
the cloud metadata endpoint (169.254.169.254, metadata.google.internal) or any host of the internal
network (server-side request forgery). So a destination is refused when any address its host resolves
to is loopback, private, link-local, shared (carrier-grade NAT), reserved or unspecified, unless that
address lies in `alerts.webhooks.allowed_private_networks` (for on-premises receivers).

The check runs twice: when a subscription is created or its URL changed (`check_url`, answered with
a 422), and at every delivery (`GuardedResolver`), because DNS can change after the subscription was
accepted. At delivery the connection goes only to an address that was checked: the resolver hands
aiohttp the checked addresses, and a URL with a literal IP address is checked before the request.
Redirects are never followed (the dispatcher sets `allow_redirects=False`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names of cloud metadata services, refused whatever they resolve to.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SETTING = "alerts.webhooks.allowed_private_networks"


class DestinationRefused(OSError):
    """A webhook destination that citywatch will not connect to; the message says which address and why.

    An OSError, so that aiohttp reports it from the resolver as a connection error carrying it."""


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as one stands for (`10.0.0.1`, `[::1]`, `fe80::1%eth0`); None for a
    name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _kind(address: IPAddress) -> str | None:
    """What makes the address non-public, or None for a public address."""
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved or shared address, not a public one"
    return None


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address (::ffff:127.0.0.1 is loopback)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


class DestinationPolicy:
    def __init__(self, allowed_private_networks: Sequence[IPNetwork] = ()) -> None:
        self.allowed = tuple(allowed_private_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """What makes this address refused (e.g. "a loopback address"), or None when a webhook may
        connect to it."""
        inner = _embedded_ipv4(address)
        kind = _kind(inner)
        if kind is None or any(inner in network or address in network for network in self.allowed):
            return None
        return kind

    def check_addresses(self, host: str, addresses: Sequence[str]) -> None:
        """Raise DestinationRefused when any address the host resolved to is refused (a host that mixes
        public and private answers is a DNS-rebinding pattern, not a receiver)."""
        literal = literal_address(host)
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            kind = self.refusal(address)
            if kind is not None:
                where = host.strip("[]") if literal == address else f"{host} resolves to {text}, which"
                raise DestinationRefused(f"webhook destination refused: {where} is {kind}; allow its "
                                         f"network in {SETTING} for an on-premises receiver")

    def check_host_name(self, host: str) -> None:
        if host.rstrip(".").lower() in METADATA_HOSTS:
            raise DestinationRefused(f"webhook destination refused: {host} is a cloud metadata service")

    def check_url(self, url: str) -> None:
        """At creation: resolve the URL's host now and check every address (raises DestinationRefused)."""
        parsed = urlparse(url)
        host = parsed.hostname or ""
        self.check_host_name(host)
        literal = literal_address(host)
        if literal is not None:
            self.check_addresses(host, [str(literal)])
            return
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError as exc:
            raise DestinationRefused(f"webhook destination refused: {exc}") from exc
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise DestinationRefused(f"webhook destination refused: the host {host} does not resolve "
                                     f"({exc})") from exc
        self.check_addresses(host, [str(info[4][0]) for info in infos])


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, with every answer checked against the policy before a connection is made."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner if inner is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.policy.check_host_name(host)
        results = await self.inner.resolve(host, port, family)
        self.policy.check_addresses(host, [result["host"] for result in results])
        return results

    async def close(self) -> None:
        await self.inner.close()
