"""The image store never makes a file readable by more users than its source was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloudctl.services import images
from cloudctl.services.context import Context

#: (the source files' mode, the stored files' mode under umask 022 and under umask 0).
MODES = [
    (0o640, 0o640, 0o640),
    (0o600, 0o600, 0o600),
    (0o400, 0o400, 0o400),
    (0o644, 0o644, 0o644),
    (0o666, 0o644, 0o644),  # never writable by others
    (0o755, 0o644, 0o644),  # never executable
    (0o604, 0o604, 0o604),
]


def _mode(path: str | None) -> int:
    assert path is not None
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("source", "stored", "stored_umask_0"), MODES, ids=[f"{m[0]:04o}" for m in MODES]
)
def test_stored_files_are_never_wider_than_their_source(
    ctx: Context, tmp_path: Path, source: int, stored: int, stored_umask_0: int
) -> None:
    for umask, expected in ((0o022, stored), (0o000, stored_umask_0)):
        name = f"img-{source:o}-{umask:o}"
        files = {}
        for label in ("disk.raw", "vmlinuz", "initrd.img"):
            path = tmp_path / name / label
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * 4096)
            path.chmod(source)
            files[label] = path
        old = os.umask(umask)
        try:
            view = images.add_image(
                ctx,
                name,
                file=files["disk.raw"],
                kernel=files["vmlinuz"],
                initrd=files["initrd.img"],
            )
        finally:
            os.umask(old)
        with ctx.db.unit_of_work() as session:
            image = images.get_image(session, view["name"])
            stored_paths = (image.path, image.kernel_path, image.initrd_path)
        assert [_mode(p) for p in stored_paths] == [expected] * 3, name
