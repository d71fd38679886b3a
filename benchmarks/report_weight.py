"""Weight and build time of report.html for a 50,000-image audit (CIFAR-10's training set).

Writes a labels CSV for a CIFAR-10 image folder (train/<class>/*: 50,000 JPEGs of 32 px) with
20 % of the labels moved to another class and the right one kept in a ``true_label`` column, so
the report draws every section, the truth histogram included. Audits it with `ce` for one epoch
on the CPU: the report's weight depends on the number of samples and classes and on the gallery,
not on how well the method learned. Then rebuilds the report in this process with
``run_report`` for several gallery sizes, timing each, and splits every page into inlined
thumbnails, SVG plots and the rest. Last, the size of the worst thumbnail there is (64 px of
uniform noise, which neither PNG nor JPEG can compress) bounds the page for any image folder.

    python benchmarks/report_weight.py --data-dir /path/to/cifar10 [--work-dir DIR] [--limit N]

Writes benchmarks/results/report-weight-cifar10-cpu.json and prints a table. The report's
target: at most 3 MB at the default gallery size for 50,000 samples.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS
from PIL import Image

from lnlclean import __version__
from lnlclean.fileio import write_json
from lnlclean.jobs.report import run_report
from lnlclean.report.html import GALLERY_SIZE
from lnlclean.report.thumbnails import THUMBNAIL_SIDE, thumbnail_uri

GALLERY_SIZES = (0, GALLERY_SIZE, 1000)
TARGET_BYTES = 3 * 2**20
NOISE = 0.2


def write_labels(train_dir: Path, csv_path: Path, limit: int | None, seed: int = 0) -> int:
    """Writes path,label,true_label for the images under `train_dir`
    (<class>/<file>) with NOISE of the labels wrong. Returns the row count.
    """
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    rows = [(f"{name}/{file.name}", name) for name in classes for file in sorted((train_dir / name).iterdir())]
    rng = np.random.default_rng(seed)
    if limit:
        rows = [rows[i] for i in np.sort(rng.choice(len(rows), limit, replace=False))]
    true = np.array([classes.index(label) for _, label in rows])
    given = true.copy()
    wrong = rng.random(len(rows)) < NOISE
    given[wrong] = (true[wrong] + rng.integers(1, len(classes), wrong.sum())) % len(classes)
    pd.DataFrame(
        {
            "path": [path for path, _ in rows],
            "label": np.asarray(classes)[given],
            "true_label": np.asarray(classes)[true],
        }
    ).to_csv(csv_path, index=False)
    return len(rows)


def page_parts(text: str) -> dict[str, int]:
    """Returns the bytes of a page taken by inlined thumbnails, by SVG plots, and by everything else."""
    thumbnails = sum(len(m) for m in re.findall(r'src="data:[^"]*"', text))
    plots = sum(len(m) for m in re.findall(r"<svg .*?</svg>", text, re.S))
    total = len(text.encode("utf-8"))
    return {
        "bytes": total,
        "thumbnail_bytes": thumbnails,
        "svg_bytes": plots,
        "other_bytes": total - thumbnails - plots,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="CIFAR-10 as train/<class>/* folders")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="audit a random subset of this many images")
    parser.add_argument("--out", type=Path, default=RESULTS / "report-weight-cifar10-cpu.json")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="report-weight-"))
    work.mkdir(parents=True, exist_ok=True)
    n_samples = write_labels(args.data_dir / "train", work / "labels.csv", args.limit)
    audit_dir = work / "audit"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lnlclean",
            "audit",
            str(args.data_dir / "train"),
            str(work / "labels.csv"),
            "--out",
            str(audit_dir),
            "--method",
            "ce",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--cache-dir",
            str(work / "cache"),
            "--overwrite",
            "--quiet",
        ],
        check=True,
    )
    audit_seconds = time.perf_counter() - started
    written_by_audit = page_parts((audit_dir / "report.html").read_text(encoding="utf-8"))
    runs = []
    for gallery in GALLERY_SIZES:
        started = time.perf_counter()
        path, unreadable = run_report(
            audit_dir, out=work / f"report-{gallery}.html", gallery_size=gallery, overwrite=True
        )
        seconds = time.perf_counter() - started
        runs.append(
            {
                "gallery": gallery,
                "seconds": seconds,
                "unreadable_images": unreadable,
                **page_parts(path.read_text(encoding="utf-8")),
            }
        )
    default = next(r for r in runs if r["gallery"] == GALLERY_SIZE)
    noise = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3), dtype=np.uint8)
    )
    worst_thumbnail = len(f'src="{thumbnail_uri(noise)}"')
    worst_page = default["bytes"] - default["thumbnail_bytes"] + GALLERY_SIZE * worst_thumbnail
    result = {
        "lnlclean_version": __version__,
        "device": "cpu",
        "n_samples": n_samples,
        "n_classes": 10,
        "audit_command_seconds": audit_seconds,
        "report_written_by_audit": written_by_audit,
        "runs": runs,
        "worst_thumbnail_bytes": worst_thumbnail,
        "worst_page_bytes_at_default_gallery": worst_page,
        "target_bytes": TARGET_BYTES,
        "meets_target": max(default["bytes"], worst_page) <= TARGET_BYTES,
    }
    write_json(args.out, result)
    print(f"{n_samples} samples; audit (1 ce epoch, report included) {audit_seconds:.1f} s")
    print(f"{'gallery':>8} {'MB':>6} {'thumbs MB':>10} {'svg KB':>7} {'other KB':>9} {'seconds':>8}")
    for r in runs:
        print(
            f"{r['gallery']:>8} {r['bytes'] / 2**20:>6.2f} {r['thumbnail_bytes'] / 2**20:>10.2f} "
            f"{r['svg_bytes'] / 1024:>7.0f} {r['other_bytes'] / 1024:>9.0f} {r['seconds']:>8.2f}"
        )
    print(
        f"worst thumbnail {worst_thumbnail} bytes: the page of any 10-class folder at the default gallery is at most "
        f"{worst_page / 2**20:.2f} MB"
    )
    print(
        f"default gallery: {default['bytes'] / 2**20:.2f} MB, target {TARGET_BYTES / 2**20:.0f} MB: "
        f"{'met' if result['meets_target'] else 'MISSED'}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
