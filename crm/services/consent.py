"""Consent: the current state per contact and purpose, and its append-only history.

The writers, both with one rule (a change takes effect when it differs from the state and is not older than it):
``consent_record_many`` (any database; the API, ingest, contacts, imports on SQLite) and ``ConsentBulkRecorder``
(PostgreSQL, set-based, for imports)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from crm.db import bulk_upsert
from crm.models import Consent, ConsentChange, ConsentPurpose

PURPOSES = set(ConsentPurpose.values)


@dataclass(frozen=True, slots=True)
class ConsentInput:
    contact_id: int
    purpose: str
    granted: bool
    changed_at: datetime
    source: str


def consent_record_many(*, changes: Iterable[ConsentInput]) -> int:
    """Record consent given or withdrawn, set-based. Returns how many changes took effect.

    A change takes effect when it differs from the current state and is not older than it (a late-arriving old
    message never overrides a newer decision). Every change that takes effect is appended to ConsentChange with its
    time and source.
    """
    changes = sorted(changes, key=lambda c: c.changed_at)
    if not changes:
        return 0
    unknown = {c.purpose for c in changes} - PURPOSES
    if unknown:
        raise ValueError(f"unknown consent purpose(s): {', '.join(sorted(unknown))}")
    contact_ids = {c.contact_id for c in changes}
    current = {
        (c.contact_id, c.purpose): c
        for c in Consent.objects.filter(contact_id__in=contact_ids, purpose__in={ch.purpose for ch in changes})
    }
    history: list[ConsentChange] = []
    for change in changes:
        key = (change.contact_id, change.purpose)
        state = current.get(key)
        if state is not None and (state.granted == change.granted or change.changed_at < state.changed_at):
            continue
        current[key] = Consent(
            contact_id=change.contact_id,
            purpose=change.purpose,
            granted=change.granted,
            changed_at=change.changed_at,
            source=change.source[:100],
        )
        history.append(
            ConsentChange(
                contact_id=change.contact_id,
                purpose=change.purpose,
                granted=change.granted,
                changed_at=change.changed_at,
                source=change.source[:100],
            )
        )
    if not history:
        return 0
    touched = sorted({(h.contact_id, h.purpose) for h in history})
    bulk_upsert(
        Consent,
        [
            {
                "contact_id": current[key].contact_id,
                "purpose": current[key].purpose,
                "granted": current[key].granted,
                "changed_at": current[key].changed_at,
                "source": current[key].source,
            }
            for key in touched
        ],
        unique_fields=["contact", "purpose"],
        update_fields=["granted", "changed_at", "source"],
    )
    recorded_at = timezone.now()
    bulk_upsert(
        ConsentChange,
        [
            {
                "contact_id": h.contact_id,
                "purpose": h.purpose,
                "granted": h.granted,
                "changed_at": h.changed_at,
                "source": h.source,
                "recorded_at": recorded_at,
            }
            for h in history
        ],
    )
    return len(history)


class ConsentBulkRecorder:
    """PostgreSQL: ``consent_record_many``'s rule for many changes that share one time and source (an import), in
    set-based statements, for use inside one transaction through ``crm.db.StatementQueue``.

    ``job(changes)`` formats the changes (``{(contact id, purpose): granted}``, one per pair) in the caller's thread
    and returns the job that writes them: ``COPY`` into a temporary table, then one statement that upserts the
    current state where the change takes effect (it differs from the state and is not older than it; a newer
    decision, such as an unsubscribe after the file was uploaded, is never overridden) and appends exactly the rows it
    changed to the history (``RETURNING``). The job returns how many changes took effect."""

    STAGE = "loop_consent_stage"

    def __init__(self, *, changed_at: datetime, source: str):
        self.changed_at = changed_at
        self.source = source[:100]
        self._staged = False

    def job(self, changes: dict[tuple[int, str], bool], *, recorded_at: datetime):
        unknown = {purpose for _contact, purpose in changes} - PURPOSES
        if unknown:
            raise ValueError(f"unknown consent purpose(s): {', '.join(sorted(unknown))}")
        if not changes:
            return lambda cursor: 0
        data = "".join(
            f"{contact_id}\t{purpose}\t{'t' if granted else 'f'}\n"
            for (contact_id, purpose), granted in sorted(changes.items())
        ).encode()
        # The staging table lives until the transaction ends; it may exist already (two imports in one transaction).
        prepare = [f"TRUNCATE {self.STAGE}"]
        if not self._staged:
            prepare.insert(
                0,
                f"CREATE TEMP TABLE IF NOT EXISTS {self.STAGE} (contact_id bigint, purpose text, granted boolean) "
                "ON COMMIT DROP",
            )
        self._staged = True
        consent, history = Consent._meta.db_table, ConsentChange._meta.db_table
        statement = (
            f"WITH changed AS (INSERT INTO {consent} AS c (contact_id, purpose, granted, changed_at, source) "  # noqa: S608
            f"SELECT contact_id, purpose, granted, %(at)s, %(source)s FROM {self.STAGE} ORDER BY contact_id, purpose "
            "ON CONFLICT (contact_id, purpose) DO UPDATE SET granted = EXCLUDED.granted, "
            "changed_at = EXCLUDED.changed_at, source = EXCLUDED.source "
            "WHERE c.granted <> EXCLUDED.granted AND c.changed_at <= EXCLUDED.changed_at "
            "RETURNING c.contact_id, c.purpose, c.granted) "
            f"INSERT INTO {history} (contact_id, purpose, granted, changed_at, source, recorded_at) "
            "SELECT contact_id, purpose, granted, %(at)s, %(source)s, %(now)s FROM changed"
        )
        params = {"at": self.changed_at, "source": self.source, "now": recorded_at}

        def write(cursor) -> int:
            for sql in prepare:
                cursor.execute(sql)
            with cursor.copy(f"COPY {self.STAGE} FROM STDIN") as copy:
                copy.write(data)
            cursor.execute(statement, params)
            return cursor.rowcount

        return write
