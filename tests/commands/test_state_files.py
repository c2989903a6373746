"""``cloudctl validate`` and ``cloudctl schema`` through the real CLI entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloudctl.db import models
from cloudctl.db.session import Database
from cloudctl.main import run
from cloudctl.services import desired, flavors
from cloudctl.services.context import Context
from cloudctl.state import Known
from tests.conftest import add_host

Cli = Callable[..., tuple[int, str, str]]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "estate"
H = "apiVersion: cloudctl.dev/v1\n"
SERVER = (
    f"{H}kind: Server\nmetadata: {{name: web}}\nspec: {{flavor: m1, image: tiny, replicas: 2}}\n"
)
FLAVOR = f"{H}kind: Flavor\nmetadata: {{name: m1}}\nspec: {{vcpus: 1, ram_mb: 64, disk_gb: 1}}\n"
IMAGE = f"{H}kind: Image\nmetadata: {{name: tiny}}\nspec: {{source: tiny}}\n"


@pytest.fixture
def cli(ctx: Context, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI over the ``ctx`` fixture's database."""
    monkeypatch.setenv("CLOUDCTL_HOME", str(ctx.settings.home))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = run(["--db", ctx.settings.db_url, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def lab(ctx: Context) -> None:
    """The hosts of ``lab up --hosts 4 --azs 2``."""
    for i in range(1, 5):
        add_host(ctx, f"lab-{i}", availability_zone=f"az{(i - 1) % 2 + 1}")


def row_counts(db_url: str) -> dict[str, int]:
    db = Database(db_url)
    try:
        with db.unit_of_work() as session:
            return {
                table.name: session.scalar(select(func.count()).select_from(table)) or 0
                for table in models.Base.metadata.sorted_tables
            }
    finally:
        db.dispose()


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_examples_are_valid_against_the_lab(cli: Cli, ctx: Context) -> None:
    lab(ctx)
    before = row_counts(ctx.settings.db_url)
    code, out, err = cli("validate", "-f", str(EXAMPLES))
    assert (code, out) == (0, "")
    assert err.strip() == "4 files, 11 documents, 7 servers: valid"
    assert row_counts(ctx.settings.db_url) == before  # nothing written


def test_problems_exit_2_with_one_line_each_and_nothing_written(
    cli: Cli, ctx: Context, tmp_path: Path
) -> None:
    root = write(
        tmp_path / "estate",
        {
            "a.yaml": FLAVOR,
            "b.yaml": SERVER.replace("m1", "m1.hge")
            + f"---\n{H}kind: Flavour\nmetadata: {{name: x}}\n",
        },
    )
    before = row_counts(ctx.settings.db_url)
    code, out, err = cli("validate", "-f", str(root))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f'error: {root}/b.yaml:4: spec.flavor: unknown flavor "m1.hge"',
        f'error: {root}/b.yaml:4: spec.image: unknown image "tiny"',
        f'error: {root}/b.yaml:7: kind: unknown kind "Flavour"; did you mean "Flavor"?',
        "2 files, 2 documents, 2 servers: 3 problems",
    ]
    assert row_counts(ctx.settings.db_url) == before
    assert flavors.list_flavors(ctx) == []  # the Flavor document was only read


def test_json_output(cli: Cli, ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, {"s.yaml": SERVER})
    code, out, err = cli("validate", "-f", str(path / "s.yaml"), "-o", "json")
    assert code == 2 and err == ""
    view = json.loads(out)
    assert (view["valid"], view["files"], view["documents"], view["servers"]) == (False, 1, 1, 2)
    assert [p["text"] for p in view["problems"]] == [
        f'{path}/s.yaml:4: spec.flavor: unknown flavor "m1"',
        f'{path}/s.yaml:4: spec.image: unknown image "tiny"',
    ]
    assert view["problems"][0] | {"text": ""} == {
        "file": f"{path}/s.yaml",
        "line": 4,
        "path": "spec.flavor",
        "message": 'unknown flavor "m1"',
        "text": "",
    }
    write(tmp_path, {"s.yaml": FLAVOR + "---\n" + IMAGE + "---\n" + SERVER})
    code, out, _ = cli("validate", "-f", str(path / "s.yaml"), "-o", "json")
    assert code == 0 and json.loads(out)["valid"] is True


def test_names_from_the_database_count(cli: Cli, ctx: Context, tmp_path: Path) -> None:
    flavors.create_flavor(ctx, "m1", vcpus=1, memory_mb=64, root_gb=1)
    path = write(tmp_path, {"s.yaml": IMAGE + "---\n" + SERVER})
    code, _, err = cli("validate", "-f", str(path / "s.yaml"))
    assert code == 0, err
    assert err.strip() == "1 file, 2 documents, 2 servers: valid"


def test_offline_never_opens_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"s.yaml": SERVER})
    db = tmp_path / "never.db"
    assert (
        run(["--db", f"sqlite:///{db}", "validate", "-f", str(path / "s.yaml"), "--offline"]) == 0
    )
    assert not db.exists()
    assert "1 file, 1 document, 2 servers: valid" in capsys.readouterr().err


