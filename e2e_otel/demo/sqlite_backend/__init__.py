"""Django's SQLite backend plus the two 5.1 options the demo needs, for Django 4.2 and 5.0 (see ``base.py``)."""
