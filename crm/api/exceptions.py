"""Error responses in one shape: ``{"code": ..., "message": ..., "errors": ...}``.

``code`` and ``message`` are what Segment's and RudderStack's SDKs read from an error; ``errors`` carries the field
errors (by field, or by message index for a batch)."""

from __future__ import annotations

from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid_request",
    status.HTTP_401_UNAUTHORIZED: "unauthorized",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
}


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": code, "message": _("The request is invalid; see errors."), "errors": response.data}
    else:
        detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
        body = {"code": getattr(getattr(exc, "detail", None), "code", None) or code, "message": str(detail)}
    response.data = body
    return response


def error_response(*, message: str, errors=None, status_code: int = 400, code: str = "invalid_request") -> Response:
    body = {"code": code, "message": message}
    if errors is not None:
        body["errors"] = errors
    return Response(body, status=status_code)
