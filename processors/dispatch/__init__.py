"""Sanitation dispatch: from bin fill forecasts to truck routes per shift and depot (docs/dispatch.md).

`candidates` decides which bins a shift must, may or must not (flagged for a person) visit, `travel` gives
times and distances between places, `solver` builds the routes (PyVRP, with a nearest-neighbour
fallback), `replan` re-plans what is left mid-shift, `export` writes plans as CSV and GeoJSON.
Pure: nothing here reads a store or the network.
"""
