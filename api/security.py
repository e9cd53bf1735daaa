"""API keys: stored as SHA-256 hashes, each bound to one principal and one role."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, select

from indexer.errors import Forbidden, JiangxinError, NotFound
from rag.db import ApiKeyRow, sessions

Role = Literal["enterprise", "craftsman", "maintainer"]
ROLES: tuple[str, ...] = ("enterprise", "craftsman", "maintainer")
PRINCIPAL_PREFIX = {"enterprise": "ent-", "maintainer": "ops-"}
PRINCIPAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")  # the corpus's record-id shape


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
        self.engine = engine
        self.session = sessions(engine)

    def create(self, role: str, name: str, principal: str | None = None) -> tuple[str, Principal]:
        """A new key; the plain key is returned once and never stored.

        The principal is what owns questions and tickets, so it is an id, never the display name: an enterprise
        or maintainer key without one gets a fresh opaque id (pass an existing one to give that principal
        another key); a craftsman key must name the craftsman's record id.
        """
        if role not in ROLES:
            raise JiangxinError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        name = name.strip()
        if not name:
            raise JiangxinError("a key needs a name")
        if principal is None or not principal.strip():
            if role == "craftsman":
                raise JiangxinError("a craftsman key needs --principal: the craftsman's record id (e.g. cm-hj-03)")
            principal = PRINCIPAL_PREFIX[role] + secrets.token_hex(8)
        principal = principal.strip()
        if not PRINCIPAL_ID.fullmatch(principal):
            raise JiangxinError(f"principal {principal!r} is not an id: use letters, digits and . _ : - (at most 128), "
                                "starting with a letter or digit")
        key = "jx_" + secrets.token_urlsafe(32)
        key_id = "K" + secrets.token_hex(5)
        with self.session.begin() as session:
            session.add(ApiKeyRow(id=key_id, key_hash=hash_key(key), name=name, role=role, principal=principal))
        return key, Principal(key_id, role, principal, name)

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        # every request reads this: one Core row, not an ORM session and its unit of work
        with self.engine.connect() as connection:
            row = connection.execute(select(ApiKeyRow.id, ApiKeyRow.role, ApiKeyRow.principal, ApiKeyRow.name, ApiKeyRow.revoked)
                                     .where(ApiKeyRow.key_hash == hash_key(key))).first()
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
