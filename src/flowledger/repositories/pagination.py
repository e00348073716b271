"""Keyset pagination: pages of rows and the opaque, tamper-evident cursors between them.

A cursor carries the sort key of the last row of a page. Its token is the URL-safe
base64 (unpadded) of ``version byte + msgpack payload + MAC``, where the MAC is
HMAC-SHA256 truncated to 16 bytes over the version, the scope and the payload. The
scope names the query, its sort order and a digest of its normalised filter values
(``listing_scope``), so a cursor from another listing, sort or set of filters fails the
MAC check just like an edited one.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import re
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Generic, TypeAlias, TypeVar

import msgspec

from flowledger.errors import InvalidCursor, InvalidInput, Unavailable

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_CURSOR_LENGTH",
    "MAX_PAGE_SIZE",
    "CursorCodec",
    "CursorValue",
    "FilterValue",
    "Page",
    "UnkeyedCodec",
    "check_limit",
    "listing_scope",
    "make_page",
]

T = TypeVar("T")

CursorValue: TypeAlias = (
    str | int | float | bool | datetime.datetime | uuid.UUID | datetime.date | None
)
# A filter is one value or, for set-valued filters (tags), a sequence of strings.
FilterValue: TypeAlias = CursorValue | Sequence[str]

MAX_PAGE_SIZE: Final = 500
DEFAULT_PAGE_SIZE: Final = 50
MAX_CURSOR_LENGTH: Final = 2048

_VERSION: Final = b"\x01"
_MAC_SIZE: Final = 16
_MIN_SECRET_SIZE: Final = 16
_TOKEN_ALPHABET: Final = re.compile(r"[A-Za-z0-9_-]+")
_MALFORMED: Final = "malformed cursor"
_FOREIGN: Final = "cursor is not valid for this listing: altered, or issued for another one"

# msgpack has no types for these; each gets an extension code of its own. Datetimes are
# stored as local wall-clock microseconds (+ the UTC offset when aware): exact, and valid
# for every datetime Python can hold.
_EXT_UUID: Final = 1
_EXT_NAIVE_DATETIME: Final = 2
_EXT_AWARE_DATETIME: Final = 3
_EXT_DATE: Final = 4
_EPOCH: Final = datetime.datetime(1970, 1, 1)
_MICROSECOND: Final = datetime.timedelta(microseconds=1)


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a listing and the cursor of the next page (None on the last page)."""

    items: list[T]
    next_cursor: str | None


class CursorCodec:
    """Turns keyset positions into signed opaque tokens and back."""

    __slots__ = ("_mac",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < _MIN_SECRET_SIZE:
            raise ValueError(f"the cursor secret must be at least {_MIN_SECRET_SIZE} bytes")
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)

    def encode(self, scope: str, values: Sequence[CursorValue]) -> str:
        """The token for ``values`` (the sort key of a row) in the listing ``scope``."""
        payload = _ENCODER.encode([_pack(value) for value in values])
        raw = _VERSION + payload + self._sign(scope, payload)
        token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        if len(token) > MAX_CURSOR_LENGTH:
            # decode() would refuse it: fail where the oversized sort key is chosen.
            raise ValueError(f"a cursor may not exceed {MAX_CURSOR_LENGTH} characters")
        return token

    def decode(self, token: str, scope: str, *, arity: int) -> tuple[CursorValue, ...]:
        """The ``arity`` key values in ``token``; raises InvalidCursor unless intact and ours."""
        raw = _unbase64(token)
        if len(raw) <= len(_VERSION) + _MAC_SIZE or raw[:1] != _VERSION:
            raise InvalidCursor(_MALFORMED)
        payload, mac = raw[1:-_MAC_SIZE], raw[-_MAC_SIZE:]
        if not hmac.compare_digest(mac, self._sign(scope, payload)):
            raise InvalidCursor(_FOREIGN)
        try:
            values = _DECODER.decode(payload)
        except (msgspec.DecodeError, ValueError, OverflowError, struct.error) as exc:
            raise InvalidCursor(_MALFORMED) from exc
        if not isinstance(values, list) or len(values) != arity:
            raise InvalidCursor(_FOREIGN)
        return tuple(values)

    def _sign(self, scope: str, payload: bytes) -> bytes:
        mac = self._mac.copy()
        scope_bytes = scope.encode()
        # The length prefix keeps (scope, payload) pairs from running into each other.
        mac.update(_VERSION + struct.pack(">I", len(scope_bytes)) + scope_bytes + payload)
        return mac.digest()[:_MAC_SIZE]


