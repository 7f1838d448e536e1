from django.contrib.admin.apps import AdminConfig


class LoopAdminConfig(AdminConfig):
    """django.contrib.admin, with Loop CRM's AdminSite as the default site."""

    default_site = "config.admin.LoopAdminSite"
