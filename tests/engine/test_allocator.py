"""Training steps reuse their freed batch-sized blocks after :func:`keep_large_blocks` instead of page-faulting them
in again (FM at the Criteo setting's shape: B 4096, F 39, K 64 — 41 MB per (B, F, K) tensor). Each variant runs in a
fresh process: the allocator setting holds for a whole process."""
import subprocess
import sys

import pytest

CHILD = """
import resource, sys, torch
torch.set_num_threads(1)
from autosrh_ray.engine.allocator import keep_large_blocks
if sys.argv[1] == "kept":
    assert keep_large_blocks()
from autosrh_ray.engine.batch import Batch
from autosrh_ray.config import load_config
from autosrh_ray.engine.features import FeatureSpace, FieldSpec
from autosrh_ray.methods.model import build_model
from autosrh_ray.engine.search import BiLevelSearch
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


def _child(code: str, variant: str) -> str:
    """The last line a fresh process running ``code`` with ``variant`` prints (an allocator setting holds for a
    whole process)."""
    done = subprocess.run([sys.executable, "-c", code, variant], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def _faults_per_step(variant: str) -> float:
    return float(_child(CHILD, variant))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc only")
def test_search_steps_reuse_their_freed_blocks_instead_of_faulting_them_in_again():
    default, kept = _faults_per_step("default"), _faults_per_step("kept")
    assert default > 20_000  # glibc unmaps every freed (B, F, K) tensor: ~10k pages of 4 KB each, several a step
    assert kept < default / 10


# the start of every child below: large freed blocks kept in the heap (as in every training loop), and VmRSS
IN_A_TRAINING_PROCESS = """
import sys, threading, numpy as np, torch
torch.set_num_threads(1)
from autosrh_ray.engine.allocator import MappedArena, keep_large_blocks
assert keep_large_blocks()
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) >> 10
"""

ARENA_CHILD = IN_A_TRAINING_PROCESS + """
def steps():  # in a thread, as a Ray Train worker's loop runs: its own glibc arena
    arena, kept = MappedArena(), []
    for i in range(40):
        a, b = torch.ones(30 << 18), torch.ones(20 << 18)  # a step's transients: 30 and 20 MiB
        one = torch.full((1 << 18,), float(i))  # 1 MiB kept per step (a cached batch)
        kept.append(arena.copy(one) if sys.argv[1] == "mapped" else one)
        del a, b
    assert all(float(k[0]) == i and float(k[-1]) == i for i, k in enumerate(kept))  # kept intact
    print(rss() - base)
base = rss()
t = threading.Thread(target=steps); t.start(); t.join()
"""


def _growth_mib(variant: str) -> int:
    return int(_child(ARENA_CHILD, variant))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc only")
def test_tensors_kept_in_a_mapped_arena_do_not_pin_the_heap_the_steps_churn():
    """40 MiB kept beside 50 MiB of transients a step: in mapped memory the process grows by about what is live;
    kept in the heap, each kept tensor pins a region the next step's transients cannot reuse."""
    heap, mapped = _growth_mib("heap"), _growth_mib("mapped")
    # kept (40) + the thread's arena: a 64 MiB heap per transient (128) + torch's first use in the thread: ~320
    assert mapped < 400
    assert heap > 2 * mapped  # ~910 MiB: 15 MiB a step more than what is live


KEPT_CHILD = IN_A_TRAINING_PROCESS + """
from autosrh_ray.engine.batch import Batch
from autosrh_ray.distributed.cache import Budget, KeptBatches
def steps():  # a search's first pass in a Ray Train worker's loop thread: one validation batch kept a step
    rng, arena = np.random.default_rng(0), MappedArena()
    kept, tensors = KeptBatches(Budget(1 << 40)), []
    batches = [Batch(torch.randint(0, 1000, (4096, 39)), torch.ones(4096, 39), torch.ones(4096)) for _ in range(4)]
    for i in range(150):
        transients = [torch.ones(int(rng.integers(30, 45)) << 18) for _ in range(8)]  # 30-45 MiB each, varying
        b = batches[i % 4]
        if sys.argv[1] == "kept":
            kept.keep(b)
        else:  # tensors made per kept batch (their data mapped, their objects in the heap)
            tensors.append((arena.copy(b.ids, torch.int32), arena.copy(b.values), arena.copy(b.labels)))
        del transients
        if i == 49:
            middle = rss()
    if sys.argv[1] == "kept":
        assert all(torch.equal(r.ids, batches[i % 4].ids) for i, r in enumerate(kept.replay()))  # kept intact
    print(rss() - middle)
t = threading.Thread(target=steps); t.start(); t.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc only")
def test_kept_batches_do_not_pin_the_heap_while_they_fill():
    """100 steps of varying transients, one 4096-row batch kept a step (1.3 MiB of int32 ids and values): kept
    as spans of a few mapped chunks, the process grows by about what is kept; with tensors made per kept batch,
    their small heap objects pin regions the varying transients cannot reuse."""
    spans, per_batch = int(_child(KEPT_CHILD, "kept")), int(_child(KEPT_CHILD, "per-batch"))
    assert spans < 280  # 124 MiB kept over these 100 steps (measured: 127-190 MiB of growth)
    assert per_batch > 2 * spans + 300  # measured: ~1,480 MiB


PREDICT_CHILD = IN_A_TRAINING_PROCESS + """
from autosrh_ray.engine.batch import Batch
from autosrh_ray.engine.training import predict
class Model(torch.nn.Module):  # a forward with the transients of FM at B 4096, F 39, K 64 (41 MB each)
    def forward(self, ids, values):
        e = torch.ones(ids.shape[0], 39, 64) * values.unsqueeze(-1)
        return (e * 2).sum(dim=(1, 2)) + ids[:, 0]
def run():
    b = Batch(torch.zeros(4096, 39, dtype=torch.int64), torch.ones(4096, 39), torch.ones(4096))
    batches = [b] * 150
    for _ in range(2):  # warm: the heap holds a forward's transients
        predict(Model(), batches[:5])
    start = rss()
    if sys.argv[1] == "mapped":
        outputs, labels = predict(Model(), batches)
    else:  # one small array per batch, kept until the end (predict before MappedVector)
        outs = [Model()(x.ids, x.values).double().numpy() for x in batches]
        outputs = np.concatenate(outs)
    assert len(outputs) == 150 * 4096 and float(outputs[0]) == 39 * 64 * 2
    print(rss() - start)
t = threading.Thread(target=run); t.start(); t.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc only")
def test_predicting_a_whole_split_does_not_pin_the_heap_batch_by_batch():
    """150 batches whose forward makes 41 MB transients: predictions gathered in a mapped vector keep the process
    at its size; one small array per batch splits the freed transients so that each batch takes fresh memory."""
    mapped, arrays = int(_child(PREDICT_CHILD, "mapped")), int(_child(PREDICT_CHILD, "arrays"))
    assert mapped < 100
    assert arrays > 4 * mapped + 400
