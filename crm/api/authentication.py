"""Authentication of API clients by write key: HTTP Basic user name (Segment's SDKs), Bearer token, or
``writeKey`` in the JSON body (Segment's HTTP API allows it)."""

from __future__ import annotations

import base64
import binascii

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from crm.audit import audit_set_api_key
from crm.models import ApiKey
from crm.services.apikeys import api_key_authenticate


class ApiKeyPrincipal:
    """What ``request.user`` is for a request authenticated by an API key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, key: ApiKey):
        self.api_key = key
        self.source = key.source
        self.pk = None

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


class WriteKeyAuthentication(authentication.BaseAuthentication):
    www_authenticate_realm = "Loop CRM"

    def authenticate(self, request):
        raw = self._key_from_header(request)
        if raw is None:
            data = request.data if request.method in ("POST", "PUT", "PATCH") else None
            if isinstance(data, dict) and isinstance(data.get("writeKey"), str):
                raw = data["writeKey"]
        if raw is None:
            return None
        key = api_key_authenticate(raw.strip())
        if key is None:
            raise exceptions.AuthenticationFailed(_("Invalid or revoked API key."))
        audit_set_api_key(key.prefix)
        return ApiKeyPrincipal(key), key

    @staticmethod
    def _key_from_header(request) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _sep, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return value.strip()
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise exceptions.AuthenticationFailed(_("Malformed Basic credentials.")) from None
            user, _sep, _password = decoded.partition(":")
            return user
        raise exceptions.AuthenticationFailed(_("Use Basic (write key as user name) or Bearer authentication."))

    def authenticate_header(self, request):
        return f'Basic realm="{self.www_authenticate_realm}"'


class HasScope(permissions.BasePermission):
    """The API key must carry the view's ``required_scope`` (or ``required_scopes[method]``)."""

    message = _("This API key does not have the scope this request needs.")

    def has_permission(self, request, view):
        key = request.auth
        if not isinstance(key, ApiKey):
            return False
        scope = view_scope(view, request.method)
        return scope is None or key.has_scope(scope)


def view_scope(view, method: str) -> str | None:
    """The scope a key needs for ``method`` on ``view``: ``required_scopes[method]`` or ``required_scope``."""
    scopes = getattr(view, "required_scopes", None)
    return scopes.get(method.upper()) if scopes else getattr(view, "required_scope", None)


class WriteKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes write-key authentication in the OpenAPI schema (Basic user name, or Bearer)."""

    target_class = WriteKeyAuthentication
    name = ["writeKeyBasic", "writeKeyBearer"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "http", "scheme": "basic", "description": "The API key as user name, empty password."},
            {"type": "http", "scheme": "bearer", "description": "The API key as Bearer token."},
        ]

    def get_security_requirement(self, auto_schema):
        # Either scheme is enough (OR), not both.
        return [{"writeKeyBasic": []}, {"writeKeyBearer": []}]
