"""Cursor encoding and limit bounds."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from domain.errors import ValidationFailed
from domain.pagination import MAX_LIMIT, check_limit, decode_cursor, encode_cursor, page


@pytest.mark.parametrize("value", [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1),
                                   uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057")])
def test_cursor_round_trip(value):
    cursor = encode_cursor(value)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == value


@pytest.mark.parametrize("cursor", ["garbage", "!!!!", "", "AAAA", "é", encode_cursor(uuid.uuid4()) + "AAAA",
                                    encode_cursor(uuid.uuid4())[:-3]])
def test_garbage_cursor_raises_validation_failed(cursor):
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert info.value.code == "validation_error"
    assert info.value.errors == [{"field": "cursor", "message": "not a cursor"}]


@pytest.mark.parametrize("limit", [1, 50, 200])
def test_limit_in_bounds(limit):
    assert check_limit(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, 201])
def test_limit_out_of_bounds(limit):
    with pytest.raises(ValidationFailed) as info:
        check_limit(limit)
    assert info.value.errors[0]["field"] == "limit"


def test_max_limit_is_200():
    assert MAX_LIMIT == 200


def test_page_cursor_points_at_last_row_shown():
    rows = [SimpleNamespace(id=uuid.UUID(int=n)) for n in (5, 4, 3)]
    shown, cursor = page(rows, 2)
    assert shown == rows[:2] and decode_cursor(cursor) == uuid.UUID(int=4)
    assert page(rows, 3) == (rows, None)
