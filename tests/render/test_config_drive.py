"""NoCloud config drive content: meta-data, user-data and network-config v2."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from cloudctl.render import (
    DEFAULT_USER_DATA,
    ConfigDriveSpec,
    NetworkConfigNic,
    render_config_drive,
)

from .factories import MAC1, MAC2, UUID

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0123456789abcdefghij alice@laptop"
LONG_KEY = "ssh-rsa " + "A" * 700 + " bob@desk"


def drive(**overrides: Any) -> ConfigDriveSpec:
    fields: dict[str, Any] = {"uuid": UUID, "hostname": "web-1"}
    fields.update(overrides)
    return ConfigDriveSpec(**fields)


def files(**overrides: Any) -> dict[str, str]:
    return render_config_drive(drive(**overrides))


def meta(**overrides: Any) -> Any:
    return yaml.safe_load(files(**overrides)["meta-data"])


def network(**overrides: Any) -> Any:
    return yaml.safe_load(files(**overrides)["network-config"])


def test_the_three_nocloud_files() -> None:
    assert sorted(files()) == ["meta-data", "network-config", "user-data"]


def test_meta_data() -> None:
    assert meta(public_keys=(KEY, LONG_KEY)) == {
        "instance-id": UUID,
        "local-hostname": "web-1",
        "public-keys": [KEY, LONG_KEY],
    }


@pytest.mark.parametrize("hostname", ["web-1", "db", "a.example.org", "x1-y2-z3"])
def test_local_hostname_is_a_plain_greppable_line(hostname: str) -> None:
    text = files(hostname=hostname)["meta-data"]
    assert f"\nlocal-hostname: {hostname}\n" in text
    # what the test guest's busybox /init does
    line = next(line for line in text.splitlines() if line.startswith("local-hostname:"))
    assert re.sub(r"^local-hostname: *", "", line) == hostname
    assert f"instance-id: {UUID}\n" in text


@pytest.mark.parametrize("hostname", ["123", "true", "null", "1.5", "0x1f", "no", "on"])
def test_hostnames_yaml_would_misread_are_quoted(hostname: str) -> None:
    text = files(hostname=hostname)["meta-data"]
    assert f"local-hostname: {hostname}\n" not in text
    assert yaml.safe_load(text)["local-hostname"] == hostname


def test_long_public_keys_stay_on_one_line() -> None:
    text = files(public_keys=(LONG_KEY,))["meta-data"]
    assert f"- {LONG_KEY}\n" in text


def test_public_keys_lose_the_newline_of_a_pub_file() -> None:
    assert meta(public_keys=(KEY + "\n", " " + LONG_KEY + "\r\n"))["public-keys"] == [KEY, LONG_KEY]


def test_no_public_keys_is_an_empty_list() -> None:
    assert meta()["public-keys"] == []


def test_metadata_goes_under_meta_sorted() -> None:
    text = files(metadata={"role": "db", "env": "prod: eu & <us>"})["meta-data"]
    assert yaml.safe_load(text)["meta"] == {"env": "prod: eu & <us>", "role": "db"}
    assert text.index("env:") < text.index("role:")
    assert "meta" not in meta()


def test_default_user_data_is_an_empty_cloud_config() -> None:
    user_data = files()["user-data"]
    assert user_data == DEFAULT_USER_DATA == "#cloud-config\n{}\n"
    assert user_data.startswith("#cloud-config\n")
    assert yaml.safe_load(user_data) == {}


@pytest.mark.parametrize(
    "user_data", ["#!/bin/sh\necho hi > /tmp/x\n", "#cloud-config\npackages: [htop]\n", ""]
)
def test_user_data_is_verbatim(user_data: str) -> None:
    assert files(user_data=user_data)["user-data"] == user_data


def test_network_config_v2_static_ipv4() -> None:
    nic = NetworkConfigNic(MAC1, "10.20.0.5", 24, "10.20.0.1", ("10.20.0.2", "9.9.9.9"))
    assert network(network=(nic,)) == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": MAC1},
                "addresses": ["10.20.0.5/24"],
                "routes": [{"to": "0.0.0.0/0", "via": "10.20.0.1"}],
                "nameservers": {"addresses": ["10.20.0.2", "9.9.9.9"]},
            }
        },
    }


def test_network_config_ipv6_and_minimal_nics_in_order() -> None:
    config = network(
        network=(
            NetworkConfigNic(MAC1, "10.20.0.5", 24),
            NetworkConfigNic(MAC2, "fd00::5", 64, "fd00::1", ("fd00::53",)),
        )
    )
    assert list(config["ethernets"]) == ["eth0", "eth1"]
    assert config["ethernets"]["eth0"] == {
        "match": {"macaddress": MAC1},
        "addresses": ["10.20.0.5/24"],
    }
    assert config["ethernets"]["eth1"] == {
        "match": {"macaddress": MAC2},
        "addresses": ["fd00::5/64"],
        "routes": [{"to": "::/0", "via": "fd00::1"}],
        "nameservers": {"addresses": ["fd00::53"]},
    }


def test_mac_that_looks_like_a_yaml_1_1_number_stays_a_string() -> None:
    # 52:54:00:12:34:01 is a sexagesimal integer to a YAML 1.1 reader unless quoted
    config = network(network=(NetworkConfigNic(MAC1, "10.0.0.5", 24),))
    assert config["ethernets"]["eth0"]["match"]["macaddress"] == MAC1


def test_no_nics_gives_an_empty_v2_config() -> None:
    assert network() == {"version": 2, "ethernets": {}}
    assert files()["network-config"].startswith("version: 2\n")


def test_rendering_is_deterministic() -> None:
    spec = drive(public_keys=(KEY,), network=(NetworkConfigNic(MAC1, "10.0.0.5", 24),))
    assert render_config_drive(spec) == render_config_drive(spec)
