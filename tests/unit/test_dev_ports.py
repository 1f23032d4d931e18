"""`hostq dev`'s ports: each of its servers gets its own, or it refuses to start with one line naming the clash."""

from __future__ import annotations

import re
from argparse import Namespace

import pytest

from hostq import dev


def _args(**ports) -> Namespace:
    return Namespace(**{"port": 8000, "whm_port": 2087, "psp_port": 8089, "smtp_port": 1025, "mail_port": 8025,
                        **ports})


def test_each_region_takes_the_next_port_after_whm_port():
    assert dev._whm_ports(_args(), ["us", "eu", "br"]) == {"us": 2087, "eu": 2088, "br": 2089}


def test_a_later_regions_fake_whm_on_another_servers_port_is_refused():
    # The acceptance pass's case: --regions us,eu --whm-port 58102 --psp-port 58103.
    with pytest.raises(ValueError) as clash:
        dev._whm_ports(_args(whm_port=58102, psp_port=58103), ["us", "eu"])
    assert str(clash.value).startswith("the fake WHM of region eu (--whm-port + 1) and the fake PSP (--psp-port) "
                                       "would both use port 58103")


@pytest.mark.parametrize("ports, named", [
    ({"port": 2087}, "the API (--port) and the fake WHM of region us (--whm-port)"),
    ({"mail_port": 1025}, "the fake mail server's SMTP (--smtp-port) and the fake mail server's HTTP (--mail-port)"),
    ({"psp_port": 8000}, "the API (--port) and the fake PSP (--psp-port)"),
])
def test_any_two_servers_on_one_port_are_refused(ports, named):
    with pytest.raises(ValueError, match=rf"^{re.escape(named)} would both use port"):
        dev._whm_ports(_args(**ports), ["us"])


def test_a_whm_port_with_no_room_for_the_last_region_is_refused():
    with pytest.raises(ValueError, match="leaves no port for the fake WHM of region eu"):
        dev._whm_ports(_args(whm_port=65535), ["us", "eu"])
