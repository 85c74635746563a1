"""The one Go-duration parser (pycalico.model.durations) and each caller's edge."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.api.kinds_bgp import duration_seconds
from pycalico.bgp.errors import BgpInputError
from pycalico.bgp.inputs import parse_duration_s
from pycalico.model import ModelError
from pycalico.model.durations import parse_duration
from pycalico.model.felixconfig import FelixConfigError, resolve


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1h2m3.5s", 3723.5),
        ("500ms", 0.5),
        ("1us", 1e-6),
        ("1µs", 1e-6),
        ("3ns", 3e-9),
        ("0", 0.0),
        ("90", 90.0),
        ("1.5", 1.5),
        (" 10s ", 10.0),
        (7, 7.0),
        (2.5, 2.5),
        ("1.s", 1.0),
        (".5s", 0.5),
    ],
)
def test_parse(value: Any, seconds: float) -> None:
    assert parse_duration(value, "f") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "s", "1d", "5 m", "abc", "inf", "1e3", True, None, [1]])
def test_invalid_names_the_field(value: Any) -> None:
    with pytest.raises(ModelError, match=r"^spec\.x: "):
        parse_duration(value, "spec.x")


def test_sign_handling() -> None:
    with pytest.raises(ModelError, match="negative"):
        parse_duration("-1s", "f")
    with pytest.raises(ModelError, match="negative"):
        parse_duration(-1, "f")
    assert parse_duration("-1m", "f", negative=True) == -60.0
    assert parse_duration("-0", "f") == 0.0


def test_strict_go_form_rejects_bare_numbers() -> None:
    with pytest.raises(ModelError):
        parse_duration("10", "f", bare_numbers=False)
    with pytest.raises(ModelError):
        parse_duration(" 10s", "f", bare_numbers=False)
    assert parse_duration("0", "f", bare_numbers=False) == 0.0


def test_callers_keep_their_error_types() -> None:
    with pytest.raises(ValueError, match="duration"):
        duration_seconds("10")
    assert duration_seconds("-1ns") == pytest.approx(-1e-9)
    with pytest.raises(BgpInputError):
        parse_duration_s("90", "f")
    with pytest.raises(BgpInputError, match=r"1s\.\.65535s"):
        parse_duration_s("-5s", "f")
    assert parse_duration_s("1m30s", "f") == 90
    with pytest.raises(FelixConfigError, match="nftablesRefreshInterval"):
        resolve("n", {}, env={"FELIX_NFTABLESREFRESHINTERVAL": "5x"})
    assert (
        resolve("n", {}, env={"FELIX_NFTABLESREFRESHINTERVAL": "90"}).nftables_refresh_interval
        == 90.0
    )
