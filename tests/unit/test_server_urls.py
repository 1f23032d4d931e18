"""A WHM server's URL, as `hostq servers add|update` take it."""

from __future__ import annotations

import pytest

from domain.errors import ValidationFailed
from domain.provisioning.service import _check_url


@pytest.mark.parametrize("url", ["https://whm1.example:2087", "https://whm1.example:2087/", "http://whm1.example:2086",
                                 "http://127.0.0.1:2086", "https://10.0.0.5:2087/proxy"])
def test_urls_taken_in_development(url):
    assert _check_url(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["ftp://whm1.example", "https://:2087", "https://whm1.example:99999",
                                 "https://root:pw@whm1.example:2087", "https://whm1.example:2087/?a=1"])
def test_urls_refused_everywhere(url):
    for production in (False, True):
        with pytest.raises(ValidationFailed):
            _check_url(url, production)


def test_production_sends_the_token_over_plain_http_only_to_this_machine():
    with pytest.raises(ValidationFailed, match="plain http"):
        _check_url("http://whm1.example:2086", production=True)
    with pytest.raises(ValidationFailed, match="plain http"):
        _check_url("http://10.0.0.5:2086", production=True)
    for url in ("https://whm1.example:2087", "http://127.0.0.1:2086", "http://localhost:2086", "http://[::1]:2086"):
        assert _check_url(url, production=True) == url
    assert _check_url("http://127.0.0.2:2086", production=True) == "http://127.0.0.2:2086"  # all of 127.0.0.0/8
    with pytest.raises(ValidationFailed, match="plain http"):
        _check_url("http://127.example:2086", production=True)  # a name, not the loopback


def test_a_scheme_or_host_in_capitals_is_taken_and_stored_in_lower_case():
    """One server, one spelling: `HTTPS://WHM1.Example` registered beside `https://whm1.example` would be a second
    server (twice the capacity) for one WHM. A proxy's path keeps its case."""
    assert _check_url("HTTPS://WHM1.Example:2087/") == "https://whm1.example:2087"
    assert _check_url("https://Proxy.Example/WHM/") == "https://proxy.example/WHM"
    assert _check_url("Http://127.0.0.1:2086", production=True) == "http://127.0.0.1:2086"
