"""``calicoctl validate -f FILE|DIR|-``: exit codes and one line per problem."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pycalico.ctl.validate import validate

GOOD = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-dns
spec:
  selector: all()
  egress:
  - action: Allow
    protocol: UDP
    destination:
      ports: [53]
"""

BAD = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: web
spec:
  ingress:
  - action: Allow
    protocol: ICMP
    destination:
      ports: [80, "90:10"]
"""


def test_valid_file_exits_zero(tmp_path: Path) -> None:
    f = tmp_path / "good.yaml"
    f.write_text(GOOD + "---\n" + GOOD.replace("allow-dns", "allow-dns-2"))
    result = CliRunner().invoke(validate, ["-f", str(f)])
    assert result.exit_code == 0, result.output
    assert "2 resource" in result.output


def test_problems_one_line_each_and_exit_one(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    result = CliRunner().invoke(validate, ["-f", str(f)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "NetworkPolicy web: spec.ingress[0].destination.ports[1]: "
        "invalid port range '90:10': minimum port is greater than maximum"
    ]
    f.write_text(BAD.replace('"90:10"', '"90:100"'))
    result = CliRunner().invoke(validate, ["-f", str(f)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "NetworkPolicy web: spec.ingress[0].destination.ports: "
        "rules that specify ports must set protocol to TCP or UDP or SCTP"
    ]


def test_directory_reads_yaml_yml_json_only(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yml").write_text(GOOD.replace("allow-dns", "b"))
    (tmp_path / "c.json").write_text(
        '{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}}'
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = CliRunner().invoke(validate, ["-f", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "3 resource" in result.output
    (tmp_path / "d.yaml").write_text(BAD)
    assert CliRunner().invoke(validate, ["-f", str(tmp_path)]).exit_code == 1


def test_stdin_and_syntax_errors() -> None:
    ok = CliRunner().invoke(validate, ["-f", "-"], input=GOOD)
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(validate, ["-f", "-"], input="kind: [oops\n")
    assert bad.exit_code == 1
    assert bad.output.startswith("<stdin>: cannot parse")


def test_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(validate, ["-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output
