"""Bulk writers for applying an import: one set of statements per batch, never one per row.

- ``OrmWriter`` (any database; SQLite): ``bulk_create`` of new contacts, one ``INSERT ... ON CONFLICT (id) DO UPDATE``
  of exactly the changed columns for updates, ``consent_record_many`` for consent, ``INSERT ... ON CONFLICT DO
  NOTHING`` for tags and static lists. Runs in the caller's thread.
- ``PgCopyWriter`` (PostgreSQL): formats a batch in the caller's thread and queues its statements on the apply's
  ``StatementQueue``, so that PostgreSQL writes one batch while Python checks the next. New contacts get ids from
  the table's sequence (taken ahead) and are written with ``COPY``; updates and links are ``COPY``'d into temporary
  staging tables and applied with one set-based statement each; consent by ``ConsentBulkRecorder``, which follows
  ``consent_record_many``'s rule exactly, in SQL.

Both leave the database in the same state (tested on both). A write that meets a unique constraint (a contact with
the same external ID created since the batch was checked) raises ``WriteConflict``.
"""

from __future__ import annotations

import re
from collections import deque
from datetime import datetime
from typing import Any

import psycopg
from django.db import IntegrityError, connection
from django.utils import timezone

from crm.db import StatementQueue
from crm.importing.mapping import EXTERNAL_ID, PROFILE_FIELDS
from crm.importing.plan import NEW, UPDATE, Targets, to_json
from crm.models import Contact, ContactImport, Tag
from crm.services.consent import ConsentBulkRecorder, ConsentInput, consent_record_many

Decided = list[tuple[dict[str, Any], dict[str, Any]]]
WRITTEN_FIELDS = (EXTERNAL_ID, *PROFILE_FIELDS, "attributes")


class WriteConflict(Exception):
    """A batch could not be written: a unique constraint was met (a contact created since the batch was checked).
    ``row``: the first row of the batch."""

    def __init__(self, row: int):
        super().__init__(f"write conflict in the batch starting at row {row}")
        self.row = row


class Writer:
    def __init__(
        self, contact_import: ContactImport, *, consent_time: datetime, source: str, queue: StatementQueue, **_kw
    ):
        self.contact_import = contact_import
        self.queue = queue
        self.consent_time = consent_time
        self.source = source[:100]
        self.tag_ids: dict[str, int] = {}

    # What to write, from the decisions ------------------------------------------------------------------------

    def tag_id_map(self, names: set[str]) -> dict[str, int]:
        missing = names - self.tag_ids.keys()
        if missing:
            Tag.objects.bulk_create([Tag(name=n) for n in sorted(missing)], ignore_conflicts=True)
            self.tag_ids.update(Tag.objects.filter(name__in=missing).values_list("name", "id"))
        return self.tag_ids

    @staticmethod
    def updated_values(decision: dict[str, Any], targets: Targets) -> dict[str, Any] | None:
        """The full new values of the written columns of an updated contact, or None when only consent/tags change."""
        if not (decision["set"] or decision["attrs"] or decision["unset"]):
            return None
        target = targets.by_id[decision["c"]]
        values = {
            EXTERNAL_ID: target.external_id,
            "email": target.email,
            "phone": target.phone,
            "name": target.name,
            "locale": target.locale,
            "time_zone": target.time_zone,
            "attributes": target.attributes,
        }
        values.update(decision["set"])
        if decision["attrs"] or decision["unset"]:
            attributes = {**target.attributes, **decision["attrs"]}
            for key in decision["unset"]:
                attributes.pop(key, None)
            values["attributes"] = attributes
        return values

    def links(self, decided: Decided) -> tuple[set[tuple[int, int]], set[int]]:
        """(contact, tag) pairs to add and contacts to add to the import's static list."""
        names = {t for _row, d in decided if d["a"] in (NEW, UPDATE) for t in d["tags"]}
        tag_links: set[tuple[int, int]] = set()
        if names:
            ids = self.tag_id_map(names)
            tag_links = {(d["c"], ids[t]) for _row, d in decided if d["a"] in (NEW, UPDATE) for t in d["tags"]}
        imported = {d["c"] for _row, d in decided}
        if self.contact_import.tag_id:
            tag_links |= {(cid, self.contact_import.tag_id) for cid in imported}
        return tag_links, imported if self.contact_import.contact_list_id else set()

    def consents(self, decided: Decided) -> dict[tuple[int, str], bool]:
        return {
            (d["c"], purpose): granted
            for _row, d in decided
            if d["a"] in (NEW, UPDATE)
            for purpose, granted in d["consents"].items()
        }

    def write(self, decided: Decided, targets: Targets) -> None:
        raise NotImplementedError


