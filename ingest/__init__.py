"""Normalise what devices publish: MQTT sources, codecs per format, validation, dead letters."""
