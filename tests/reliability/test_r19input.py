"""Issue 19, slice r19input: calicoctl and hostile input.

Every probe of the issue's "calicoctl and hostile files" list, run through the real calicoctl
command line (click's runner, sqlite datastore in a temp dir): alias bombs, ``-f /dev/zero``,
random bytes, duplicate keys, huge or NUL-carrying values echoed in errors, an unterminated
custom-columns template, a datastore path in a missing directory, a policy in a missing tier,
file modes of the datastore and the lab directory; plus hypothesis fuzzing of the manifest
loader and the selector parser.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.api import ValidationFailed, decode_all, load_documents
from pycalico.api.loader import MAX_MANIFEST_BYTES
from pycalico.ctl.main import cli

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.1.0.0/16}
"""

WRITE_COMMANDS = ("apply", "create", "replace", "delete", "validate")


@pytest.fixture()
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATASTORE_TYPE", "sqlite")
    monkeypatch.setenv("CALICO_DATASTORE_PATH", str(tmp_path / "calico.db"))
    runner = CliRunner()

    def run(*args: str, stdin: str | bytes | None = None) -> Result:
        return runner.invoke(cli, list(args), input=stdin)

    return run


def _no_traceback(r: Result) -> None:
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


# --- 1. bounded YAML -----------------------------------------------------------------------


