"""Which database URL applies, its normal forms, and its redaction: decided here only.

The order, the same for the library and the CLI: an explicit URL (`connect(url)`,
`--database`), then `FLOWLEDGER_URL`, then `DATABASE_URL`. An empty variable counts as
unset. Nothing here ever falls back to the embedded server: callers ask for it by name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import psycopg

from flowledger.errors import InvalidInput

__all__ = [
    "ENV_VARIABLES",
    "ResolvedURL",
    "redact",
    "resolve",
    "scrub",
    "to_libpq_url",
    "to_yoyo_url",
    "validate",
]

# In order of precedence, after an explicit URL.
ENV_VARIABLES = ("FLOWLEDGER_URL", "DATABASE_URL")

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_EXPECTED = "expected postgresql://user:password@host:port/dbname"
_QUOTED = re.compile(r'"[^"]*"')
_QUERY_PASSWORD = re.compile(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|[^&\s]*)")


@dataclass(frozen=True)
class ResolvedURL:
    """A configured URL and where it came from (`url argument`, an env variable...)."""

    url: str
    source: str

    def __repr__(self) -> str:
        return f"ResolvedURL(url={redact(self.url)!r}, source={self.source!r})"


def resolve(
    explicit: str | None,
    *,
    source: str = "url argument",
    environ: Mapping[str, str] | None = None,
) -> ResolvedURL | None:
    """The URL that applies (explicit, `FLOWLEDGER_URL`, `DATABASE_URL`), or None."""
    if explicit:
        return ResolvedURL(explicit, source)
    env = os.environ if environ is None else environ
    for name in ENV_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return ResolvedURL(value, name)
    return None


def to_libpq_url(url: str) -> str:
    """The URL with the plain libpq scheme psycopg wants."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def to_yoyo_url(url: str) -> str:
    """The URL with the driver in the scheme, as yoyo needs: `postgresql+psycopg://`."""
    return "postgresql+psycopg://" + validate(url).partition("://")[2]


def validate(url: str) -> str:
    """The libpq form of `url`; InvalidInput (naming `url`, never the password) when malformed."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise InvalidInput(f"malformed database URL {redact(url)!r}: {_EXPECTED}")
    libpq = to_libpq_url(url)
    problem = None
    try:
        params = psycopg.conninfo.conninfo_to_dict(libpq)
    except psycopg.Error as exc:
        # libpq quotes the offending part of the URL, which may be a piece of a password
        # the parser could not delimit: the reason is kept, the quotation is not.
        problem = scrub(_QUOTED.sub('"..."', str(exc).strip().splitlines()[0]), url)
    except UnicodeDecodeError:
        problem = "a percent-encoded part is not valid UTF-8"
    if problem is not None:
        # Raised outside the handler so that no exception holds the raw text, even as
        # its __context__.
        raise InvalidInput(f"malformed database URL {redact(url)!r}: {problem}")
    for port in str(params.get("port") or "").split(","):
        if port and not port.strip().isdigit():
            raise InvalidInput(f"malformed database URL {redact(url)!r}: the port is not a number")
    return libpq


def redact(url: str) -> str:
    """The URL with every password (user info or `password=` parameter) replaced by ***."""
    return scrub(url, url)


def scrub(text: str, url: str | None) -> str:
    """`text` (an error message, say) with every password found in `url` replaced by ***."""
    if not url:
        return text
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _QUERY_PASSWORD.sub("password=***", text)


def _secrets(url: str) -> set[str]:
    # Deliberately generous: a malformed URL is exactly when the parser cannot be trusted
    # to say where the password ends, so everything between "user:" and the last "@"
    # counts as secret, raw and percent-decoded.
    found: set[str] = set()
    _, sep, rest = url.partition("://")
    if sep:
        at = rest.rfind("@")
        if at > 0 and ":" in rest[:at]:
            found.add(rest[:at].split(":", 1)[1])
    for match in _QUERY_PASSWORD.finditer(url):
        found.add(match.group(1).strip("'"))
    found |= {unquote(s) for s in found}
    return {s for s in found if s}
