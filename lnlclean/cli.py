"""Command-line interface: one small function per command that parses its options, runs its job and prints."""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import io
import os
import sys
import typing
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__, reference
from .config import CHOICES, FROZEN_DEFAULTS, FROZEN_METHOD, RunConfig, field_name, option_name
from .data.datasets import DATASETS
from .data.noise import NoiseSpec, parse_noise_spec
from .distributed import current as current_world
from .durations import parse_duration
from .embeddings import EMBEDDING_BACKBONES
from .errors import UserError, one_line
from .fileio import check_output_file
from .interrupt import Interrupted, Stopped, install_stop_handlers, restore_handlers
from .jobs.audit import run_audit
from .jobs.benchmark import BENCHMARK_FILE, FAIL_KEYS, check_fail_under, run_benchmark, run_name
from .jobs.consensus import run_audits_and_consensus, run_consensus
from .jobs.relabel import relabel_after_audit, relabel_from_audit
from .jobs.report import run_report
from .methods import METHODS, usable_methods
from .models import backbone_names
from .progress import Reporter
from .report.html import GALLERY_SIZE

app = typer.Typer(
    name="lnlclean",
    help="Audit and clean label noise in image-classification datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
# Write failures the user fixes by freeing space or choosing another place, reported without a traceback.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class Policy(str, Enum):
    relabel = "relabel"
    drop = "drop"
    flag = "flag"


class BadImage(str, Enum):
    fail = "fail"
    skip = "skip"


def choice_enum(name: str, setting: str) -> type[Enum]:
    """Returns an Enum class `name` whose members are the words RunConfig accepts for `setting` (see config.CHOICES)."""
    return Enum(name, {word: word for word in CHOICES[setting]}, type=str)


Schedule = choice_enum("Schedule", "schedule")
StateDtype = choice_enum("StateDtype", "state_dtype")
StatePlace = choice_enum("StatePlace", "state_on")
Features = choice_enum("Features", "features")


Images = Annotated[
    Path, typer.Argument(help="Folder holding the images (paths in the CSV are relative to it).", show_default=False)
]
LabelsCsv = Annotated[
    Path | None,
    typer.Argument(
        help="CSV with columns path,label (more columns are kept). Without it: IMAGES/<class>/<image>.",
        show_default=False,
    ),
]


def shared(kind: object, default: object, *declarations: str, **settings) -> tuple[object, object]:
    """Returns the (annotation, default) of a shared option.

    The annotation is a `kind` parameter declared by ``typer.Option(*declarations, **settings)``.
    """
    return Annotated[kind, typer.Option(*declarations, **settings)], default


# Training options shared by several commands: (annotation, default) by parameter name.
DEFAULTS = RunConfig()
FROZEN_BACKBONE = EMBEDDING_BACKBONES[0]  # the backbone --features frozen embeds with unless --backbone names one
SHARED_OPTIONS: dict[str, tuple[object, object]] = {
    "method": shared(
        str,
        DEFAULTS.method,
        "--method",
        "-m",
        help="Method to train (flywheel with --features frozen); see `lnlclean methods`.",
    ),
    "backbone": shared(
        str | None,
        None,
        help=f"Network: {', '.join(backbone_names())}, or tv:<torchvision model>. Default: small-cnn, or "
        "efficientnet-lite0 with --features frozen.",
        show_default=False,
    ),
    "features": shared(
        Features,
        Features(DEFAULTS.features),
        help="finetune: train whole networks on the pixels; frozen: embed every image once with the pretrained "
        "backbone (efficientnet-lite0) and train small heads on the embeddings, minutes on a CPU; unless given, "
        "--method flywheel, --epochs 40, --lr 0.01 and --weight-decay 0.05 then (docs/training.md).",
    ),
    "epochs": shared(
        int, DEFAULTS.epochs, help="Training epochs (with --time-budget: at most this many; docs/training.md)."
    ),
    "time_budget": shared(
        str | None,
        None,
        help="Train as many epochs as fit in this time, e.g. 90s, 10m, 1h (image decoding and the final pass "
        "come on top).",
        show_default=False,
    ),
    "batch_size": shared(int, DEFAULTS.batch_size, help="Mini-batch size."),
    "lr": shared(float, DEFAULTS.lr, help="Peak learning rate (SGD with Nesterov momentum)."),
    "weight_decay": shared(float, DEFAULTS.weight_decay, help="Weight decay."),
    "schedule": shared(
        Schedule,
        Schedule(DEFAULTS.schedule),
        help="Learning-rate schedule: cosine (one warm-up epoch, then down to 0), step (÷10 at 50 % and 75 % "
        "of the epochs) or constant.",
    ),
    "device": shared(str, DEFAULTS.device, help="auto (CUDA when present), cpu, cuda or cuda:N."),
    "seed": shared(int, DEFAULTS.seed, help="Random seed; CPU runs are reproducible for a given seed."),
    "image_size": shared(
        int | None,
        None,
        help="Side in pixels. Default: keep images ≤ 64 px of one size, else the backbone's size (64, or 224 "
        "for tv: models).",
        show_default=False,
    ),
    "threshold": shared(
        float | None,
        None,
        help=f"Flag a label issue when clean_prob is below this. Default: {DEFAULTS.threshold}, or with "
        "relabel --from-audit the audit's own flags. It may change on --resume.",
        show_default=False,
    ),
    "weights": shared(
        str | None,
        None,
        help="Initial weights: a local state-dict file, or 'imagenet' for tv: models (needs internet).",
        show_default=False,
    ),
    "no_flip": shared(bool, False, "--no-flip", help="Do not mirror images when augmenting (for text, digits, ...)."),
    "cache_dir": shared(
        Path | None,
        None,
        help="Where decoded images are cached. Default: $LNLCLEAN_CACHE or ~/.cache/lnlclean.",
        show_default=False,
    ),
    "on_bad_image": shared(
        BadImage,
        BadImage.fail,
        help="What to do with an unreadable image: fail, or skip it and list it in summary.json.",
    ),
    "resume": shared(
        bool,
        False,
        "--resume",
        help="Continue from the checkpoint in the output directory (same method, settings and data).",
    ),
    "overwrite": shared(
        bool, False, "--overwrite", help="Replace the outputs of an earlier run instead of refusing to."
    ),
    "allow_outside_root": shared(
        bool,
        False,
        "--allow-outside-root",
        help="Accept CSV paths that leave IMAGES (absolute, .., links pointing out).",
    ),
    "noise_rate": shared(
        float | None,
        None,
        help="Expected share of wrong labels, 0–1, for methods that use one (alim). Default: estimated from the data.",
        show_default=False,
    ),
    "compile": shared(
        bool,
        False,
        "--compile",
        help="Compile the networks with torch.compile: about 20 s to start, with no dependable gain measured "
        "on CPU (docs/performance.md).",
    ),
    "state_dtype": shared(
        StateDtype,
        StateDtype(DEFAULTS.state_dtype),
        help="Per-sample tables (soft labels): float32, float16, or auto (float16 when float32 would take over "
        "a quarter of the device's free memory; docs/scale.md).",
    ),
    "state_on": shared(
        StatePlace,
        StatePlace(DEFAULTS.state_on),
        help="Where per-sample tables live: the training device, CPU memory (pinned), or auto (CPU when they "
        "do not fit in a quarter of the device's free memory).",
    ),
    "max_ram": shared(
        str | None,
        None,
        help="Refuse to start when the run would need more host memory than this, e.g. 64G. Default: the "
        "memory available.",
        show_default=False,
    ),
    "workers": shared(
        int | None,
        None,
        help="Processes (large folders) or threads that decode images. Default: one per CPU core.",
        show_default=False,
    ),
    "quiet": shared(bool, False, "--quiet", "-q", help="No progress output."),
}
TRAINING = (
    "backbone",
    "features",
    "epochs",
    "time_budget",
    "batch_size",
    "lr",
    "weight_decay",
    "schedule",
    "device",
    "seed",
    "threshold",
    "noise_rate",
    "no_flip",
    "cache_dir",
    "compile",
    "state_dtype",
    "state_on",
    "max_ram",
    "overwrite",
    "quiet",
)
FOLDER_TRAINING = (
    "method",
    *TRAINING[:10],
    "image_size",
    "threshold",
    "noise_rate",
    "weights",
    "no_flip",
    "cache_dir",
    "on_bad_image",
    "resume",
    "overwrite",
    "allow_outside_root",
    "compile",
    "state_dtype",
    "state_on",
    "max_ram",
    "workers",
    "quiet",
)


def with_options(names: tuple[str, ...]):
    """Decorator that adds the SHARED_OPTIONS `names` to a command, passed to it as one namespace `opts`.

    Returns the decorator; the command's own parameters stay first, in their order.
    """

    def decorate(command):
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name != "opts"
        ]
        shared = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=SHARED_OPTIONS[name][1],
                annotation=SHARED_OPTIONS[name][0],
            )
            for name in names
        ]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            opts = SimpleNamespace(**{name: kwargs.pop(name) for name in names})
            ctx = kwargs.get("ctx")
            if ctx and {"method", "features"} <= set(names) and frozen_default_method(opts.features.value, ctx):
                opts.method = FROZEN_METHOD
            return command(*args, opts=opts, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + shared)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + shared}
        del wrapper.__wrapped__
        return wrapper

    return decorate


