"""Leases on work in flight: a publish job, an import job, a ticket's publish, a visit's service case.

Work in flight sits in a state (``running``, ``publishing``) that only its process can end. When that process dies
the work must be recovered — a job failed, a ticket back to answered — but a second process cannot tell a dead
worker from a slow one by the age of the row: an import of a large sheet runs for an hour. So the process holding
the work holds a lease (a ``leases`` row: subject, holder, expiry) and renews it every ``RENEW`` while it works;
recovery (``Recoverer``, each server, every ``RECOVER_EVERY``) takes only work whose lease has run out or that has
none and is older than ``LEASE`` (rows written before leases existed, or between a state change and its lease).

A lease is granted in the transaction that puts the work in flight where that transaction is ours (``grant``), else
just after it (``Lease.take``; the grace covers the gap); it is released when the work has left its in-flight state.
Renewing and releasing are compare-and-sets on the holder, and a lease that ran out is never renewed: recovery may
already be taking its work. Recovery withdraws what abandoned work wrote before it gives the work back.

Times are the servers' clocks (as every timestamp here): servers sharing a database must keep them in step (NTP)
to well within ``LEASE - RENEW`` (45 s), or live work of a server running behind could be taken for abandoned.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta

from sqlalchemy import Engine, and_, delete, exists, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rag.db import LeaseRow, sessions, utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
RENEW = 15.0  # seconds: four renewals per lease, so one slow database round does not lose it
RECOVER_EVERY = 30.0  # seconds between a server's recovery passes (api/service.py Recoverer)


def abandoned(subject_prefix: str, row_id, changed_at, grace: timedelta = LEASE):
    """A SQL condition: the work ``subject_prefix + row_id`` has no live lease and last changed (``changed_at``)
    more than ``grace`` ago (a lease is written just after the change that puts work in flight)."""
    now = utcnow()
    live = exists(select(LeaseRow.subject).where(LeaseRow.subject == literal(subject_prefix) + row_id,
                                                 LeaseRow.expires_at > now))
    return and_(~live, changed_at < now - grace)


def recover_each(abandoned_ids: Iterable[str], withdraw: Callable[[str], None], give_back: Callable[[str], bool],
                 what: str) -> list[str]:
    """Recover abandoned work one item at a time: ``withdraw`` what it wrote while it is still in flight (nothing can
    publish it anew in between), then ``give_back`` (a compare-and-set: another recoverer may have done it). An item
    that fails — the index busy — is logged and stays in flight for the next pass. Returns the ids given back."""
    recovered = []
    for item in abandoned_ids:
        try:
            withdraw(item)
            if give_back(item):
                log.warning("%s %s was left in flight by a stopped process; recovered", what, item)
                recovered.append(item)
        except Exception:  # noqa: BLE001 - the next pass tries again; the others go on
            log.exception("%s %s could not be recovered now; the next recovery pass tries again", what, item)
    return recovered


def grant(session: Session, subject: str, holder: str) -> None:
    """Write the lease in the caller's transaction: one upsert, so it replaces an expired one of a dead holder, and of
    several takers at once the last one holds it (the others' renewals and releases then touch nothing)."""
    dialect = session.get_bind().dialect.name
    upsert = (pg_insert if dialect == "postgresql" else sqlite_insert)(LeaseRow).values(
        subject=subject, holder=holder, expires_at=utcnow() + LEASE)
    session.execute(upsert.on_conflict_do_update(index_elements=["subject"], set_={
        "holder": upsert.excluded.holder, "expires_at": upsert.excluded.expires_at}))


class Lease:
    """One lease, renewed by a daemon thread from ``start`` (or ``take``) until ``release``."""

    def __init__(self, engine: Engine, subject: str) -> None:
        self.session, self.subject = sessions(engine), subject
        self.holder = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> "Lease":
        """Write the lease in its own transaction and start renewing it."""
        with self.session.begin() as session:
            grant(session, self.subject, self.holder)
        return self.start()

    def start(self) -> "Lease":
        """Renew the lease (written by ``grant`` in the caller's transaction) until ``release``."""
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.subject}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(RENEW)
        try:
            with self.session.begin() as session:
                session.execute(delete(LeaseRow).where(LeaseRow.subject == self.subject, LeaseRow.holder == self.holder))
        except Exception:  # noqa: BLE001 - the lease then runs out by itself; the work it covered is finished
            log.exception("lease %s could not be released; it runs out in %s", self.subject, LEASE)

    def __enter__(self) -> "Lease":
        return self.take()

    def __exit__(self, *exc) -> None:
        self.release()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW):
            try:
                with self.session.begin() as session:
                    now = utcnow()  # a lease that ran out stays lost: recovery may already be taking its work
                    kept = session.execute(update(LeaseRow).where(LeaseRow.subject == self.subject, LeaseRow.holder == self.holder,
                                                                  LeaseRow.expires_at > now)
                                           .values(expires_at=now + LEASE).execution_options(synchronize_session=False))
                if not kept.rowcount:
                    log.warning("lease %s was lost (it ran out and the work was recovered)", self.subject)
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: the next renewal may succeed before the lease ends
                log.exception("lease %s could not be renewed", self.subject)