class OrmWriter(Writer):
    def write(self, decided: Decided, targets: Targets) -> None:
        try:
            self._write(decided, targets)
        except IntegrityError as exc:
            raise WriteConflict(decided[0][0]["r"]) from exc

    def _write(self, decided: Decided, targets: Targets) -> None:
        now = timezone.now()
        new = [d for _row, d in decided if d["a"] == NEW]
        created = [
            Contact(
                external_id=d["set"].get(EXTERNAL_ID),
                email=d["set"].get("email", ""),
                phone=d["set"].get("phone", ""),
                name=d["set"].get("name", ""),
                locale=d["set"].get("locale", ""),
                time_zone=d["set"].get("time_zone", ""),
                attributes=d["attrs"],
                created_at=now,
            )
            for d in new
        ]
        if created:
            Contact.objects.bulk_create(created)
            for d, contact in zip(new, created, strict=True):
                d["c"] = contact.pk
        updates = []
        fields: set[str] = set()
        for _row, d in decided:
            values = self.updated_values(d, targets) if d["a"] == UPDATE else None
            if values is not None:
                updates.append(Contact(id=d["c"], **values))
                fields.update(d["set"])
                if d["attrs"] or d["unset"]:
                    fields.add("attributes")
        if updates:
            # Every row exists and is locked: the INSERT never inserts, ON CONFLICT (id) updates these columns.
            Contact.objects.bulk_create(
                updates,
                update_conflicts=True,
                unique_fields=["id"],
                update_fields=[f for f in WRITTEN_FIELDS if f in fields] + ["updated_at"],
            )
        changes = self.consents(decided)
        if changes:
            consent_record_many(
                changes=[
                    ConsentInput(cid, purpose, granted, self.consent_time, self.source)
                    for (cid, purpose), granted in changes.items()
                ]
            )
        tag_links, list_members = self.links(decided)
        if tag_links:
            through = Contact.tags.through
            through.objects.bulk_create(
                [through(contact_id=c, tag_id=t) for c, t in sorted(tag_links)], ignore_conflicts=True
            )
        if list_members:
            through = Contact.lists.through
            list_id = self.contact_import.contact_list_id
            through.objects.bulk_create(
                [through(contact_id=c, contactlist_id=list_id) for c in sorted(list_members)], ignore_conflicts=True
            )


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def copy_text(value: Any) -> str:
    """One value in COPY's text format (the hot COPY streams are formatted here, not adapted row by row)."""
    if type(value) is str:
        return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class IdPool:
    """Ids for new contacts, taken from the table's sequence ahead of need (in chunks, through the queue), so that
    the rows of a batch can be formatted with their ids while the database works on the previous batch. Ids that a
    rolled-back import took stay unused (a sequence never goes back), as with any failed insert."""

    CHUNK = 10_000

    def __init__(self, queue: StatementQueue, table: str, *, expected: int):
        self.queue = queue
        self.table = table
        self.ids: deque[int] = deque()
        self.pending: deque = deque()
        self.expected = expected  # ids still expected to be needed, not yet asked for
        self._ask_ahead()

    def _reserve(self, count: int):
        table = self.table

        def job(cursor) -> list[int]:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, count]
            )
            return [row[0] for row in cursor.fetchall()]

        return self.queue.submit(job)

    def _ask_ahead(self) -> None:
        if self.expected > 0 and not self.pending and len(self.ids) < self.CHUNK:
            count = min(self.expected, self.CHUNK)
            self.expected -= count
            self.pending.append(self._reserve(count))

    def take(self, count: int) -> list[int]:
        while len(self.ids) < count:
            if not self.pending:
                self.pending.append(self._reserve(count - len(self.ids)))
            self.ids.extend(self.pending.popleft().result())
        taken = [self.ids.popleft() for _ in range(count)]
        self._ask_ahead()
        return taken


