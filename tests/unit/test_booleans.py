"""One boolean parser for every setting: same spellings everywhere, typos are errors."""

from __future__ import annotations

import pytest

from pycalico.dns.config import DnsError, server_from_env
from pycalico.model.booleans import BOOL_WORDS, BooleanError, env_flag, parse_bool
from pycalico.node import cniserver, ipamgc
from pycalico.node.envfile import NodeConfigError, validate
from pycalico.node.startup import NodeSettings, StartupError


@pytest.mark.parametrize("word", ["true", "TRUE", " Yes ", "1", "y", "t", "on"])
def test_true_spellings(word: str) -> None:
    assert parse_bool(word, "X") is True


@pytest.mark.parametrize("word", ["false", "False", "0", "no", "n", "f", "OFF "])
def test_false_spellings(word: str) -> None:
    assert parse_bool(word, "X") is False


@pytest.mark.parametrize("word", ["flase", "2", "", "enabled", "truee"])
def test_anything_else_names_the_setting(word: str) -> None:
    with pytest.raises(BooleanError, match=r"^MY_FLAG: expected true or false"):
        parse_bool(word, "MY_FLAG")


def test_env_flag_default_only_when_unset_or_blank() -> None:
    assert env_flag({}, "K", True) is True
    assert env_flag({"K": "  "}, "K", True) is True
    assert env_flag({"K": "0"}, "K", True) is False
    with pytest.raises(BooleanError):
        env_flag({"K": "nope"}, "K", True)


def test_readers_agree_on_spellings() -> None:
    """Every reader of a boolean env var accepts the same words with the same meaning."""
    for word in BOOL_WORDS:
        want = parse_bool(word, "W")
        assert ipamgc.enabled({"CALICO_IPAM_GC_ENABLED": word}) is want
        assert (cniserver.from_env({"CALICO_CNI_SERVER_ENABLED": word}) is not None) is want
        s = NodeSettings.from_env({"NODENAME": "n1", "NO_DEFAULT_POOLS": word})
        assert s.no_default_pools is want


def test_typos_are_errors_not_false() -> None:
    with pytest.raises(ipamgc.IpamGcConfigError, match="CALICO_IPAM_GC_ENABLED"):
        ipamgc.enabled({"CALICO_IPAM_GC_ENABLED": "flase"})
    with pytest.raises(StartupError, match="NO_DEFAULT_POOLS"):
        NodeSettings.from_env({"NODENAME": "n1", "NO_DEFAULT_POOLS": "ja"})
    with pytest.raises(DnsError, match="CALICO_DNS_ENABLED"):
        server_from_env(None, "n1", {"CALICO_DNS_ENABLED": "maybe"})  # type: ignore[arg-type]
    with pytest.raises(NodeConfigError, match="NO_DEFAULT_POOLS: expected true or false"):
        validate({"NO_DEFAULT_POOLS": ("sometimes", 3)}, "calico-node.env")
    assert validate({"NO_DEFAULT_POOLS": ("Yes", 3)}, "f") == {"NO_DEFAULT_POOLS": "Yes"}
