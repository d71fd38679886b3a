"""Consensus of several methods' audits of the same samples.

Per sample, with M audits:

- ``clean_prob``: the mean of the audits' clean_prob;
- ``consensus_votes``: how many audits flag the sample;
- ``is_label_issue``: a strict majority flags it (more than M/2 votes); with a tie (M even,
  exactly M/2 votes) the mean clean_prob decides (below `threshold`, 0.5 by default);
- ``suggested_label``: the label most audits suggest; a tie goes to the suggestion of the audit
  that doubts the given label most (lowest clean_prob);
- ``consensus_agreement``: the share of audits that suggest that label.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UserError

CONSENSUS = "consensus"  # the method name of a combined audit
COLUMNS = {
    "consensus_votes": "how many of the combined audits flag the sample",
    "consensus_agreement": "share of the combined audits that suggest the consensus label",
}


@dataclass
class Verdicts:
    """One method's verdicts on every sample (same samples, same order, for every method combined).

    Attributes:
        name: what the verdicts are called in columns and summaries (usually the method).
        clean_prob: float, N.
        flagged: bool, N.
        suggested: suggested class index, int, N.
        suggested_prob: probability that the suggested label is right, float, N.
        predicted: the network's predicted class index, int, N.
    """

    name: str
    clean_prob: np.ndarray
    flagged: np.ndarray
    suggested: np.ndarray
    suggested_prob: np.ndarray
    predicted: np.ndarray


def combine(verdicts: list[Verdicts], n_classes: int, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Returns the consensus columns (see the module docs): clean_prob, is_label_issue, suggested_label,
    suggested_prob, predicted_label (the members' majority), consensus_votes, consensus_agreement.
    """
    m = len(verdicts)
    clean = np.mean([v.clean_prob for v in verdicts], axis=0)
    votes = np.sum([v.flagged for v in verdicts], axis=0)
    flagged = (2 * votes > m) | ((2 * votes == m) & (clean < threshold))
    suggested, agreement = majority_label(verdicts, n_classes)
    agreeing = np.stack([np.where(v.suggested == suggested, v.suggested_prob, np.nan) for v in verdicts])
    predicted, _ = majority_label([dataclasses.replace(v, suggested=v.predicted) for v in verdicts], n_classes)
    return {
        "clean_prob": clean,
        "is_label_issue": flagged,
        "suggested_label": suggested,
        "suggested_prob": np.nanmean(agreeing, axis=0),
        "predicted_label": predicted,
        "consensus_votes": votes.astype(np.int64),
        "consensus_agreement": agreement,
    }


