"""Applying a previewed plan: exactly what the preview showed, all or nothing.

The whole import is one transaction. It starts by locking the import row (a second worker given the same task waits
and then finds it completed). For each batch of the stored plan it loads and locks the matching contacts
(``SELECT ... FOR UPDATE``), recomputes every importing row's decision against them with the preview's own code
(``decide``) and compares it with the preview's (a digest of what the row writes). When every decision is unchanged
the batch is written in bulk (``crm.importing.bulk``). When any row would now do something else (its contact was
edited, a contact with its email appeared, consent was withdrawn meanwhile ...) nothing is written, the other batches
are still checked, and ``PlanChanged`` rolls the whole transaction back: the service recomputes the preview and the
marketer confirms again. So what is applied is always exactly what the last preview showed, and a failed import
leaves nothing half done. Progress is reported through ``crm.importing.progress`` (the transaction hides
``processed_rows`` until it commits).

On PostgreSQL the statements run on a ``StatementQueue``: while this thread checks batch *n*, the queue's thread
writes batch *n - 1* and then locks and fetches the contacts of batch *n + 1*, so that PostgreSQL and Python work at
the same time."""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Iterator
from itertools import islice
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.db import StatementQueue
from crm.importing.bulk import WriteConflict, make_writer
from crm.importing.plan import (
    ERROR,
    IMPORTED,
    NEW,
    SKIP,
    UNCHANGED,
    UPDATE,
    PlanOptions,
    Progress,
    Seen,
    decide,
    iter_batches,
    micros,
    read_plan,
    same_decision,
    submit_targets,
)
from crm.models import ContactImport, ContactList, Tag

COUNT_FIELDS = {
    NEW: "new_count",
    UPDATE: "updated_count",
    UNCHANGED: "unchanged_count",
    SKIP: "skipped_count",
    ERROR: "error_count",
}


class PlanIntegrityError(Exception):
    """The stored plan is missing or not the one the preview wrote."""


class PlanChanged(Exception):
    """Some rows would now do something else than the preview showed. ``rows``: their numbers (the first ones)."""

    def __init__(self, rows: list[int], count: int):
        super().__init__(f"{count} row(s) changed since the preview")
        self.rows = rows
        self.count = count


def file_sha256(file_field) -> str:
    digest_ = hashlib.sha256()
    with file_field.storage.open(file_field.name, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest_.update(chunk)
    return digest_.hexdigest()


def plan_entries(contact_import: ContactImport) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The stored plan, after checking it is the one the preview wrote."""
    if not contact_import.plan_file:
        raise PlanIntegrityError(_("the import has no stored preview"))
    if file_sha256(contact_import.plan_file) != contact_import.plan_sha256:
        raise PlanIntegrityError(_("the stored preview was changed on disk"))
    stream = contact_import.plan_file.storage.open(contact_import.plan_file.name, "rb")
    header, entries = read_plan(stream)

    def closing() -> Iterator[dict[str, Any]]:
        try:
            yield from entries
        finally:
            stream.close()

    return header, closing()


def prepare_targets(contact_import: ContactImport, options: PlanOptions) -> None:
    """Create the import's tag and static list (by name) and link them to the import."""
    fields = []
    if options.tag and contact_import.tag_id is None:
        contact_import.tag, _created = Tag.objects.get_or_create(name=options.tag[:100])
        fields.append("tag")
    if options.list_name and contact_import.contact_list_id is None:
        contact_import.contact_list, _created = ContactList.objects.get_or_create(
            name=options.list_name[:200],
            defaults={"description": _("Imported from %(file)s") % {"file": contact_import.file_name}},
        )
        fields.append("contact_list")
    if fields:
        contact_import.save(update_fields=fields)


#: How many changed row numbers PlanChanged carries (for the notice).
CHANGED_ROWS_SHOWN = 20


def apply_plan(contact_import: ContactImport, *, progress: Progress | None = None) -> bool:
    """Write the stored plan in one transaction (see the module docstring). Returns False when the import was not
    ``running`` any more (another worker applied it); raises PlanChanged when the data changed since the preview."""
    header, entries = plan_entries(contact_import)
    options = PlanOptions.from_dict(header["options"])
    consent_time = contact_import.created_at
    consent_at = micros(consent_time)
    with transaction.atomic():
        locked = ContactImport.objects.select_for_update().get(pk=contact_import.pk)
        if locked.status != ContactImport.Status.RUNNING:
            return False
        prepare_targets(contact_import, options)
        seen = Seen()
        counts: Counter[str] = Counter()
        changed: list[int] = []
        changed_count = 0
        done = 0
        total = contact_import.total_rows
        # The statements run on the queue's thread (PostgreSQL): the contacts of the next batch are locked and
        # fetched, and the previous batch is written, while this thread checks the current batch.
        with StatementQueue() as queue:
            writer = make_writer(
                contact_import,
                consent_time=consent_time,
                source=f"import:{contact_import.pk}",
                queue=queue,
                new_rows=contact_import.new_count,
            )

            def load(batch: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
                return batch, submit_targets(queue, (e["row"] for e in batch if e["a"] in IMPORTED), lock=True)

            batches = iter_batches(entries)
            pending = deque(load(batch) for batch in islice(batches, 1))
            try:
                while pending:
                    batch, loading = pending.popleft()
                    following = next(batches, None)
                    if following is not None:
                        pending.append(load(following))
                    targets = loading()
                    decided: list[tuple[dict[str, Any], dict[str, Any]]] = []
                    for entry in batch:
                        row = entry["row"]
                        if entry["a"] in IMPORTED:
                            decision = decide(
                                row, targets, seen, overwrite_empty=options.overwrite_empty, consent_at=consent_at
                            )
                            if same_decision(entry, decision):
                                decided.append((row, decision))
                            else:
                                changed_count += 1
                                if len(changed) < CHANGED_ROWS_SHOWN:
                                    changed.append(row["r"])
                        counts[entry["a"]] += 1
                        seen.register(row, entry["a"], entry["c"])
                    if not changed_count and decided:
                        writer.write(decided, targets)
                    done += len(batch)
                    if progress:
                        progress(done, total)
                queue.drain()
            except WriteConflict as exc:
                # A contact with the same external ID was created meanwhile, after its batch was checked.
                raise PlanChanged([exc.row], 1) from exc
        if changed_count:
            raise PlanChanged(changed, changed_count)
        ContactImport.objects.filter(pk=contact_import.pk).update(
            status=ContactImport.Status.COMPLETED,
            finished_at=timezone.now(),
            processed_rows=done,
            **{COUNT_FIELDS[action]: counts[action] for action in COUNT_FIELDS},
        )
    return True
