"""Bulk writers for applying an import: one set of statements per batch, never one per row.

- ``OrmWriter`` (any database; SQLite): ``bulk_create`` of new contacts, one ``INSERT ... ON CONFLICT (id) DO UPDATE``
  of exactly the changed columns for updates, ``consent_record_many`` for consent, ``INSERT ... ON CONFLICT DO
  NOTHING`` for tags and static lists.
- ``PgCopyWriter`` (PostgreSQL): new contacts get ids from the table's sequence and are written with ``COPY``;
  updates, consent and links are ``COPY``'d into temporary staging tables and applied with one set-based statement
  each. Consent follows ``consent_record_many``'s rule exactly, in SQL: a change is recorded (history row, then the
  current state) when it differs from the current state and is not older than it.

Both leave the database in the same state (tested on both).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from crm.importing.mapping import EXTERNAL_ID, PROFILE_FIELDS
from crm.importing.plan import NEW, UPDATE, Targets, to_json
from crm.models import Consent, ConsentChange, Contact, ContactImport, Tag
from crm.services.consent import ConsentInput, consent_record_many

Decided = list[tuple[dict[str, Any], dict[str, Any]]]
WRITTEN_FIELDS = (EXTERNAL_ID, *PROFILE_FIELDS, "attributes")


class Writer:
    def __init__(self, contact_import: ContactImport, *, consent_time: datetime, source: str):
        self.contact_import = contact_import
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


def copy_text(value: Any) -> str:
    """One value in COPY's text format (the hot COPY streams are formatted here, not adapted row by row)."""
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


def copy_lines(copy, lines: list[str]) -> None:
    if lines:
        copy.write("".join(lines).encode())


