"""The inventory plugin's errors name the database without its password (real ansible-inventory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inventory.conftest import run_ansible

#: (a state URL whose password is s3cret, what the error says about it). Nothing listens on
#: port 1, so the PostgreSQL one fails the way a wrong password or a down server does.
URLS = [
    (
        "postgresql+psycopg://cloudctl:s3cret@127.0.0.1:1/cloudctl",
        "cloudctl: cannot read postgresql+psycopg://cloudctl:***@127.0.0.1:1/cloudctl: ",
    ),
    ("postgres://cloudctl:s3cret@db.example.org/cloudctl", "postgres://cloudctl:***@db"),
]


@pytest.mark.parametrize(("url", "said"), URLS)
def test_unusable_state_urls_never_show_the_password(tmp_path: Path, url: str, said: str) -> None:
    source = tmp_path / "team.cloudctl.yml"
    source.write_text(f"plugin: cloudctl\ndb: {url}\n")
    for env in ({}, {"CLOUDCTL_DB": url}):
        src = source if not env else tmp_path / "default.cloudctl.yml"
        if env:
            src.write_text("plugin: cloudctl\n")
        proc = run_ansible(["ansible-inventory", "-i", str(src), "--list"], tmp_path, env=env)
        assert proc.returncode != 0
        assert said in proc.stderr
        assert "s3cret" not in proc.stderr + proc.stdout
