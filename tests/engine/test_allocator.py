"""Training steps reuse their freed batch-sized blocks after :func:`keep_large_blocks` instead of page-faulting them
in again (FM at the Criteo setting's shape: B 4096, F 39, K 64 — 41 MB per (B, F, K) tensor). Each variant runs in a
fresh process: the allocator setting holds for a whole process."""
import subprocess
import sys

import pytest

CHILD = """
import resource, sys, torch
torch.set_num_threads(1)
from autosrh_ray.allocator import keep_large_blocks
if sys.argv[1] == "kept":
    assert keep_large_blocks()
from autosrh_ray.batch import Batch
from autosrh_ray.config import load_config
from autosrh_ray.features import FeatureSpace, FieldSpec
from autosrh_ray.models import build_model
from autosrh_ray.search import BiLevelSearch
fields = [FieldSpec(f"C{f}", "categorical") for f in range(39)]
space = FeatureSpace.from_counts(fields, [{str(v): 1000 - v for v in range(100)} for _ in fields], [None] * 39)
g = torch.Generator().manual_seed(0)
def batch():
    ids = torch.stack([torch.tensor(v.ids)[torch.randint(0, len(v.ids), (4096,), generator=g)] for v in space.vocabs], 1)
    return Batch(ids, torch.ones(4096, 39), torch.randint(0, 2, (4096,), generator=g).float())
train, valid = [batch() for _ in range(5)], [batch() for _ in range(5)]
torch.manual_seed(0)
search = BiLevelSearch(build_model(load_config(overrides=["model.name=fm", "search.K=64", "search.L=6"]), space, 0.25),
                       "classification")
for i in range(2):
    search.step(train[i], valid[i])
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(2, 5):
    search.step(train[i], valid[i])
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def _faults_per_step(variant: str) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, variant], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc only")
def test_search_steps_reuse_their_freed_blocks_instead_of_faulting_them_in_again():
    default, kept = _faults_per_step("default"), _faults_per_step("kept")
    assert default > 20_000  # glibc unmaps every freed (B, F, K) tensor: ~10k pages of 4 KB each, several a step
    assert kept < default / 10
