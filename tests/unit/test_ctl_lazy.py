"""calicoctl imports a command family only when one of its commands runs; the lazy map names
exactly the commands each family module contributes."""

from __future__ import annotations

import importlib
import subprocess
import sys

from click.testing import CliRunner

from pycalico.ctl.main import _COMMANDS, _FAMILIES, cli


def test_lazy_map_matches_the_families() -> None:
    contributed = {}
    for mod in _FAMILIES:
        for cmd in importlib.import_module(mod).COMMANDS:
            contributed[cmd.name] = mod
    assert contributed == _COMMANDS


def test_help_lists_every_command() -> None:
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in (*_COMMANDS, "version"):
        assert f"  {name} " in out or f"  {name}\n" in out, name


def test_get_does_not_import_flows_or_policy_insight() -> None:
    code = (
        "import sys\n"
        "from pycalico.ctl.main import cli\n"
        "try:\n    cli(['get', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "print(','.join(m for m in ('pycalico.ctl.flows', 'pycalico.ctl.policy',"
        " 'pycalico.felix.calc.insight', 'pycalico.ctl.resources') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip().splitlines()[-1] == "pycalico.ctl.resources"


def test_calico_node_does_not_import_the_api_models() -> None:
    """The node agent (Felix, the Docker drivers, the CNI server...) works on datastore
    dicts: importing the pydantic resource models would cost every node about 6 MB of RSS
    and most of a second at start (the Docker driver once pulled them in for one helper)."""
    code = (
        "import sys\n"
        "import pycalico.node.agent, pycalico.node.libnetwork, pycalico.felix.agent\n"
        "import pycalico.libnetwork.driver, pycalico.node.cniserver\n"
        "print(','.join(m for m in ('pydantic', 'pycalico.api') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == ""
