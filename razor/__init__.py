"""RAZOR: ratio-aware, few-component unlearning for transformer vision models.

`razor.unlearn(...)` and `razor.Delta` load on first use, so `import razor.errors` (and the CLI's
`--help`) do not load torch."""

__all__ = ["Delta", "unlearn"]


def __getattr__(name: str):
    if name == "unlearn":
        from razor.api import unlearn

        return unlearn
    if name == "Delta":
        from razor.delta import Delta

        return Delta
    raise AttributeError(f"module 'razor' has no attribute {name!r}")
