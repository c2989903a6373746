"""Nova's extra-spec operators: does a host value satisfy a flavor's requirement string.

A requirement is either plain text or an operator followed by its operand(s):

====================  ==========================================================
requirement           passes when the host value ...
====================  ==========================================================
``ssd``               equals the text exactly (no operator)
``= 4``               is a number >= 4 (Nova's meaning of ``=``: "at least")
``== 4`` ``!= 4``     is a number equal / not equal to 4
``>= 4`` ``<= 4``     is a number at least / at most 4
``s== a`` ``s!= a``   equals / differs from the string ``a``
``s< a`` ``s<= a``    sorts before (or equal to) ``a``; ``s>`` ``s>=`` after
``<in> a``            contains ``a`` as a substring
``<all-in> a b``      contains every word ``a``, ``b`` as substrings
``<or> a <or> b``     equals one of ``a``, ``b``
====================  ==========================================================

A numeric operator on a value that is not a number does not match (Nova raises instead).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
}
_STRING: dict[str, Callable[[str, str], bool]] = {
    "s==": operator.eq,
    "s!=": operator.ne,
    "s<": operator.lt,
    "s<=": operator.le,
    "s>": operator.gt,
    "s>=": operator.ge,
    "<in>": lambda value, word: word in value,
}
OPERATORS: tuple[str, ...] = (*_NUMERIC, *_STRING, "<all-in>", "<or>")


def matches(value: str | None, requirement: str) -> bool:
    """Whether ``value`` satisfies ``requirement`` (see the module docstring for the syntax)."""
    words = requirement.split()
    op = words[0] if words else ""
    if op not in OPERATORS:
        return value == requirement
    operands = words[1:]
    if value is None or not operands:
        return False
    if op == "<or>":
        # "<or> a <or> b": the alternatives are every other word.
        return value in operands[::2]
    if op == "<all-in>":
        return all(word in value for word in operands)
    if op in _STRING:
        return _STRING[op](value, operands[0])
    try:
        return _NUMERIC[op](float(value), float(operands[0]))
    except ValueError:
        return False
