"""Confident learning: stratified folds, out-of-fold training and prediction, cleanlab's verdicts, --folds."""

from __future__ import annotations

import json

import numpy as np
import torch
from cleanlab.filter import find_label_issues
from helpers import batch_of, make_method

from lnlclean.cli import main
from lnlclean.methods.confident_learning import ConfidentLearning, stratified_folds
from lnlclean.report.audit import read_audit


def test_folds_split_every_class_evenly_and_follow_the_seed():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 4)
    fold = stratified_folds(labels, 4, seed=0)
    for k in range(3):
        sizes = torch.bincount(fold[labels == k], minlength=4)
        assert sizes.max() - sizes.min() <= 1
    sizes = torch.bincount(fold, minlength=4)
    assert sizes.max() - sizes.min() <= 1  # the per-class offset spreads the remainders
    assert torch.equal(fold, stratified_folds(labels, 4, seed=0))
    assert not torch.equal(fold, stratified_folds(labels, 4, seed=1))


def test_network_f_never_trains_on_fold_f_and_predicts_exactly_fold_f():
    method = make_method(ConfidentLearning, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2], folds=3)
    held_out = torch.nonzero(method.fold == 1).flatten().tolist()
    loss = method.training_step(batch_of(method, held_out), epoch=0)
    loss.backward()
    grads = [sum(p.grad.abs().sum().item() for p in net.parameters() if p.grad is not None) for net in method.networks]
    assert grads[1] == 0 and grads[0] > 0 and grads[2] > 0  # only the networks that train on fold 1 learn from it
    method.networks.eval()
    x = torch.randn(12, 1, 8, 8)
    index = torch.arange(12)
    out_of_fold = method.predict(x, index)
    for i in range(12):
        own = method.networks[int(method.fold[i])](x[i : i + 1]).softmax(dim=1)
        torch.testing.assert_close(out_of_fold[i : i + 1], own)
    mean = torch.stack([net(x).softmax(dim=1) for net in method.networks]).mean(dim=0)
    torch.testing.assert_close(method.predict(x), mean)  # images that are not training samples


def test_audit_flags_what_cleanlab_finds_on_the_out_of_fold_probabilities(noisy_folder_small, tmp_path):
    folder = noisy_folder_small
    out = tmp_path / "audit"
    code = main(
        [
            "audit",
            str(folder["images"]),
            str(folder["csv"]),
            "--method",
            "confident-learning",
            "--folds",
            "3",
            "--epochs",
            "30",
            "--device",
            "cpu",
            "--no-flip",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
        ]
    )
    assert code == 0
    frame, meta = read_audit(out / "audit.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert meta["settings"]["method_params"] == {"folds": 3}
    assert sorted(frame["cl_fold"].unique()) == [0, 1, 2]
    assert (frame["label_score"] == frame["cl_label_quality"]).all()
    assert np.allclose(
        frame["label_score"], frame["given_label_prob"], atol=1e-6
    )  # self confidence of the out-of-fold probabilities
    assert frame["cl_label_issue"].sum() == summary["method_summary"]["cleanlab_label_issues"]
    assert (frame["is_label_issue"] == (frame["clean_prob"] < 0.5)).all()  # the calibrated flags every method has
    wrong = np.zeros(len(frame), dtype=bool)
    wrong[folder["wrong"]] = True
    for flags in (frame["is_label_issue"], frame["cl_label_issue"]):
        assert flags[wrong].mean() > flags[~wrong].mean() + 0.5
    assert 0 < summary["method_summary"]["cleanlab_noise_rate"] < 1


def test_find_label_issues_is_not_the_threshold_rule():
    labels = np.array([0, 0, 0, 1, 1, 1])
    pred_probs = np.array([[0.45, 0.55], [0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])
    issues = find_label_issues(labels, pred_probs, n_jobs=1)
    assert not issues[0]  # below 0.5 for its label, yet not an issue: the class's own confidence is low


def test_folds_option_is_checked_and_belongs_to_confident_learning(tmp_path, capsys):
    common = ["benchmark", "digits", "--epochs", "1", "--out", str(tmp_path / "b"), "--quiet"]
    assert main([*common, "--method", "confident-learning", "--folds", "1"]) == 2
    assert "--confident-learning-folds 1" in capsys.readouterr().err
    assert main([*common, "--method", "ce", "--folds", "3"]) == 2
    assert "applies to another method" in capsys.readouterr().err


def test_each_network_ends_with_its_weights_from_the_epoch_its_fold_agreed_most():
    given = [0, 1, 2] * 4
    method = make_method(ConfidentLearning, given, epochs=2, folds=2)
    labels = torch.tensor(given)
    fold = method.fold.cpu()

    def evaluate_with(right_in_fold):  # out-of-fold probabilities that get the given label right only in these folds
        right = torch.isin(fold, torch.tensor(right_in_fold))
        predicted = torch.where(right, labels, (labels + 1) % 3)
        return lambda: torch.nn.functional.one_hot(predicted, 3).float()

    method.end_epoch(0, evaluate_with([0]))  # fold 0 agrees fully at epoch 1, fold 1 not at all
    first = {name: tensor.clone() for name, tensor in method.networks[0].state_dict().items()}
    with torch.no_grad():
        for net in method.networks:
            for parameter in net.parameters():
                parameter.add_(1.0)
    after_training = {name: tensor.clone() for name, tensor in method.networks[1].state_dict().items()}
    logged = method.end_epoch(1, evaluate_with([1]))  # the last epoch: fold 1 agrees now, fold 0 no longer
    assert logged["held_out_agreement"] == 0.5
    assert method.best_epoch.tolist() == [1, 2]
    for name, tensor in method.networks[0].state_dict().items():
        torch.testing.assert_close(tensor, first[name])  # restored from epoch 1
    for name, tensor in method.networks[1].state_dict().items():
        torch.testing.assert_close(tensor, after_training[name])  # its best epoch is the last
    assert method.summary()["best_epochs"] == [1, 2]
