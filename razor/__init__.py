"""RAZOR: ratio-aware, few-component unlearning for transformer vision models."""

from razor.delta import Delta
from razor.unlearn import unlearn

__all__ = ["Delta", "unlearn"]
