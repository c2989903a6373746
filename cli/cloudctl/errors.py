"""The one exception tree of cloudctl.

Every error carries a message template and its keyword values, so commands can print one line and
machines can read the fields. ``exit_code`` maps the error to the CLI contract: 2 for usage and
validation errors (the request was wrong), 1 for operations that failed (the request was fine).
"""

from __future__ import annotations

from typing import Any, ClassVar


class CloudctlError(Exception):
    """Base of every error cloudctl raises on purpose."""

    msg_fmt: ClassVar[str] = "an unknown error occurred"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt.format(**kwargs)
            except (KeyError, IndexError):
                message = self.msg_fmt
        self.message = message
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view: error class, message and the template's values."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "details": {k: _plain(v) for k, v in self.kwargs.items()},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class InvalidInput(CloudctlError):
    """The request is malformed: bad name, negative size, unknown option value."""

    msg_fmt = "invalid input: {reason}"
    exit_code = 2


class NotFound(CloudctlError):
    """A named object does not exist."""

    msg_fmt = "{kind} {name!r} not found"
    exit_code = 2


class AlreadyExists(CloudctlError):
    """A named object exists already."""

    msg_fmt = "{kind} {name!r} already exists"
    exit_code = 2


class InUse(CloudctlError):
    """An object cannot be removed while something uses it."""

    msg_fmt = "{kind} {name!r} is in use: {reason}"
    exit_code = 2


class QuotaExceeded(CloudctlError):
    """The project's quota does not allow the request."""

    msg_fmt = "quota exceeded for {resource}: requested {requested}, in use {used}, limit {limit}"
    exit_code = 1


class InvalidState(CloudctlError):
    """The instance is not in a state that allows the action."""

    msg_fmt = "cannot {action} instance {name!r} while vm_state={vm_state} task_state={task_state}"
    exit_code = 1


class InstanceBusy(InvalidState):
    """Another command holds the instance's task (its task_state is that command's lock)."""

    msg_fmt = (
        "cannot {action} instance {name!r}: task_state {task_state} is held by another command"
    )
    exit_code = 1


class LeaseLost(CloudctlError):
    """This command's lease was taken over (it was taken for dead): it must write no more."""

    msg_fmt = (
        "{command}: lost its lease on instance {name!r} (another controller took it over after "
        "missed heartbeats and settles the instance)"
    )
    exit_code = 1


class NoValidHost(CloudctlError):
    """The scheduler found no host for the request."""

    msg_fmt = "no valid host was found: {reason}"
    exit_code = 1


class ClaimConflict(CloudctlError):
    """The ledger changed under a claim too many times in a row."""

    msg_fmt = (
        "could not claim resources on {host}: concurrent updates, gave up after {attempts} attempts"
    )
    exit_code = 1


class ExecutorError(CloudctlError):
    """An Ansible run failed."""

    msg_fmt = "{playbook} failed on {host}: {reason}"
    exit_code = 1


class BuildFailed(CloudctlError):
    """Spawning an instance failed; the instance is in ERROR with a fault."""

    msg_fmt = "build of instance {name!r} failed: {reason}"
    exit_code = 1


class ImageBuildError(CloudctlError):
    """Building a local image (e.g. the tiny test image) failed."""

    msg_fmt = "could not build image: {reason}"
    exit_code = 1


class ConfigError(CloudctlError):
    """The configuration file or environment is wrong."""

    msg_fmt = "configuration error: {reason}"
    exit_code = 2


class StateUnavailable(CloudctlError):
    """The state database cannot be used: unreachable, refused us, or not a cloudctl state.

    Exit 1, as for any operation that failed: the command asked for was well formed, and it
    works again once the database answers or the file is restored. ``url`` never shows a
    password.
    """

    msg_fmt = "state database {url}: {reason}"
    exit_code = 1


class LockHeld(CloudctlError):
    """Another process holds the lock."""

    msg_fmt = "lock {name!r} is held by {holder}"
    exit_code = 1


class OperationFailed(CloudctlError):
    """An action on an instance failed on the host; details are in its fault and events."""

    msg_fmt = "{action} of instance {name!r} failed: {reason}"
    exit_code = 1
