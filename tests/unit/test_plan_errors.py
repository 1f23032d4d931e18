"""A new plan's fields checked before anything is stored: each problem named with its field."""

from __future__ import annotations

import pytest

from domain.catalog.service import plan_errors


def _errors(**fields) -> list[dict]:
    plan = {"code": "basic", "name": "Basic", "whm_package": "basic", "currency": "BRL", "prices": {"monthly": 6990},
            **fields}
    return plan_errors(**plan)


@pytest.mark.parametrize("package", ["basic", "reseller_Gold Plan", "pro-2024.v2", "ação"])
def test_whm_package_names_as_whm_shows_them_are_taken(package):
    assert _errors(whm_package=package) == []


@pytest.mark.parametrize("package", ["a b/../c", "/etc/passwd", "pro\nplus", "pro\x00", "pro\tplus", ".", ".."])
def test_a_whm_package_no_server_could_have_is_refused(package):
    assert _errors(whm_package=package) == [
        {"field": "whm_package", "message": "a WHM package name: no '/' or control characters, not '.' or '..'"}]


def test_an_empty_price_map_says_so():
    assert _errors(prices={}) == [
        {"field": "prices", "message": "must price at least one billing cycle (monthly, quarterly, semiannual, annual)"}]


def test_an_unknown_billing_cycle_is_named():
    assert _errors(prices={"weekly": 100, "monthly": 100}) == [
        {"field": "prices", "message": "unknown billing cycle(s) 'weekly': keys must be among monthly, quarterly, "
                                       "semiannual, annual"}]
