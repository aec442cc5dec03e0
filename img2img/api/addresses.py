"""Which network addresses a job may make the cluster talk to: one rule for image fetches and webhooks.

A job's URLs (an ``https://`` init image, a webhook) are requests our pods send on the user's behalf; they must not
reach into the cluster or the cloud's metadata service. ``address_refusal`` says why an IP address is refused;
the runner applies it to every address a name resolves to before it connects (``img2img_runner.fetch``), as the
operator does before it POSTs a webhook (``img2img_operator.webhooks``); ``url_refusal`` checks a URL offline, for
what can be checked without a lookup (a job's ``webhook``, a gateway request's ``s3Config.endpointUrl``).

Where every address is trusted (``allow_private``: a receiver inside the cluster, the local stack's loopback), a
URL may also be plain http and name any address; the operator's ``webhooks.allowPrivateAddresses`` and the
gateway's ``allowPrivateAddresses`` say so, and are off by default.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

URL_MAX = 2048

# Public addresses that are a cloud's own infrastructure, reachable from every VM: never a user's image server.
CLOUD_INFRASTRUCTURE = {
    ipaddress.IPv4Address("168.63.129.16"): "Azure's wire server (VM agent and DNS)",
}
# IPv6 forms that carry an IPv4 address: a connection to one reaches (through a translator or relay) that IPv4
# address, so the IPv4 rules decide. The IPv4-compatible form (::a.b.c.d) is deprecated; ::, ::1 are not it.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix; the local-use 64:ff9b:1::/48 is private
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """(which form, the IPv4 address) when ``ip`` carries one."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None


def address_refusal(address: str) -> str | None:
    """Why a connection to this IP address is refused, or None when it is a public address.

    Decided by explicit rules rather than ``is_global`` alone, whose tables change between Python versions.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, inner = embedded
            why = address_refusal(str(inner))
            return f"{inner} in {form} form, {why}" if why else None
        if ip.is_site_local:
            return "a site-local address (fec0::/10)"
    if ip in CLOUD_INFRASTRUCTURE:
        return CLOUD_INFRASTRUCTURE[ip]
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a non-public address"
    return None


def url_refusal(url: str, allow_private: bool = False) -> str | None:
    """Why a URL a job gives us to call is refused before any lookup, or None.

    https only, a host, no credentials in the URL, a valid port; a literal IP address must be public, and
    ``localhost`` names are refused. A name's addresses are checked where it is resolved, just before connecting.
    ``allow_private``: http too, and any address.
    """
    if len(url) > URL_MAX:
        return f"is longer than {URL_MAX} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in (("https", "http") if allow_private else ("https",)):
        return "must be an http:// or https:// URL" if allow_private else "must be an https:// URL"
    host = parts.hostname
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    if port == 0:
        return "has port 0"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host!r} is a loopback name; refused"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name: checked when it is resolved
    why = address_refusal(host)
    return f"{host} is {why}; refused" if why else None
