"""The tutorial 6 encoder, its schedule, and the feature extraction that runs any backbone."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wordformer.errors import WordformerError
from wordformer.tasks import (
    EncoderConfig,
    EncoderPredictor,
    cosine_warmup_factor,
    extract_features,
    resnet34_backbone,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")  # Lightning's own deprecation notice



# --------------------------------------------------------------------------------------------------
# The encoder and its pieces
# --------------------------------------------------------------------------------------------------
def test_encoder_config_and_input_errors_are_one_line_user_errors():
    with pytest.raises(WordformerError, match="num_heads=3 must divide model_dim=32"):
        EncoderConfig(model_dim=32, num_heads=3)
    with pytest.raises(WordformerError, match="dropout"):
        EncoderConfig(dropout=1.5)
    model = EncoderPredictor(EncoderConfig(input_dim=4, model_dim=8, num_heads=2, max_len=6))
    with pytest.raises(WordformerError, match=r"expected \(batch, length, 4\)"):
        model(torch.randn(2, 3, 5))
    with pytest.raises(WordformerError, match="max_len"):
        model(torch.randn(1, 7, 4))


def test_attention_maps_are_row_stochastic_per_layer_and_head():
    model = EncoderPredictor(EncoderConfig(input_dim=5, model_dim=12, num_heads=3, num_layers=2)).eval()
    maps = model.get_attention_maps(torch.randn(4, 6, 5))
    assert len(maps) == 2 and all(m.shape == (4, 3, 6, 6) for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(4, 3, 6))


def test_cosine_warmup_schedule_ramps_then_decays():
    assert cosine_warmup_factor(0, 50, 1000) == 0.0
    assert cosine_warmup_factor(25, 50, 1000) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 25 / 1000)))
    assert cosine_warmup_factor(500, 50, 1000) == pytest.approx(0.5)
    assert cosine_warmup_factor(1000, 50, 1000) == pytest.approx(0.0, abs=1e-12)



# --------------------------------------------------------------------------------------------------
# Feature extraction (the tutorial's ResNet path runs on any module)
# --------------------------------------------------------------------------------------------------
class _TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(F.adaptive_avg_pool2d(self.conv(x), 1))  # (B, 6, 1, 1)


def test_extract_features_runs_any_backbone_in_eval_mode():
    backbone = _TinyBackbone().train()
    images = torch.randn(5, 3, 8, 8)
    feats = extract_features(images, backbone, batch_size=2)
    assert feats.shape == (5, 6) and backbone.training  # flattened, and the mode is restored
    again = extract_features(torch.utils.data.TensorDataset(images, torch.zeros(5)), backbone, batch_size=4)
    torch.testing.assert_close(feats, again)  # eval mode: dropout off, so deterministic
    with pytest.raises(WordformerError, match="nn.Module"):
        extract_features(images, lambda x: x)  # type: ignore[arg-type]


def test_resnet_backbone_without_torchvision_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as if absent
    with pytest.raises(WordformerError, match=r"wordformer\[vision\]"):
        resnet34_backbone()


def test_resnet34_feature_path_with_torchvision():
    try:
        import torchvision  # noqa: F401
    except Exception:
        pytest.skip("PyPI torchvision does not load beside the local CPU torch 2.13.0")
    backbone = resnet34_backbone(pretrained=False)
    assert extract_features(torch.randn(2, 3, 32, 32), backbone, batch_size=2).shape == (2, 512)
