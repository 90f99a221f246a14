"""A pytest session that needs no database: its traffic must not be recorded anywhere."""

from django.test import Client


def test_ping_without_a_database() -> None:
    assert Client().get("/ping/").status_code == 200
