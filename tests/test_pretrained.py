"""Pretrained EfficientNet-Lite0 and frozen features: the weights load exactly, embeddings are cached, heads train."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lnlclean.cli import main
from lnlclean.config import RunConfig
from lnlclean.data.features import FeatureAugmenter
from lnlclean.efficientnet_lite import INPUT_MEAN, INPUT_STD, SameConv2d, pretrained_lite0
from lnlclean.embeddings import cached_embeddings
from lnlclean.engine import TrainData, build_method, fit, make_optimizer
from lnlclean.errors import UserError
from lnlclean.methods import METHODS
from lnlclean.progress import Reporter

# Logits of two fixed inputs (torch.rand, seed 0, 64 px), computed once with the package's weights.
STORED_LOGITS = [
    [-2.2043020725250244, -0.4043041169643402, 0.08936069905757904, 0.5717608332633972],
    [0.13119956851005554, 0.08446905016899109, -0.8471953272819519, -0.5403103232383728],
]
STORED_ARGMAX = [111, 490]


def test_the_imagenet_weights_load_to_the_stored_outputs():
    net = pretrained_lite0().eval()
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # EfficientNet-Lite0's published size
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x = (x - torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)) / torch.tensor(INPUT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = net(x)
    assert logits.argmax(dim=1).tolist() == STORED_ARGMAX
    assert torch.allclose(logits[:, :4], torch.tensor(STORED_LOGITS), atol=2e-3)


def test_the_embedding_is_the_last_three_stages_pooled_then_the_classifiers_features():
    net = pretrained_lite0().eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embedding, head = net.embedding(x), net.features(x)
        stages = []
        last_stage = F.relu6(net._bn0(net._conv_stem(x)))
        for index, block in enumerate(net._blocks):
            last_stage = block(last_stage)
            if index in (10, 14, 15):  # the ends of stages 4, 5 and 6 (repeats 1, 2, 2, 3, 3, 4, 1)
                stages.append(last_stage.mean(dim=(2, 3)))
    assert embedding.shape == (2, 112 + 192 + 320 + 1280)
    assert torch.equal(embedding[:, -1280:], head)
    assert torch.allclose(embedding[:, :-1280], torch.cat(stages, dim=1))


def test_convolutions_pad_like_tensorflow_same():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 4, 4)
    out = conv(x)
    assert out.shape[-2:] == (2, 2)  # ceil(4 / 2)
    # 'SAME' pads one row and column at the bottom and right only: the top-left output sees a full 3×3 window.
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    assert conv(torch.ones(1, 1, 5, 5)).shape[-2:] == (3, 3)


def test_embeddings_are_cached_and_a_changed_image_makes_new_ones(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    reporter, device = Reporter(), torch.device("cpu")
    first = cached_embeddings(images, 32, True, tmp_path, device, reporter)
    assert first.shape == (3, 2, 1904) and first.dtype == np.float32
    assert not np.allclose(first[:, 0], first[:, 1])  # the mirrored view differs
    assert "embedding 3 images" in capsys.readouterr().err
    again = cached_embeddings(images, 32, True, tmp_path, device, reporter)
    assert "embeddings reused" in capsys.readouterr().err
    np.testing.assert_array_equal(again, first)
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 255
    cached_embeddings(changed, 32, True, tmp_path, device, reporter)
    assert "embedding 3 images" in capsys.readouterr().err
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 2


def clustered_embeddings(n_per_class: int = 40, n_classes: int = 3, dim: int = 16, noise: float = 0.2):
    """Returns embeddings N×2×dim in well-separated clusters, their true labels, and labels with 20 % made wrong."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(n_classes, dim)) * 3
    true = np.repeat(np.arange(n_classes), n_per_class)
    views = centers[true][:, None, :] + noise * rng.normal(size=(len(true), 2, dim))
    given = true.copy()
    wrong = rng.random(len(true)) < 0.2
    given[wrong] = (true[wrong] + 1) % n_classes
    return views.astype(np.float32), true, given


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_heads_on_embeddings(method):
    features, true, given = clustered_embeddings()
    data = TrainData(images=features, labels=given, n_classes=3, flip=False, embedded=True, fingerprint="clusters")
    config = RunConfig(
        method=method, backbone="efficientnet-lite0", features="frozen", epochs=8, batch_size=32, device="cpu", seed=0
    )
    result = fit(data, config)
    assert result.probs.shape == (len(given), 3)
    assert np.mean(result.probs.argmax(axis=1) == true) >= 0.9  # the heads learn the clusters, not the wrong labels


def test_heads_decay_their_weight_matrices_only_and_pixel_networks_everything():
    features, _, given = clustered_embeddings()
    config = RunConfig(method="ce", backbone="efficientnet-lite0", features="frozen", weight_decay=0.05).validate()
    embedded = TrainData(images=features, labels=given, n_classes=3, embedded=True, fingerprint="clusters")
    method = build_method(config, embedded, torch.device("cpu"))
    decays = {
        tuple(param.shape): group["weight_decay"]
        for group in make_optimizer(method, config, embedded=True).param_groups
        for param in group["params"]
    }
    assert decays == {(3, 16): 0.05, (16,): 0.0, (3,): 0.0}  # linear weight; batch-norm scale and shift, bias
    everything = make_optimizer(method, config).param_groups
    assert [group["weight_decay"] for group in everything] == [0.05]


