"""Secret redaction for diagnostics: what a bundle may carry and what it must not.

Owns: which environment variables and configuration lines are secret. A variable is secret
when its name contains PASSWORD, PASSWD, SECRET, TOKEN or CREDENTIAL, or ends in ``_KEY``
(``ETCD_KEY_FILE`` is a path and stays; the key file itself is never collected). In text,
BIRD ``password "..."`` statements and ``password:``/``secret:``/``token:`` YAML or
``KEY=value`` lines lose their values.

Invariant: redaction keeps the shape (the name, the quoting) and replaces only the value
with :data:`REDACTED`, so a reader still sees which setting was set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "<redacted>"

_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|_KEY$", re.IGNORECASE)
#: Prefixes of the environment variables a bundle records (others are not ours).
ENV_PREFIXES = ("CALICO_", "FELIX_", "ETCD_", "DATASTORE_", "NODENAME", "IP", "IP6", "CNI_",
                "KUBECONFIG", "NO_DEFAULT_POOLS", "CLUSTER_TYPE", "HOSTNAME")  # fmt: skip

_TEXT_RULES = (
    # BIRD: password "secret";
    (re.compile(r'(\bpassword\s+")([^"]*)(")', re.IGNORECASE), rf"\g<1>{REDACTED}\g<3>"),
    # YAML / JSON: password: x, "token": "x"
    (
        re.compile(
            r'(["\']?\b(?:password|secret|token|credentials?)\b["\']?\s*:\s*)(\S.*?)(,?\s*)$',
            re.IGNORECASE | re.MULTILINE,
        ),
        rf"\g<1>{REDACTED}\g<3>",
    ),
    # env files: NAME=value where NAME is secret
    (
        re.compile(
            r"^(\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*"
            r"(?:PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|_KEY)\s*=).*$",
            re.IGNORECASE | re.MULTILINE,
        ),
        rf"\g<1>{REDACTED}",
    ),
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Our variables (:data:`ENV_PREFIXES`), secret values replaced."""
    return {
        k: (REDACTED if is_secret_name(k) else v)
        for k, v in sorted(env.items())
        if k.startswith(ENV_PREFIXES)
    }


def redact_text(text: str) -> str:
    for pattern, repl in _TEXT_RULES:
        text = pattern.sub(repl, text)
    return text
