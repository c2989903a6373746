"""Rendering: libvirt domain XML from ``templates/`` (Jinja, XML-autoescaped) and config drives.

Pure apart from reading templates: build a :class:`DomainSpec` or :class:`ConfigDriveSpec`
(both validate themselves and raise :class:`cloudctl.errors.InvalidInput`), then render it.
"""

from cloudctl.render.config_drive import (
    CONFIG_DRIVE_LABEL,
    DEFAULT_USER_DATA,
    render_config_drive,
    render_meta_data,
    render_network_config,
)
from cloudctl.render.domain import DOMAIN_TEMPLATE, render_domain_xml
from cloudctl.render.environment import get_environment, make_environment
from cloudctl.render.spec import (
    METADATA_NAMESPACE,
    METADATA_PREFIX,
    RESERVED_METADATA_KEYS,
    ConfigDriveSpec,
    CpuMode,
    DiskBus,
    DiskCache,
    DiskDevice,
    DiskFormat,
    DiskSpec,
    DomainSpec,
    NetworkConfigNic,
    NicKind,
    NicSpec,
    VirtType,
)

__all__ = [
    "CONFIG_DRIVE_LABEL",
    "DEFAULT_USER_DATA",
    "DOMAIN_TEMPLATE",
    "METADATA_NAMESPACE",
    "METADATA_PREFIX",
    "RESERVED_METADATA_KEYS",
    "ConfigDriveSpec",
    "CpuMode",
    "DiskBus",
    "DiskCache",
    "DiskDevice",
    "DiskFormat",
    "DiskSpec",
    "DomainSpec",
    "NetworkConfigNic",
    "NicKind",
    "NicSpec",
    "VirtType",
    "get_environment",
    "make_environment",
    "render_config_drive",
    "render_domain_xml",
    "render_meta_data",
    "render_network_config",
]
