"""Customer field rules: e-mail, E.164, CPF/CNPJ check digits, channels."""

from __future__ import annotations

import pytest

from domain.customers.rules import field_errors, valid_cnpj, valid_cpf, valid_email, valid_phone


def cpf_with_check_digits(first_nine: str) -> str:
    """Receita Federal's published algorithm, written independently of the code under test."""
    digits = [int(d) for d in first_nine]
    for weight_start in (10, 11):
        total = sum(d * w for d, w in zip(digits, range(weight_start, 1, -1)))
        digits.append(0 if total % 11 < 2 else 11 - total % 11)
    return "".join(map(str, digits))


@pytest.mark.parametrize("cpf", ["52998224725", "11144477735", cpf_with_check_digits("123456789"),
                                 cpf_with_check_digits("987654321"), cpf_with_check_digits("000000001")])
def test_valid_cpf(cpf):
    assert valid_cpf(cpf)


def test_computed_cpf_matches_known_values():
    assert cpf_with_check_digits("529982247") == "52998224725"
    assert cpf_with_check_digits("123456789") == "12345678909"


@pytest.mark.parametrize("cpf", ["52998224724", "52998224715", "52998224735", "00000000000", "11111111111",
                                 "99999999999", "5299822472", "529982247250", "529.982.247-25", "5299822472a", ""])
def test_invalid_cpf(cpf):
    assert not valid_cpf(cpf)


@pytest.mark.parametrize("cnpj", ["11222333000181", "11444777000161"])
def test_valid_cnpj(cnpj):
    assert valid_cnpj(cnpj)


@pytest.mark.parametrize("cnpj", ["11222333000182", "11222333000191", "00000000000000", "77777777777777",
                                  "1122233300018", "11.222.333/0001-81", "52998224725"])
def test_invalid_cnpj(cnpj):
    assert not valid_cnpj(cnpj)


def test_cpf_with_non_ascii_digit_is_invalid_not_a_crash():
    assert valid_cpf("²0000000000") is False


@pytest.mark.parametrize("phone, ok", [
    ("+5511987654321", True), ("+14155552671", True), ("+12345678", True), ("+123456789012345", True),
    ("5511987654321", False), ("+05511987654321", False), ("+1234567", False), ("+1234567890123456", False),
    ("+55 11 98765-4321", False), ("", False), ("+", False),
])
def test_e164(phone, ok):
    assert valid_phone(phone) is ok


def test_e164_refuses_trailing_newline():
    assert not valid_phone("+5511987654321\n")


@pytest.mark.parametrize("email, ok", [
    ("ana@example.com", True), ("a.b+tag@mail.example.com.br", True),
    ("ana@example", False), ("ana.example.com", False), ("ana@@example.com", False), ("a na@example.com", False),
    ("ana@-example.com", False), ("x" * 65 + "@example.com", False),
])
def test_email(email, ok):
    assert valid_email(email) is ok


GOOD = dict(name="Ana", email="ana@example.com", phone="+5511987654321", document="52998224725",
            channels=["email", "whatsapp"])


def test_good_fields_have_no_errors():
    assert field_errors(**GOOD) == []
    assert field_errors(**{**GOOD, "phone": None, "document": None, "channels": ["email"]}) == []
    assert field_errors(**{**GOOD, "document": "11222333000181"}) == []


def test_field_errors_collects_every_problem():
    errors = field_errors(name="  ", email="nope", phone="123", document="12345678900", channels=["fax"])
    assert {e["field"] for e in errors} == {"name", "email", "phone", "document", "channels"}
    assert all(e["message"] for e in errors)


@pytest.mark.parametrize("channel", ["whatsapp", "sms"])
def test_phone_required_for_whatsapp_and_sms(channel):
    errors = field_errors(**{**GOOD, "phone": None, "channels": ["email", channel]})
    assert errors == [{"field": "phone", "message": "required for whatsapp or sms"}]


def test_empty_channels_is_an_error():
    assert [e["field"] for e in field_errors(**{**GOOD, "channels": []})] == ["channels"]
