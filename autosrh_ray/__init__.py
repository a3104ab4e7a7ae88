"""AutoSrh: differentiable embedding dimensionality search for tabular/CTR models, as a Ray workflow.

The public API (:mod:`autosrh_ray.api`)::

    import autosrh_ray

    result = autosrh_ray.run("workflows/quickstart.yaml", "runs/quickstart")   # -> RunResult (typed report)
    model = autosrh_ray.load_model("runs/quickstart")                           # -> Model
    scores = model.score(rows)                                                  # rows: DataFrame / Arrow Table

Everything else is internal. The names are loaded on first use, so importing a submodule (as Ray's workers do)
does not import the workflow.
"""

__version__ = "0.1.0"
__all__ = ["run", "load_model", "RunResult", "Model"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'autosrh_ray' has no attribute {name!r}")
