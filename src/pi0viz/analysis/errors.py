"""Temporary home of AnalysisError until pi0viz.errors exists (moves there after the house commit)."""


class AnalysisError(ValueError):
    """The analysis cannot run as asked; the message says what was expected."""
