"""Instance actions, their events and faults (Nova's instance_actions / instance_faults)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import Instance, InstanceAction, InstanceActionEvent, InstanceFault

SUCCESS = "Success"
ERROR = "Error"


def new_request_id() -> str:
    """An id tying together everything one command did."""
    return f"req-{uuid.uuid4()}"


def start_action(
    session: Session, instance: Instance, action: str, request_id: str, now: datetime
) -> InstanceAction:
    """Record the start of a user-visible action."""
    row = InstanceAction(
        action=action,
        instance_uuid=instance.uuid,
        request_id=request_id,
        user_id=instance.user_id,
        project_id=instance.project_id,
        start_time=now,
    )
    session.add(row)
    session.flush()
    return row


def current_action(session: Session, instance_uuid: str, request_id: str) -> InstanceAction:
    """The action a request started on an instance."""
    row = session.scalars(
        select(InstanceAction).where(
            InstanceAction.instance_uuid == instance_uuid,
            InstanceAction.request_id == request_id,
        )
    ).first()
    if row is None:
        raise LookupError(f"no action {request_id} on {instance_uuid}")
    return row


def start_event(
    session: Session, action: InstanceAction, event: str, now: datetime, host: str | None = None
) -> InstanceActionEvent:
    """Record the start of one step."""
    row = InstanceActionEvent(action_row=action, event=event, start_time=now, host=host)
    session.add(row)
    session.flush()
    return row


def finish_event(
    session: Session,
    action: InstanceAction,
    event: str,
    now: datetime,
    result: str = SUCCESS,
    details: str | None = None,
    host: str | None = None,
    started: datetime | None = None,
) -> InstanceActionEvent:
    """Finish the open event named ``event`` (creating it if it was never started).

    An event that already finished is left as it was: finishing is idempotent.
    """
    row = next(
        (e for e in reversed(action.events) if e.event == event and e.finish_time is None), None
    )
    if row is None:
        done = next((e for e in reversed(action.events) if e.event == event), None)
        if done is not None:
            return done
        row = start_event(session, action, event, started or now, host)
    row.finish_time = now
    row.result = result
    if details:
        row.details = details
    if host:
        row.host = host
    return row


def finish_action(action: InstanceAction, now: datetime, message: str | None = None) -> None:
    """Close an action; ``message`` is set on failure, as Nova does."""
    action.finish_time = now
    if message:
        action.message = message


def add_fault(
    session: Session,
    instance: Instance,
    message: str,
    details: str | None,
    now: datetime,
    host: str | None = None,
    code: int = 500,
) -> InstanceFault:
    """Record why an instance failed."""
    fault = InstanceFault(
        instance_uuid=instance.uuid,
        code=code,
        message=message[:255],
        details=details,
        host=host,
        created_at=now,
    )
    session.add(fault)
    return fault
