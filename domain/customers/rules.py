"""Customer field rules: e-mail, E.164 phone, CPF/CNPJ check digits, channels."""

from __future__ import annotations

import re

CHANNELS = ("email", "whatsapp", "sms")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")


def valid_email(email: str) -> bool:
    """A plausible address: local@domain with a dotted domain."""
    return len(email) <= 320 and bool(_EMAIL.fullmatch(email))


def valid_phone(phone: str) -> bool:
    """E.164: '+', country code, 8 to 15 digits in all."""
    return bool(_E164.fullmatch(phone))


def _check_digit(digits: str, weights: list[int]) -> int:
    remainder = sum(int(d) * w for d, w in zip(digits, weights)) % 11
    return 0 if remainder < 2 else 11 - remainder


def valid_cpf(cpf: str) -> bool:
    """11 digits, not all equal, with both check digits right."""
    if len(cpf) != 11 or not (cpf.isascii() and cpf.isdigit()) or len(set(cpf)) == 1:
        return False
    first = _check_digit(cpf[:9], list(range(10, 1, -1)))
    second = _check_digit(cpf[:10], list(range(11, 1, -1)))
    return cpf[9:] == f"{first}{second}"


def valid_cnpj(cnpj: str) -> bool:
    """14 digits, not all equal, with both check digits right."""
    if len(cnpj) != 14 or not (cnpj.isascii() and cnpj.isdigit()) or len(set(cnpj)) == 1:
        return False
    first = _check_digit(cnpj[:12], [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    second = _check_digit(cnpj[:13], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    return cnpj[12:] == f"{first}{second}"


def field_errors(*, name: str, email: str, phone: str | None, document: str | None,
                 channels: list[str]) -> list[dict[str, str]]:
    """Every problem with a new customer's fields, as `{"field", "message"}`."""
    errors = []
    if not name.strip():
        errors.append({"field": "name", "message": "must not be empty"})
    if not valid_email(email):
        errors.append({"field": "email", "message": "not a valid e-mail address"})
    if phone is not None and not valid_phone(phone):
        errors.append({"field": "phone", "message": "must be E.164, e.g. +5511987654321"})
    if document is not None and not (valid_cpf(document) or valid_cnpj(document)):
        errors.append({"field": "document", "message": "not a valid CPF (11 digits) or CNPJ (14 digits)"})
    bad = [c for c in channels if c not in CHANNELS]
    if bad or not channels:
        errors.append({"field": "channels", "message": f"must be a non-empty subset of {', '.join(CHANNELS)}"})
    if "whatsapp" in channels or "sms" in channels:
        if phone is None:
            errors.append({"field": "phone", "message": "required for whatsapp or sms"})
    return errors
