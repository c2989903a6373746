"""Passwords in URLs never reach a message (pure, from a table)."""

from __future__ import annotations

import pytest

from cloudctl.domain.secrets import mask_passwords

CASES = [
    (
        "postgresql+psycopg://cloudctl:s3cret@127.0.0.1:5432/db",
        "postgresql+psycopg://cloudctl:***@127.0.0.1:5432/db",
    ),
    ("x postgresql://u:pa/ss:w@h/db y", "x postgresql://u:***@h/db y"),
    ("a postgresql://u:@h/db b", "a postgresql://u:***@h/db b"),
    (
        "postgresql://u:p@h/db?options=-csearch_path%3Dx and mysql://a:b@c",
        "postgresql://u:***@h/db?options=-csearch_path%3Dx and mysql://a:***@c",
    ),
    # nothing to hide: left as it is
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ("x postgresql://h:5432/db y@z", "x postgresql://h:5432/db y@z"),
    ("sqlite:////tmp/state.db", "sqlite:////tmp/state.db"),
    ("no url here: a:b@c", "no url here: a:b@c"),
]


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_passwords_in_urls_are_masked(text: str, shown: str) -> None:
    assert mask_passwords(text) == shown
