"""Secrets kept out of log lines, error messages and command output.

Passwords and tokens live in `SecretStr` settings, which print as `**********`. What remains are URLs:
one written with credentials (`http://user:password@influx:8086`), or with a token in its query string,
and error messages of HTTP clients that quote the URL they failed on. Every URL that is logged, printed
or put into an error goes through `redact_url` (or, inside free text, `redact_urls`).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

REDACTED: Final = "***"
# Query parameters that carry credentials (InfluxDB v1 takes `u` and `p`).
SECRET_QUERY_PARAMS: Final = frozenset({
    "p", "password", "pass", "passwd", "pwd", "token", "access_token", "auth", "authorization", "secret",
    "key", "api_key", "apikey", "sig", "signature",
})
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """The URL with its user info and credential query parameters replaced by ***.

    `mqtt://ingest:s3cret@broker:1883` -> `mqtt://***@broker:1883`; the host, port and path stay, so the
    message still says where the connection went."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL that cannot be parsed>"
    try:
        _ = parts.port
    except ValueError:
        # Not a number: maybe a password, as in mqtt://user:password with the @host forgotten.
        host = parts.netloc.rpartition("@")[2].partition(":")[0]
        return urlunsplit((parts.scheme, f"{host}:{REDACTED}", parts.path, "", ""))
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() in SECRET_QUERY_PARAMS for name, _ in pairs):
            query = urlencode([(name, REDACTED if name.lower() in SECRET_QUERY_PARAMS else value)
                               for name, value in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_urls(text: str) -> str:
    """Free text (an exception message) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def without_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without user info, the user name, the password), the last two percent-decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    return (urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)),
            unquote(user) or None, unquote(password) if has_password else None)
