"""The demo shop app: catalogue, cart, checkout."""
