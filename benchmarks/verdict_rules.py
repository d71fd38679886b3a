"""Which rule turns a network's probabilities into calibrated verdicts: the candidates compared on the same audits.

Two steps, so rules can be compared without training again:

    python benchmarks/verdict_rules.py collect --dataset cifar10 --data-dir ~/data/cifar10 --train-size 5000 \\
        --epochs 20 --noise sym40 --noise asym40 --noise idn40 --method ce --method alr --samples-dir runs/
    python benchmarks/verdict_rules.py compare runs/*.npz

`collect` trains each method × noise as `lnlclean benchmark` does and keeps, per run, the given
and true labels, the final probabilities and the method's own audit columns (one .npz each).
`compare` scores every rule on every kept run: the estimated noise rate against the truth,
precision, recall and F1 of its flags, and, for the rules that give a clean probability, label
accuracy after relabelling. Rules:

- ``prob<0.5``: flag where the probability of the given label is below 0.5 (the old default);
- ``argmax``: flag where the network's argmax is not the given label;
- ``cleanlab``: ``cleanlab.filter.find_label_issues``, noise rate 1 − trace of its joint;
- ``gmm-loss-class``: a two-component Gaussian mixture on the loss −log p[given], min-max
  normalised within each given class (ProMix's and DivideMix's rule);
- ``bmm-prob``: a two-component beta mixture on p[given] (Arazo et al., 2019);
- ``margin-mixture``: lnlclean's rule (:mod:`lnlclean.calibration` and
  :mod:`lnlclean.report.verdicts`), a Gaussian mixture on the debiased log margin.

Writes benchmarks/results/verdict-rules-<device>.json (or --out) and prints one line per run and rule.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from common import RESULTS

from lnlclean.config import RunConfig
from lnlclean.data.datasets import load_benchmark
from lnlclean.data.noise import parse_noise_spec
from lnlclean.engine import TrainData, device_tag, fit, resolve_device
from lnlclean.fileio import write_json
from lnlclean.jobs.benchmark import benchmark_labels
from lnlclean.progress import Reporter
from lnlclean.report.verdicts import method_verdicts, relabels


def collect(args) -> None:
    """Trains every method × noise and keeps its per-sample outputs in ``--samples-dir``."""
    bench = load_benchmark(args.dataset, args.data_dir, args.train_size)
    args.samples_dir.mkdir(parents=True, exist_ok=True)
    for text in args.noise:
        noise = parse_noise_spec(text)
        for method in args.method:
            config = RunConfig(method=method, epochs=args.epochs, device=args.device).validate()
            given = benchmark_labels(bench, noise, config, None, Reporter(quiet=True))
            data = TrainData(
                images=bench.train_images,
                labels=given,
                n_classes=len(bench.class_names),
                flip=bench.flip,
                fingerprint="rules",
                true_labels=bench.train_labels,
            )
            result = fit(data, config, Reporter(quiet=True))
            columns = {f"col_{k}": np.asarray(v) for k, v in result.method.audit(result.probs).items()}
            name = f"{args.dataset}-{len(given)}-{noise}-{method}-e{args.epochs}.npz"
            np.savez_compressed(
                args.samples_dir / name, given=given, true=bench.train_labels, probs=result.probs, **columns
            )
            print(f"kept {args.samples_dir / name}", flush=True)


def flag_scores(flagged: np.ndarray, noisy: np.ndarray) -> dict[str, float]:
    """Returns precision, recall and F1 of `flagged` as a detector of `noisy`."""
    hits = int((flagged & noisy).sum())
    precision, recall = hits / max(int(flagged.sum()), 1), hits / max(int(noisy.sum()), 1)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-12)}


def per_class_minmax(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Returns `values` min-max normalised within each label."""
    out = np.zeros_like(values)
    for k in np.unique(labels):
        members = labels == k
        low, high = values[members].min(), values[members].max()
        out[members] = (values[members] - low) / max(high - low, 1e-12)
    return out


def gaussian_posterior(values: np.ndarray, low_is_clean: bool) -> np.ndarray:
    """Returns the posterior of the clean component of a two-component Gaussian mixture on `values`."""
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(2, max_iter=100, tol=1e-3, reg_covar=5e-4, random_state=0).fit(values[:, None])
    component = mixture.means_.ravel().argmin() if low_is_clean else mixture.means_.ravel().argmax()
    return mixture.predict_proba(values[:, None])[:, component]


