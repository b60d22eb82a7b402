"""Helpers shared by the tests: event builders and condition waits."""
