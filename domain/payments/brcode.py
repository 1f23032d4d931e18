"""The PIX BR Code ("copia e cola") of integrations.md: EMV fields `ID` + length + value, closed by a CRC.

Pure functions. `dynamic` is what a PSP puts in a charge's `pixCopiaECola` (the payer's bank fetches the charge
from its location); `static` carries the receiver's PIX key itself.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

GUI = "br.gov.bcb.pix"
NAME_MAX, CITY_MAX = 25, 15
_TXID = re.compile(r"[A-Za-z0-9]{1,25}")
_AMOUNT = re.compile(r"\d{1,10}\.\d{2}")


def crc16(data: str) -> str:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the UTF-8 bytes, as 4 upper-case hex digits."""
    crc = 0xFFFF
    for byte in data.encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return f"{crc:04X}"


def field(tag: str, value: str) -> str:
    """One `ID` + two-digit length + value (at most 99 characters)."""
    if len(value) > 99:
        raise ValueError(f"BR Code field {tag} is {len(value)} characters long; 99 is the most")
    return f"{tag}{len(value):02d}{value}"


def plain_ascii(text: str, limit: int) -> str:
    """`text` without accents or other non-ASCII characters, cut to `limit` (fields 59 and 60)."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(c for c in decomposed if c.isascii() and c.isprintable() and not unicodedata.combining(c))
    return " ".join(ascii_only.split())[:limit]


def amount_text(amount: str | Decimal) -> str:
    """Field 54's value: the amount with two decimals (`69.90`)."""
    text = f"{Decimal(amount):.2f}" if isinstance(amount, Decimal) else amount
    if not _AMOUNT.fullmatch(text) or Decimal(text) <= 0:
        raise ValueError(f"a PIX amount is a positive number with two decimals, like 69.90, not {amount!r}")
    return text


def _payload(account: str, *, dynamic: bool, amount: str | Decimal | None, merchant_name: str,
             merchant_city: str, txid: str) -> str:
    if txid != "***" and not _TXID.fullmatch(txid):
        raise ValueError("a BR Code's txid (field 62-05) is up to 25 letters and digits, or ***")
    name, city = plain_ascii(merchant_name, NAME_MAX), plain_ascii(merchant_city, CITY_MAX)
    if not name or not city:
        raise ValueError("a BR Code needs a merchant name and city with at least one plain ASCII letter")
    parts = [field("00", "01"), field("01", "12") if dynamic else "", field("26", account),
             field("52", "0000"), field("53", "986"),
             field("54", amount_text(amount)) if amount is not None else "",
             field("58", "BR"), field("59", name), field("60", city), field("62", field("05", txid)), "6304"]
    body = "".join(parts)
    return body + crc16(body)


def dynamic(location: str, *, amount: str | Decimal | None, merchant_name: str, merchant_city: str) -> str:
    """The code of a charge whose details the payer's bank reads at `location` (a URL without its scheme)."""
    if "://" in location or not location:
        raise ValueError("a dynamic BR Code's location is a URL without its scheme (pix.example.com/qr/v2/...)")
    account = field("00", GUI) + field("25", location)
    return _payload(account, dynamic=True, amount=amount, merchant_name=merchant_name,
                    merchant_city=merchant_city, txid="***")


def static(key: str, *, amount: str | Decimal | None = None, merchant_name: str, merchant_city: str,
           txid: str = "***", message: str = "") -> str:
    """A reusable code paying the PIX `key`, with an optional fixed amount and message."""
    if not key:
        raise ValueError("a static BR Code needs the receiver's PIX key")
    account = field("00", GUI) + field("01", key) + (field("02", message) if message else "")
    return _payload(account, dynamic=False, amount=amount, merchant_name=merchant_name,
                    merchant_city=merchant_city, txid=txid)


def fields(code: str) -> dict[str, str]:
    """The top-level fields of a code, by ID, after checking its CRC (ValueError when it does not match)."""
    if len(code) < 8 or code[-8:-4] != "6304" or crc16(code[:-4]) != code[-4:].upper():
        raise ValueError("not a BR Code: its CRC (field 63) does not match")
    return parse(code[:-8])


def parse(data: str) -> dict[str, str]:
    """Split `ID` + length + value fields (a template's sub-fields too) into a dict."""
    found, at = {}, 0
    while at < len(data):
        tag, size = data[at:at + 2], data[at + 2:at + 4]
        if not (tag.isdigit() and size.isdigit()) or at + 4 + int(size) > len(data):
            raise ValueError(f"malformed BR Code field at offset {at}")
        found[tag] = data[at + 4:at + 4 + int(size)]
        at += 4 + int(size)
    return found
