"""Where violation state changes go once they are durable: the in-process feed and output topics."""
