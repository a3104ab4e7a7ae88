"""``report.json``'s schema, as dataclasses: the workflow fills them, :meth:`Report.to_json` writes the one JSON
form, and what reads a report (report.md, ``compare``, the CLI's summary) reads it back with
:meth:`Report.from_json`. Keys are only ever added, never renamed: a report of an earlier version still reads."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union


@dataclass
class Params:
    """Parameters of a final model: its uniform table M·K, the embedding entries it keeps, the first-order weights
    (M), the projections' (MDE, AutoDim, AutoEmb)."""

    uniform: int
    kept: int
    linear: int
    projection: int = 0


@dataclass
class StoredBytes:
    """The artifact's bytes as its tensors count them: ``embedding`` (values, scales, index, projections),
    ``dense_fp32`` (UE's M·K·4), ``other`` (first-order weights, backbone), ``bytes_cr`` = dense_fp32 / embedding."""

    embedding: int
    dense_fp32: int
    other: int
    bytes_cr: float


@dataclass
class ModelEntry:
    """One final model (one per budget; the UE reference too): what it is, its budget, its metrics on validation
    (the chosen evaluation, whole split) and test, sizes, times and each stage's history. ``extras``: a method's
    own keys (AutoDim's ``field_dims``, AutoEmb's ``features_per_dim``), written beside the others."""

    method: str
    model: str
    dataset: str
    task: str
    K: int
    L: int
    budget: str
    cr_target: float
    cr_achieved: float
    num_features: int
    params: Params
    valid: dict[str, float]
    test: dict[str, float]
    valid_optimistic: bool
    timings_s: dict[str, float]
    artifacts: dict[str, str]
    artifact_bytes: dict[str, int]
    precision: Union[str, list[str]]
    bytes: StoredBytes
    stages: dict[str, dict]
    epochs: dict[str, int]
    history: dict[str, list]
    within_budget: bool = True
    int_scales: Optional[str] = None  # int8/int4 values: their scales per "row" or per block and dimension ("dim")
    budget_bytes: Optional[int] = None  # a byte budget's limit
    budget_params: Optional[int] = None  # a CR or params budget's kept entries
    block_dims: Optional[list[int]] = None  # grid / random / mde: the chosen dimension of every block
    candidates: Optional[list[dict]] = None  # every scheme or precision trained for this budget, the chosen marked
    chosen_on: Optional[str] = None  # a byte budget: the rows its candidate was chosen on
    notes: Optional[list[str]] = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        # the optional keys (default None) are written only when set
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extras" and not (f.default is None and getattr(self, f.name) is None)}
        out["params"], out["bytes"] = dataclasses.asdict(self.params), dataclasses.asdict(self.bytes)
        return {**out, **self.extras}

    @classmethod
    def from_json(cls, data: dict) -> "ModelEntry":
        names = {f.name for f in dataclasses.fields(cls)} - {"extras"}
        known = {k: v for k, v in data.items() if k in names}
        known["params"] = Params(**data["params"])
        known["bytes"] = StoredBytes(**data["bytes"])
        return cls(**known, extras={k: v for k, v in data.items() if k not in names})


@dataclass
class RowsReport:
    """Rows read, kept per split and skipped (by reason, by split): read = train + valid + test + skipped."""

    read: int
    train: int
    valid: int
    test: int
    skipped: int
    skipped_by_reason: dict[str, int]
    skipped_by_split: dict[str, dict[str, int]]


@dataclass
class Report:
    """The whole ``report.json``: the first budget's model at the top level (``top``: with the run's artifacts and
    its timings from prepare to total), every model under ``models``, the rows, the UE ``reference`` and the
    ``study`` when there are."""

    top: ModelEntry
    models: list[ModelEntry]
    rows: RowsReport
    wall_s_this_run: float
    reference: Optional[ModelEntry] = None
    study: Optional[dict] = None

    def to_json(self) -> dict:
        out = {**self.top.to_json(), "wall_s_this_run": self.wall_s_this_run, "rows": dataclasses.asdict(self.rows),
               "models": [m.to_json() for m in self.models]}
        if self.reference is not None:
            out["reference"] = self.reference.to_json()
        if self.study is not None:
            out["study"] = self.study
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Report":
        top = {k: v for k, v in data.items() if k not in ("wall_s_this_run", "rows", "models", "reference", "study")}
        return cls(ModelEntry.from_json(top), [ModelEntry.from_json(m) for m in data["models"]],
                   RowsReport(**data["rows"]), data.get("wall_s_this_run", 0.0),
                   ModelEntry.from_json(data["reference"]) if "reference" in data else None, data.get("study"))
