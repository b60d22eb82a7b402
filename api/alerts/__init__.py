"""Push interfaces for API consumers: live streams and webhook subscriptions, with their filters."""
