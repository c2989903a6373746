"""The catalog verbs through the real CLI entry point: output formats, exit codes, errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cloudctl.main import run

Cli = Callable[..., tuple[int, str, str]]
PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@example"
)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("CLOUDCTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = run(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_flavor_lifecycle_and_formats(cli: Cli) -> None:
    code, out, _ = cli(
        "flavor",
        "create",
        "m1",
        "--vcpus",
        "2",
        "--ram",
        "256",
        "--disk",
        "3",
        "--property",
        "hw:cpu_policy=shared",
        "-o",
        "json",
    )
    assert code == 0 and json.loads(out)["properties"] == {"hw:cpu_policy": "shared"}
    code, out, _ = cli("flavor", "list", "-o", "yaml")
    assert yaml.safe_load(out)[0]["vcpus"] == 2
    code, out, _ = cli("flavor", "list")
    assert "m1" in out and "VCPUS" in out
    assert cli("flavor", "create", "m1", "--vcpus", "1", "--ram", "1", "--disk", "1")[0] == 2
    assert cli("flavor", "delete", "m1")[0] == 0
    code, _, err = cli("flavor", "show", "m1")
    assert code == 2 and err.startswith("error: flavor 'm1' not found")


def test_image_add_from_file_and_kernel(cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "32M"], check=True)
    kernel = tmp_path / "k"
    kernel.write_bytes(b"kernel")
    code, out, err = cli(
        "image",
        "add",
        "img",
        "--file",
        str(disk),
        "--kernel",
        str(kernel),
        "--cmdline",
        "console=ttyS0",
        "-o",
        "json",
    )
    assert code == 0, err
    view = json.loads(out)
    assert (view["disk_format"], view["virtual_size"], view["kernel"], view["initrd"]) == (
        "qcow2",
        32 * 1024**2,
        True,
        False,
    )
    assert len(view["checksum"]) == 64
    overlay = tmp_path / "o.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk), str(overlay)],
        check=True,
    )
    code, _, err = cli("image", "add", "bad", "--file", str(overlay))
    assert code == 2 and "backing file" in err
    assert cli("image", "add", "bad", "--initrd", str(kernel))[0] == 2
    assert cli("image", "add", "bad", "--kernel", str(kernel), "--cmdline", "a\nb")[0] == 2
    assert [i["name"] for i in json.loads(cli("image", "list", "-o", "json")[1])] == ["img"]
    images_dir = tmp_path / "home" / "images"
    assert [p.name for p in images_dir.iterdir()] == [view["id"]]
    assert cli("image", "delete", "img")[0] == 0
    assert list(images_dir.iterdir()) == []


def test_keypair_add_list_delete(cli: Cli, tmp_path: Path) -> None:
    pub = tmp_path / "k.pub"
    pub.write_text(PUBKEY + "\n")
    code, out, _ = cli("keypair", "add", "k1", "--public-key", str(pub), "-o", "json")
    assert code == 0 and json.loads(out)["fingerprint"].startswith("SHA256:")
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    code, _, err = cli("keypair", "add", "k2", "--public-key", str(bad))
    assert code == 2 and "OpenSSH public key" in err
    assert cli("keypair", "add", "k3", "--public-key", str(tmp_path / "missing"))[0] == 2
    assert [k["name"] for k in json.loads(cli("keypair", "list", "-o", "json")[1])] == ["k1"]
    assert cli("keypair", "delete", "k1")[0] == 0
    assert json.loads(cli("keypair", "list", "-o", "json")[1]) == []


def test_errors_are_one_line_with_exit_codes(cli: Cli) -> None:
    code, out, err = cli("show", "ghost")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "instance 'ghost' not found" in err
    code, _, err = cli("boot", "x", "--flavor", "f")
    assert code == 2 and "Missing option" in err
    assert cli("--version")[0] == 0
    assert cli("host", "discover")[0] == 2


def test_config_file_errors(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.yaml").write_text("nonsense_setting: 1\n")
    code, _, err = cli("flavor", "list")
    assert code == 2 and "unknown setting(s) nonsense_setting" in err
    (home / "config.yaml").write_text("scheduler: {enabled_filters: [NoSuchFilter]}\n")
    code, _, err = cli("flavor", "list")
    assert code == 2 and "unknown scheduler filter(s) NoSuchFilter" in err