def run_config(
    opts: SimpleNamespace, ctx: typer.Context, method: str | None = None, methods: list[str] | None = None
) -> RunConfig:
    """Returns the validated RunConfig for the shared options `opts` and the `--<method>-<field>` extras."""
    method = method or opts.method
    params = parse_method_options((ctx.obj or {}).get("method_options", []), methods or [method])
    frozen = opts.features.value == "frozen"
    head = {
        name: FROZEN_DEFAULTS[name] if frozen and given_by_default(ctx, name) else value
        for name, value in (("epochs", opts.epochs), ("lr", opts.lr), ("weight_decay", opts.weight_decay))
    }
    return RunConfig(
        method=method,
        backbone=opts.backbone or (FROZEN_BACKBONE if frozen else DEFAULTS.backbone),
        features=opts.features.value,
        **head,
        batch_size=opts.batch_size,
        schedule=opts.schedule.value,
        device=opts.device,
        seed=opts.seed,
        image_size=getattr(opts, "image_size", None),
        threshold=DEFAULTS.threshold if opts.threshold is None else opts.threshold,
        weights=getattr(opts, "weights", None),
        flip=not opts.no_flip,
        workers=getattr(opts, "workers", None),
        noise_rate=opts.noise_rate,
        compile=opts.compile,
        state_dtype=opts.state_dtype.value,
        state_on=opts.state_on.value,
        max_ram=opts.max_ram,
        time_budget=None if opts.time_budget is None else parse_duration(opts.time_budget, "--time-budget"),
        method_params=params.get(method, {}),
    ).validate()


