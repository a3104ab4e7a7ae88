"""AutoSrh's pieces in a training loop of your own, on the quickstart's data: the soft-selection embedding (α per
frequency block and dimension), the bi-level step (Θ on train, α on validation), pruning |E ⊙ α| to a budget, and
a retrain of the kept entries. Run: ``python examples/own_training_loop.py /tmp/quickstart-data``."""
import sys

import torch

from autosrh_ray.config import load_config
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.engine.batch import iterate_batches
from autosrh_ray.engine.embedding import FirstOrder, SoftSelectionEmbedding
from autosrh_ray.engine.features import block_index
from autosrh_ray.engine.model import EmbeddingModel
from autosrh_ray.engine.models.fm import FM
from autosrh_ray.engine.prune import kept_count, pruned_state
from autosrh_ray.engine.search import BiLevelSearch
from autosrh_ray.engine.training import Trainer, evaluate
from autosrh_ray.methods.model import model_from_state

config = load_config("workflows/quickstart.yaml", ["dataset.synthetic.rows=60000", "search.K=8"])
data = prepare_synthetic(config, sys.argv[1])  # the quickstart's data, prepared in memory
train, valid, test = data.load_split("train"), data.load_split("valid"), data.load_split("test")
m, k, fields = data.num_features, config.search.K, data.features.num_fields
torch.manual_seed(0)
embedding = SoftSelectionEmbedding(torch.from_numpy(block_index(m, config.search.L)), k)  # α: (L, K)
model = EmbeddingModel(embedding, FirstOrder(m), FM(fields, k))
search = BiLevelSearch(model, "classification", lr=1e-3, lr_alpha=1e-2)
for epoch in range(4):  # a fixed number of passes here; the workflow stops by patience on validation
    for batch, held in zip(iterate_batches(train, 256, True, epoch), iterate_batches(valid, 256, True, epoch)):
        search.step(batch, held)
state = pruned_state(model, kept_count(m, k, cr=10))  # the best tenth of |E ⊙ α|, packed
retrain = model_from_state(config, data.features, data.label_mean, state)  # the masked model, kept entries only
trainer = Trainer(retrain, "classification", lr=1e-3)
for epoch in range(4):
    for batch in iterate_batches(train, 256, True, 10 + epoch):
        trainer.step(batch)
print(f"kept {retrain.embedding.kept_count():,} of {m * k:,} entries; "
      f"test AUC {evaluate(retrain, iterate_batches(test, 4096), 'classification')['auc']:.4f}")
