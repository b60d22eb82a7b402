"""Webhook subscriptions: signed, retried, logged deliveries of violation state changes."""