def test_predictions_are_made_on_the_mean_of_the_views():
    raw = torch.tensor([[[1.0, 2.0], [3.0, 6.0]], [[0.0, 0.0], [2.0, 2.0]]])  # 2 samples × 2 views × 2 dims
    augmenter = FeatureAugmenter(mean=torch.tensor([1.0, 1.0]), std=torch.tensor([1.0, 2.0]))
    assert augmenter.clean(raw).tolist() == [[1.0, 1.5], [0.0, 0.0]]
    head = torch.nn.Linear(2, 3)
    views = head((raw - augmenter.mean) / augmenter.std).mean(dim=1)
    assert torch.allclose(head(augmenter.clean(raw)), views)  # the mean's logits are the views' mean logits


def test_frozen_features_need_a_pretrained_backbone():
    with pytest.raises(UserError, match="--features frozen: --backbone small-cnn has no pretrained weights"):
        RunConfig(backbone="small-cnn", features="frozen").validate()


def write_colour_folder(root, n_per_class: int = 12):
    """Writes red and blue 32 px images (a few of them labelled wrong) and returns the labels CSV."""
    root.mkdir()
    rows = ["path,label"]
    rng = np.random.default_rng(2)
    for k, (name, colour) in enumerate((("red", (200, 30, 30)), ("blue", (30, 30, 200)))):
        for i in range(n_per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{name}{i}.png")
            label = name if i >= 2 else ("blue", "red")[k]  # two wrong labels per class
            rows.append(f"{name}{i}.png,{label}")
    csv = root.parent / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_an_audit_on_frozen_features_runs_end_to_end_and_a_second_method_reuses_the_embeddings(tmp_path, capsys):
    csv = write_colour_folder(tmp_path / "images")
    common = ["--features", "frozen", "--epochs", "3", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main(["audit", str(tmp_path / "images"), str(csv), "--out", str(tmp_path / "a"), *common]) == 0
    first = capsys.readouterr().err
    assert "embedding 24 images with efficientnet-lite0" in first
    assert (
        main(["audit", str(tmp_path / "images"), str(csv), "--out", str(tmp_path / "b"), "--method", "alr", *common])
        == 0
    )
    assert "embeddings reused" in capsys.readouterr().err
    import json

    settings = json.loads((tmp_path / "a" / "summary.json").read_text())["settings"]
    assert settings["features"] == "frozen" and settings["backbone"] == "efficientnet-lite0"


def test_the_lite0_backbone_finetunes_with_its_own_input_statistics():
    from lnlclean.models import build_backbone, input_stats

    net = build_backbone("efficientnet-lite0", 5, 3)
    assert net._fc.out_features == 5
    assert input_stats("efficientnet-lite0") == (INPUT_MEAN, INPUT_STD)
    assert input_stats("small-cnn") is None
    with pytest.raises(UserError, match="needs RGB images"):
        build_backbone("efficientnet-lite0", 5, 1)
    x = F.interpolate(torch.rand(2, 3, 32, 32), size=64)
    assert net(x).shape == (2, 5)


def test_knn_votes_with_the_neighbours_and_flags_the_odd_label_out():
    from lnlclean.methods.knn import neighbour_votes

    points = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.95, -0.1], [0.0, 1.0], [0.1, 0.9], [-0.1, 0.95]])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])  # sample 2 sits among the 0s with label 1
    votes = neighbour_votes(points, points, labels, 2, k=2, exclude_self=True)
    assert votes.tolist() == [[1, 1], [1, 1], [2, 0], [0, 2], [0, 2], [0, 2]]
    data = TrainData(
        images=points[:, None, :].repeat(1, 2, 1).numpy(), labels=labels.numpy(), n_classes=2, flip=False, embedded=True
    )
    config = RunConfig(
        method="knn", backbone="efficientnet-lite0", features="frozen", device="cpu", method_params={"k": 2}
    )
    result = fit(data, config)
    columns = result.method.audit(result.probs)
    assert columns["knn_agreement"].tolist() == [0.5, 0.5, 0.0, 1.0, 1.0, 1.0]
    assert columns["suggested_label"][2] == 0 and result.history == []  # nothing was trained


def test_knn_needs_frozen_features():
    with pytest.raises(UserError, match="--method knn: .*add --features frozen"):
        RunConfig(method="knn").validate()


def test_frozen_features_train_heads_with_their_own_defaults_unless_options_are_given(tmp_path, capsys):
    csv = write_colour_folder(tmp_path / "images")
    base = ["audit", str(tmp_path / "images"), str(csv), "--features", "frozen", "--device", "cpu", "--quiet"]
    base += ["--cache-dir", str(tmp_path / "cache")]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    settings = json.loads((tmp_path / "a" / "summary.json").read_text())["settings"]
    assert (settings["epochs"], settings["lr"], settings["weight_decay"]) == (40, 0.01, 0.05)
    assert main([*base, "--out", str(tmp_path / "b"), "--epochs", "3", "--lr", "0.1"]) == 0
    settings = json.loads((tmp_path / "b" / "summary.json").read_text())["settings"]
    assert (settings["epochs"], settings["lr"], settings["weight_decay"]) == (3, 0.1, 0.05)


def test_frozen_features_default_to_flywheel_unless_a_method_is_given(tmp_path):
    csv = write_colour_folder(tmp_path / "images")
    base = ["audit", str(tmp_path / "images"), str(csv), "--features", "frozen", "--device", "cpu", "--quiet"]
    base += ["--cache-dir", str(tmp_path / "cache"), "--epochs", "2"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["method"] == "flywheel"
    assert main([*base, "--out", str(tmp_path / "b"), "--method", "ce"]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["method"] == "ce"
    pixels = ["audit", str(tmp_path / "images"), str(csv), "--device", "cpu", "--quiet", "--epochs", "1"]
    assert main([*pixels, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["method"] == "ce"
