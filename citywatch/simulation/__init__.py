"""The simulated demo city that `citywatch up --simulate` and `citywatch simulate` publish
(docs/demo.md): bins, air, water and toilet sensors, signal controllers, detectors and cameras."""

from citywatch.simulation.feed import FeedGenerator, Simulator

__all__ = ["FeedGenerator", "Simulator"]
