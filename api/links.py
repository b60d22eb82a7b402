"""Links people give citywatch (a photo of the work done, a citizen's picture): only web links are taken."""

from __future__ import annotations

from urllib.parse import urlparse


def http_url(value: str | None) -> str | None:
    """`value` when it is an http(s) URL with a host (or None); ValueError naming what was given."""
    if value is not None:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"must be an http(s) URL, got {value[:80]!r}")
    return value
