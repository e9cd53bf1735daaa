"""Cursors for newest-first lists: a page that may have more after it says where the next one starts.

A list route returns at most ``limit`` items; when more follow, the ``X-Next-Cursor`` header carries an opaque
cursor (and ``Link`` the next page's URL) to send back as ``cursor``. The cursor names the last item's creation time
and id (``rag.db.newest_first``), so pages neither skip nor repeat items that were there when the walk began, whatever
arrives in between. It is hex: sixteen digits of microseconds since 1970 (UTC), then the id's characters (letters,
digits, ``-`` and ``_``, as every id is). Any string of that shape is a position in the newest-first order, so the
schema's pattern says all there is to say about a valid one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from fastapi import Request, Response

from rag.db import Position

NEXT_CURSOR = "X-Next-Cursor"
ID_CHARACTER = r"(?:3[0-9]|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a]|2d|5f)"  # one of 0-9 A-Z a-z - _, in hex
CURSOR_PATTERN = rf"^[0-9a-f]{{16}}{ID_CHARACTER}{{1,64}}$"
CURSOR_HELP = f"the previous page's {NEXT_CURSOR} header (absent for the first page)"
_EPOCH = datetime(1970, 1, 1)
_LATEST = (datetime.max - _EPOCH) // timedelta(microseconds=1)
_CURSOR = re.compile(CURSOR_PATTERN)
T = TypeVar("T")


def encode_cursor(created_at: datetime, item_id: str) -> str:
    assert re.fullmatch(r"[0-9A-Za-z_-]{1,64}", item_id), "ids are letters, digits, - and _"
    return f"{(created_at - _EPOCH) // timedelta(microseconds=1):016x}{item_id.encode().hex()}"


def decode_cursor(cursor: str | None) -> Position | None:
    """The position a cursor names (the route's ``pattern`` has already checked its shape)."""
    if not cursor:
        return None
    assert _CURSOR.fullmatch(cursor), "the route declares CURSOR_PATTERN"
    micros = min(int(cursor[:16], 16), _LATEST)
    return _EPOCH + timedelta(microseconds=micros), bytes.fromhex(cursor[16:]).decode("ascii")


def page(items: list[T], limit: int, position: Callable[[T], Position], request: Request, response: Response) -> list[T]:
    """The first ``limit`` of ``items`` (fetched as ``limit + 1``); when there were more, the next page's cursor in
    ``X-Next-Cursor`` and ``Link`` (``position``: an item's creation time and id)."""
    if len(items) <= limit:
        return items
    cursor = encode_cursor(*position(items[limit - 1]))
    response.headers[NEXT_CURSOR] = cursor
    response.headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
    return items[:limit]
