"""Errors that name the problem and the fix. The CLI prints them without a traceback."""


class RazorError(ValueError):
    """Base class: a problem with the user's input, stated with how to fix it."""


class DataError(RazorError):
    """A manifest or image that cannot be used as it is."""


class ModelError(RazorError):
    """A model that cannot be loaded or has nothing RAZOR can edit."""


class LabelError(RazorError):
    """A concept label the model's label set lacks, or one that is ambiguous."""


class DeltaMismatchError(RazorError):
    """A delta applied to weights other than the ones it was made from."""


class NumericalError(RazorError):
    """NaN or Inf in gradients or weights."""
