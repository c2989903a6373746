"""Secrets kept out of what cloudctl prints and logs: passwords in URLs (pure)."""

from __future__ import annotations

import re

#: ``scheme://user:password@``: the password runs to the first ``@``, as SQLAlchemy reads a URL
#: (it may hold ``/`` and ``:``), and within one word of text.
_URL_PASSWORD_RE = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):[^\s@]*@")
MASK = "***"


def mask_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL shown as ***."""
    return _URL_PASSWORD_RE.sub(lambda m: f"{m['head']}:{MASK}@", text)
