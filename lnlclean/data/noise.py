"""Synthetic label noise with a known truth, for benchmarks.

Noise specs:

- ``clean``: labels unchanged.
- ``symNN``: exactly round(NN% · N) samples, chosen uniformly, get a label drawn uniformly
  from the *other* classes, so the true noise rate is NN% exactly.
- ``asymNN``: class-dependent flips that mimic real confusions. For every source class of
  the dataset's map, exactly round(NN% · n_class) of its samples take the mapped label;
  the overall noise rate is therefore below NN%. Maps:

  - digits: 2→7, 3→8, 5↔6, 7→1
  - cifar10: truck→automobile, bird→airplane, deer→horse, cat↔dog
  - cifar100: each class → the next class within its superclass (cyclic)

- ``idnNN``: instance-dependent noise after Chen et al., "Beyond Class-Conditional
  Assumption" (AAAI 2021). A classifier trained on the true labels gives every image its
  softmax averaged over the epochs of training; within each true class, the round(NN% · n_class)
  images whose averaged probability of a wrong class is highest take that class. Which images
  flip, and to what, follows the classifier's own confusion on each image, as an annotator's
  mistakes follow what an image looks like. Chen et al. flip the most confused NN% of the
  whole set; that concentrates the flips on a few classes (at 40 % on a 5,000-image CIFAR-10
  subset it flipped 65 % of the dogs, more of them to cat than stayed dog), and a class whose
  label is mostly wrong cannot be told apart from a class with another name. Choosing within
  each class keeps every class's noise rate at NN %. Xia et al.'s part-dependent noise
  (NeurIPS 2020) was not chosen: its flips come from random projections of the pixels, not
  from what the images look like to a classifier. This module holds the rule
  (:func:`instance_dependent_noise`); :mod:`lnlclean.idn` trains and caches the classifier.
- a noise file (``--noise-file``): real noisy labels read from disk, see
  :mod:`lnlclean.data.noise_file`.

Partial labels (``--partial-rate q``, the ALIM paper's protocol): every wrong label joins a
sample's candidate set independently with probability q; then, with probability η (the rate of
a ``symNN`` spec, 0 for ``clean``), the true label is swapped for a uniformly drawn label from
outside the set — unless the set already holds every label. A sample is noisy when its true
label is not among its candidates.

Every generator is deterministic given its seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

ASYMMETRIC_MAPS: dict[str, dict[str, str]] = {
    "digits": {"2": "7", "3": "8", "5": "6", "6": "5", "7": "1"},
    "cifar10": {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"},
}

CIFAR100_SUPERCLASSES = (
    ("beaver", "dolphin", "otter", "seal", "whale"),
    ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    ("orchid", "poppy", "rose", "sunflower", "tulip"),
    ("bottle", "bowl", "can", "cup", "plate"),
    ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    ("clock", "keyboard", "lamp", "telephone", "television"),
    ("bed", "chair", "couch", "table", "wardrobe"),
    ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    ("bear", "leopard", "lion", "tiger", "wolf"),
    ("bridge", "castle", "house", "road", "skyscraper"),
    ("cloud", "forest", "mountain", "plain", "sea"),
    ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    ("fox", "porcupine", "possum", "raccoon", "skunk"),
    ("crab", "lobster", "snail", "spider", "worm"),
    ("baby", "boy", "girl", "man", "woman"),
    ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
)
ASYMMETRIC_MAPS["cifar100"] = {
    group[i]: group[(i + 1) % len(group)] for group in CIFAR100_SUPERCLASSES for i in range(len(group))
}

_SPEC = re.compile(r"^(clean|sym|asym|idn)(\d{1,2})?$")


@dataclass(frozen=True)
class NoiseSpec:
    """A parsed noise spec: `kind` is clean, sym, asym, idn or file;
    `rate` in [0, 1) (0 for a file, whose rate is read from it).

    A ``file`` spec names the file in `path` and the label set inside it in `key` (None: the file's only one).
    """

    kind: str
    rate: float
    path: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        if self.kind == "file":
            return "file:" + Path(self.path).name + (f":{self.key}" if self.key else "")
        return "clean" if self.kind == "clean" else f"{self.kind}{round(self.rate * 100)}"


def parse_noise_spec(spec: str) -> NoiseSpec:
    """Returns the NoiseSpec for text such as ``clean``, ``sym40`` or ``asym20``.

    Raises UserError naming ``--noise`` for anything else.
    """
    match = _SPEC.match(spec.strip().lower())
    if not match or (match.group(1) == "clean") == (match.group(2) is not None):
        raise UserError(
            f"--noise {spec!r}: expected clean, symNN, asymNN or idnNN with NN a percentage below 100 (e.g. sym40)"
        )
    if match.group(1) == "clean":
        return NoiseSpec("clean", 0.0)
    return NoiseSpec(match.group(1), int(match.group(2)) / 100)


def inject_noise(
    true_labels: np.ndarray, spec: NoiseSpec, class_names: list[str], dataset: str, seed: int
) -> np.ndarray:
    """Returns noisy labels (int64, same shape as `true_labels`) for `spec`, deterministic in `seed`.

    `dataset` picks the asymmetric map (digits, cifar10, cifar100). Instance-dependent and
    file noise need more than the labels; see :func:`lnlclean.jobs.benchmark.benchmark_labels`.
    Raises UserError when asymmetric noise has no map for `dataset`.
    """
    rng = np.random.default_rng(seed)
    true_labels = np.asarray(true_labels, dtype=np.int64)
    if spec.kind == "clean":
        return true_labels.copy()
    if spec.kind == "sym":
        return symmetric_noise(true_labels, spec.rate, len(class_names), rng)
    if spec.kind != "asym":
        raise ValueError(f"{spec}: {spec.kind} noise is not drawn from the labels alone")
    if dataset not in ASYMMETRIC_MAPS:
        raise UserError(f"--noise {spec}: no asymmetric class map for {dataset!r}; use symNN")
    return asymmetric_noise(true_labels, spec.rate, class_transition_map(ASYMMETRIC_MAPS[dataset], class_names), rng)


def symmetric_noise(true_labels: np.ndarray, rate: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Returns labels where exactly round(rate·N) samples take a uniformly drawn other class."""
    noisy = true_labels.copy()
    flipped = rng.choice(len(true_labels), size=round(rate * len(true_labels)), replace=False)
    offsets = rng.integers(1, n_classes, size=len(flipped))
    noisy[flipped] = (true_labels[flipped] + offsets) % n_classes
    return noisy


def asymmetric_noise(
    true_labels: np.ndarray, rate: float, target_of: dict[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Returns labels where, per source class c, exactly round(rate·n_c) samples become `target_of[c]`."""
    noisy = true_labels.copy()
    for source, target in sorted(target_of.items()):
        members = np.flatnonzero(true_labels == source)
        chosen = rng.choice(members, size=round(rate * len(members)), replace=False)
        noisy[chosen] = target
    return noisy


def instance_dependent_noise(
    true_labels: np.ndarray, mean_probs: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Returns labels where, within each true class c, round(rate·n_c) samples
    drawn by their confusion take the wrong class they are most confused with.

    `mean_probs` (N×K) is a classifier's softmax averaged over its training epochs. A sample's
    confusion is its largest probability on a class other than its true one (Chen et al.
    2021); the flipped samples of each class are drawn without replacement with probability
    proportional to it (see the module docs), each flipping to that most probable wrong class.
    Deterministic given `rng`'s seed.
    """
    true_labels = np.asarray(true_labels, dtype=np.int64)
    wrong = np.array(mean_probs, dtype=np.float64)
    wrong[np.arange(len(true_labels)), true_labels] = -np.inf
    confusion = np.maximum(wrong.max(axis=1), 1e-12)
    noisy = true_labels.copy()
    for source in np.unique(true_labels):
        members = np.flatnonzero(true_labels == source)
        weights = confusion[members] / confusion[members].sum()
        flipped = rng.choice(members, size=round(rate * len(members)), replace=False, p=weights)
        noisy[flipped] = wrong[flipped].argmax(axis=1)
    return noisy


def class_transition_map(name_map: dict[str, str], class_names: list[str]) -> dict[int, int]:
    """Returns the map from class index to flipped class index for a map given by class names."""
    index_of = {name: i for i, name in enumerate(class_names)}
    missing = sorted((set(name_map) | set(name_map.values())) - set(index_of))
    if missing:
        raise UserError(f"asymmetric noise map names classes the dataset lacks: {', '.join(missing)}")
    return {index_of[src]: index_of[dst] for src, dst in name_map.items()}


def partial_candidates(
    true_labels: np.ndarray, partial_rate: float, noise_rate: float, n_classes: int, seed: int
) -> np.ndarray:
    """Returns candidate sets (bool N×K) drawn by the partial-label protocol of the module docs.

    Each wrong label joins with probability `partial_rate`; with probability `noise_rate` the
    true label is then replaced by a random non-candidate. Deterministic in `seed`.
    """
    rng = np.random.default_rng(seed)
    true_labels = np.asarray(true_labels, dtype=np.int64)
    rows = np.arange(len(true_labels))
    candidates = rng.random((len(true_labels), n_classes)) < partial_rate
    candidates[rows, true_labels] = True
    swap = rng.random(len(true_labels)) < noise_rate
    for row in np.flatnonzero(swap):
        outside = np.flatnonzero(~candidates[row])
        if len(outside):
            candidates[row, true_labels[row]] = False
            candidates[row, rng.choice(outside)] = True
    return candidates
