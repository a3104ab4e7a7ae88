"""Peak memory of scoring with a compact artifact (``autosrh-ray predict``'s model side) against the artifact's size.

An FM artifact with M features, K = 64, CR = 10 (M·K/10 kept entries spread over the features) is written in the
artifact format; then, each in a subprocess of its own (the lowest of 3 runs each), the peak RSS of (a) the
interpreter with torch and autosrh_ray imported, (b) the same plus ``load_model``, (c) plus scoring 65,536 rows
in batches of 4,096. The figure is (b − a) ÷ the artifact's size in bytes, measured at two sizes and fitted as
slope × artifact + constant; target: slope ≤ 1.2 (the kept entries as stored, no dense M×K table); (c − b) is
the scoring working set, which grows with the batch, not with M. The
vocabulary that predict also loads (value → id per field) is not part of it.

    python benchmarks/predict_memory.py --quick --json predict_memory.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from autosrh_ray.artifact.format import FORMAT_VERSION, compact_embedding
from autosrh_ray.engine.embedding import FirstOrder
from autosrh_ray.engine.models.backbone import build_backbone

K, CR, FIELDS, ROWS = 64, 10, 26, 65_536

PROBE = r'''
import sys
import torch
import autosrh_ray.artifact.format as artifact
if sys.argv[1] in ("load", "score"):
    model = artifact.load_model(sys.argv[2])
if sys.argv[1] == "score":
    g = torch.Generator().manual_seed(0)
    M = model.embedding.indptr.numel() - 1
    with torch.no_grad():
        for start in range(0, %d, 4096):
            ids = torch.randint(0, M, (4096, %d), generator=g)
            model(ids, torch.ones(ids.shape))
# VmHWM: this process's own peak (ru_maxrss would carry the parent's peak over fork and exec)
print(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024)
''' % (ROWS, FIELDS)


def write_artifact(path: Path, num_features: int) -> int:
    """An FM artifact in the compact format with ~M·K/CR kept entries (Binomial(K, 1/CR) per feature)."""
    g = torch.Generator().manual_seed(0)
    counts = torch.distributions.Binomial(K, torch.full((num_features,), 1.0 / CR)).sample().to(torch.uint8)
    nnz = int(counts.sum())
    payload = {
        "format_version": FORMAT_VERSION,
        "model": {"name": "fm", "num_fields": FIELDS, "hidden": [], "dropout": 0.0},
        "embedding": compact_embedding(counts, torch.randint(0, K, (nnz,), generator=g, dtype=torch.uint8),
                                       torch.randn(nnz, generator=g) * 0.01, K),
        "first_order": FirstOrder(num_features).state_dict(),
        "backbone": build_backbone("fm", FIELDS, K, {}).state_dict(),
    }
    torch.save(payload, path)
    return path.stat().st_size


def peak_rss(mode: str, path: Path) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode, str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def measure(m: int, work: Path) -> dict:
    path = work / f"model-{m}.pt"
    size = write_artifact(path, m)
    base, loaded, scored = (min(peak_rss(mode, path) for _ in range(3)) for mode in ("import", "load", "score"))
    path.unlink()
    return {"artifact": size, "interpreter": base, "loaded": loaded, "scored": scored}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="M = 2M and 4M instead of 4M and 10M")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = (2_000_000, 4_000_000) if args.quick else (4_000_000, 10_000_000)
    mib = 1 << 20
    figures: dict = {"K": K, "cr": CR}
    with tempfile.TemporaryDirectory(prefix="autosrh-predict-mem-") as work:
        runs = [measure(m, Path(work)) for m in sizes]
    for m, r in zip(sizes, runs):
        print(f"M = {m:,}: artifact {r['artifact'] / mib:.0f} MiB (dense table {m * K * 4 / mib:.0f} MiB); peak RSS "
              f"interpreter {r['interpreter'] / mib:.0f}, model loaded {r['loaded'] / mib:.0f}, scoring "
              f"{r['scored'] / mib:.0f} MiB")
        figures.update({f"m{m // 1_000_000}m_{k}_bytes": v for k, v in r.items()})
    small, large = runs
    # memory of the loaded model = slope × artifact + constant, from the two sizes
    slope = ((large["loaded"] - large["interpreter"]) - (small["loaded"] - small["interpreter"])) / \
        (large["artifact"] - small["artifact"])
    constant = (large["loaded"] - large["interpreter"]) - slope * large["artifact"]
    figures.update(slope_loaded_per_artifact_byte=slope, constant_bytes=constant,
                   ratio_loaded_to_artifact_large=(large["loaded"] - large["interpreter"]) / large["artifact"],
                   scoring_working_set_bytes=large["scored"] - large["loaded"])
    print(f"loaded model ≈ {slope:.2f} × artifact + {constant / mib:.0f} MiB (target: ≤ 1.2 × artifact + a constant); "
          f"at M = {sizes[1]:,}: {figures['ratio_loaded_to_artifact_large']:.2f}× the artifact; scoring working set "
          f"{figures['scoring_working_set_bytes'] / mib:.0f} MiB (batches of 4,096 rows × {FIELDS} fields × K {K})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
