"""Settings of the host project (see ``tests/hostproject/__init__.py`` for the knobs)."""

from __future__ import annotations

import json
import os

import pymysql

pymysql.install_as_MySQLdb()

if os.environ.get("HOST_DB") == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "HOST": "127.0.0.1",
            "PORT": int(os.environ.get("HOST_DB_PORT", "3306")),
            "USER": "root",
            "PASSWORD": "",
            "NAME": os.environ.get("HOST_DB_NAME", "e2e_startup_host"),
            "OPTIONS": {"charset": "utf8mb4", "connect_timeout": 2},
            "TEST": {"NAME": os.environ.get("HOST_TEST_DB_NAME", "test_e2e_startup_host"),
                     "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                             "NAME": os.environ.get("HOST_DB_NAME", ":memory:")}}

SECRET_KEY = "host-project-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = os.environ.get("HOST_URLCONF", "tests.hostproject.urls")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "tests.hostproject.everything",  # before e2e_otel: its admin loop sees e2e_otel's models first
    "e2e_otel",
]
if os.environ.get("HOST_EVERYTHING") == "0":
    INSTALLED_APPS.remove("tests.hostproject.everything")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages"]},
}]
if "HOST_E2E_OTEL" in os.environ:
    E2E_OTEL = json.loads(os.environ["HOST_E2E_OTEL"])
