"""What every figure charnn draws starts from: matplotlib on its headless backend."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (no screen needed), imported on first use: it takes
    about a second, which commands that draw nothing should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
