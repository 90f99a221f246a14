"""Debug configurations through the API: secrets masked on the way in (never stored) and on the way out."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from e2e_otel.models import DebugConfiguration
from e2e_otel.sanitize import MASK

BASE = "/api/v1/debugging/debug-configurations/"
pytestmark = pytest.mark.django_db

CONFIG = {
    "feature": "slow-sql-capture",
    "api_key": "sk_live_1234",
    "upstream": {"url": "https://svc:hunter2@payments.example/v1", "headers": {"Authorization": "Bearer abc.def"}},
    "dsn": "mysql://app:db-pass-9@db.internal/shop",
    "notes": ["token=tok-777", "keep me"],
    "threshold_ms": 250,
}
SECRETS = ("sk_live_1234", "hunter2", "abc.def", "db-pass-9", "tok-777")


@pytest.fixture
def keyed() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer test-api-key")
    return client


def test_secrets_in_configuration_data_are_never_stored(keyed: APIClient) -> None:
    """Issue #18.4: debug-configuration data was stored (and shown) unmasked."""
    created = keyed.post(BASE, {"name": "payments", "config_data": CONFIG,
                                "description": "rotated password=old-pw-1 yesterday"}, format="json")
    assert created.status_code == 201, created.content
    stored = DebugConfiguration.objects.get(pk=created.json()["id"])
    text = repr((stored.config_data, stored.description))
    assert not any(secret in text for secret in (*SECRETS, "old-pw-1")), text
    assert stored.config_data["api_key"] == MASK and stored.config_data["threshold_ms"] == 250
    assert stored.config_data["feature"] == "slow-sql-capture" and stored.config_data["notes"][1] == "keep me"
    assert created.json()["config_data"] == stored.config_data

    updated = keyed.patch(f"{BASE}{stored.pk}/", {"config_data": {"client_secret": "cs-55"}}, format="json")
    assert updated.status_code == 200 and "cs-55" not in repr(DebugConfiguration.objects.get(pk=stored.pk).config_data)


def test_rows_written_around_the_api_are_masked_when_shown(keyed: APIClient) -> None:
    row = DebugConfiguration.objects.create(name="legacy", config_data=CONFIG, description="token: t-legacy-1")
    for response in (keyed.get(f"{BASE}{row.pk}/"), keyed.get(BASE)):
        assert response.status_code == 200
        text = response.content.decode()
        assert not any(secret in text for secret in (*SECRETS, "t-legacy-1")), text
        assert "slow-sql-capture" in text


def test_configuration_data_must_be_a_bounded_object(keyed: APIClient) -> None:
    too_many = {f"k{i}": i for i in range(129)}
    assert keyed.post(BASE, {"name": "big", "config_data": too_many}, format="json").status_code == 400
    assert keyed.post(BASE, {"name": "list", "config_data": [1]}, format="json").status_code == 400