class PgCopyWriter(Writer):
    """PostgreSQL: ``COPY`` and set-based statements. Rows that belong to contacts created by this batch (their
    consent, history and links) are copied straight into their tables: nothing can conflict with them. Rows of
    existing contacts go through a staging table and one statement each. Constraints are checked as rows arrive
    (``SET CONSTRAINTS ALL IMMEDIATE``), while the import streams, instead of all at once when it commits."""

    STAGE_CONTACT = "loop_import_stage_contact"
    STAGE_CONSENT = "loop_import_stage_consent"
    STAGE_LINK = "loop_import_stage_link"

    def __init__(self, contact_import: ContactImport, *, consent_time: datetime, source: str):
        super().__init__(contact_import, consent_time=consent_time, source=source)
        self.contact_fields = list(Contact._meta.concrete_fields)
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            # Temporary tables live until the transaction that applies the import ends.
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {self.STAGE_CONTACT} (id bigint, external_id text, email text, "
                "phone text, name text, locale text, time_zone text, attributes jsonb) ON COMMIT DROP"
            )
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {self.STAGE_CONSENT} (contact_id bigint, purpose text, "
                "granted boolean) ON COMMIT DROP"
            )
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {self.STAGE_LINK} (contact_id bigint, other_id bigint) ON COMMIT DROP"
            )

    def _template(self, now: datetime) -> dict[str, Any]:
        contact = Contact(created_at=now)
        contact.updated_at = now
        return {f.attname: getattr(contact, f.attname) for f in self.contact_fields if f.attname != "id"}

    def write(self, decided: Decided, targets: Targets) -> None:
        now = timezone.now()
        table = Contact._meta.db_table
        with connection.cursor() as django_cursor:
            cursor = django_cursor.cursor  # psycopg's own cursor, for COPY
            new = [d for _row, d in decided if d["a"] == NEW]
            new_ids: set[int] = set()
            if new:
                cursor.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, len(new)]
                )
                ids = [r[0] for r in cursor.fetchall()]
                new_ids = set(ids)
                template = self._template(now)
                columns = ["id", *template]
                fixed = {k: copy_text(v) for k, v in template.items()}
                lines = []
                for contact_id, d in zip(ids, new, strict=True):
                    d["c"] = contact_id
                    values = dict(fixed)
                    for name, value in d["set"].items():
                        values[name] = copy_text(value)
                    values["attributes"] = copy_text(to_json(d["attrs"]))
                    lines.append(f"{contact_id}\t" + "\t".join(values.values()) + "\n")
                with cursor.copy(f"COPY {_q(table)} ({', '.join(_q(c) for c in columns)}) FROM STDIN") as copy:
                    copy_lines(copy, lines)

            staged = []
            for _row, d in decided:
                values = self.updated_values(d, targets) if d["a"] == UPDATE else None
                if values is not None:
                    staged.append((d["c"], values))
            if staged:
                cursor.execute(f"TRUNCATE {self.STAGE_CONTACT}")
                with cursor.copy(f"COPY {self.STAGE_CONTACT} FROM STDIN") as copy:
                    for contact_id, v in staged:
                        copy.write_row(
                            [
                                contact_id,
                                v[EXTERNAL_ID],
                                v["email"],
                                v["phone"],
                                v["name"],
                                v["locale"],
                                v["time_zone"],
                                to_json(v["attributes"]),
                            ]
                        )
                sets = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in WRITTEN_FIELDS)
                cursor.execute(
                    f"UPDATE {_q(table)} AS c SET {sets}, updated_at = %s "  # noqa: S608 (identifiers from meta)
                    f"FROM {self.STAGE_CONTACT} AS s WHERE c.id = s.id",
                    [now],
                )

            changes = self.consents(decided)
            if changes:
                fresh = {k: v for k, v in changes.items() if k[0] in new_ids}
                if fresh:
                    self._copy_new_consents(cursor, fresh, now)
                existing = {k: v for k, v in changes.items() if k[0] not in new_ids}
                if existing:
                    self._record_consents(cursor, existing, now)

            tag_links, list_members = self.links(decided)
            through = Contact.tags.through
            self._link(cursor, through, "tag_id", sorted(tag_links), new_ids)
            list_id = self.contact_import.contact_list_id
            pairs = [(c, list_id) for c in sorted(list_members)]
            self._link(cursor, Contact.lists.through, "contactlist_id", pairs, new_ids)

    def _copy_new_consents(self, cursor, changes: dict[tuple[int, str], bool], now: datetime) -> None:
        """Consent of contacts created by this import: no state exists, every change takes effect."""
        consent, history = _q(Consent._meta.db_table), _q(ConsentChange._meta.db_table)
        tail = f"\t{copy_text(self.consent_time)}\t{copy_text(self.source)}"
        rows = [
            f"{cid}\t{copy_text(purpose)}\t{'t' if granted else 'f'}{tail}"
            for (cid, purpose), granted in changes.items()
        ]
        with cursor.copy(f"COPY {consent} (contact_id, purpose, granted, changed_at, source) FROM STDIN") as copy:
            copy_lines(copy, [f"{r}\n" for r in rows])
        columns = "contact_id, purpose, granted, changed_at, source, recorded_at"
        recorded = f"\t{copy_text(now)}\n"
        with cursor.copy(f"COPY {history} ({columns}) FROM STDIN") as copy:
            copy_lines(copy, [f"{r}{recorded}" for r in rows])

    def _record_consents(self, cursor, changes: dict[tuple[int, str], bool], now: datetime) -> None:
        cursor.execute(f"TRUNCATE {self.STAGE_CONSENT}")
        with cursor.copy(f"COPY {self.STAGE_CONSENT} FROM STDIN") as copy:
            for (contact_id, purpose), granted in changes.items():
                copy.write_row([contact_id, purpose, granted])
        consent, history = _q(Consent._meta.db_table), _q(ConsentChange._meta.db_table)
        params = {"at": self.consent_time, "source": self.source, "now": now}
        # History first (it reads the state before the change), then the current state; same rule as
        # consent_record_many: skip when the state is the same or newer than the change.
        cursor.execute(
            f"INSERT INTO {history} (contact_id, purpose, granted, changed_at, source, recorded_at) "  # noqa: S608
            f"SELECT s.contact_id, s.purpose, s.granted, %(at)s, %(source)s, %(now)s FROM {self.STAGE_CONSENT} s "
            f"LEFT JOIN {consent} c ON c.contact_id = s.contact_id AND c.purpose = s.purpose "
            "WHERE c.id IS NULL OR (c.granted <> s.granted AND c.changed_at <= %(at)s) "
            "ORDER BY s.contact_id, s.purpose",
            params,
        )
        cursor.execute(
            f"INSERT INTO {consent} AS c (contact_id, purpose, granted, changed_at, source) "  # noqa: S608
            f"SELECT s.contact_id, s.purpose, s.granted, %(at)s, %(source)s FROM {self.STAGE_CONSENT} s "
            "ORDER BY s.contact_id, s.purpose "
            "ON CONFLICT (contact_id, purpose) DO UPDATE SET granted = EXCLUDED.granted, "
            "changed_at = EXCLUDED.changed_at, source = EXCLUDED.source "
            "WHERE c.granted <> EXCLUDED.granted AND c.changed_at <= EXCLUDED.changed_at",
            params,
        )

    def _link(self, cursor, through, other: str, pairs: list[tuple[int, int]], new_ids: set[int]) -> None:
        """Add M2M links: straight COPY for new contacts, ON CONFLICT DO NOTHING for the others."""
        table = _q(through._meta.db_table)
        fresh = [p for p in pairs if p[0] in new_ids]
        if fresh:
            with cursor.copy(f"COPY {table} (contact_id, {_q(other)}) FROM STDIN") as copy:
                for pair in fresh:
                    copy.write_row(pair)
        existing = [p for p in pairs if p[0] not in new_ids]
        if not existing:
            return
        cursor.execute(f"TRUNCATE {self.STAGE_LINK}")
        with cursor.copy(f"COPY {self.STAGE_LINK} FROM STDIN") as copy:
            for pair in existing:
                copy.write_row(pair)
        cursor.execute(
            f"INSERT INTO {table} (contact_id, {_q(other)}) "  # noqa: S608
            f"SELECT contact_id, other_id FROM {self.STAGE_LINK} ON CONFLICT DO NOTHING"
        )


def make_writer(contact_import: ContactImport, *, consent_time: datetime, source: str) -> Writer:
    cls = PgCopyWriter if connection.vendor == "postgresql" else OrmWriter
    return cls(contact_import, consent_time=consent_time, source=source)
