"""Civility indices from rates with their denominators, rankings and published reports (docs/indices.md)."""