class PgCopyWriter(Writer):
    """PostgreSQL: ``COPY`` and set-based statements, run by the queue's thread while the next batch is decided.
    Everything a batch writes is formatted in the caller's thread; the job only sends it. New contacts are copied
    straight into their table with ids taken ahead from the sequence; updates go through a staging table and one
    ``UPDATE ... FROM``; consent through ``ConsentBulkRecorder`` (``crm.services.consent``); tag and list links by
    ``COPY`` for new contacts and ``INSERT ... ON CONFLICT DO NOTHING`` for the others. Constraints are checked as rows
    arrive (``SET CONSTRAINTS ALL IMMEDIATE``), batch by batch, instead of all at once when the import commits."""

    STAGE_CONTACT = "loop_import_stage_contact"
    STAGE_LINK = "loop_import_stage_link"

    def __init__(self, contact_import: ContactImport, *, consent_time: datetime, source: str, queue, new_rows=0):
        super().__init__(contact_import, consent_time=consent_time, source=source, queue=queue)
        self.table = Contact._meta.db_table
        self.contact_fields = list(Contact._meta.concrete_fields)
        self.consent = ConsentBulkRecorder(changed_at=consent_time, source=self.source)
        stage_contact, stage_link = self.STAGE_CONTACT, self.STAGE_LINK

        def setup(cursor) -> None:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            # Temporary tables live until the transaction that applies the import ends (they may exist already when
            # one transaction applies two imports: tests).
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage_contact} (id bigint, external_id text, email text, "
                "phone text, name text, locale text, time_zone text, attributes jsonb) ON COMMIT DROP"
            )
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage_link} (contact_id bigint, other_id bigint) ON COMMIT DROP"
            )

        queue.submit(setup)
        self.ids = IdPool(queue, self.table, expected=new_rows)

    def _template(self, now: datetime) -> dict[str, Any]:
        contact = Contact(created_at=now)
        contact.updated_at = now
        return {f.attname: getattr(contact, f.attname) for f in self.contact_fields if f.attname != "id"}

    def write(self, decided: Decided, targets: Targets) -> None:
        now = timezone.now()
        table = _q(self.table)
        first_row = decided[0][0]["r"] if decided else 0
        new = [d for _row, d in decided if d["a"] == NEW]
        new_ids: set[int] = set()
        insert_contacts = b""
        if new:
            ids = self.ids.take(len(new))
            new_ids = set(ids)
            template = self._template(now)
            columns = ", ".join(_q(c) for c in ["id", *template])
            fixed = {k: copy_text(v) for k, v in template.items()}
            lines = []
            for contact_id, d in zip(ids, new, strict=True):
                d["c"] = contact_id
                values = dict(fixed)
                for name, value in d["set"].items():
                    values[name] = copy_text(value)
                values["attributes"] = copy_text(to_json(d["attrs"]))
                lines.append(f"{contact_id}\t" + "\t".join(values.values()) + "\n")
            insert_contacts = "".join(lines).encode()
            copy_contacts = f"COPY {table} ({columns}) FROM STDIN"

        staged_lines = []
        for _row, d in decided:
            values = self.updated_values(d, targets) if d["a"] == UPDATE else None
            if values is not None:
                staged_lines.append(
                    f"{d['c']}\t{copy_text(values[EXTERNAL_ID])}\t{copy_text(values['email'])}\t"
                    f"{copy_text(values['phone'])}\t{copy_text(values['name'])}\t{copy_text(values['locale'])}\t"
                    f"{copy_text(values['time_zone'])}\t{copy_text(to_json(values['attributes']))}\n"
                )
        staged = "".join(staged_lines).encode()
        sets = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in WRITTEN_FIELDS)
        update = (
            f"UPDATE {table} AS c SET {sets}, updated_at = %s "  # noqa: S608 (identifiers from meta)
            f"FROM {self.STAGE_CONTACT} AS s WHERE c.id = s.id"
        )

        record_consents = self.consent.job(self.consents(decided), recorded_at=now)

        tag_links, list_members = self.links(decided)
        list_id = self.contact_import.contact_list_id
        list_links = [(c, list_id) for c in sorted(list_members)]
        link_jobs = [
            self._link_job(Contact.tags.through, "tag_id", sorted(tag_links), new_ids),
            self._link_job(Contact.lists.through, "contactlist_id", list_links, new_ids),
        ]

        def job(cursor) -> None:
            try:
                if insert_contacts:
                    with cursor.copy(copy_contacts) as copy:
                        copy.write(insert_contacts)
                if staged:
                    cursor.execute(f"TRUNCATE {self.STAGE_CONTACT}")
                    with cursor.copy(f"COPY {self.STAGE_CONTACT} FROM STDIN") as copy:
                        copy.write(staged)
                    cursor.execute(update, [now])
                record_consents(cursor)
                for link in link_jobs:
                    link(cursor)
            except psycopg.IntegrityError as exc:
                # A contact with the same external ID was created meanwhile, after the batch was checked.
                raise WriteConflict(first_row) from exc

        self.queue.submit(job)

    def _link_job(self, through, other: str, pairs: list[tuple[int, int]], new_ids: set[int]):
        """Add M2M links: straight COPY for new contacts, ON CONFLICT DO NOTHING for the others."""
        table = _q(through._meta.db_table)
        fresh = "".join(f"{c}\t{o}\n" for c, o in pairs if c in new_ids).encode()
        existing = "".join(f"{c}\t{o}\n" for c, o in pairs if c not in new_ids).encode()
        columns = f"contact_id, {_q(other)}"
        stage = self.STAGE_LINK

        def job(cursor) -> None:
            if fresh:
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    copy.write(fresh)
            if existing:
                cursor.execute(f"TRUNCATE {stage}")
                with cursor.copy(f"COPY {stage} FROM STDIN") as copy:
                    copy.write(existing)
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) "  # noqa: S608
                    f"SELECT contact_id, other_id FROM {stage} ON CONFLICT DO NOTHING"
                )

        return job


def make_writer(
    contact_import: ContactImport, *, consent_time: datetime, source: str, queue: StatementQueue, new_rows: int = 0
) -> Writer:
    """The writer for this database. ``new_rows``: how many new contacts the preview counted (ids are taken ahead)."""
    cls = PgCopyWriter if queue.threaded else OrmWriter
    return cls(contact_import, consent_time=consent_time, source=source, queue=queue, new_rows=new_rows)
