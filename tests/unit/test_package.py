import subprocess
import sys


def test_console_scripts_have_help() -> None:
    import pycalico

    assert pycalico.__version__
    bindir = sys.executable.rsplit("/", 1)[0]
    for script in ("calicoctl", "calico-node", "calico-lab", "calico", "calico-ipam"):
        out = subprocess.run([f"{bindir}/{script}", "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (script, out.stderr)
        assert (out.stdout + out.stderr).strip(), script
