"""The three roles of a marketing team, as Django groups whose permissions are kept in sync with the code.

- **Admin**: everything, including API keys, sources, channel settings (sender profiles, destinations), users,
  the approval of large launches and the erasure of a contact's personal data on request.
- **Marketer**: contacts, segments, campaigns, journeys and their content; sees the settings but cannot change
  channel credentials, API keys, users or schedules' internals; launches to an audience larger than
  ``LOOP_LAUNCH_APPROVAL_LIMIT`` wait for an Admin's approval.
- **Analyst**: read-only: views everything a marketer works with, and exports (exports need only the view
  permission); changes nothing.

The groups are created by a migration (``crm.0008_roles``) and their permissions are recomputed after every
``migrate`` (``sync_roles``), so a model added by a later issue gets the right permissions without a new data
migration. Permissions a person adds to a group by hand in the admin are replaced at the next ``migrate``: give
people extra permissions on the user, not on the role's group.
"""

from __future__ import annotations

from django.db.models import Q

ADMIN = "Admin"
MARKETER = "Marketer"
ANALYST = "Analyst"
ROLES = (ADMIN, MARKETER, ANALYST)

#: Models only an Admin changes: credentials, API access, users and the scheduler's raw tables. Marketers and
#: analysts may view those that appear here under VIEW_ONLY_FOR_MARKETERS; the rest they do not see at all.
ADMIN_ONLY_APPS = {"auth", "django_celery_beat", "sessions", "contenttypes", "admin"}
ADMIN_ONLY_MODELS = {
    "crm.apikey",
    "crm.source",
    "crm.heartbeat",
    "campaigns.senderprofile",
    "campaigns.destination",
    "campaigns.launchapproval",
}
#: Records nobody edits by hand (ledgers, logs, queues): marketers view them, only the code writes them.
VIEW_ONLY_FOR_MARKETERS = {
    "crm.auditentry",
    "crm.consentchange",
    "crm.rejectedmessage",
    "crm.unprocessedevent",
    "crm.segmentsize",
    "campaigns.send",
    "campaigns.outboxmessage",
    "campaigns.notification",
    "campaigns.run",
    "campaigns.campaignchange",
    "campaigns.adsconsentnotice",
    "campaigns.senderprofile",
    "campaigns.destination",
    "campaigns.launchapproval",
    "crm.source",
}
#: The apps whose models a marketer works with.
PRODUCT_APPS = ("crm", "campaigns", "journeys")
#: Custom permissions an Admin has and a Marketer has not.
ADMIN_ONLY_PERMISSIONS = {"campaigns.approve_launch", "crm.erase_contact"}
#: The permission (codename, on ``crm.Contact``) to erase a contact's personal data on request: Admin role only.
ERASE_PERMISSION = "erase_contact"


def _codename_key(perm) -> str:
    return f"{perm.content_type.app_label}.{perm.content_type.model}"


def role_permission_filter(role: str) -> Q | None:
    """Which ``auth.Permission`` rows a role has (None: all of them)."""
    if role == ADMIN:
        return None
    product = Q(content_type__app_label__in=PRODUCT_APPS)
    view = Q(codename__startswith="view_")
    if role == ANALYST:
        return product & view
    return product


def role_permissions(role: str, permissions) -> list:
    """Filter a queryset of ``auth.Permission`` down to the role's permissions."""
    condition = role_permission_filter(role)
    candidates = permissions if condition is None else permissions.filter(condition)
    candidates = candidates.select_related("content_type")
    if role in (ADMIN,):
        return list(candidates)
    keep = []
    for perm in candidates:
        key = _codename_key(perm)
        full = f"{perm.content_type.app_label}.{perm.codename}"
        is_view = perm.codename.startswith("view_")
        if full in ADMIN_ONLY_PERMISSIONS:
            continue
        if key in ADMIN_ONLY_MODELS and not (is_view and key in VIEW_ONLY_FOR_MARKETERS):
            continue
        if key in VIEW_ONLY_FOR_MARKETERS and not is_view:
            continue
        keep.append(perm)
    return keep


def sync_roles(*, using: str = "default", apps=None) -> dict[str, int]:
    """Create the role groups if missing and set each one's permissions. Returns ``{role: number of permissions}``."""
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    counts = {}
    for role in ROLES:
        group, _created = Group.objects.using(using).get_or_create(name=role)
        perms = role_permissions(role, Permission.objects.using(using).all())
        group.permissions.set(perms)
        counts[role] = len(perms)
    return counts


def on_post_migrate(sender, using="default", apps=None, **kwargs) -> None:
    """``post_migrate`` receiver: keep the groups' permissions in step with the models (idempotent)."""
    from django.apps import apps as global_apps

    # Every app's permissions exist once the last app has migrated; sync then (and cheaply on the others).
    if sender.label != list(global_apps.get_app_configs())[-1].label:
        return
    sync_roles(using=using)


def user_roles(user) -> list[str]:
    if not getattr(user, "is_authenticated", False):
        return []
    if user.is_superuser:
        return [ADMIN]
    return [name for name in user.groups.values_list("name", flat=True) if name in ROLES]
