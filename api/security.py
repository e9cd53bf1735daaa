"""API keys: stored as SHA-256 hashes, each bound to one principal and one role."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, select

from indexer.errors import Forbidden, JiangxinError, NotFound
from rag.db import ApiKeyRow, sessions

Role = Literal["enterprise", "craftsman", "maintainer"]
ROLES: tuple[str, ...] = ("enterprise", "craftsman", "maintainer")


class Unauthorized(JiangxinError):
    """No key, or a key that is unknown or revoked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id, its role and the principal it acts for (enterprise or craftsman id)."""

    key_id: str
    role: str
    principal: str
    name: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.session = sessions(engine)

    def create(self, role: str, name: str, principal: str | None = None) -> tuple[str, Principal]:
        """A new key; the plain key is returned once and never stored."""
        if role not in ROLES:
            raise JiangxinError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if not name.strip():
            raise JiangxinError("a key needs a name")
        key = "jx_" + secrets.token_urlsafe(32)
        key_id = "K" + secrets.token_hex(5)
        principal = (principal or name).strip()
        with self.session.begin() as session:
            session.add(ApiKeyRow(id=key_id, key_hash=hash_key(key), name=name.strip(), role=role, principal=principal))
        return key, Principal(key_id, role, principal, name.strip())

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        with self.session.begin() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(key))).first()
            if row is None or row.revoked:
                raise Unauthorized("unknown or revoked API key")
            return Principal(row.id, row.role, row.principal, row.name)

    def revoke(self, key_id: str) -> None:
        with self.session.begin() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no key with id {key_id}")
            row.revoked = True

    def list(self) -> list[Principal]:
        with self.session.begin() as session:
            return [Principal(r.id, r.role, r.principal, r.name) for r in session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked.is_(False)))]


def require(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise Forbidden(f"this needs the role {' or '.join(roles)}; your key has role {principal.role}")
