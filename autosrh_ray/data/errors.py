"""Bad-input errors of the data stage, and the per-row reasons counted when ``dataset.on_bad_rows: skip``."""
from __future__ import annotations

WRONG_COLUMN_COUNT = "wrong_column_count"
BAD_LABEL = "bad_label"
NON_NUMERIC = "non_numeric_value"
BAD_VALUE = "bad_value"  # a value a derived field cannot be computed from (e.g. Avazu's hour)
NOT_UTF8 = "invalid_utf8"  # a text line whose bytes are not UTF-8


class DataError(ValueError):
    """Bad input data; ``str(err)`` is one line naming the file (and line) and the reason."""
