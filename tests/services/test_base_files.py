"""The base files a host caches for an image (``compute.common.base_files``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudctl.db.models import Image
from cloudctl.errors import ConfigError
from cloudctl.services.compute.common import base_files

A, B = "a" * 64, "b" * 64


def test_each_file_once_with_its_size(tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"12345")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kk")
    image = Image(
        path=str(disk),
        checksum=A,
        kernel_path=str(kernel),
        kernel_checksum=B,
        initrd_path=str(kernel),  # the same content again: cached once
        initrd_checksum=B,
    )
    assert base_files(image) == [
        {"src": str(disk), "checksum": A, "size": 5},
        {"src": str(kernel), "checksum": B, "size": 2},
    ]


def test_a_missing_source_is_one_clear_error_and_no_image_no_files(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone.qcow2")
    with pytest.raises(ConfigError, match=f"needs its disk file {gone}, which is missing on this"):
        base_files(Image(name="tiny", path=gone, checksum=A))
    assert base_files(Image(path=None, checksum=None)) == []
    assert base_files(None) == []