def frozen_default_method(features: str, ctx: typer.Context) -> bool:
    """Returns True when ``--method`` took its default and `features` is frozen: the method is then
    :data:`~lnlclean.config.FROZEN_METHOD`."""
    return features == "frozen" and given_by_default(ctx, "method")


def given_by_default(ctx: typer.Context, name: str) -> bool:
    """Returns True when option `name` took its default value (the user did not give it)."""
    source = ctx.get_parameter_source(name)
    return source is None or source.name in ("DEFAULT", "DEFAULT_MAP")  # Typer's parser has its own enum class


def method_list(text: str) -> list[str]:
    """Returns the methods of a ``--method`` value (one name, or several comma-separated).

    Raises UserError for a repeated or empty name.
    """
    methods = [name.strip() for name in text.split(",")]
    if "" in methods or len(set(methods)) != len(methods):
        raise UserError(f"--method {text!r}: name each method once, comma-separated, e.g. --method pmnar,alr,flywheel")
    return methods


def split_method_options(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Returns `argv` without its ``--<method>-<field> VALUE`` options, and those options as (name, value).

    Method options are taken out before the command line is parsed, so every method's
    Hparams field is settable without the CLI listing it; a method's short aliases (such as
    ``--folds``) are returned under their full name. Raises UserError for one without a value.
    """
    aliases = {alias: option_name(m, name) for m, cls in METHODS.items() for alias, name in cls.option_aliases.items()}
    rest, options = [], []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        if token == "--":
            rest += [token, *tokens]
            break
        name, has_value, value = token.partition("=")
        name = aliases.get(name, name)
        if not any(name.startswith(f"--{m}-") for m in METHODS):
            rest.append(token)
            continue
        if not has_value:
            if not tokens:
                raise UserError(f"{name}: needs a value")
            value = tokens.pop(0)
        options.append((name, value))
    return rest, options


def parse_method_options(options: list[tuple[str, str]], methods: list[str]) -> dict[str, dict[str, str]]:
    """Returns method → {field: text value} for the `methods` of this run.

    Raises UserError for an option of a method that is not being run.
    """
    params: dict[str, dict[str, str]] = {}
    for name, value in options:
        owner = next((m for m in methods if name.startswith(f"--{m}-")), None)
        if owner is None:
            raise UserError(f"{name}: applies to another method than {', '.join(methods)}; add --method or drop it")
        params.setdefault(owner, {})[field_name(name[len(owner) + 3 :])] = value
    return params


@app.command()
@with_options(FOLDER_TRAINING)
def audit(
    ctx: typer.Context,
    images: Images,
    labels_csv: LabelsCsv = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Directory for audit.parquet, summary.json, report.html and the checkpoint."),
    ] = Path("lnlclean-out"),
    opts: SimpleNamespace = None,
):
    """Train a method on your images and write a per-sample audit.

    Writes OUT/audit.parquet (one row per image: clean_prob, is_label_issue,
    suggested_label, method signals), OUT/summary.json (noise rate overall and
    per class, class confusions, timings) and OUT/report.html (plots and the most
    suspect images, one file that opens in any browser).

    Examples:

    \b
      lnlclean audit ./images labels.csv --method pmnar --out audit/
      lnlclean audit ./images
      lnlclean audit ./images labels.csv --time-budget 10m
      lnlclean audit ./images labels.csv --epochs 10 --device cpu --resume

    Without LABELS_CSV the class is the subfolder: IMAGES/<class>/<file>.
    Method options: --<method>-<option> VALUE (see lnlclean methods).
    Several methods (--method pmnar,alr,flywheel) audit into OUT/<method>/ each,
    then their consensus goes to OUT (see lnlclean consensus).
    """
    methods = method_list(opts.method)
    options = dict(
        cache_dir=opts.cache_dir,
        on_bad_image=opts.on_bad_image.value,
        resume=opts.resume,
        overwrite=opts.overwrite,
        allow_outside_root=opts.allow_outside_root,
    )
    if len(methods) > 1:
        configs = {name: run_config(opts, ctx, method=name, methods=methods) for name in methods}
        members, result = run_audits_and_consensus(images, labels_csv, configs, out, Reporter(opts.quiet), **options)
        for name, member in members.items():
            stdout.print(f"{name}: {member.summary['n_label_issues']} label issues, wrote {member.audit_path.parent}")
        stdout.print(f"consensus of {', '.join(methods)}:")
    else:
        result = run_audit(images, labels_csv, run_config(opts, ctx), out, reporter=Reporter(opts.quiet), **options)
    print_audit_summary(result.summary)
    print_written(result)


@app.command()
@with_options(FOLDER_TRAINING)
def relabel(
    ctx: typer.Context,
    images: Images,
    labels_csv: LabelsCsv = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Corrected-label CSV to write.")] = Path("relabeled.csv"),
    policy: Annotated[
        Policy,
        typer.Option(
            help="relabel: replace flagged labels by the suggestion; drop: leave flagged rows out; "
            "flag: keep labels, mark flagged rows for review."
        ),
    ] = Policy.relabel,
    from_audit: Annotated[
        Path | None,
        typer.Option(
            help="Reuse a finished audit (its folder or audit.parquet) instead of training again.", show_default=False
        ),
    ] = None,
    audit_dir: Annotated[
        Path, typer.Option(help="Where the audit made on the way is written (when not --from-audit).")
    ] = Path("lnlclean-out"),
    opts: SimpleNamespace = None,
):
    """Write a corrected-label CSV: your columns, with labels fixed per --policy.

    Adds original_label, action (keep / relabel / review) and confidence. The input CSV
    is never modified.

    Examples:

    \b
      lnlclean relabel ./images labels.csv --out fixed.csv
      lnlclean relabel ./images labels.csv --from-audit lnlclean-out \\
          --policy drop --out clean.csv

    Method options: --<method>-<option> VALUE (see lnlclean methods).
    """
    if len(method_list(opts.method)) > 1:
        raise UserError(
            f"--method {opts.method}: relabel trains one method; "
            f"for a consensus run lnlclean audit --method {opts.method}, then relabel --from-audit OUT/audit.parquet"
        )
    out = check_output_file(out, overwrite=opts.overwrite, inputs=[labels_csv, from_audit])
    if from_audit is not None:
        if (ctx.obj or {}).get("method_options"):
            raise UserError(f"{ctx.obj['method_options'][0][0]}: method options have no effect with --from-audit")
        corrected, warnings, rows = relabel_from_audit(
            images, labels_csv, from_audit, out, policy.value, opts.threshold, opts.allow_outside_root
        )
    else:
        corrected, warnings, audit = relabel_after_audit(
            images,
            labels_csv,
            run_config(opts, ctx),
            audit_dir,
            out,
            policy.value,
            Reporter(opts.quiet),
            cache_dir=opts.cache_dir,
            on_bad_image=opts.on_bad_image.value,
            resume=opts.resume,
            overwrite=opts.overwrite,
            allow_outside_root=opts.allow_outside_root,
        )
        rows = audit.input_rows
        print_written(audit)
    counts = corrected["action"].value_counts().to_dict()
    dropped = len(rows) - len(corrected)
    parts = [f"{counts.get(a, 0)} {a}" for a in ("keep", "relabel", "review")] + (
        [f"{dropped} dropped"] if dropped else []
    )
    stdout.print(f"wrote {out}: {', '.join(parts)}")
    print_warnings(warnings)


@app.command()
@with_options(TRAINING)
def benchmark(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help=f"One of {', '.join(DATASETS)}.", show_default=False)],
    noise: Annotated[
        list[str] | None,
        typer.Option(
            "--noise",
            "-n",
            help="clean, symNN, asymNN or idnNN (repeatable). Default: sym40, or none with --noise-file.",
            show_default=False,
        ),
    ] = None,
    noise_file: Annotated[
        Path | None,
        typer.Option(
            help="Real noisy labels for the training images: a CSV with columns index,label, or a CIFAR-N file such as "
            "CIFAR-10_human.pt.",
            show_default=False,
        ),
    ] = None,
    noise_key: Annotated[
        str | None,
        typer.Option(
            help="The label set of a CIFAR-N --noise-file, e.g. worse_label or aggre_label.", show_default=False
        ),
    ] = None,
    method: Annotated[
        list[str], typer.Option("--method", "-m", help="Method (repeatable or comma-separated), or 'all'.")
    ] = [DEFAULTS.method],  # noqa: B006 - Typer shows this list as the --method default in --help
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for benchmark.json.")] = Path("lnlclean-bench"),
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Local CIFAR: torchvision's files, or train/<class>/* and test/<class>/* folders.", show_default=False
        ),
    ] = None,
    train_size: Annotated[
        int | None, typer.Option(help="Use a stratified subset of this many training images.", show_default=False)
    ] = None,
    fail_under: Annotated[
        str | None,
        typer.Option(
            help="Exit 1 when a run falls short, e.g. f1=0.8,acc=0.9 (keys: f1 precision recall auroc acc "
            "relabel_acc).",
            show_default=False,
        ),
    ] = None,
    partial_rate: Annotated[
        float | None,
        typer.Option(
            help="Give candidate sets instead of labels: each wrong label joins with this probability; "
            "symNN then swaps the true label out with probability NN %.",
            show_default=False,
        ),
    ] = None,
    consensus: Annotated[
        bool,
        typer.Option("--consensus", help="Also score the consensus of the methods (majority of flags) for each noise."),
    ] = False,
    diagnose: Annotated[
        bool,
        typer.Option(
            "--diagnose",
            help="After every epoch, score the network against the true labels (a clean pass over the training "
            "images); logged per epoch, in benchmark.json's history and the report.",
        ),
    ] = False,
    opts: SimpleNamespace = None,
):
    """Inject known label noise into a standard dataset and score detection.

    Writes OUT/benchmark.json (one entry per method × noise), an HTML report per run
    (OUT/<dataset>-<noise>-<method>.html) and prints a table.
    digits needs no download; cifar10/cifar100 download through torchvision unless
    --data-dir points at a local copy.

    Examples:

    \b
      lnlclean benchmark digits --noise sym40 --method ce
      lnlclean benchmark cifar10 --noise asym40 --data-dir ./cifar10 \\
          --train-size 5000 --method all
      lnlclean benchmark digits --noise sym20 --fail-under f1=0.8,acc=0.9
      lnlclean benchmark digits --noise sym20 --partial-rate 0.3 --method alim
      lnlclean benchmark digits --noise sym40 --method pmnar,alr,flywheel \\
          --consensus
      lnlclean benchmark cifar10 --data-dir ./cifar10 \\
          --noise-file CIFAR-10_human.pt --noise-key worse_label
      lnlclean benchmark digits --noise sym40 --method alr --diagnose
    """
    if dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r}: unknown; choose one of {', '.join(DATASETS)}")
    if frozen_default_method(opts.features.value, ctx):
        method = [FROZEN_METHOD]
    methods = (
        usable_methods(opts.features.value)
        if method == ["all"]
        else [name for value in method for name in method_list(value)]
    )
    configs = {name: run_config(opts, ctx, method=name, methods=methods) for name in methods}
    specs = noise_specs(noise, noise_file, noise_key)
    thresholds = parse_fail_under(fail_under)
    runs = run_benchmark(
        dataset,
        specs,
        configs,
        out,
        data_dir,
        train_size,
        opts.cache_dir,
        partial_rate,
        consensus,
        diagnose,
        opts.overwrite,
        Reporter(opts.quiet),
    )
    print_benchmark_table(runs)
    stdout.print(BENCHMARK_LEGEND)
    stdout.print(f"wrote {out / BENCHMARK_FILE} and an HTML report per run ({out}/<dataset>-<noise>-<method>.html)")
    failures = check_fail_under(runs, thresholds)
    for line in failures:
        stdout.print(f"[red]below threshold[/red]: {line}")
    if failures:
        raise typer.Exit(1)


def noise_specs(noise: list[str] | None, noise_file: Path | None, noise_key: str | None) -> list[NoiseSpec]:
    """Returns the noises a benchmark runs: each ``--noise``, then the ``--noise-file`` (sym40 when neither is given).

    Raises UserError for a bad spec.
    """
    if noise_key is not None and noise_file is None:
        raise UserError(f"--noise-key {noise_key}: names a label set of --noise-file; give --noise-file too")
    specs = [parse_noise_spec(spec) for spec in noise or ([] if noise_file else ["sym40"])]
    if noise_file is not None:
        if not noise_file.is_file():
            raise UserError(f"--noise-file {noise_file}: no such file")
        specs.append(NoiseSpec("file", 0.0, str(noise_file), noise_key))
    return specs


def parse_fail_under(text: str | None) -> dict[str, float]:
    """Returns metric key → minimum from ``f1=0.8,acc=0.9``. Raises UserError naming --fail-under."""
    if not text:
        return {}
    thresholds = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in FAIL_KEYS:
            raise UserError(f"--fail-under {text!r}: expected key=value pairs with keys {', '.join(FAIL_KEYS)}")
        try:
            thresholds[key] = float(value)
        except ValueError:
            raise UserError(f"--fail-under {text!r}: {value!r} is not a number") from None
    return thresholds


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


BENCHMARK_COLUMNS = (
    ("noise true/est", lambda r: f"{r['true_noise_rate']:.2f}/{r['estimated_noise_rate']:.2f}"),
    ("precision", lambda r: _fmt(r["precision"])),
    ("recall", lambda r: _fmt(r["recall"])),
    ("F1", lambda r: _fmt(r["f1"])),
    ("AUROC", lambda r: _fmt(r["auroc"])),
    ("test acc", lambda r: _fmt(r["test_accuracy"])),
    ("relabel acc", lambda r: _fmt(r["relabel_accuracy"])),
    ("label acc", lambda r: f"{r['label_accuracy_before']:.2f}→{r['label_accuracy_after']:.2f}"),
    ("s/epoch", lambda r: _fmt(r["seconds_per_epoch"], 2)),
    ("seconds", lambda r: _fmt(r["seconds"], 1)),
)


BENCHMARK_LEGEND = (
    "noise true/est: share of wrong labels injected / estimated by the audit; precision, recall, F1, AUROC: "
    "the flags against the truth; test acc: the network on the test split; relabel acc: share of the flagged "
    "wrong labels whose suggestion is the true label; label acc: share of right labels before → after relabel"
)


def print_benchmark_table(runs: list[dict]) -> None:
    """Prints the benchmark runs to stdout: one row per run, or one column per run on narrow terminals. Returns None."""
    names = [run_name(r) for r in runs]
    table = Table(title="lnlclean benchmark")
    if stdout.width >= 130:
        table.add_column("run", no_wrap=True)
        for title, _ in BENCHMARK_COLUMNS:
            table.add_column(title, justify="right")
        for name, run in zip(names, runs):
            table.add_row(name, *(cell(run) for _, cell in BENCHMARK_COLUMNS))
    else:
        table.add_column("")
        for name in names:
            table.add_column(name, justify="right")
        for title, cell in BENCHMARK_COLUMNS:
            table.add_row(title, *(cell(run) for run in runs))
    stdout.print(table)


def print_audit_summary(summary: dict) -> None:
    """Prints the headline numbers of an audit to stdout, then its warnings. Returns None."""
    stdout.print(
        f"{summary['n_samples']} samples, {summary['n_label_issues']} label issues "
        f"(estimated noise rate {summary['noise_rate']:.1%}, health score {summary['health_score']:.3f})"
        + (f", {summary['n_skipped']} unreadable skipped" if summary.get("n_skipped") else "")
    )
    print_warnings(summary.get("warnings") or [])
    if summary["top_confusions"]:
        table = Table(title="most frequent suspected confusions")
        for column in ("given label", "suggested label", "count"):
            table.add_column(column)
        for row in summary["top_confusions"][:5]:
            table.add_row(row["given_label"], row["suggested_label"], str(row["count"]))
        stdout.print(table)


def print_warnings(warnings: list[dict]) -> None:
    """Prints each warning of an audit (see lnlclean.report.trust) as one line to stdout. Returns None."""
    for warning in warnings:
        stdout.print(f"[yellow]warning[/yellow]: {escape(one_line(warning['message']))}")


@app.command()
def consensus(
    audits: Annotated[
        list[Path],
        typer.Argument(
            help="Directories of two or more finished audits of the same images and labels.", show_default=False
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Directory for the consensus audit.parquet, summary.json and report.html."),
    ] = Path("lnlclean-consensus"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the outputs of an earlier consensus.")
    ] = False,
):
    """Combine audits of several methods into one: mean clean_prob, votes, agreement.

    A sample is flagged when most audits flag it (a tie: when the mean clean_prob is
    below 0.5); its suggested label is the one most audits suggest. The result is an
    audit like any other: relabel --from-audit OUT/audit.parquet uses it.

    Examples:

    \b
      lnlclean consensus audit-pmnar audit-alr audit-flywheel --out consensus
      lnlclean audit ./images labels.csv --method pmnar,alr,flywheel --out audit
    """
    result = run_consensus(audits, out, overwrite)
    print_audit_summary(result.summary)
    agreement = result.summary["consensus"]
    stdout.print(
        f"flags agree on {agreement['all_flags_agree']:.1%} of samples; "
        f"{agreement['flagged_by_all']} flagged by all, {agreement['flagged_by_any']} by any"
    )
    print_written(result)


@app.command()
def report(
    audit_dir: Annotated[
        Path, typer.Argument(help="Directory of a finished audit (the --out of lnlclean audit).", show_default=False)
    ],
    images: Annotated[
        Path | None,
        typer.Option(
            help="Image folder, when it moved since the audit. Default: the folder the audit read.", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML file to write. Default: AUDIT_DIR/report.html.", show_default=False),
    ] = None,
    gallery: Annotated[
        int, typer.Option(help="How many of the most suspect samples the gallery shows.")
    ] = GALLERY_SIZE,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file at --out that is not an lnlclean report.")
    ] = False,
):
    """Write the HTML report of an existing audit: plots and the most suspect images.

    One self-contained file (plots and thumbnails inlined) that opens in any browser.
    An earlier report at the same place is replaced.

    Examples:

    \b
      lnlclean report lnlclean-out
      lnlclean report audit/ --images /data/images --gallery 600 --out review.html
    """
    path, unreadable = run_report(audit_dir, images, out, gallery, overwrite)
    stdout.print(f"wrote {path}")
    if unreadable:
        stdout.print(
            f"[yellow]{unreadable} gallery image(s) could not be read[/yellow]; if the images moved, pass --images"
        )


def print_written(result) -> None:
    """Prints the files an audit wrote. Returns None."""
    stdout.print(f"wrote {result.audit_path}, {result.summary_path} and {result.report_path}")


@app.command("methods")
def list_methods(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the reference as Markdown (as in docs/methods.md).")
    ] = False,
):
    """List the methods: what each does, its options and the audit columns it adds.

    A method's options are given to audit, relabel and benchmark as
    --<method>-<option> VALUE; auto lets the method choose from the run.

    Examples:

    \b
      lnlclean methods
      lnlclean audit ./images labels.csv --method alr --alr-lambda 0.1
    """
    stdout.print(
        reference.methods_markdown() if markdown else reference.methods_text(),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command("columns")
def list_columns(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the table as Markdown (as in docs/outputs.md).")
    ] = False,
):
    """List the columns of audit.parquet and what each holds.

    Example:

    \b
      lnlclean columns
    """
    stdout.print(
        reference.columns_markdown() if markdown else reference.columns_text(),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def version():
    """Print the lnlclean version (also: lnlclean --version)."""
    stdout.print(__version__)


def print_version(value: bool) -> None:
    """Prints the version and stops when ``--version`` is given. Returns None."""
    if value:
        stdout.print(__version__)
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=print_version, is_eager=True)
    ] = False,
):
    """Audit and clean label noise in image-classification datasets."""


# What --help shows after each option that takes a value (default: the name in capitals).
METAVARS = {
    "out": "PATH",
    "epochs": "N",
    "batch_size": "N",
    "seed": "N",
    "workers": "N",
    "train_size": "N",
    "gallery": "N",
    "time_budget": "TIME",
    "lr": "RATE",
    "weight_decay": "W",
    "image_size": "PX",
    "threshold": "P",
    "noise_rate": "RATE",
    "partial_rate": "RATE",
    "weights": "FILE",
    "noise_file": "FILE",
    "cache_dir": "DIR",
    "data_dir": "DIR",
    "audit_dir": "DIR",
    "max_ram": "SIZE",
    "noise": "SPEC",
    "noise_key": "KEY",
    "fail_under": "KEY=MIN,...",
    "from_audit": "AUDIT",
    "backbone": "NET",
    "audits": "AUDIT",
    **{name: f"[{'|'.join(CHOICES[name])}]" for name in CHOICES},
    "on_bad_image": "[fail|skip]",
    "policy": "[relabel|drop|flag]",
}


@functools.cache
def cli_group():
    """Returns the command-line parser: the Typer app as a Click group, with readable metavars."""
    group = typer.main.get_command(app)
    for sub in group.commands.values():
        for param in sub.params:
            param.metavar = METAVARS.get(param.name, param.name.upper())
    return group


def help_text(command: str, columns: int = 80) -> str:
    """Returns what ``lnlclean COMMAND --help`` prints on a terminal `columns` wide (docs/commands.md quotes it)."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            main([command, "--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return printed.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI. Returns the exit code.

    0 ok; 1 a --fail-under threshold failed; 2 bad input, usage or an unwritable location;
    130 stopped by SIGINT (Ctrl-C); 143 stopped by SIGTERM.
    """
    err = Console(stderr=True, highlight=False)

    def say(line: str) -> None:  # every message line the CLI prints on stderr: user text escaped, one line
        err.print(one_line(line), markup=False, soft_wrap=True)

    world = current_world()  # under torchrun: joins the other processes
    stdout.quiet = not world.is_main
    error = f"error: [rank {world.rank}/{world.size}]" if world.distributed else "error:"
    previous_handlers = install_stop_handlers()
    try:
        args, method_options = split_method_options(sys.argv[1:] if argv is None else argv)
        code = cli_group().main(
            args=args, standalone_mode=False, prog_name="lnlclean", obj={"method_options": method_options}
        )
        return code if isinstance(code, int) else 0
    except UserError as problem:
        say(f"{error} {problem}")
        return UserError.exit_code
    except Stopped as stop:
        if world.is_main:  # torchrun stops every process; one line says so
            say(stopped_message(stop))
        return stop.exit_code
    except OSError as problem:
        if problem.errno not in ENVIRONMENT_ERRNOS:
            raise
        say(f"{error} {problem.filename or 'output'}: {problem.strerror}; free space or choose another location")
        return UserError.exit_code
    except Exception as problem:
        if type(problem).__name__ == "NoArgsIsHelpError":  # a bare `lnlclean`: its help, not an error
            stdout.print(problem.ctx.get_help(), markup=False, highlight=False)
            return 0
        if not is_usage_error(problem):
            raise
        ctx = getattr(problem, "ctx", None)
        command = ctx.command_path if ctx is not None else "lnlclean"
        say(f"{error} {command}: {problem.format_message()} (see {command} --help)")
        return 2
    finally:
        restore_handlers(previous_handlers)


def stopped_message(stop: Stopped) -> str:
    """Returns the line shown when a signal stopped the run: where, and how to go on."""
    if not isinstance(stop, Interrupted):
        return f"{stop}; unfinished outputs are never written, so run the same command again"
    where = f"{stop} in epoch {stop.epoch} after step {stop.step}"
    if stop.checkpoint is None:
        return f"{where}; finished runs are kept, the unfinished one was not written"
    return f"{where}; saved {stop.checkpoint}; run the same command with --resume to continue"


def is_usage_error(error: Exception) -> bool:
    """Returns True for the command-line parser's own errors (unknown option, bad value, missing argument)."""
    return hasattr(error, "format_message") and getattr(error, "exit_code", None) == 2


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point: exits with the code :func:`main` returns."""
    sys.exit(main())
