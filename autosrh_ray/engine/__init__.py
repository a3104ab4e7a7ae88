"""The AutoSrh engine, pure PyTorch (nothing of Ray): embeddings (soft selection, packed, PEP thresholds, AutoDim,
AutoEmb), the bi-level search, pruning masks, training loops, metrics, quantisation and the backbones."""
