"""The debugging REST API (DRF): serializers, viewsets, permissions, filters and urls.

Every view sets its own authentication, permission, pagination and schema classes, so the host app
needs no ``REST_FRAMEWORK`` settings.
"""
