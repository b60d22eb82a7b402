"""Stateful rules over the event stream, the bus that feeds them, and the worker that runs them."""
