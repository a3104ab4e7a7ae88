"""DCN-V2 and DLRM, the built-in backbones the field uses beside FM and DeepFM, against forwards written out by
hand in float64 (loops over layers, pairs and rows, numpy), built through the registry as a run builds them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autosrh_ray.engine.models.backbone import build_backbone, constructor_options, probe_backbone

F, K, B = 4, 3, 6


def _relu(x):
    return np.maximum(x, 0.0)


def _weights(linear):
    return linear.weight.detach().numpy(), (linear.bias.detach().numpy() if linear.bias is not None else 0.0)


def _dcn_reference(net, emb: np.ndarray, first: np.ndarray) -> np.ndarray:
    out = np.zeros(B)
    for r in range(B):  # row by row
        x0 = emb[r].reshape(-1)
        x = x0.copy()
        for layer in net.cross:
            w_up, b_up = _weights(layer.up)
            inner = (w_up @ (_weights(layer.down)[0] @ x) if layer.down is not None else w_up @ x) + b_up
            x = x0 * inner + x
        h = x if net.structure == "stacked" else x0
        for module in net.deep:
            if isinstance(module, torch.nn.Linear):
                w, b = _weights(module)
                h = _relu(w @ h + b)
        features = h if net.structure == "stacked" else np.concatenate([x, h])
        w, b = _weights(net.out)
        out[r] = first[r] + (w @ features + b)[0]
    return out


@pytest.mark.parametrize("rank, structure", [(0, "stacked"), (2, "parallel"), (2, "stacked"), (0, "parallel")])
def test_dcnv2_is_the_cross_network_and_tower_written_out(rank, structure):
    torch.manual_seed(0)
    options = constructor_options("dcnv2", [8], 0.0, {"cross_layers": 2, "rank": rank, "structure": structure,
                                                      "hidden": [5, 4]})
    assert "dropout" not in options  # model.hidden and model.dropout are DeepFM's: DCN-V2 takes model.options
    net = build_backbone("dcnv2", F, K, options).double().eval()
    assert len(net.cross) == 2 and (net.cross[0].down is not None) == bool(rank)
    emb, first = torch.randn(B, F, K, dtype=torch.float64), torch.randn(B, dtype=torch.float64)
    got = net(emb, first).detach().numpy()
    np.testing.assert_allclose(got, _dcn_reference(net, emb.numpy(), first.numpy()), rtol=1e-12, atol=1e-12)
    probe_backbone(net.float(), "dcnv2", F, K)


def test_dlrm_is_every_pair_of_fields_through_the_top_mlp():
    torch.manual_seed(1)
    net = build_backbone("dlrm", F, K, constructor_options("dlrm", [8], 0.0, {"hidden": [5]})).double().eval()
    emb, first = torch.randn(B, F, K, dtype=torch.float64), torch.randn(B, dtype=torch.float64)
    e, want = emb.numpy(), np.zeros(B)
    for r in range(B):
        h = np.array([e[r, f] @ e[r, g] for f in range(F) for g in range(f + 1, F)])  # 6 pairs, in (f, g) order
        layers = [m for m in net.top if isinstance(m, torch.nn.Linear)]
        for layer in layers[:-1]:
            w, b = _weights(layer)
            h = _relu(w @ h + b)
        w, b = _weights(layers[-1])
        want[r] = first[r].item() + (w @ h + b)[0]
    np.testing.assert_allclose(net(emb, first).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    assert net.top[0].in_features == F * (F - 1) // 2


def test_a_structure_dcnv2_does_not_have_is_one_line():
    from autosrh_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model.name: dcnv2\(.*ValueError: structure must be stacked or parallel"):
        build_backbone("dcnv2", F, K, {"structure": "diagonal"})
