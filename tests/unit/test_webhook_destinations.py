"""The webhook destination policy on its own: which addresses are refused and why, what an allowed
network opens, and the resolver that checks every answer before aiohttp connects."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from api.alerts.webhooks.destinations import DestinationPolicy, DestinationRefused, GuardedResolver


@pytest.mark.parametrize(("address", "kind"), [
    ("93.184.216.34", None),
    ("2606:4700::1111", None),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fd00::1", "a private address"),
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("169.254.169.254", "a link-local address (cloud metadata services live there)"),
    ("fe80::1", "a link-local address (cloud metadata services live there)"),
    ("100.64.0.1", "a reserved or shared address, not a public one"),
    ("224.0.0.1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("::ffff:10.0.0.1", "a private address"),  # IPv4-mapped
    ("64:ff9b::7f00:1", "a loopback address"),  # NAT64 of 127.0.0.1
])
def test_what_is_refused_by_default(address: str, kind: str | None) -> None:
    assert DestinationPolicy().refusal(ipaddress.ip_address(address)) == kind


def test_an_allowed_network_opens_that_network_only() -> None:
    policy = DestinationPolicy([ipaddress.ip_network("10.20.0.0/16")])
    assert policy.refusal(ipaddress.ip_address("10.20.1.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:10.20.1.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.21.0.1")) == "a private address"
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) == "a loopback address"


@pytest.mark.parametrize(("url", "said"), [
    ("http://127.1/hook", "127.1 resolves to 127.0.0.1, which is a loopback address"),
    ("http://metadata.google.internal./", "metadata.google.internal. is a cloud metadata service"),
    ("https://[fe80::1]/hook", "fe80::1 is a link-local address"),
    ("http://no-such-host.invalid/hook", "the host no-such-host.invalid does not resolve"),
])
def test_urls_are_checked_by_what_their_host_resolves_to(url: str, said: str) -> None:
    with pytest.raises(DestinationRefused, match="webhook destination refused") as refused:
        DestinationPolicy().check_url(url)
    assert said in str(refused.value)


def test_the_resolver_refuses_a_private_answer_and_passes_an_allowed_one() -> None:
    async def resolve(policy: DestinationPolicy) -> list[str]:
        resolver = GuardedResolver(policy)
        try:
            return [result["host"] for result in await resolver.resolve("localhost", 80)]
        finally:
            await resolver.close()

    with pytest.raises(DestinationRefused, match=r"localhost resolves to 127\.0\.0\.1, which is a loopback"):
        asyncio.run(resolve(DestinationPolicy()))
    allowed = DestinationPolicy([ipaddress.ip_network("127.0.0.0/8")])
    assert asyncio.run(resolve(allowed)) == ["127.0.0.1"]
