"""Test helpers for aiolit and for code built on it: the store conformance suite and fault injection.

``StoreSuite`` needs pytest; import it from :mod:`aiolit.testing.store_suite`.
"""

from aiolit.testing.faults import FaultPlan, FaultyStore

__all__ = ["FaultPlan", "FaultyStore"]
