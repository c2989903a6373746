"""Load :class:`~cloudctl.domain.settings.Settings` from the environment and a YAML file.

Precedence: explicit arguments (``--db``), then environment (``CLOUDCTL_HOME``, ``CLOUDCTL_DB``,
``CLOUDCTL_CONFIG``, ``CLOUDCTL_PROJECT``, ``CLOUDCTL_USER``), then ``$CLOUDCTL_HOME/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cloudctl.domain.settings import NetworkSettings, SchedulerSettings, Settings
from cloudctl.errors import ConfigError
from cloudctl.scheduler.registry import load_filters, load_weighers

DEFAULT_HOME = Path.home() / ".local" / "share" / "cloudctl"


def load_settings(
    *, db_url: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings for one command invocation."""
    env = os.environ if environ is None else environ
    home = Path(env.get("CLOUDCTL_HOME") or DEFAULT_HOME).expanduser()
    config_path = Path(env.get("CLOUDCTL_CONFIG") or home / "config.yaml").expanduser()
    data: dict[str, Any] = {}
    if config_path.is_file():
        try:
            loaded = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(reason=f"{config_path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(reason=f"{config_path}: top level must be a mapping")
        data = loaded
    url = (
        db_url or env.get("CLOUDCTL_DB") or data.pop("db", None) or f"sqlite:///{home / 'state.db'}"
    )
    data.pop("db", None)
    scheduler = _section(SchedulerSettings, data.pop("scheduler", {}), "scheduler")
    network = _section(NetworkSettings, data.pop("network", {}), "network")
    known = {f.name for f in dataclasses.fields(Settings)} - {
        "home",
        "db_url",
        "scheduler",
        "network",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(reason=f"{config_path}: unknown setting(s) {', '.join(sorted(unknown))}")
    if "CLOUDCTL_PROJECT" in env:
        data["project_id"] = env["CLOUDCTL_PROJECT"]
    if "CLOUDCTL_USER" in env:
        data["user_id"] = env["CLOUDCTL_USER"]
    try:
        settings = Settings(
            home=home, db_url=str(url), scheduler=scheduler, network=network, **data
        )
    except TypeError as exc:
        raise ConfigError(reason=f"{config_path}: {exc}") from exc
    choices = {
        "sync_power_state_policy": ("report", "restore"),
        "running_deleted_instance_action": ("reap", "log", "noop"),
    }
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            raise ConfigError(
                reason=f"{config_path}: {name} must be one of {', '.join(allowed)}, "
                f"not {getattr(settings, name)!r}"
            )
    # Unknown plugin names stop every command at start-up, not the first boot hours later.
    if scheduler.enabled_filters is not None:
        load_filters(scheduler.enabled_filters, scheduler)
    if scheduler.weighers is not None:
        load_weighers(scheduler.weighers, scheduler)
    return settings


def _section(cls: type[Any], raw: Any, name: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(reason=f"config section {name!r} must be a mapping")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - fields
    if unknown:
        raise ConfigError(reason=f"unknown {name} setting(s) {', '.join(sorted(unknown))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**values)
