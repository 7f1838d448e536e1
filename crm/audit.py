"""The audit trail: who created, changed, launched, paused or deleted what, when, and which fields changed.

How it is written:

- Models whose history matters register with ``audit_register(Model, exclude=...)`` in their app's ``ready()``
  (campaigns, variants, segments, consent, API keys; journeys and channel settings as they arrive). Every
  ``save()`` and ``delete()`` of such a model writes an ``AuditEntry`` with the changed fields as
  ``{"field": [before, after]}``. Bulk writes (``QuerySet.update``, ``bulk_create``) do not send signals: code that
  changes audited models in bulk writes its own entry with ``audit_record``.
- Lifecycle actions that are not field edits (launch, pause, approve…) are recorded with ``audit_record``.
- The actor comes from ``audit_actor`` (a context variable): ``AuditActorMiddleware`` sets it to the request's user
  and IP for every admin and API request; tasks and management commands may set it with ``audit_context``.
  Without an actor the entry says ``via="task"`` or whatever ``audit_context`` said.

Entries are append-only: the model and its queryset refuse updates and deletes, and the admin shows them read-only.
Secrets never enter the trail: fields named in ``SECRET_FIELDS`` (or a model's ``exclude``) are left out.
"""

from __future__ import annotations

import contextvars
import datetime
import decimal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save, pre_save

from crm.models import AuditEntry

#: Never recorded, whatever the model.
SECRET_FIELDS = {"key_hash", "password", "secret", "token", "auth_token", "api_secret", "sender_key", "webhook_url"}


@dataclass(frozen=True)
class Actor:
    user: Any = None
    via: str = ""
    ip_address: str | None = None
    #: Who acted when it is not a user (an API key: "api-key:lk_live_ab…").
    label: str = ""


_actor: contextvars.ContextVar[Actor] = contextvars.ContextVar("loop_audit_actor", default=Actor(via="task"))  # noqa: B039 (frozen)
_registry: dict[type[models.Model], frozenset[str]] = {}


def audit_actor() -> Actor:
    return _actor.get()


@contextmanager
def audit_context(user=None, *, via: str = "task", ip_address: str | None = None) -> Iterator[Actor]:
    """Attribute the audit entries written inside the block to ``user`` (a task acting for someone)."""
    token = _actor.set(Actor(user=user, via=via, ip_address=ip_address))
    try:
        yield _actor.get()
    finally:
        _actor.reset(token)


def audit_set_api_key(prefix: str) -> None:
    """Called by the API's authentication: entries of this request name the key (kept until the request ends)."""
    current = _actor.get()
    _actor.set(Actor(user=None, via="api", ip_address=current.ip_address, label=f"api-key:{prefix}"))


def client_ip(request) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or behind a trusted proxy (``TRUSTED_PROXIES``) the last address of
    ``X-Forwarded-For`` that is not itself a trusted proxy (a client can prepend anything; a proxy appends)."""
    from django.conf import settings

    remote = request.META.get("REMOTE_ADDR") or None
    trusted = set(getattr(settings, "LOOP_TRUSTED_PROXIES", []))
    if remote not in trusted:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return remote


class AuditActorMiddleware:
    """Sets the audit actor for the request (after authentication: place it below AuthenticationMiddleware)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        via = "api" if request.path.startswith("/api/") else "admin" if request.path.startswith("/admin/") else "web"
        user = getattr(request, "user", None)
        token = _actor.set(Actor(user=user, via=via, ip_address=client_ip(request)))
        try:
            return self.get_response(request)
        finally:
            _actor.reset(token)


def _json(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def snapshot(instance: models.Model, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The audited fields of ``instance`` as JSON values (foreign keys by id)."""
    data = {}
    for field in instance._meta.concrete_fields:
        if field.name in exclude or field.name in SECRET_FIELDS or field.primary_key:
            continue
        if getattr(field, "auto_now", False):  # "updated at" changes on every save: noise, not a change
            continue
        data[field.attname] = _json(getattr(instance, field.attname))
    return data


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list]:
    return {
        key: [before.get(key), after.get(key)]
        for key in after.keys() | before.keys()
        if before.get(key) != after.get(key)
    }


def _user_fields(user, label: str = "") -> dict[str, Any]:
    if user is not None and getattr(user, "is_authenticated", False) and getattr(user, "pk", None):
        return {"actor": user, "actor_repr": user.get_username()[:150]}
    return {"actor": None, "actor_repr": label[:150]}


def audit_record(
    *,
    action: str,
    instance: models.Model | None = None,
    object_type: str = "",
    object_id: Any = "",
    object_repr: str = "",
    changes: dict | None = None,
    user=None,
) -> AuditEntry:
    """Append one entry; ``user`` overrides the context's actor."""
    actor = audit_actor()
    if instance is not None:
        object_type = object_type or instance._meta.label_lower
        object_id = object_id or instance.pk
        object_repr = object_repr or str(instance)
    return AuditEntry.objects.create(
        **_user_fields(user if user is not None else actor.user, actor.label),
        via=actor.via[:20],
        ip_address=actor.ip_address,
        action=action,
        object_type=object_type,
        object_id=str(object_id)[:64],
        object_repr=str(object_repr)[:200],
        changes=_json(changes or {}),
    )


def _pre_save(sender, instance, raw=False, **kwargs):
    if raw:
        return
    exclude = _registry[sender]
    before = None
    if instance.pk is not None and not instance._state.adding:
        old = sender._base_manager.filter(pk=instance.pk).first()
        before = snapshot(old, exclude) if old is not None else None
    instance._audit_before = before


def _post_save(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    exclude = _registry[sender]
    after = snapshot(instance, exclude)
    before = getattr(instance, "_audit_before", None)
    instance._audit_before = None
    if created or before is None:
        audit_record(action=AuditEntry.Action.CREATED, instance=instance, changes=diff({}, after))
        return
    changes = diff(before, after)
    if changes:
        audit_record(action=AuditEntry.Action.CHANGED, instance=instance, changes=changes)


def _post_delete(sender, instance, **kwargs):
    audit_record(
        action=AuditEntry.Action.DELETED, instance=instance, changes=diff(snapshot(instance, _registry[sender]), {})
    )


def audit_register(model: type[models.Model], *, exclude: tuple[str, ...] = ()) -> None:
    """Record every save and delete of ``model`` (idempotent). ``exclude``: fields not worth a diff."""
    _registry[model] = frozenset(exclude)
    uid = f"loop-audit-{model._meta.label_lower}"
    pre_save.connect(_pre_save, sender=model, dispatch_uid=f"{uid}-pre", weak=False)
    post_save.connect(_post_save, sender=model, dispatch_uid=f"{uid}-post", weak=False)
    post_delete.connect(_post_delete, sender=model, dispatch_uid=f"{uid}-delete", weak=False)


def audited_models() -> list[str]:
    return sorted(model._meta.label_lower for model in _registry)
