"""Write a small image folder with noisy labels, to try lnlclean on.

Takes scikit-learn's bundled 8×8 digits (no download), saves each as a 16×16 PNG (``--size``) under
``OUT/images/``, and writes ``OUT/labels.csv`` (columns ``path,label,source``) in which a
share of the labels is wrong, plus ``OUT/truth.csv`` with the true labels for checking.

    python examples/make_digits_folder.py --out examples/digits-folder --noise 0.2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a digits image folder with noisy labels.")
    parser.add_argument("--out", type=Path, default=Path("examples/digits-folder"))
    parser.add_argument("--noise", type=float, default=0.2, help="share of labels to make wrong")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=16, help="side of the written images in pixels")
    args = parser.parse_args()

    digits = load_digits()
    rng = np.random.default_rng(args.seed)
    true_labels = digits.target
    given = true_labels.copy()
    wrong = rng.choice(len(given), size=round(args.noise * len(given)), replace=False)
    given[wrong] = (given[wrong] + rng.integers(1, 10, size=len(wrong))) % 10

    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, pixels in enumerate(digits.images):
        path = f"{i:04d}.png"
        gray = Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), mode="L")
        gray.resize((args.size, args.size), Image.BILINEAR).save(images / path)
        rows.append(
            {
                "path": path,
                "label": int(given[i]),
                "source": "batch-a" if i % 2 else "batch-b",
                "true_label": int(true_labels[i]),
            }
        )
    frame = pd.DataFrame(rows)
    frame[["path", "label", "source"]].to_csv(args.out / "labels.csv", index=False)
    frame[["path", "true_label"]].to_csv(args.out / "truth.csv", index=False)
    print(f"wrote {len(frame)} images to {images}, labels to {args.out / 'labels.csv'} ({len(wrong)} wrong)")


if __name__ == "__main__":
    main()
