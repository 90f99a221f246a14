from django.apps import AppConfig


class EverythingConfig(AppConfig):
    name = "tests.hostproject.everything"
    label = "everything"