class UnkeyedCodec(CursorCodec):
    """The codec of a Database not opened yet: its key is read when it opens."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def encode(self, scope: str, values: Sequence[CursorValue]) -> str:
        """Never a token; raises Unavailable: the key is not known before open()."""
        raise Unavailable(_UNKEYED)

    def decode(self, token: str, scope: str, *, arity: int) -> tuple[CursorValue, ...]:
        """Never values; raises Unavailable: the key is not known before open()."""
        raise Unavailable(_UNKEYED)


_UNKEYED: Final = "the cursor key is read from the database when it opens: call open() first"


def listing_scope(listing: str, filters: Mapping[str, FilterValue]) -> str:
    """The scope of ``listing`` (name and sort) under these filter values, normalised
    (None = not filtered; sequences as sets; aware datetimes in UTC): the same filters,
    however spelled, give the same scope; any other value gives another."""
    normal = sorted((name, _normal(value)) for name, value in filters.items())
    return f"{listing}?{hashlib.sha256(_ENCODER.encode(normal)).hexdigest()}"


def _normal(value: FilterValue) -> object:
    if isinstance(value, str) or not isinstance(value, Sequence):
        if isinstance(value, datetime.datetime) and value.utcoffset() is not None:
            value = value.astimezone(datetime.UTC)
        return _pack(value)
    # Set-valued filters (tags_all, tags_any) mean the same in any order, with repeats.
    return [_pack(item) for item in sorted(set(value))]


def check_limit(limit: int) -> int:
    """``limit`` itself when it is a valid page size; raises InvalidInput otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInput(f"limit must be an integer, got {type(limit).__name__}")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    return limit


def make_page(
    rows: list[T],
    *,
    limit: int,
    key: Callable[[T], Sequence[CursorValue]],
    codec: CursorCodec,
    scope: str,
) -> Page[T]:
    """The page of ``rows`` fetched with ``LIMIT limit + 1`` (the extra row means "more")."""
    check_limit(limit)
    if len(rows) <= limit:
        return Page(items=rows, next_cursor=None)
    items = rows[:limit]
    return Page(items=items, next_cursor=codec.encode(scope, key(items[-1])))


def _pack(value: CursorValue) -> object:
    # datetime before date, its base class.
    if isinstance(value, datetime.datetime):
        local = (value.replace(tzinfo=None) - _EPOCH) // _MICROSECOND
        offset = value.utcoffset()
        if offset is None:
            return msgspec.msgpack.Ext(_EXT_NAIVE_DATETIME, struct.pack(">q", local))
        data = struct.pack(">qq", local, offset // _MICROSECOND)
        return msgspec.msgpack.Ext(_EXT_AWARE_DATETIME, data)
    if isinstance(value, datetime.date):
        return msgspec.msgpack.Ext(_EXT_DATE, struct.pack(">i", value.toordinal()))
    if isinstance(value, uuid.UUID):
        return msgspec.msgpack.Ext(_EXT_UUID, value.bytes)
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"a {type(value).__name__} cannot be part of a cursor")


def _unpack_ext(code: int, data: memoryview) -> object:
    if code == _EXT_UUID:
        return uuid.UUID(bytes=bytes(data))
    if code == _EXT_NAIVE_DATETIME:
        (local,) = struct.unpack(">q", data)
        return _EPOCH + local * _MICROSECOND
    if code == _EXT_AWARE_DATETIME:
        local, offset = struct.unpack(">qq", data)
        tz = datetime.timezone(offset * _MICROSECOND)
        return (_EPOCH + local * _MICROSECOND).replace(tzinfo=tz)
    if code == _EXT_DATE:
        (ordinal,) = struct.unpack(">i", data)
        return datetime.date.fromordinal(ordinal)
    raise ValueError(f"unknown extension code {code}")


def _unbase64(token: str) -> bytes:
    # The alphabet check also keeps non-ASCII text away from the base64 decoder.
    if not token or len(token) > MAX_CURSOR_LENGTH or not _TOKEN_ALPHABET.fullmatch(token):
        raise InvalidCursor(_MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except binascii.Error as exc:
        raise InvalidCursor(_MALFORMED) from exc
    # Stray bits in the last character decode to the same bytes; one token per cursor.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise InvalidCursor(_MALFORMED)
    return raw


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(ext_hook=_unpack_ext)
