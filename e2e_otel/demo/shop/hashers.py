"""A cheaper password hasher for the demo only (never use it in a real project)."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class DemoPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 with fewer iterations so the demo's logins don't each cost a second of CPU."""

    algorithm = "pbkdf2_sha256_demo"
    iterations = 50_000
