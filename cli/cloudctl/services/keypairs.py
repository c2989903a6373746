"""SSH key pairs, injected into guests through the config drive."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import KeyPair
from cloudctl.domain import validation
from cloudctl.errors import AlreadyExists, InvalidInput, NotFound
from cloudctl.services.context import Context


def fingerprint(public_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    blob = base64.b64decode(public_key.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def get_keypair(session: Session, user_id: str, name: str) -> KeyPair:
    """A live key pair of a user by name."""
    kp = session.scalars(
        select(KeyPair).where(
            KeyPair.user_id == user_id, KeyPair.name == name, KeyPair.deleted == 0
        )
    ).first()
    if kp is None:
        raise NotFound(kind="key pair", name=name)
    return kp


def add_keypair(ctx: Context, name: str, public_key: str) -> dict[str, Any]:
    """Register a public key (one line of an OpenSSH ``.pub`` file)."""
    validation.object_name("key pair", name)
    key = public_key.strip()
    if not validation.PUBLIC_KEY_RE.match(key):
        raise InvalidInput(
            reason="public key must be one OpenSSH public key line (ssh-ed25519 AAAA...)"
        )
    try:
        fp = fingerprint(key)
    except (ValueError, IndexError) as exc:
        raise InvalidInput(reason=f"public key is not valid base64: {exc}") from exc
    user = ctx.settings.user_id
    with ctx.db.unit_of_work() as session:
        exists = session.scalars(
            select(KeyPair.id).where(
                KeyPair.user_id == user, KeyPair.name == name, KeyPair.deleted == 0
            )
        ).first()
        if exists:
            raise AlreadyExists(kind="key pair", name=name)
        kp = KeyPair(
            name=name, user_id=user, fingerprint=fp, public_key=key, created_at=ctx.clock()
        )
        session.add(kp)
        session.flush()
        return keypair_view(kp)


def list_keypairs(ctx: Context) -> list[dict[str, Any]]:
    """The current user's key pairs."""
    with ctx.db.unit_of_work() as session:
        rows = session.scalars(
            select(KeyPair)
            .where(KeyPair.user_id == ctx.settings.user_id, KeyPair.deleted == 0)
            .order_by(KeyPair.name)
        )
        return [keypair_view(k) for k in rows]


def delete_keypair(ctx: Context, name: str) -> None:
    """Soft-delete a key pair (guests booted with it keep the key)."""
    with ctx.db.unit_of_work() as session:
        kp = get_keypair(session, ctx.settings.user_id, name)
        kp.deleted = kp.id
        kp.deleted_at = ctx.clock()


def keypair_view(kp: KeyPair) -> dict[str, Any]:
    """A key pair as the CLI shows it."""
    return {
        "name": kp.name,
        "fingerprint": kp.fingerprint,
        "type": kp.type,
        "public_key": kp.public_key,
    }
