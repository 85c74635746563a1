"""pycalico.selector: the Calico selector language.

Owns parsing (:func:`parse`, cached), evaluation (``Selector.evaluate``, compiled), canonical
printing (``str(selector)``), Calico's selector unique IDs and the label-restriction analysis
a label index uses.  Invariant: every parse failure is a :class:`SelectorError` (a
``CalicoError`` and a ``ValueError``) carrying the error position.
"""

from pycalico.selector.ast import LabelRestriction, Node
from pycalico.selector.errors import SelectorError
from pycalico.selector.selector import (
    Selector,
    and_selectors,
    clear_parse_cache,
    make_unique_id,
    parse,
    parse_cache_info,
    validate,
)
from pycalico.selector.tokenizer import MAX_LABEL_LENGTH

__all__ = [
    "MAX_LABEL_LENGTH",
    "LabelRestriction",
    "Node",
    "Selector",
    "SelectorError",
    "and_selectors",
    "clear_parse_cache",
    "make_unique_id",
    "parse",
    "parse_cache_info",
    "validate",
]
