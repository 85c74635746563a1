"""Which build of pycalico is running: the version (one place, ``pycalico.__version__``, also
read by the packaging metadata) and the git commit it was built from.

The commit comes from the ``_commit`` file inside the package, written by ``make wheel``
when a wheel or sdist is built; in a source checkout (editable install) it is asked of git.
Invariant: never raises; ``unknown`` when neither source answers within a second.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
COMMIT_FILE = PACKAGE_DIR / "_commit"


@cache
def git_commit() -> str:
    try:
        text = COMMIT_FILE.read_text().strip()
    except OSError:
        text = ""
    if text:
        return text
    try:
        p = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=1.0,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else "unknown"
