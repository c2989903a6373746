"""Reading desired-state files: what the documents name stays in the tree given to -f, and the
files of one -f are read up to 16 MiB in all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudctl.services import desired

H = "apiVersion: cloudctl.dev/v1\n"


def image(**files: str) -> str:
    spec = "".join(f"  {k}: {v}\n" for k, v in files.items())
    return f"{H}kind: Image\nmetadata: {{name: img}}\nspec:\n{spec}"


def tree(tmp_path: Path) -> Path:
    """``tmp_path/estate`` (what -f names) beside ``tmp_path/outside/secret.img``."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.img").write_text("SECRET-CANARY\n")
    root = tmp_path / "estate"
    (root / "img").mkdir(parents=True)
    (root / "img" / "disk.raw").write_bytes(b"\0" * 512)
    return root


#: (label, how to lay out the tree, the Image document, the problem from its line on; None: fine).
CASES: list[tuple[str, Callable[[Path], None], str, str | None]] = [
    ("a file in the tree", lambda r: None, image(file="img/disk.raw"), None),
    ("up and back in", lambda r: None, image(file="img/../img/disk.raw"), None),
    (
        "a symlink inside the tree",
        lambda r: (r / "link.raw").symlink_to(r / "img" / "disk.raw"),
        image(file="link.raw"),
        None,
    ),
    (
        "../../../../etc/shadow",
        lambda r: None,
        image(file="../../../../etc/shadow"),
        "5: spec.file: ../../../../etc/shadow resolves outside {root}",
    ),
    (
        "an absolute path out of the tree",
        lambda r: None,
        image(kernel="/etc/shadow"),
        "5: spec.kernel: /etc/shadow resolves outside {root}",
    ),
    (
        "a symlink pointing out of the tree",
        lambda r: (r / "img" / "evil.raw").symlink_to(r.parent / "outside" / "secret.img"),
        image(file="img/evil.raw"),
        "5: spec.file: img/evil.raw resolves outside {root}",
    ),
    (
        "a directory symlink out of the tree",
        lambda r: (r / "up").symlink_to(r.parent / "outside"),
        image(kernel="img/disk.raw", initrd="up/secret.img"),
        "6: spec.initrd: up/secret.img resolves outside {root}",
    ),
]


@pytest.mark.parametrize(
    ("layout", "text", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("check_files", [True, False], ids=["online", "offline"])
def test_files_a_document_names_stay_in_the_tree(
    tmp_path: Path,
    layout: Callable[[Path], None],
    text: str,
    message: str | None,
    check_files: bool,
) -> None:
    root = tree(tmp_path)
    layout(root)
    (root / "images.yaml").write_text(text)
    _, problems = desired.validate_path(None, root, check_files=check_files)
    if message is None:
        assert problems == []
        return
    [problem] = problems
    assert str(problem).startswith(f"{root / 'images.yaml'}:" + message.format(root=root))
    assert str(problem).endswith(
        ", the tree given to -f (a file a document names must be inside it)"
    )
    assert "SECRET-CANARY" not in str(problem)


def test_the_tree_of_a_file_is_its_directory(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "img" / "i.yaml").write_text(image(file="disk.raw", kernel="../img/disk.raw"))
    assert desired.validate_path(None, root / "img" / "i.yaml")[1] == []
    (root / "img" / "i.yaml").write_text(image(file="../img/disk.raw", kernel="../x.raw"))
    [problem] = desired.validate_path(None, root / "img" / "i.yaml")[1]
    assert problem.message.startswith(f"../x.raw resolves outside {root / 'img'}")


def test_yaml_files_linked_from_outside_the_tree_are_not_read(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (tmp_path / "outside" / "leak.yaml").write_text("kind: SECRET-CANARY\n")
    (root / "leak.yaml").symlink_to(tmp_path / "outside" / "leak.yaml")
    (root / "ok.yaml").write_text(image(file="img/disk.raw"))
    estate, problems = desired.validate_path(None, root)
    assert estate.files == () and estate.documents == ()
    assert [str(p) for p in problems] == [
        f"{root / 'leak.yaml'}:1: resolves outside {root}, the tree given to -f"
    ]


def test_the_files_of_one_f_are_read_up_to_16_mib(tmp_path: Path) -> None:
    root = tmp_path / "estate"
    root.mkdir()
    half = desired.MAX_ESTATE_BYTES // 2
    (root / "a.yaml").write_text("# " + "x" * (half - 3) + "\n")
    (root / "b.yaml").write_text("# " + "x" * (half - 3) + "\n")
    files = desired.read_files(root)
    assert len(files) == 2 and files.problems == ()
    (root / "c.yaml").write_text("# x\n")
    files = desired.read_files(root)
    assert list(files) == []
    assert [str(p) for p in files.problems] == [
        f"{root / 'c.yaml'}:1: the files of -f {root} hold more than 16777216 bytes (16 MiB) "
        "together, the most cloudctl reads"
    ]


def test_a_huge_file_is_never_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:  # 64 GiB, sparse: reading it whole would not end
        fh.truncate(64 * 1024**3)
    estate, problems = desired.validate_path(None, big)
    assert estate.documents == ()
    assert [p.message for p in problems] == [
        f"the files of -f {big} hold more than 16777216 bytes (16 MiB) together, the most "
        "cloudctl reads"
    ]
    assert os.path.getsize(big) == 64 * 1024**3
