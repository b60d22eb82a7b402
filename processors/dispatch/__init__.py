"""Sanitation dispatch: from bin fill forecasts to truck routes per shift and depot (docs/dispatch.md).

`candidates` decides which bins a shift must, may or must not (flagged for a person) visit, `travel` gives
times and distances between places, `solver` builds the routes (PyVRP, with a nearest-neighbour
fallback), `planner` also re-plans what is left mid-shift, `watch` re-plans when a bin crosses a
threshold, `board` keeps the plans (in the relational database, through store/dispatch.py), `export`
writes plans as CSV and GeoJSON. The planning itself is pure: it reads no store and no network.
"""