def test_directories_recursive_sorted_hidden_skipped(cli: Cli, tmp_path: Path) -> None:
    root = write(
        tmp_path / "estate",
        {
            "z/servers.yml": SERVER,
            "a.yaml": FLAVOR,
            "b/image.yaml": IMAGE,
            ".git/bad.yaml": "not: [valid",
            "notes.txt": "not yaml",
        },
    )
    assert [Path(n).relative_to(root).as_posix() for n, _ in desired.read_files(root)] == [
        "a.yaml",
        "b/image.yaml",
        "z/servers.yml",
    ]
    code, _, err = cli("validate", "-f", str(root))
    assert code == 0, err


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "no such file or directory"),
        (lambda p: p, "no *.yaml or *.yml files under"),
    ],
)
def test_unusable_paths(
    cli: Cli, tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = cli("validate", "-f", str(make(tmp_path / "empty")))
    assert code == 2 and expected in err and err.startswith("error: invalid input: ")


def test_image_files_must_exist_relative_to_their_file(ctx: Context, tmp_path: Path) -> None:
    text = (
        f"{H}kind: Image\nmetadata: {{name: img}}\nspec:\n  file: disk.qcow2\n  kernel: k/vmlinuz\n"
    )
    path = write(tmp_path, {"img/i.yaml": text}) / "img" / "i.yaml"
    _, problems = desired.validate_path(ctx, path)
    assert [str(p) for p in problems] == [
        f"{path}:5: spec.file: {tmp_path}/img/disk.qcow2: no such file or not a regular file",
        f"{path}:6: spec.kernel: {tmp_path}/img/k/vmlinuz: no such file or not a regular file",
    ]
    (tmp_path / "img" / "disk.qcow2").write_bytes(b"")
    _, problems = desired.validate_path(ctx, path)
    assert len(problems) == 1
    assert desired.validate_path(ctx, path, check_files=False)[1] == []


def test_image_files_must_lie_inside_the_tree_even_offline(ctx: Context, tmp_path: Path) -> None:
    text = f"{H}kind: Image\nmetadata: {{name: img}}\nspec:\n  kernel: /nonexistent/vmlinuz\n"
    path = write(tmp_path, {"img/i.yaml": text}) / "img" / "i.yaml"
    for check_files in (True, False):
        _, problems = desired.validate_path(ctx, path, check_files=check_files)
        assert [str(p) for p in problems] == [
            f"{path}:5: spec.kernel: /nonexistent/vmlinuz resolves outside {tmp_path}/img, the "
            "tree given to -f (a file a document names must be inside it)"
        ]


def test_known_names_reads_what_cloudctl_has(ctx: Context) -> None:
    lab(ctx)
    flavors.create_flavor(ctx, "m1", vcpus=1, memory_mb=64, root_gb=1)
    known = desired.known_names(ctx)
    assert known == Known(
        flavors=frozenset({"m1"}),
        hosts={"lab-1": "az1", "lab-2": "az2", "lab-3": "az1", "lab-4": "az2"},
    )


def test_schema_prints_json(cli: Cli) -> None:
    code, out, _ = cli("schema")
    schema = json.loads(out)
    assert code == 0 and schema["$schema"].endswith("draft/2020-12/schema")
    assert "Server" in schema["$defs"]
