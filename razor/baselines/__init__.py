"""Baselines in RAZOR's interface: each takes a Task and its params and returns an EditResult."""
