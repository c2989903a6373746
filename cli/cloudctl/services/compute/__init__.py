"""The instance lifecycle: boot, delete, power, rebuild, console, views (a module per use case)."""

from cloudctl.services.compute.boot import (
    BootRequest,
    boot,
    build_in_worker,
    build_instances,
    host_states,
    instance_names,
    make_scheduler,
    parse_az,
)
from cloudctl.services.compute.common import (
    config_drive_files,
    domain_spec,
    get_instance,
    launch_worker,
)
from cloudctl.services.compute.delete import delete, forget, reclaim_soft_deleted, restore
from cloudctl.services.compute.power import console, lock, power, unlock
from cloudctl.services.compute.rebuild import rebuild
from cloudctl.services.compute.views import (
    action_list,
    action_show,
    instance_view,
    list_instances,
    show_instance,
)

__all__ = [
    "BootRequest",
    "action_list",
    "action_show",
    "boot",
    "build_in_worker",
    "build_instances",
    "config_drive_files",
    "console",
    "delete",
    "domain_spec",
    "forget",
    "get_instance",
    "host_states",
    "instance_names",
    "instance_view",
    "launch_worker",
    "list_instances",
    "lock",
    "make_scheduler",
    "parse_az",
    "power",
    "rebuild",
    "reclaim_soft_deleted",
    "restore",
    "show_instance",
    "unlock",
]
