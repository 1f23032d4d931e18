"""The command line's argument types refuse what would start a process that does nothing, or the wrong thing."""

from __future__ import annotations

import argparse

import pytest

from hostq import argtypes


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "", "x"])
def test_positive_refuses_what_is_not_a_count(value):
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.positive(value)


@pytest.mark.parametrize("value", ["0", "65536", "99999", "-1", "http"])
def test_port_refuses_what_the_kernel_would_wrap_or_pick(value):
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.port(value)


@pytest.mark.parametrize("value", ["", "Bad Region!", "EU", "1us"])
def test_region_refuses_a_name_servers_add_would_refuse(value):
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.region(value)


def test_good_values_pass():
    assert (argtypes.positive("8"), argtypes.port("65535"), argtypes.region("sa-east")) == (8, 65535, "sa-east")


@pytest.mark.parametrize("value, why", [("", "got ''"), ("us,,eu", "got ''"), ("us,US", "got 'US'"),
                                        ("us,eu,us", "region 'us' is given more than once")])
def test_regions_refuse_an_empty_list_a_bad_name_or_one_given_twice(value, why):
    """`hostq dev --regions ""` used to disable the fake servers of earlier runs and then fail with a traceback."""
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        argtypes.regions(value)


def test_regions_are_read_in_order():
    assert argtypes.regions("us, eu ,sa-east") == ["us", "eu", "sa-east"]
    assert argtypes.regions("us") == ["us"]
