"""Backbone registry: every network builds, has the stated size, and loads local weights."""

from __future__ import annotations

import pytest
import torch

from lnlclean.errors import UserError
from lnlclean.models import BACKBONES, build_backbone, default_image_size


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_maps_images_to_class_logits(name):
    net = build_backbone(name, n_classes=7, in_channels=3).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)


def test_small_cnn_is_a_few_hundred_thousand_parameters_and_takes_8px_grayscale():
    net = build_backbone("small-cnn", n_classes=10, in_channels=1).eval()
    assert 100_000 < sum(p.numel() for p in net.parameters()) < 1_000_000
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_paper_networks_have_their_usual_size():
    sizes = {
        name: sum(p.numel() for p in build_backbone(name, 10, 3).parameters())
        for name in ("preact-resnet18", "resnet34")
    }
    assert 10.5e6 < sizes["preact-resnet18"] < 11.5e6
    assert 20.5e6 < sizes["resnet34"] < 21.8e6


def test_torchvision_models_are_reachable_by_prefix():
    net = build_backbone("tv:resnet18", n_classes=5, in_channels=3).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert default_image_size("tv:resnet18") == 224 and default_image_size("small-cnn") == 64


@pytest.mark.parametrize("name, needle", [("nope", "--backbone 'nope'"), ("tv:not_a_model", "tv:not_a_model")])
def test_unknown_backbones_are_user_errors(name, needle):
    with pytest.raises(UserError, match=needle):
        build_backbone(name, 10, 3)


def test_local_weights_are_loaded(tmp_path):
    source = build_backbone("small-cnn", 10, 3)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("small-cnn", 10, 3, weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_unusable_weights_are_user_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(UserError, match="not a readable PyTorch state dict"):
        build_backbone("small-cnn", 10, 3, weights=str(garbage))
    with pytest.raises(UserError, match="no such file"):
        build_backbone("small-cnn", 10, 3, weights=str(tmp_path / "missing.pt"))
