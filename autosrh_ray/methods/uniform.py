"""UE (``uniform``): one uniform embedding trained until the validation loss stops improving; the reference every
compressed model is compared to."""
from .graph import run_uniform
from .registry import Method

UNIFORM = Method("uniform", run_uniform, first_stage="uniform", sized_by_itself=True)
