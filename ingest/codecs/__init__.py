"""Codecs: one module per payload format, each turning (topic, payload) into canonical events."""
