"""Backbones take embeddings, never ids: (B, F, K) embedding output + (B,) first-order term → (B,) logits, so any
backbone works with any embedding scheme. :mod:`.registry` names them: the built-ins' short names or any class as
``package.module:ClassName``."""
