"""The exec'd CNI plugin's fallback import path stays short, with behaviour unchanged.

Guards the cut measured in bench/cni.py (issue 18): the IPAM path imports
``pycalico.model.network`` without the converters, the selector parser or :mod:`uuid`, while
``pycalico.model.convert`` stays the function and pools select nodes exactly as before.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

from pycalico.datastore._common import new_uid
from pycalico.model.network import IPPool
from pycalico.selector import parse


def _loaded_after(stmt: str) -> set[str]:
    code = f"import sys\n{stmt}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_fallback_path_skips_converters_parser_and_uuid() -> None:
    mods = _loaded_after(
        "import pycalico.cni.runner, pycalico.cni.plugin, pycalico.ipam, pycalico.datastore.sqlite"
    )
    assert "pycalico.model.network" in mods
    assert not {"pycalico.model.convert", "pycalico.selector", "uuid"} & mods


def test_model_convert_is_the_function_whichever_import_comes_first() -> None:
    code = (
        "from pycalico.model.convert import entity_selector\n"
        "import pycalico.model as m\n"
        "from pycalico.model import convert, k8s_to_v3_spec\n"
        "assert callable(convert) and convert is m.convert and convert.__name__ == 'convert'\n"
        "assert k8s_to_v3_spec.__name__ == 'k8s_to_v3_spec'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_new_uid_is_a_random_rfc4122_v4_uuid() -> None:
    ids = {new_uid() for _ in range(200)}
    assert len(ids) == 200
    for s in ids:
        u = uuid.UUID(s)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, s)


def test_pool_node_selection_matches_the_parser() -> None:
    labels = {"zone": "a"}
    for sel in ("all()", " all() ", "zone == 'a'", "zone == 'b'", "has(zone)", "!has(zone)"):
        pool = IPPool.from_resource(
            {
                "kind": "IPPool",
                "metadata": {"name": "p"},
                "spec": {"cidr": "10.0.0.0/16", "nodeSelector": sel},
            }
        )
        assert pool.selects_node(labels) is parse(sel).evaluate(labels)
