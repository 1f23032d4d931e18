"""The literals domain/pg.py renders into simple-query SQL carry any value and nothing else."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from domain.pg import literal_bytes, literal_text, literal_uuid, plain_dsn


@pytest.mark.parametrize("text", ["plain", "it's'; DROP TABLE jobs; --", "back\\slash", "ünïcødé ✓", ""])
async def test_text_and_bytes_come_back_unchanged(settings, text):
    conn = await asyncpg.connect(plain_dsn(settings.database_url))
    try:
        assert await conn.fetchval(f"SELECT {literal_text(text)}") == text
        raw = text.encode() + bytes(range(256))
        assert await conn.fetchval(f"SELECT {literal_bytes(raw)}") == raw
    finally:
        await conn.close()


def test_a_uuid_literal_is_only_ever_a_uuid():
    value = uuid.uuid4()
    assert literal_uuid(value) == literal_uuid(str(value)) == str(value)
    with pytest.raises(ValueError):
        literal_uuid(f"{value}'; DROP TABLE jobs; --")
