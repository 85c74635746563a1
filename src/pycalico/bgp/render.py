"""render_bird_config: :class:`BirdConfig` → BIRD 2 config text via ``bird.cfg.j2``.

Invariants: the template only formats the model (loops/conditionals over its fields); the
output is deterministic for a given model; undefined template variables are errors.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import jinja2

from pycalico.bgp.model import KERNEL_METRIC, BirdConfig

TEMPLATE = "bird.cfg.j2"


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    text = resources.files("pycalico.bgp").joinpath(TEMPLATE).read_text()
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=False,
    )
    return env.from_string(text)


def render_bird_config(cfg: BirdConfig) -> str:
    """The full ``bird.cfg`` text for ``cfg`` (both families, one BIRD 2 daemon)."""
    return _template().render(cfg=cfg, kernel_metric=KERNEL_METRIC)