def beta_posterior(values: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Returns the posterior of the higher-mean component of a two-component
    beta mixture on `values` in (0, 1), fitted by EM with weighted moments.
    """
    from scipy.stats import beta

    x = np.clip(values, 1e-4, 1 - 1e-4)
    high = (x > np.median(x)).astype(float)
    for _ in range(iterations):
        densities = []
        for weight in (high, 1 - high):
            share = weight.sum()
            mean = (weight * x).sum() / share
            variance = max((weight * (x - mean) ** 2).sum() / share, 1e-6)
            common = max(mean * (1 - mean) / variance - 1, 1e-3)
            densities.append(share / len(x) * beta.pdf(x, max(mean * common, 1e-2), max((1 - mean) * common, 1e-2)))
        high = densities[0] / np.maximum(densities[0] + densities[1], 1e-300)
    return high


def compare_run(path: Path) -> dict:
    """Returns every rule's scores on the run kept in `path`."""
    kept = np.load(path)
    given, true, probs = kept["given"], kept["true"], kept["probs"].astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    noisy, rows = given != true, np.arange(len(given))
    given_prob = probs[rows, given]
    rules = {}

    def score(name, flagged, noise_rate, after=None):
        rules[name] = {
            "estimated_noise_rate": float(noise_rate),
            "flagged_rate": float(flagged.mean()),
            **flag_scores(flagged, noisy),
        }
        if after is not None:
            rules[name]["label_accuracy_after"] = float((after == true).mean())

    score("prob<0.5", given_prob < 0.5, (given_prob < 0.5).mean())
    argmax = probs.argmax(axis=1) != given
    score("argmax", argmax, argmax.mean())
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score("cleanlab", find_label_issues(given, probs, n_jobs=1), 1 - np.trace(estimate_joint(given, probs)))
        clean = gaussian_posterior(
            per_class_minmax(-np.log(np.clip(given_prob, 1e-12, None)), given), low_is_clean=True
        )
        score("gmm-loss-class", clean < 0.5, 1 - clean.mean())
        clean = beta_posterior(given_prob)
        score("bmm-prob", clean < 0.5, 1 - clean.mean())
    columns = {key[4:]: kept[key] for key in kept.files if key.startswith("col_")}
    verdict, fit_ = method_verdicts(columns, probs, given, threshold=0.5)
    trusted = fit_.separated and fit_.noise_rate <= 0.5 and verdict["is_label_issue"].mean() <= 0.5
    changed = relabels(
        verdict["is_label_issue"],
        verdict["clean_prob"],
        verdict["suggested_prob"],
        verdict["suggested_label"] == probs.argmax(axis=1),
        trusted,
    )
    score(
        "margin-mixture",
        verdict["is_label_issue"],
        1 - verdict["clean_prob"].mean(),
        np.where(changed, verdict["suggested_label"], given),
    )
    return {
        "run": path.stem,
        "true_noise_rate": float(noisy.mean()),
        "label_accuracy_before": float((given == true).mean()),
        "rules": rules,
    }


def compare(args) -> None:
    """Scores every rule on the kept runs and writes the JSON."""
    runs = [compare_run(path) for path in sorted(args.samples)]
    for run in runs:
        for name, rule in run["rules"].items():
            print(
                f"{run['run']:<40}{name:<16}noise {run['true_noise_rate']:.2f}/{rule['estimated_noise_rate']:.2f}  "
                f"flagged {rule['flagged_rate']:.2f}  F1 {rule['f1']:.3f}"
            )
    out = args.out or RESULTS / f"verdict-rules-{device_tag(resolve_device('auto'))}.json"
    write_json(out, {"runs": runs})
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keep = commands.add_parser("collect", help="train and keep per-sample outputs")
    keep.add_argument("--dataset", default="cifar10")
    keep.add_argument("--data-dir", type=Path, default=None)
    keep.add_argument("--train-size", type=int, default=None)
    keep.add_argument("--epochs", type=int, default=20)
    keep.add_argument("--noise", action="append", required=True)
    keep.add_argument("--method", action="append", required=True)
    keep.add_argument("--device", default="auto")
    keep.add_argument("--samples-dir", type=Path, required=True)
    score = commands.add_parser("compare", help="score every rule on kept runs")
    score.add_argument("samples", type=Path, nargs="+")
    score.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    collect(args) if args.command == "collect" else compare(args)


if __name__ == "__main__":
    main()
