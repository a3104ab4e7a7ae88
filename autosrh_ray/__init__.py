"""AutoSrh: differentiable embedding dimensionality search for tabular/CTR models, as a Ray workflow."""

__version__ = "0.1.0"
