"""Database health, read off the request path (monitor and probe threads, management commands)."""
