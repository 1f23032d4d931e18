"""WHM naming rules (integrations.md, createacct) and server placement."""

from __future__ import annotations

import pytest

from domain.provisioning.rules import (
    ServerLoad, choose_username, normalize_domain, place, username_base, username_candidates, username_family,
    username_problem, valid_domain)


@pytest.mark.parametrize("domain", ["example.com", "a-b.example.com.br", "xn--caf-dma.com", "a.io",
                                    "123.example.com", "x" * 63 + ".com"])
def test_valid_domains(domain):
    assert valid_domain(domain)


@pytest.mark.parametrize("domain", [
    "", "localhost", "-abc.com", "abc-.com", "a..com", ".example.com", "example.123", "example.c",
    "café.com", "ex ample.com", "ex_ample.com", "Example.com", "x" * 64 + ".com",
    ("a" * 62 + ".") * 4 + "com",  # 255 chars, every label legal
], ids=["empty", "no-dot", "leading-hyphen", "trailing-hyphen", "empty-label", "leading-dot", "numeric-tld",
        "one-letter-tld", "unicode", "space", "underscore", "uppercase", "label-64", "over-253"])
def test_invalid_domains(domain):
    assert not valid_domain(domain)


def test_253_chars_is_the_limit():
    domain_253 = "a" * 61 + "." + "b" * 61 + "." + "c" * 61 + "." + "d" * 61 + "." + "e" * 5
    assert len(domain_253) == 253 and valid_domain(domain_253)
    assert not valid_domain("f" + domain_253)


def test_domain_with_embedded_newline_is_invalid():
    assert not valid_domain("example\n.com")


def test_normalize_domain():
    assert normalize_domain("  Example.COM. ") == "example.com"


@pytest.mark.parametrize("username, ok", [
    ("example", True), ("a", True), ("a" * 16, True), ("abc123", True),
    ("1abc", False), ("test", False), ("testuser", False), ("a" * 17, False), ("Abc", False), ("abC", False),
    ("ab-c", False), ("ab_c", False), ("", False), ("josé", False),
    ("mysql", False), ("root", False), ("mysqlx", True), ("mypassword", False), ("passwords", True),
])
def test_username_problem(username, ok):
    assert (username_problem(username) is None) is ok


def test_username_problem_explains_test_prefix():
    assert "test" in username_problem("testing")


def test_username_with_trailing_newline_is_refused():
    assert username_problem("abc\n") is not None


@pytest.mark.parametrize("domain, base", [
    ("example.com", "example"),
    ("My-Shop.com.br", "myshop"),
    ("123shop.com", "shop"),
    ("2024.com", "user"),
    ("---.com", "user"),
    ("testing.com", "ting"),
    ("test.com", "t"),
    ("averyverylongname.com", "averyver"),
    ("a_b.c.com", "ab"),
])
def test_username_base(domain, base):
    assert username_base(domain) == base
    assert username_problem(base) is None


def test_username_base_never_starts_with_test():
    assert not username_base("testest.com").startswith("test")


def test_choose_username_for_domain_starting_testest():
    assert username_problem(choose_username("testestate.com", set())) is None


@pytest.mark.parametrize("domain", ["example.com", "averyverylongname.com", "ab.com", "9test.com", "2024.com",
                                    "testing.com"])
def test_choose_username_is_valid_free_and_deterministic(domain):
    taken = {username_base(domain)[:8], "other"}
    name = choose_username(domain, taken)
    assert username_problem(name) is None
    assert name[:8] not in taken
    assert choose_username(domain, set(taken)) == name


def test_choose_username_prefers_the_base():
    assert choose_username("example.com", set()) == "example"


@pytest.mark.parametrize("domain", ["example.com", "averyverylongname.com", "ab.com", "2024.com"])
def test_fifty_names_from_one_domain_are_distinct_in_first_eight(domain):
    taken: set[str] = set()
    names = []
    for _ in range(50):
        name = choose_username(domain, taken)
        assert username_problem(name) is None
        assert name[:8] not in taken
        taken.add(name[:8])
        names.append(name)
    assert len({n[:8] for n in names}) == 50


def test_place_least_loaded_by_ratio_not_by_count():
    servers = [ServerLoad("big", capacity=1000, used=100), ServerLoad("small", capacity=10, used=5)]
    assert place(servers) == "big"  # 10% beats 50% although 100 > 5 accounts
    assert place([ServerLoad("a", 10, 9), ServerLoad("b", 100, 50)]) == "b"


def test_place_skips_full_servers():
    assert place([ServerLoad("full", 10, 10), ServerLoad("over", 10, 12), ServerLoad("busy", 10, 9)]) == "busy"


def test_place_ties_go_to_the_first():
    assert place([ServerLoad("first", 10, 5), ServerLoad("second", 20, 10)]) == "first"


@pytest.mark.parametrize("servers", [[], [ServerLoad("a", 10, 10), ServerLoad("b", 0, 0)]])
def test_place_none_when_all_full(servers):
    assert place(servers) is None


@pytest.mark.parametrize("domain", ["example.com", "averyverylongname.com", "ab.com", "a.io", "2024.com",
                                    "construtora-sul.com.br"])
def test_every_candidate_begins_with_the_domains_family(domain):
    """The worker reads the taken names of a family with one prefix query: no candidate may fall outside it."""
    family = username_family(domain)
    candidates = list(username_candidates(domain))
    assert len(candidates) == 10_000 and all(c.startswith(family) for c in candidates)
    assert len({c[:8] for c in candidates}) == len(candidates)  # and each one is a new first 8
