"""The PIX BR Code encoder against Banco Central's published example and the CRC's check value."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.payments import brcode

# Manual de Padrões para Iniciação do Pix (Banco Central), the static example, CRC as published.
BCB_STATIC = ("00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
              "5913Fulano de Tal6008BRASILIA62070503***63041D3D")


def test_the_crc_is_crc16_ccitt_false():
    assert brcode.crc16("123456789") == "29B1"  # the algorithm's standard check value


def test_the_banco_central_static_example_is_reproduced_byte_for_byte():
    assert brcode.static("123e4567-e12b-12d1-a456-426655440000", merchant_name="Fulano de Tal",
                         merchant_city="BRASILIA") == BCB_STATIC


def test_a_dynamic_code_carries_the_location_the_amount_and_a_valid_crc():
    code = brcode.dynamic("pix.example.com/qr/v2/9d36b84fc70b478fb95c12729b90ca25", amount="69.90",
                          merchant_name="Hospedagem Ágil Ltda", merchant_city="São José dos Campos")
    top = brcode.fields(code)
    assert top["00"] == "01" and top["01"] == "12"  # a single-use code
    location = "pix.example.com/qr/v2/9d36b84fc70b478fb95c12729b90ca25"
    assert brcode.parse(top["26"]) == {"00": "br.gov.bcb.pix", "25": location}
    assert (top["52"], top["53"], top["54"], top["58"]) == ("0000", "986", "69.90", "BR")
    assert top["59"] == "Hospedagem Agil Ltda"  # accents stripped
    assert top["60"] == "Sao Jose dos Ca"  # plain ASCII, at most 15 characters
    assert brcode.parse(top["62"]) == {"05": "***"}


def test_a_changed_character_fails_the_crc():
    tampered = BCB_STATIC.replace("Fulano", "Fulana")
    with pytest.raises(ValueError, match="CRC"):
        brcode.fields(tampered)
    assert brcode.fields(BCB_STATIC)["59"] == "Fulano de Tal"


def test_amounts_have_two_decimals_and_are_positive():
    assert brcode.amount_text(Decimal("69.9")) == "69.90"
    for bad in ("69.9", "69", "-1.00", "0.00", "1e3", ""):
        with pytest.raises(ValueError):
            brcode.amount_text(bad)


def test_static_code_with_amount_message_and_txid():
    code = brcode.static("ana@example.com", amount="10.00", merchant_name="Ana", merchant_city="Recife",
                         txid="INV000123", message="Fatura 123")
    top = brcode.fields(code)
    assert "01" not in top  # reusable
    assert brcode.parse(top["26"]) == {"00": "br.gov.bcb.pix", "01": "ana@example.com", "02": "Fatura 123"}
    assert top["54"] == "10.00" and brcode.parse(top["62"]) == {"05": "INV000123"}
    with pytest.raises(ValueError):
        brcode.static("k", merchant_name="Ana", merchant_city="Recife", txid="has-dash")
    with pytest.raises(ValueError):
        brcode.dynamic("https://pix.example.com/qr/v2/x", amount="1.00", merchant_name="A", merchant_city="B")
