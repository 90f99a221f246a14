"""Who may use the debugging API: staff sessions, or ``Authorization: Bearer <E2E_OTEL["API_KEY"]>``.

Runs on the request thread. The key is compared in constant time; with no ``API_KEY`` configured,
bearer tokens are refused and only staff sessions get in.
"""

from __future__ import annotations

import hmac
from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from ..conf import get_config

API_KEY_ACTOR = "api-key"


class ApiKeyUser:
    """The principal behind a valid API key (not a Django user; never saved)."""

    is_authenticated = True
    is_active = True
    is_staff = True
    is_anonymous = False
    username = API_KEY_ACTOR
    pk = None

    def get_username(self) -> str:
        return API_KEY_ACTOR

    def __str__(self) -> str:
        return API_KEY_ACTOR


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <key>``; a wrong key is a 401, not a silent fall-through."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, str] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid bearer header: expected 'Bearer <key>'.")
        expected = get_config().API_KEY
        if not expected or not hmac.compare_digest(header[1], expected.encode("utf-8")):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return ApiKeyUser(), API_KEY_ACTOR

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="e2e-otel"'


AUTHENTICATION_CLASSES: list[type[authentication.BaseAuthentication]] = [
    ApiKeyAuthentication,
    authentication.SessionAuthentication,
]


class IsStaffOrApiKey(permissions.BasePermission):
    """Staff users (session) or the API key; authenticated non-staff users get 403."""

    message = "Staff access or the E2E_OTEL API key is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.auth == API_KEY_ACTOR and isinstance(request.user, ApiKeyUser):
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def actor_name(request: Request) -> str:
    """Who did it, for audit fields such as ``ErrorLog.resolved_by``."""
    if isinstance(request.user, ApiKeyUser):
        return API_KEY_ACTOR
    return str(request.user.get_username())[:150]
