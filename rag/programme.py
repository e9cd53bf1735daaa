"""The programme's loop beyond a single question: challenges (发榜揭榜) and on-site visits (线下服务) whose de-identified
reports become service cases (线下服务线上展示).

Challenge: open → in_progress (the enterprise picks an application) → completed (it confirms), or cancelled.
Visit: requested (matched to a craftsman by trade and region) → scheduled → reported → confirmed → publishing →
published (a maintainer's edited service case is indexed), or cancelled.
Every transition is a compare-and-set (``UPDATE … WHERE id = :id AND status = :expected``) and writes its event
in the same transaction (rag/timeline.py). Confidential ones: craftsmen other than the picked team (challenge) see
the summary only, never the description; a confidential visit is never published; an enterprise is shown to
craftsmen as a pseudonym unless it reveals itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from indexer.errors import Conflict, JiangxinError, NotFound

from rag.db import ApplicationRow, ChallengeRow, VisitRow, sessions, utcnow, write_transaction
from rag.leases import LEASE, abandoned
from rag.timeline import as_shown, record

CONFIDENTIAL_SUMMARY = "（保密需求：详情仅对选中的工匠可见）"


def _new_id(prefix: str) -> str:
    return prefix + utcnow().strftime("%y%m%d") + secrets.token_hex(4).upper()


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


@dataclass(frozen=True)
class Viewer:
    """Who is looking: role, principal and (for a craftsman) their trades."""

    role: str
    principal: str
    trades: tuple[str, ...] = ()


@dataclass
class Application:
    id: str
    challenge_id: str
    craftsman: str
    plan: str
    team: list[str]
    status: str
    created_at: str | None

    def members(self) -> list[str]:
        return [self.craftsman, *self.team]


@dataclass
class Challenge:
    id: str
    enterprise: str
    title: str
    summary: str
    description: str | None  # None: hidden from this viewer (confidential)
    trade: str
    region: str
    deadline: str
    reward: str
    terms: str
    invited_only: bool
    invited: list[str]
    confidential: bool
    status: str
    picked: str | None
    created_at: str | None
    updated_at: str | None
    applications: list[Application] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "applications"} | {
            "applications": [a.__dict__ for a in self.applications]}


@dataclass
class Visit:
    id: str
    enterprise: str
    source: str
    title: str
    description: str
    trade: str
    region: str
    address: str
    preferred_dates: list[str]
    confidential: bool
    consent: bool
    craftsman: str | None
    status: str
    scheduled_for: str | None
    report: dict[str, str] | None
    case_record: str | None
    created_at: str | None
    updated_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Programme:
    """Challenges and visits over the queue's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session = sessions(engine)

    def _tx(self):
        """A write transaction (rag/db.py ``write_transaction``: reads inside it see the latest commit on SQLite)."""
        return write_transaction(self.session, "programme")

    # ----------------------------------------------------------------------------------------- challenges

    def post_challenge(self, enterprise: str, title: str, description: str, trade: str, deadline: str,
                       summary: str = "", region: str = "", reward: str = "", terms: str = "", invited_only: bool = False,
                       invited: Sequence[str] = (), confidential: bool = False, reveal: bool = False) -> Challenge:
        if deadline < date.today().isoformat():
            raise JiangxinError(f"deadline {deadline} is in the past")
        if invited_only and not invited:
            raise JiangxinError("an invited-only challenge needs at least one invited craftsman")
        row = ChallengeRow(id=_new_id("C"), enterprise=enterprise, title=title, summary=summary, description=description,
                           trade=trade, region=region, deadline=deadline, reward=reward, terms=terms,
                           invited_only=invited_only, invited=list(dict.fromkeys(invited)), confidential=confidential,
                           reveal=reveal, status="open")
        with self._tx() as session:
            session.add(row)
            session.flush()
            record(session, f"challenge:{row.id}", enterprise, "created", enterprise, {"trade": trade, "deadline": deadline})
            for craftsman in row.invited:
                record(session, f"challenge:{row.id}", enterprise, "invited", enterprise, {"craftsman": craftsman})
        return self.challenge(row.id, Viewer("enterprise", enterprise))

    def challenges(self, viewer: Viewer, status: str | None = None, limit: int = 100) -> list[Challenge]:
        """Maintainers: all. Enterprises: their own. Craftsmen: open public ones of their trades, those they are
        invited to, and those they applied to."""
        with self.session() as session:
            query = select(ChallengeRow).order_by(ChallengeRow.created_at.desc()).limit(5 * limit)
            if status:
                query = query.where(ChallengeRow.status == status)
            if viewer.role == "enterprise":
                query = query.where(ChallengeRow.enterprise == viewer.principal)
            rows = session.scalars(query).all()
            applied = set(session.scalars(select(ApplicationRow.challenge_id).where(
                ApplicationRow.craftsman == viewer.principal)).all()) if viewer.role == "craftsman" else set()
            apps = self._applications(session, [r.id for r in rows])
            out = [self._challenge(r, viewer, apps.get(r.id, [])) for r in rows
                   if self._may_see(r, viewer, apps.get(r.id, []), r.id in applied)]
            return out[:limit]

    def challenge(self, challenge_id: str, viewer: Viewer) -> Challenge:
        with self.session() as session:
            row = session.get(ChallengeRow, challenge_id)
            apps = self._applications(session, [challenge_id]).get(challenge_id, [])
            if row is None or not self._may_see(row, viewer, apps, any(viewer.principal in a.members() for a in apps)):
                raise NotFound(f"challenge {challenge_id} does not exist")
            return self._challenge(row, viewer, apps)

    def apply(self, challenge_id: str, viewer: Viewer, plan: str, team: Sequence[str] = (),
              is_craftsman: Callable[[str], bool] = lambda _: True) -> Application:
        """揭榜: a craftsman applies with a plan (and team mates); once per craftsman and challenge."""
        challenge = self.challenge(challenge_id, viewer)
        if challenge.status != "open":
            raise Conflict(f"challenge {challenge_id} is {challenge.status}, not open for applications")
        if challenge.deadline < date.today().isoformat():
            raise Conflict(f"challenge {challenge_id} closed on {challenge.deadline}")
        team = [m for m in dict.fromkeys(team) if m != viewer.principal]
        unknown = [m for m in team if not is_craftsman(m)]
        if unknown:
            raise JiangxinError(f"team: {', '.join(unknown)} is not a craftsman")
        row = ApplicationRow(id=_new_id("A"), challenge_id=challenge_id, craftsman=viewer.principal, plan=plan, team=team,
                             status="applied")
        try:
            with self._tx() as session:
                # the challenge must still be open when the application lands: touching it is the compare-and-set
                # that a pick or a cancellation (open → …) committed meanwhile makes fail
                self._cas(session, ChallengeRow, challenge_id, None, ("open",), "open")
                session.add(row)
                session.flush()
                record(session, f"challenge:{challenge_id}", challenge.enterprise, "applied", viewer.principal,
                       {"application": row.id, "team": team})
        except IntegrityError:
            raise Conflict(f"you already applied to challenge {challenge_id}") from None
        return _application(row)

    def pick(self, challenge_id: str, enterprise: str, application_id: str) -> Challenge:
        """The enterprise picks one application: the challenge is in progress, the other applications not picked."""
        with self._tx() as session:
            self._cas(session, ChallengeRow, challenge_id, enterprise, ("open",), "in_progress", picked=application_id)
            app = session.get(ApplicationRow, application_id)
            if app is None or app.challenge_id != challenge_id:  # raised inside the transaction: the pick is undone
                raise NotFound(f"application {application_id} of challenge {challenge_id} does not exist")
            session.execute(update(ApplicationRow).where(ApplicationRow.challenge_id == challenge_id)
                            .values(status="not_picked").execution_options(synchronize_session=False))
            session.execute(update(ApplicationRow).where(ApplicationRow.id == application_id)
                            .values(status="picked").execution_options(synchronize_session=False))
            record(session, f"challenge:{challenge_id}", enterprise, "picked", enterprise,
                   {"application": application_id, "craftsman": app.craftsman, "team": list(app.team or [])})
        return self.challenge(challenge_id, Viewer("enterprise", enterprise))

    def progress(self, challenge_id: str, craftsman: str, note: str) -> None:
        """A progress update from the picked team."""
        with self._tx() as session:
            row = session.get(ChallengeRow, challenge_id)
            team = self._team(session, row)
            if row is None or craftsman not in team:
                raise NotFound(f"challenge {challenge_id} does not exist")
            if row.status != "in_progress":
                raise Conflict(f"challenge {challenge_id} is {row.status}, not in progress")
            record(session, f"challenge:{challenge_id}", row.enterprise, "progress", craftsman, {"note": note})

    def complete(self, challenge_id: str, enterprise: str) -> Challenge:
        with self._tx() as session:
            self._cas(session, ChallengeRow, challenge_id, enterprise, ("in_progress",), "completed")
            record(session, f"challenge:{challenge_id}", enterprise, "confirmed", enterprise)
        return self.challenge(challenge_id, Viewer("enterprise", enterprise))

    def cancel(self, challenge_id: str, enterprise: str) -> Challenge:
        with self._tx() as session:
            self._cas(session, ChallengeRow, challenge_id, enterprise, ("open",), "cancelled")
            record(session, f"challenge:{challenge_id}", enterprise, "cancelled", enterprise)
        return self.challenge(challenge_id, Viewer("enterprise", enterprise))

    def owner_of(self, subject: str) -> str:
        """The enterprise a challenge or visit (``challenge:C…``, ``visit:V…``) belongs to."""
        kind, _, key = subject.partition(":")
        table = {"challenge": ChallengeRow, "visit": VisitRow}[kind]
        with self.session() as session:
            row = session.get(table, key)
            if row is None:
                raise NotFound(f"{kind} {key} does not exist")
            return row.enterprise

    def team_of(self, challenge_id: str) -> list[str]:
        with self.session() as session:
            return self._team(session, session.get(ChallengeRow, challenge_id))

    def _team(self, session: Session, row: ChallengeRow | None) -> list[str]:
        if row is None or not row.picked:
            return []
        app = session.get(ApplicationRow, row.picked)
        return [app.craftsman, *(app.team or [])] if app else []

    def _may_see(self, row: ChallengeRow, viewer: Viewer, apps: list[Application], applied: bool) -> bool:
        if viewer.role == "maintainer":
            return True
        if viewer.role == "enterprise":
            return row.enterprise == viewer.principal
        if applied or viewer.principal in (row.invited or []):
            return True
        return row.status == "open" and not row.invited_only and row.trade in viewer.trades

    def _challenge(self, row: ChallengeRow, viewer: Viewer, apps: list[Application]) -> Challenge:
        owner_view = viewer.role == "maintainer" or (viewer.role == "enterprise" and row.enterprise == viewer.principal)
        picked = next((a for a in apps if a.id == row.picked), None)
        in_team = picked is not None and viewer.principal in picked.members()
        shown_apps = apps if owner_view else [a for a in apps if viewer.principal in a.members()]
        description = row.description if (owner_view or in_team or not row.confidential) else None
        summary = row.summary or (CONFIDENTIAL_SUMMARY if row.confidential else "")
        enterprise = row.enterprise if owner_view else as_shown(row.enterprise, row.reveal)
        return Challenge(row.id, enterprise, row.title, summary, description, row.trade, row.region, row.deadline,
                         row.reward, row.terms, row.invited_only, list(row.invited or []) if owner_view else [],
                         row.confidential, row.status, row.picked, _iso(row.created_at), _iso(row.updated_at), shown_apps)

    def _applications(self, session: Session, challenge_ids: list[str]) -> dict[str, list[Application]]:
        out: dict[str, list[Application]] = {}
        if challenge_ids:
            rows = session.scalars(select(ApplicationRow).where(ApplicationRow.challenge_id.in_(challenge_ids))
                                   .order_by(ApplicationRow.created_at)).all()
            for r in rows:
                out.setdefault(r.challenge_id, []).append(_application(r))
        return out

    # ----------------------------------------------------------------------------------------- visits

    def request_visit(self, enterprise: str, title: str, description: str, trade: str, region: str, address: str,
                      preferred_dates: Sequence[str], craftsman: str | None, source: str = "", confidential: bool = False,
                      consent: bool = False, reveal: bool = False) -> Visit:
        """A visit request, already matched to ``craftsman`` (the caller matches: see ``match_craftsman``)."""
        row = VisitRow(id=_new_id("V"), enterprise=enterprise, source=source, title=title, description=description,
                       trade=trade, region=region, address=address, preferred_dates=list(preferred_dates),
                       confidential=confidential, consent=consent and not confidential, reveal=reveal,
                       craftsman=craftsman, status="requested")
        with self._tx() as session:
            session.add(row)
            session.flush()
            record(session, f"visit:{row.id}", enterprise, "created", enterprise, {"trade": trade, "region": region,
                                                                                   "source": source})
            if craftsman:
                record(session, f"visit:{row.id}", enterprise, "routed", "jiangxin", {"craftsman": craftsman})
        return self.visit(row.id, Viewer("enterprise", enterprise))

    def visits(self, viewer: Viewer, status: str | None = None, limit: int = 100) -> list[Visit]:
        with self.session() as session:
            query = select(VisitRow).order_by(VisitRow.created_at.desc()).limit(limit)
            if status:
                query = query.where(VisitRow.status == status)
            if viewer.role == "enterprise":
                query = query.where(VisitRow.enterprise == viewer.principal)
            elif viewer.role == "craftsman":
                query = query.where(VisitRow.craftsman == viewer.principal)
            return [self._visit(r, viewer) for r in session.scalars(query).all()]

    def open_visits(self) -> dict[str, int]:
        """Requested or scheduled visits per craftsman (the load a new visit is balanced against), one query."""
        with self.session() as session:
            rows = session.execute(select(VisitRow.craftsman, func.count()).where(
                VisitRow.status.in_(("requested", "scheduled")), VisitRow.craftsman.is_not(None))
                .group_by(VisitRow.craftsman)).all()
        return {craftsman: int(n) for craftsman, n in rows}

    def visit(self, visit_id: str, viewer: Viewer) -> Visit:
        with self.session() as session:
            row = session.get(VisitRow, visit_id)
            if row is None or not (viewer.role == "maintainer" or row.enterprise == viewer.principal
                                   or (viewer.role == "craftsman" and row.craftsman == viewer.principal)):
                raise NotFound(f"visit {visit_id} does not exist")
            return self._visit(row, viewer)

    def schedule(self, visit_id: str, craftsman: str, on: str) -> Visit:
        with self._tx() as session:
            row = self._cas(session, VisitRow, visit_id, None, ("requested", "scheduled"), "scheduled",
                            craftsman_is=craftsman, scheduled_for=on)
            record(session, f"visit:{visit_id}", row.enterprise, "scheduled", craftsman, {"date": on})
        return self.visit(visit_id, Viewer("craftsman", craftsman))

    def report(self, visit_id: str, craftsman: str, report: dict[str, str]) -> Visit:
        with self._tx() as session:
            row = self._cas(session, VisitRow, visit_id, None, ("scheduled",), "reported", craftsman_is=craftsman,
                            report=dict(report))
            record(session, f"visit:{visit_id}", row.enterprise, "visited", craftsman)
        return self.visit(visit_id, Viewer("craftsman", craftsman))

    def confirm(self, visit_id: str, enterprise: str, consent: bool | None = None) -> Visit:
        """The enterprise confirms the visit report (and may now give or withdraw consent to a service case)."""
        values: dict[str, Any] = {}
        if consent is not None:
            values["consent"] = consent
        with self._tx() as session:
            row = self._cas(session, VisitRow, visit_id, enterprise, ("reported",), "confirmed", **values)
            if row.confidential and row.consent:
                session.execute(update(VisitRow).where(VisitRow.id == visit_id).values(consent=False)
                                .execution_options(synchronize_session=False))
            record(session, f"visit:{visit_id}", enterprise, "confirmed", enterprise)
        return self.visit(visit_id, Viewer("enterprise", enterprise))

    def start_case(self, visit_id: str) -> Visit:
        """confirmed → publishing, for a visit whose enterprise consented and that is not confidential."""
        with self._tx() as session:
            row = session.get(VisitRow, visit_id)
            if row is None:
                raise NotFound(f"visit {visit_id} does not exist")
            refused = Conflict(f"visit {visit_id} is confidential or its enterprise has not consented: never published")
            if row.confidential or not row.consent:
                raise refused
            try:  # consent is part of the compare-and-set: withdrawn meanwhile, the visit is not published
                self._cas(session, VisitRow, visit_id, None, ("confirmed",), "publishing",
                          also=(VisitRow.consent.is_(True), VisitRow.confidential.is_(False)))
            except Conflict:
                if session.get(VisitRow, visit_id, populate_existing=True).status == "confirmed":
                    raise refused from None
                raise
        return self.visit(visit_id, Viewer("maintainer", ""))

    def finish_case(self, visit_id: str, maintainer: str, record_id: str | None) -> Visit:
        """publishing → published (with the service case's record id), or back to confirmed when it failed."""
        with self._tx() as session:
            if record_id is None:
                self._cas(session, VisitRow, visit_id, None, ("publishing",), "confirmed")
            else:
                row = self._cas(session, VisitRow, visit_id, None, ("publishing",), "published", case_record=record_id)
                record(session, f"visit:{visit_id}", row.enterprise, "published", maintainer, {"record": record_id})
        return self.visit(visit_id, Viewer("maintainer", maintainer))

    def abandoned_cases(self, stale_after: timedelta = LEASE) -> list[str]:
        """Visits whose service case was abandoned by a process that died: publishing, no live lease
        (``rag/leases.py``), no change for ``stale_after``."""
        with self.session() as session:
            return list(session.scalars(select(VisitRow.id).where(
                VisitRow.status == "publishing", abandoned("visit:", VisitRow.id, VisitRow.updated_at, stale_after))))

    def recover_case(self, visit_id: str, stale_after: timedelta = LEASE) -> bool:
        """publishing → confirmed if still abandoned (a compare-and-set); call after withdrawing the case
        (``case_record_id``), while nothing else can publish it."""
        with self._tx() as session:
            return session.execute(update(VisitRow).where(
                VisitRow.id == visit_id, VisitRow.status == "publishing",
                abandoned("visit:", VisitRow.id, VisitRow.updated_at, stale_after))
                .values(status="confirmed", updated_at=utcnow()).execution_options(synchronize_session=False)).rowcount == 1

    def _visit(self, row: VisitRow, viewer: Viewer) -> Visit:
        owner_view = viewer.role == "maintainer" or row.enterprise == viewer.principal
        enterprise = row.enterprise if owner_view else as_shown(row.enterprise, row.reveal)
        return Visit(row.id, enterprise, row.source, row.title, row.description, row.trade, row.region, row.address,
                     list(row.preferred_dates or []), row.confidential, row.consent, row.craftsman, row.status,
                     row.scheduled_for, dict(row.report) if row.report else None, row.case_record,
                     _iso(row.created_at), _iso(row.updated_at))

    # ----------------------------------------------------------------------------------------- shared

    def _cas(self, session: Session, table, row_id: str, owner: str | None, expected: tuple[str, ...], status: str,
             craftsman_is: str | None = None, also: Sequence[Any] = (), **values: Any):
        """Move a row from one of ``expected`` to ``status`` (with ``values``) only if it is still there — and owned by
        ``owner`` / assigned to ``craftsman_is`` when given, and ``also`` (further conditions) holds; Conflict (or
        NotFound for someone else's) otherwise."""
        conditions = [table.id == row_id, table.status.in_(expected), *also]
        if owner is not None:
            conditions.append(table.enterprise == owner)
        if craftsman_is is not None:
            conditions.append(table.craftsman == craftsman_is)
        done = session.execute(update(table).where(*conditions).values(status=status, updated_at=utcnow(), **values)
                               .execution_options(synchronize_session=False))
        row = session.get(table, row_id, populate_existing=True)
        if done.rowcount == 1:
            return row
        name = table.__tablename__.rstrip("s")
        if row is None or (owner is not None and row.enterprise != owner) or (
                craftsman_is is not None and row.craftsman != craftsman_is):
            raise NotFound(f"{name} {row_id} does not exist")
        raise Conflict(f"{name} {row_id} is {row.status}; expected {' or '.join(expected)}")


def case_record_id(visit_id: str) -> str:
    """The id of the service case published from a visit."""
    return f"sc-{visit_id.lower()}"


def _application(row: ApplicationRow) -> Application:
    return Application(row.id, row.challenge_id, row.craftsman, row.plan, list(row.team or []), row.status,
                       _iso(row.created_at))


def match_craftsman(craftsmen: Sequence[Any], trade: str, region: str, load: dict[str, int]) -> str | None:
    """Whom a visit goes to: a craftsman of the trade, in the region if any is, with the lightest open load
    (ties by id); None when no craftsman covers the trade."""
    fit = [c for c in craftsmen if trade in c.trades]
    if not fit:
        return None
    local = [c for c in fit if region and (c.region.startswith(region) or region.startswith(c.region))]
    pool = local or fit
    return min(pool, key=lambda c: (load.get(c.id, 0), c.id)).id