def majority_label(verdicts: list[Verdicts], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns per sample the label most of `verdicts` suggest (a tie: the
    suggestion of the lowest clean_prob) and the share that suggest it.
    """
    m = len(verdicts)
    rows = np.arange(len(verdicts[0].suggested))
    counts = np.zeros((len(rows), n_classes))
    for v in verdicts:
        np.add.at(counts, (rows, v.suggested), 1)
    most_doubtful = np.argmin([v.clean_prob for v in verdicts], axis=0)
    tie_breaker = np.stack([v.suggested for v in verdicts])[most_doubtful, rows]
    score = counts * m
    score[rows, tie_breaker] += 1  # less than one vote: decides ties only
    label = score.argmax(axis=1)
    return label, counts[rows, label] / m


def check_same_samples(frames: dict[str, pd.DataFrame]) -> None:
    """Raises UserError naming the audit and row when the audits do not
    cover the same samples with the same given labels. Returns None.
    """
    (first_name, first), *others = frames.items()
    for name, frame in others:
        if len(frame) != len(first):
            raise UserError(
                f"{name}: {len(frame)} samples, but {first_name} has {len(first)}; combine audits of the same images "
                "and labels"
            )
        for column in ("path", "given_label"):
            differs = np.flatnonzero(frame[column].astype(str).to_numpy() != first[column].astype(str).to_numpy())
            if len(differs):
                row = int(differs[0])
                raise UserError(
                    f"{name}: row {row} has {column} {frame[column].iat[row]!r}, but {first_name} has "
                    f"{first[column].iat[row]!r}; combine audits of the same images and labels"
                )


def member_names(methods: list[str]) -> list[str]:
    """Returns a distinct name per combined audit: its method,
    numbered when a method appears more than once (alr, alr_2).
    """
    names, seen = [], {}
    for method in methods:
        seen[method] = seen.get(method, 0) + 1
        names.append(method if seen[method] == 1 else f"{method}_{seen[method]}")
    return names


def consensus_table(frames: dict[str, pd.DataFrame], class_names: list[str], threshold: float = 0.5) -> pd.DataFrame:
    """Returns the consensus audit table of `frames` (name → audit table, checked by :func:`check_same_samples`).

    Columns: those of an audit (see :mod:`lnlclean.report.audit`; predicted label and
    probabilities are the members' majority and means), then ``consensus_votes``,
    ``consensus_agreement``, and per member ``<name>_clean_prob``, ``<name>_is_label_issue`` and
    ``<name>_suggested_label``.
    """
    index_of = {name: k for k, name in enumerate(class_names)}
    names = np.asarray(class_names, dtype=object)
    verdicts = _verdicts(frames, index_of)
    combined = combine(verdicts, len(class_names), threshold)
    predicted = combined["predicted_label"]
    first = next(iter(frames.values()))
    mean = lambda column: np.mean([frame[column].to_numpy(np.float64) for frame in frames.values()], axis=0)  # noqa: E731
    table = pd.DataFrame(
        {
            "index": first["index"].to_numpy(),
            "path": first["path"].to_numpy(),
            "given_label": first["given_label"].to_numpy(),
            "predicted_label": names[predicted],
            "predicted_prob": mean("predicted_prob"),
            "given_label_prob": mean("given_label_prob"),
            "clean_prob": combined["clean_prob"],
            "label_score": combined["clean_prob"],
            "is_label_issue": combined["is_label_issue"],
            "suggested_label": names[combined["suggested_label"]],
            "suggested_prob": combined["suggested_prob"],
            "consensus_votes": combined["consensus_votes"],
            "consensus_agreement": combined["consensus_agreement"],
        }
    )
    for v in verdicts:
        table[f"{v.name}_clean_prob"] = v.clean_prob
        table[f"{v.name}_is_label_issue"] = v.flagged
        table[f"{v.name}_suggested_label"] = names[v.suggested]
    return table


def _verdicts(frames: dict[str, pd.DataFrame], index_of: dict[str, int]) -> list[Verdicts]:
    """Returns each audit's verdicts."""

    def labels(frame, column):
        return frame[column].astype(str).map(index_of).to_numpy(np.int64)

    return [
        Verdicts(
            name,
            frame["clean_prob"].to_numpy(np.float64),
            frame["is_label_issue"].to_numpy(bool),
            labels(frame, "suggested_label"),
            frame["suggested_prob"].to_numpy(np.float64),
            labels(frame, "predicted_label"),
        )
        for name, frame in frames.items()
    ]


def agreement_summary(frames: dict[str, pd.DataFrame], table: pd.DataFrame) -> dict:
    """Returns the consensus part of summary.json: per member its
    label issues and noise rate, and how often the flags agree.
    """
    flags = np.stack([frame["is_label_issue"].to_numpy(bool) for frame in frames.values()])
    return {
        "members": [
            {
                "name": name,
                "n_label_issues": int(frame["is_label_issue"].sum()),
                "noise_rate": float(1.0 - frame["clean_prob"].mean()),
            }
            for name, frame in frames.items()
        ],
        "all_flags_agree": float((flags.all(axis=0) | ~flags.any(axis=0)).mean()),
        "flagged_by_all": int(flags.all(axis=0).sum()),
        "flagged_by_any": int(flags.any(axis=0).sum()),
        "mean_suggestion_agreement": float(table["consensus_agreement"].mean()),
    }