def test_alias_bomb_is_rejected_fast(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    assert len(BOMB) < 600
    for cmd in WRITE_COMMANDS:
        t0 = time.monotonic()
        r = ctl(cmd, "-f", str(f))
        took = time.monotonic() - t0
        _no_traceback(r)
        assert "aliases expand to more than" in r.output
        assert took < 2.0, f"{cmd}: {took:.2f}s"


def test_recursive_alias_and_deep_nesting_rejected() -> None:
    with pytest.raises(ValidationFailed, match="recursive YAML alias"):
        load_documents("a: &a [*a]\n")
    for deep in (
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "[" * 5000 + "]" * 5000,
        "a:\n" + "".join(" " * i + "- \n" for i in range(1, 300)),
        "x: " + "{a: " * 150 + "1" + "}" * 150,
    ):
        with pytest.raises(ValidationFailed, match=r"nested deeper than|nesting depth"):
            load_documents(deep)
    # ordinary anchors and merge keys keep working
    docs = load_documents("a: &x {b: 1}\nc: *x\nd:\n  <<: *x\n  e: 2\n")
    assert docs == [{"a": {"b": 1}, "c": {"b": 1}, "d": {"b": 1, "e": 2}}]


def test_dev_zero_fails_fast_with_a_clear_error(ctl) -> None:  # type: ignore[no-untyped-def]
    for cmd in WRITE_COMMANDS:
        t0 = time.monotonic()
        r = ctl(cmd, "-f", "/dev/zero")
        took = time.monotonic() - t0
        _no_traceback(r)
        assert f"larger than {MAX_MANIFEST_BYTES} bytes" in r.output, r.output
        assert took < 10.0, f"{cmd}: {took:.2f}s"


def test_oversized_stdin_rejected(ctl) -> None:  # type: ignore[no-untyped-def]
    r = ctl("apply", "-f", "-", stdin=b"#" * (MAX_MANIFEST_BYTES + 10))
    _no_traceback(r)
    assert "larger than" in r.output


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_give_a_clear_error(ctl, tmp_path: Path, seed: int) -> None:  # type: ignore[no-untyped-def]
    import random

    data = random.Random(seed).randbytes(4096)
    f = tmp_path / "junk.yaml"
    f.write_bytes(data)
    for cmd in WRITE_COMMANDS:
        for args, stdin in (((cmd, "-f", str(f)), None), ((cmd, "-f", "-"), data)):
            r = ctl(*args, stdin=stdin)
            _no_traceback(r)
            assert "not UTF-8" in r.output or "cannot parse" in r.output, r.output


def test_duplicate_key_rejected_with_its_path(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
        "metadata: {name: p}\nspec:\n  selector: all()\n  selector: app == 'x'\n"
    )
    f = tmp_path / "dup.yaml"
    f.write_text(text)
    for cmd in WRITE_COMMANDS:
        r = ctl(cmd, "-f", str(f))
        _no_traceback(r)
        assert "spec.selector: duplicate key" in r.output, r.output
    json_text = '{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "kind": "Tier"}'
    with pytest.raises(ValidationFailed, match="kind: duplicate key"):
        load_documents(json_text)


def test_errors_quote_a_bounded_escaped_excerpt(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    huge = "v" * (5 * 1024 * 1024)
    f = tmp_path / "huge.yaml"
    f.write_text(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\n"
        f"metadata:\n  name: pool1\n  labels: {{a: {huge}}}\nspec: {{cidr: 10.1.0.0/16}}\n"
    )
    r = ctl("create", "-f", str(f))
    _no_traceback(r)
    assert len(r.output) < 4000, len(r.output)
    g = tmp_path / "nul.yaml"
    g.write_text(
        'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: "bad\\0name"}\n'
        "spec: {cidr: 10.1.0.0/16}\n"
    )
    for cmd in WRITE_COMMANDS:
        r = ctl(cmd, "-f", str(g))
        _no_traceback(r)
        assert "\x00" not in r.output
        assert "bad\\x00name" in r.output, r.output


# --- 6. fuzzing: the manifest loader and the selector parser ----------------------------------

FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_TRIED: dict[str, int] = {}
_SLOWEST: dict[str, float] = {}

YAMLISH = ":-[]{},&*!|>'\"#%@`?\n\t \\0123456789abcdefkindmetadatnpsc.=()\x00\x85\ufeff\u2028é"
WORDS = [
    "apiVersion: projectcalico.org/v3\n",
    "kind: GlobalNetworkPolicy\n",
    "kind: IPPool\n",
    "kind: List\nitems:\n",
    "metadata:\n  name: x\n",
    "spec:\n  selector: all()\n",
    "spec: {cidr: 10.0.0.0/8}\n",
    "---\n",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!int ",
    "!!binary ",
    "!!python/object ",
    "- ",
    "  ",
    "{",
    "}",
    "[",
    "]",
    "? ",
    "%YAML 1.1\n",
    '"\\x00"',
    "1e999",
    "0x",
    "null",
    "~",
]

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["all()", "10.0.0.0/8", "TCP", "Allow", "projectcalico.org/v3"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["name", "spec", "selector", "ingress", "action", "ports", "tier", "x"])
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@st.composite
def resource_docs(draw: st.DrawFn) -> object:
    from pycalico.api import KINDS

    kind = draw(st.sampled_from(sorted(KINDS)))
    return {
        "apiVersion": draw(st.sampled_from([KINDS[kind].api_version, "v1", 3, None])),
        "kind": kind,
        "metadata": draw(st.fixed_dictionaries({"name": VALUES}) | VALUES),
        "spec": draw(VALUES),
    }


def _load_any(label: str, data: bytes | str) -> None:
    from pycalico.api.loader import ManifestError, text_of

    _TRIED[label] = _TRIED.get(label, 0) + 1
    t0 = time.monotonic()
    try:
        text = text_of(data) if isinstance(data, bytes) else data
        decode_all(text, source="<fuzz>")
    except (ManifestError, ValidationFailed) as e:
        assert "\x00" not in str(e)
    took = time.monotonic() - t0
    _SLOWEST[label] = max(_SLOWEST.get(label, 0.0), took)
    assert took < 2.0, f"{took:.2f}s for {data[:200]!r}"


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_loader_arbitrary_bytes(data: bytes) -> None:
    _load_any("bytes", data)


@FUZZ
@given(
    st.lists(st.sampled_from(WORDS) | st.text(alphabet=YAMLISH, max_size=8), max_size=40).map(
        "".join
    )
)
def test_fuzz_loader_yamlish_text(text: str) -> None:
    _load_any("yamlish", text)


@FUZZ
@given(st.lists(resource_docs(), min_size=1, max_size=3), st.sampled_from(["yaml", "json"]))
def test_fuzz_loader_resource_shaped_documents(docs: list[object], fmt: str) -> None:
    import json

    import yaml

    if fmt == "json":
        text = json.dumps(docs if len(docs) > 1 else docs[0])
    else:
        text = yaml.safe_dump_all(docs)
    _load_any("resources", text)


SELECTOR_CHARS = "ab01 \t()!&|=~'\"-_./,{}<>" + "hasallinotcontainsstartswithendsglobal" + "\x00é"


@FUZZ
@given(
    st.text(max_size=200)
    | st.lists(
        st.sampled_from(
            [
                "has(",
                "all()",
                "global()",
                " in {",
                " not in {",
                "}",
                " == ",
                " != ",
                "'x'",
                '"y"',
                " && ",
                " || ",
                "!",
                "(",
                ")",
                " contains ",
                " starts with ",
                " ends with ",
                "a",
                "k8s.io/b",
                ",",
            ]
        )
        | st.text(alphabet=SELECTOR_CHARS, max_size=6),
        max_size=30,
    ).map("".join)
)
def test_fuzz_selector_parser_only_raises_selector_error(text: str) -> None:
    from pycalico.selector import SelectorError, parse

    _TRIED["selector"] = _TRIED.get("selector", 0) + 1
    try:
        parse(text)
    except SelectorError:
        pass


def test_fuzz_report() -> None:
    """Prints how many examples the fuzz tests above tried (run with ``-s`` to see it)."""
    print(
        f"\nr19input fuzz: examples tried {_TRIED}, slowest (s) "
        f"{ {k: round(v, 4) for k, v in _SLOWEST.items()} }"
    )


# --- 2. custom-columns ---------------------------------------------------------------------


def test_unterminated_custom_columns_template_fails(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "pool.yaml"
    f.write_text(POOL)
    assert ctl("apply", "-f", str(f)).exit_code == 0
    for bad in ("NAME:{.metadata.name", "NAME:.metadata.name}", "NAME:{}", ":.metadata.name"):
        r = ctl("get", "ippools", "-o", f"custom-columns={bad}")
        _no_traceback(r)
        assert "custom-columns" in r.output, r.output
    for good in ("NAME:{.metadata.name}", "NAME:.metadata.name"):
        r = ctl("get", "ippools", "-o", f"custom-columns={good},CIDR:{{.spec.cidr}}")
        assert r.exit_code == 0, r.output
        assert r.output.splitlines()[1].split() == ["pool1", "10.1.0.0/16"]


# --- 3. read commands never create a datastore ------------------------------------------------


def test_read_commands_fail_on_a_datastore_in_a_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    monkeypatch.setenv("DATASTORE_TYPE", "sqlite")
    monkeypatch.setenv("CALICO_DATASTORE_PATH", str(missing / "calico.db"))
    runner = CliRunner()
    reads = [
        ["get", "ippools"],
        ["get", "ippool", "pool1", "-o", "yaml"],
        ["ipam", "show"],
        ["ipam", "show", "--show-blocks"],
        ["ipam", "check"],
        ["ipam", "release", "--ip", "10.0.0.1"],
        ["delete", "ippool", "pool1"],
        ["patch", "ippool", "pool1", "-p", '{"spec": {"natOutgoing": true}}'],
        ["label", "ippool", "pool1", "a=b"],
        ["datastore", "migrate", "export"],
        ["policy", "matrix"],
    ]
    for args in reads:
        r = runner.invoke(cli, args)
        _no_traceback(r)
        assert "does not exist" in r.output, (args, r.output)
        assert not (tmp_path / "no").exists(), args
    # a writer still creates the store (and its directory, owner-only)
    f = tmp_path / "pool.yaml"
    f.write_text(POOL)
    r = runner.invoke(cli, ["apply", "-f", str(f)])
    assert r.exit_code == 0, r.output
    assert (missing / "calico.db").is_file()
    assert stat.S_IMODE(missing.stat().st_mode) == 0o700
    r = runner.invoke(cli, ["get", "ippools", "-o", "name"])
    assert r.exit_code == 0 and r.output.split() == ["pool1"]


# --- 5. file modes ----------------------------------------------------------------------------


def test_sqlite_datastore_files_are_owner_only(tmp_path: Path) -> None:
    from pycalico.datastore.sqlite import SqliteDatastore

    old = os.umask(0o022)
    try:
        path = tmp_path / "store" / "calico.db"
        ds = SqliteDatastore(str(path))
        try:
            ds.create(
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "IPPool",
                    "metadata": {"name": "p"},
                    "spec": {"cidr": "10.9.0.0/16"},
                }
            )
            modes = {
                p.name: stat.S_IMODE(p.stat().st_mode)
                for p in path.parent.iterdir()
                if p.name.startswith("calico.db")
            }
        finally:
            ds.close()
        assert set(modes) >= {"calico.db", "calico.db-wal", "calico.db-shm"}, modes
        assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        # an existing world-readable store (an old version made it 0644, and its -wal/-shm
        # too) is tightened to 0600 on open and keeps working
        legacy = tmp_path / "legacy.db"
        SqliteDatastore(str(legacy)).close()
        for p in (legacy, tmp_path / "legacy.db-wal", tmp_path / "legacy.db-shm"):
            p.touch()
            p.chmod(0o644)
        ds = SqliteDatastore(str(legacy))
        try:
            ds.create(
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "IPPool",
                    "metadata": {"name": "q"},
                    "spec": {"cidr": "10.8.0.0/16"},
                }
            )
            assert [o["metadata"]["name"] for o in ds.list("IPPool").items] == ["q"]
            legacy_modes = {
                p.name: stat.S_IMODE(p.stat().st_mode)
                for p in tmp_path.iterdir()
                if p.name.startswith("legacy.db")
            }
        finally:
            ds.close()
        assert legacy_modes == dict.fromkeys(
            ("legacy.db", "legacy.db-wal", "legacy.db-shm"), 0o600
        ), {k: oct(v) for k, v in legacy_modes.items()}
    finally:
        os.umask(old)


def test_lab_directory_is_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycalico.lab.state import BASE_DIR_ENV, LabState, lab_dir, make_lab_dir

    monkeypatch.setenv(BASE_DIR_ENV, str(tmp_path / "labs"))
    old = os.umask(0o022)
    try:
        d = make_lab_dir("t1")
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        LabState(name="t2", prefix="clt2-", directory=str(lab_dir("t2"))).save()
        assert stat.S_IMODE(lab_dir("t2").stat().st_mode) == 0o700
        assert LabState.load("t2").name == "t2"
    finally:
        os.umask(old)


# --- 4. a policy's tier must exist ------------------------------------------------------------

TIERED = [
    "GlobalNetworkPolicy",
    "NetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedNetworkPolicy",
]


def _policy(kind: str, tier: str | None, name: str = "p1") -> str:
    spec = f"tier: {tier}, " if tier else ""
    ns = ", namespace: ns1" if "Global" not in kind else ""
    return (
        f"apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: {name}{ns}}}\n"
        f"spec: {{{spec}selector: all(), ingress: [{{action: Allow}}]}}\n"
    )


@pytest.mark.parametrize("kind", TIERED)
def test_policy_in_a_missing_tier_is_rejected(ctl, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "missing.yaml"
    missing.write_text(_policy(kind, "security"))
    for cmd in ("create", "apply"):
        r = ctl(cmd, "-f", str(missing))
        _no_traceback(r)
        assert "resource does not exist: Tier(security)" in r.output, r.output
    assert ctl("get", kind, "-A", "-o", "name").output.split() == []
    # the built-in tiers always exist
    for tier in (None, "default", "kube-admin", "kube-baseline"):
        f = tmp_path / f"builtin-{tier}.yaml"
        f.write_text(_policy(kind, tier, name=f"p-{tier or 'none'}"))
        r = ctl("apply", "-f", str(f))
        assert r.exit_code == 0, (tier, r.output)
    # replace into a missing tier is rejected; with the Tier created first it works
    ok = tmp_path / "ok.yaml"
    ok.write_text(_policy(kind, "default"))
    assert ctl("create", "-f", str(ok)).exit_code == 0
    r = ctl("replace", "-f", str(missing))
    _no_traceback(r)
    assert "resource does not exist: Tier(security)" in r.output, r.output
    tier = tmp_path / "tier.yaml"
    tier.write_text(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\n"
        "spec: {order: 100}\n---\n" + _policy(kind, "security", name="p2")
    )
    r = ctl("apply", "-f", str(tier))
    assert r.exit_code == 0, r.output
    r = ctl("replace", "-f", str(missing))
    assert r.exit_code == 0, r.output


def test_patch_into_a_missing_tier_is_rejected(ctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.yaml"
    f.write_text(_policy("GlobalNetworkPolicy", None))
    assert ctl("apply", "-f", str(f)).exit_code == 0
    r = ctl("patch", "globalnetworkpolicy", "p1", "-p", '{"spec": {"tier": "nope"}}')
    _no_traceback(r)
    assert "Tier(nope)" in r.output, r.output
