"""The `kit` command line: it only parses options and wires the stage functions of the package.

Each command loads the competition config once (`--config`, default configs/competition.toml)
and calls one stage. Bad input raises KitError, printed here as one line with exit code 2.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from kit.config import DEFAULT_CONFIG, CompetitionConfig, load_competition
from kit.errors import KitError, ScrubbedStream
from kit.leaderboard.client import DEFAULT_WAIT_SECONDS

# One command line: the help shows words (N, NAME, FILE), not Python types, and `--config FILE` may
# come before or after the command (`kit --config c.toml train` = `kit train --config c.toml`).
_WORDS = {"int": "N", "float": "NUMBER", "str": "TEXT", "Path": "FILE", "list[str]": "NAME", "list[Path]": "FILE"}
_CONFIG_FLAGS = ("--config", "-c")


def _config_first(args: list[str]) -> list[str]:
    """Move `--config FILE` (or `-c FILE`, `--config=FILE`) given after the command to before it, where the
    root option is parsed. Tokens after a bare `--` are left alone."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":  # root options before the command
        i += 2 if args[i] in _CONFIG_FLAGS else 1
    head, tail, moved = args[: i + 1], [], []
    rest = iter(args[i + 1 :])
    for token in rest:
        if token == "--":
            tail += [token, *rest]
            break
        if token in _CONFIG_FLAGS:
            moved += [token, next(rest, "")]
        elif token.startswith("--config="):
            moved.append(token)
        else:
            tail.append(token)
    return moved + head + tail


def _in_words(params: list) -> None:
    """Help in words: flags show no type, other options a word (unless they name their own metavar);
    arguments are named in words already (FILE, OUT), so their type column stays empty."""
    for param in params:
        if param is None or param.metavar is not None:
            continue
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None  # the rich help's type column; the name says it
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        else:
            bare = param.bare_type() if hasattr(param, "bare_type") else ""
            param.metavar = _WORDS.get(bare.removesuffix(" | None"), "VALUE")


class _KitGroup(TyperGroup):
    def main(self, args=None, *rest, **kwargs):
        return super().main(_config_first(list(sys.argv[1:] if args is None else args)), *rest, **kwargs)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _in_words([*command.params, command.get_help_option(ctx)])
        return command

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        _in_words([*self.params, option])
        return option


app = typer.Typer(
    cls=_KitGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Kaggle competition kit: folds, k-fold training, decision layer, blend, submit.",
    result_callback=lambda *_, **__: _record_time(),
)
console = Console(file=ScrubbedStream(lambda: sys.stdout))  # no Kaggle credential reaches the screen, in any form
err_console = Console(file=ScrubbedStream(lambda: sys.stderr))
_state: dict = {"config": DEFAULT_CONFIG, "started": time.perf_counter()}


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", envvar="KIT_CONFIG", metavar="FILE",
                                         help="Competition config (TOML); before or after the command.")] = DEFAULT_CONFIG,
) -> None:
    _state["config"] = config
    _state["command"] = ctx.invoked_subcommand


def _cfg() -> CompetitionConfig:
    return load_competition(_state["config"])


def _record_time() -> None:
    """A command that finished adds its wall time to the file KIT_TIMINGS names (kit.timings; `make demo` sets it)."""
    from kit.timings import record

    name = _state.get("command")
    if name in (None, "timings"):
        return
    args = sys.argv[sys.argv.index(name):] if name in sys.argv else [name]
    args = [a for i, a in enumerate(args) if a not in _CONFIG_FLAGS and (i == 0 or args[i - 1] not in _CONFIG_FLAGS) and not a.startswith("--config=")]
    record(name, time.perf_counter() - _state["started"], " ".join(args))


def _split_names(values: list[str] | None) -> list[str] | None:
    """`--variants a,b` and `--variants a --variants b` both mean [a, b] (duplicates dropped, order kept)."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or None


def _variant_names(variant: str | None, variants: list[str] | None) -> list[str] | None:
    """`--variant X` and `--variants A,B` together: every name given, None (the config's) when none is."""
    return _split_names([*([variant] if variant else []), *(variants or [])])


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic dataset into.")],
    *,
    n_train: Annotated[int, typer.Option(help="Training images.")] = 5000,
    n_test: Annotated[int, typer.Option(help="Test images.")] = 1700,
    size: Annotated[int | None, typer.Option(help="Image side in pixels (default 128; 28 for multi-label).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same dataset.")] = 42,
    task: Annotated[str, typer.Option(help="multi-class (Kaggle layout) or multi-label (ChestMNIST npz).")] = "multi-class",
    min_per_class: Annotated[int, typer.Option(help="Smallest class size (>= number of folds).")] = 5,
    preview: Annotated[bool, typer.Option("--preview", help="Also write OUT/preview.png with examples per class.")] = False,
    difficulty: Annotated[str, typer.Option(help="easy (findings plain to see) or realistic (per-class AUCs of real chest X-rays).")] = "easy",
) -> None:
    """Write the synthetic chest X-ray benchmark (docs/synthetic-data.md); needs no config."""
    from kit.data.synth import generate
    from kit.data.synth import preview as write_preview

    size = size or (28 if task == "multi-label" else 128)
    summary = generate(out, n_train=n_train, n_test=n_test, size=size, seed=seed, task=task, min_per_class=min_per_class, difficulty=difficulty)
    console.print(f"wrote {out} ({summary['n_train']} train, {summary['n_test']} test, {size}px, {difficulty}) in {summary['seconds']:.1f}s")
    if preview:
        console.print(f"preview: {write_preview(out, out / 'preview.png')}")


@app.command()
def folds() -> None:
    """Write folds.csv: stratified by class, grouped by patient, same seed same folds."""
    from kit.data.folds import make_folds

    make_folds(_cfg())


@app.command()
def train(
    *,
    variant: Annotated[str | None, typer.Option(metavar="NAME",
        help="One variant (configs/models/<NAME>.toml) or 'all' (the config's variants, the default).")] = None,
    variants: Annotated[list[str] | None, typer.Option("--variants", metavar="A,B", help="Several variants: a comma list, or the option repeated.")] = None,
    fold: Annotated[str, typer.Option(metavar="K", help="Fold index K or 'all'; each (variant, fold) is an independent job.")] = "all",
    resume: Annotated[bool, typer.Option("--resume", help="Continue interrupted folds from their last checkpoint; skip finished ones.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", metavar="N", help="Quick run: train N epochs instead of the variant's.")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", metavar="PIXELS",
        help="Quick run: images of PIXELS x PIXELS instead of the variant's size.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", metavar="N", help="Batches of N images instead of the variant's.")] = None,
    max_train_images: Annotated[int | None, typer.Option("--max-train-images", metavar="N",
        help="Quick run: at most N training images per fold (a seeded subset).")] = None,
    executor: Annotated[str, typer.Option("--executor", metavar="local|ray", help="'local' (one job after another) or 'ray' (a Ray task per job).")] = "local",
    address: Annotated[str | None, typer.Option("--address", metavar="HOST:PORT",
        help="Ray cluster to join ('auto' or HOST:PORT); default: local Ray.")] = None,
    cpus_per_job: Annotated[int | None, typer.Option("--cpus-per-job", metavar="N", help="CPU cores (torch threads) per job; Ray default 1.")] = None,
    gpus_per_job: Annotated[float | None, typer.Option("--gpus-per-job", metavar="G", help="GPUs per Ray job; default 1 when the cluster has GPUs.")] = None,
) -> None:
    """Train variants × folds; write runs/<variant>/fold<k>/ and, once all folds exist, oof/<variant>.npz.

    --epochs, --image-size, --batch-size and --max-train-images change the variant's recipe for this run:
    they are part of each job's identity, so a quick run never resumes into a full one (or back).
    """
    from kit.config import resolve_variants
    from kit.stages.train import train as train_stage

    cfg = _cfg()
    if fold == "all":
        folds_wanted = None
    elif fold.isascii() and fold.isdigit():  # '²' is a digit to str.isdigit, not to int()
        folds_wanted = [int(fold)]
    else:
        raise KitError(f"--fold {fold!r}: give a fold number 0..{cfg.folds.n_folds - 1} or 'all'")
    overrides = {k: v for k, v in {"epochs": epochs, "image_size": image_size, "batch_size": batch_size,
                                   "max_train_images": max_train_images}.items() if v is not None}
    train_stage(
        cfg, resolve_variants(_variant_names(variant, variants), cfg), folds_wanted, resume,
        executor=executor, address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job, console=console,
        overrides=overrides or None,
    )


@app.command()
def calibrate(
    oof: Annotated[list[Path] | None, typer.Option("--oof", metavar="FILE", help="OOF npz file(s) to calibrate (repeatable).")] = None,
    variant: Annotated[list[str] | None, typer.Option("--variant", metavar="NAME",
        help="A variant, repeatable; default: the configured ones with an OOF file.")] = None,
    variants: Annotated[list[str] | None, typer.Option("--variants", metavar="A,B", help="Several variants: a comma list, or the option repeated.")] = None,
) -> None:
    """Choose each variant's decision rule by nested CV (table vs trivial baseline) and save it beside its OOF."""
    from kit.stages.calibrate import calibrate as run_calibrate
    from kit.stages.calibrate import find_oof_paths

    if oof and (variant or variants):
        raise KitError("kit calibrate: give the OOF files by --oof or by --variant/--variants, not both "
                       f"(--oof {' '.join(str(p) for p in oof)}; --variant {', '.join([*(variant or []), *(variants or [])])})")
    cfg = _cfg()
    run_calibrate(cfg, find_oof_paths(cfg, oof, _split_names([*(variant or []), *(variants or [])])), console=console)


@app.command()
def timings(
    reset: Annotated[bool, typer.Option("--reset", help="Start a new log instead (make demo does it first).")] = False,
) -> None:
    """Print the wall time of each command recorded in the file KIT_TIMINGS names (make demo: runs/timings.jsonl)."""
    from kit.timings import ENV, log_path, print_table, read

    path = log_path()
    if path is None:
        raise KitError(f"{ENV} is not set: name the timings file, e.g. `{ENV}=runs/timings.jsonl kit train ...`, then `{ENV}=runs/timings.jsonl kit timings`")
    if reset:
        path.unlink(missing_ok=True)
        return
    rows = read(path)
    if not rows:
        raise KitError(f"{path}: no timings recorded yet; run kit commands with {ENV}={path} (e.g. `make demo`) first")
    print_table(rows, console, f"wall time per stage ({path})")


@app.command()
def dashboard(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the calibration studies (calibrate.storage) and print its URL."""
    from kit.studies import dashboard as run_dashboard

    if not 1 <= port <= 65535:
        raise KitError(f"--port {port}: a port is a number from 1 to 65535, e.g. 8080")
    run_dashboard(_cfg(), host, port, console=console)


@app.command()
def report(
    out: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default: <paths.submissions>/report.html).")] = None,
) -> None:
    """Write one static HTML report (images embedded, no server): scores vs trivial, recall, candidates, blends, ledger."""
    from kit.stages.report import report as run_report

    run_report(_cfg(), out, console=console)


@app.command()
def blend(
    variants: Annotated[list[str] | None, typer.Option("--variants", metavar="A,B",
        help="Variants to blend (comma list or repeated); default: the config's.")] = None,
    variant: Annotated[list[str] | None, typer.Option("--variant", metavar="NAME", help="A variant to blend, repeatable (the same as --variants).")] = None,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Submission name: <paths.submissions>/<NAME>.csv")] = "blend",
    oof: Annotated[list[Path] | None, typer.Option("--oof", metavar="FILE", help="OOF npz file to blend instead of variants (repeatable).")] = None,
) -> None:
    """Blend the variants (calibration, weights and rule fitted inside each outer fold), write the submission."""
    from kit.stages.blend import blend as run_blend

    run_blend(_cfg(), _split_names([*(variant or []), *(variants or [])]), name, console=console, oof=oof)


@app.command()
def score(
    submission: Annotated[Path, typer.Argument(help="Submission CSV to score.")],
    solution: Annotated[Path | None, typer.Option("--solution", help="Solution CSV (default: data.dir/data.solution_csv, or the npz's test labels).")] = None,
    compare_argmax: Annotated[bool, typer.Option("--compare-argmax", help="Also score each variant's argmax on its mean test logits.")] = False,
) -> None:
    """Score a submission against a solution CSV, beside the trivial baseline (the checks of `kit submit` first)."""
    from kit.stages.score import score_file

    score_file(submission, solution, _cfg(), compare_argmax=compare_argmax, console=console)


@app.command()
def submit(
    message: Annotated[str, typer.Option("--message", "-m", help="Submission description (required).")],
    *,
    file: Annotated[Path | None, typer.Argument(help="Submission CSV (default: the newest in the config's paths.submissions folder).")] = None,
    competition: Annotated[str | None, typer.Option("--competition", help="Competition slug (default: kaggle.competition).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show what would be sent; send nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until Kaggle has scored it; print its public score beside its nested-CV score.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits for the score.")] = DEFAULT_WAIT_SECONDS,
    force: Annotated[bool, typer.Option("--force", help="Send a file even if the ledger shows these bytes were sent already.")] = False,
    kernel: Annotated[str | None, typer.Option("--kernel", metavar="OWNER/SLUG",
        help="Code competition: submit this notebook's output instead of a file (`kit package`).")] = None,
    version: Annotated[int | None, typer.Option("--version", metavar="N", help="With --kernel: the notebook version (default: its latest).")] = None,
) -> None:
    """Validate a submission against the sample, record it in submissions/ledger.csv and send it to Kaggle."""
    from kit.stages.submit import submit as run_submit

    if kernel is not None or version is not None:
        from kit.stages.submit import submit_kernel

        if kernel is None or file is not None:
            raise KitError("--kernel OWNER/SLUG submits a notebook's output: give it (with --version N if you like), and no FILE")
        submit_kernel(_cfg(), kernel, message, version=version, competition=competition, dry_run=dry_run, wait=wait, timeout=timeout,
                      force=force, console=console)
        return
    run_submit(_cfg(), file, message, competition=competition, dry_run=dry_run, wait=wait, timeout=timeout, force=force, console=console)


@app.command()
def submissions(
    competition: Annotated[str | None, typer.Option("--competition", help="Competition slug (default: kaggle.competition).")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Show the ledger as it is; ask Kaggle nothing.")] = False,
    refresh_all: Annotated[bool, typer.Option("--all", help="Refresh every row, not only unscored ones (private scores after the deadline).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS",
        help="Seconds the refresh from Kaggle may take (requests, retries, pauses); then the ledger is shown as it was.")] = 120.0,
) -> None:
    """Refresh pending submissions from Kaggle, print the ledger (public beside nested CV), draw public vs CV."""
    from kit.stages.submit import submissions as run_submissions

    run_submissions(_cfg(), competition, refresh=not offline, refresh_all=refresh_all, console=console, timeout=timeout)


@app.command()
def download(
    competition: Annotated[str | None, typer.Option("--competition", help="Competition slug (default: kaggle.competition).")] = None,
) -> None:
    """Download and unpack the competition's files into data/<slug>/."""
    from kit.stages.submit import download as run_download

    run_download(_cfg(), competition, console=console)


@app.command()
def init(
    data_dir: Annotated[Path, typer.Argument(help="The competition's folder (train.csv, sample_submission.csv, image folders).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Config file to write (default: configs/<competition>.toml).")] = None,
    competition: Annotated[str | None, typer.Option("--competition", help="Kaggle competition slug (default: the folder's name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the config file if it exists.")] = False,
    metric: Annotated[str | None, typer.Option("--metric", metavar="NAME",
        help="The competition's metric (roc_auc, log_loss, quadratic_weighted_kappa, ...; the config's CHECK comment lists them).")] = None,
) -> None:
    """Write a competition config from the folder's own files and print what was found and why (needs no config)."""
    from kit.stages.init import init as run_init

    run_init(data_dir, output, competition, force, console=console, metric=metric)


@app.command()
def predict(
    images: Annotated[Path | None, typer.Argument(
        help="Folder of images to predict (default: the config's test set).")] = None,
    *,
    ids: Annotated[Path | None, typer.Option("--ids", metavar="CSV",
        help="CSV of the ids to predict (data.id_column), their files in IMAGES; a sample submission also sets the format.")] = None,
    name: Annotated[str, typer.Option("--name", metavar="BLEND", help="The blend to apply (`kit blend --name`).")] = "blend",
    variant: Annotated[str | None, typer.Option("--variant", metavar="NAME",
        help="One variant under its own `kit calibrate` decision instead of a blend.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE",
        help="Submission CSV to write (default: <paths.submissions>/predict_<BLEND>.csv).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", metavar="N", help="Images per batch (default: the evaluation pass's).")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", metavar="MIN",
        help="Stop with a clear line as soon as the run is projected to take longer (a notebook's time limit).")] = None,
) -> None:
    """Run the trained ensemble's fold models on images and write the submission in the sample's format."""
    from kit.stages.predict import predict as run_predict

    run_predict(_cfg(), images, ids=ids, name=name, variant=variant, output=output, batch_size=batch_size, max_minutes=max_minutes,
                console=console)


@app.command()
def package(
    name: Annotated[str, typer.Argument(help="The blend to package (`kit blend --name NAME`).")],
    *,
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Folder to write (default: packages/NAME).")] = None,
    half: Annotated[bool, typer.Option("--half", help="Store the fold weights in float16 (half the size; predictions may differ slightly).")] = False,
    dataset: Annotated[str | None, typer.Option("--dataset", metavar="OWNER/SLUG", help="The Kaggle dataset (default: <you>/kit-NAME).")] = None,
    kernel: Annotated[str | None, typer.Option("--kernel", metavar="OWNER/SLUG",
        help="The Kaggle notebook (default: <owner>/kit-NAME-inference).")] = None,
    wheels_from: Annotated[Path | None, typer.Option("--wheels-from", metavar="DIR",
        help="Take the dependencies' wheels from this folder instead of the package index.")] = None,
    max_minutes: Annotated[float, typer.Option("--max-minutes", metavar="MIN", help="The notebook's `kit predict --max-minutes`.")] = 500.0,
    push: Annotated[bool, typer.Option("--push", help="Create or version the dataset on Kaggle and push the notebook.")] = False,
) -> None:
    """Make blend NAME a Kaggle dataset (kit wheel, dependency wheels, weights, record) and an offline inference notebook."""
    from kit.stages.package import package as run_package

    cfg = _cfg()
    folder = run_package(cfg, name, out=out, half=half, dataset=dataset, kernel=kernel, wheels_from=wheels_from, max_minutes=max_minutes,
                         console=console)
    if push:
        from kit.leaderboard.publish import push as run_push

        run_push(folder, console=console)


# First contact: doctor (will it fit, how fast) and plan (how long the grid takes).
_Variants = Annotated[list[str] | None, typer.Option("--variants", "--variant", metavar="A,B",
        help="Variants (comma list or repeated); default: the config's.")]


@app.command()
def doctor(
    *,
    variants: _Variants = None,
    image_size: Annotated[int | None, typer.Option("--image-size", metavar="PIXELS",
        help="Check at this size instead of the variant's (as kit train --image-size).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", metavar="N", help="Check batches of N (as kit train --batch-size).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", metavar="N", help="Epochs `kit plan` counts (as kit train --epochs).")] = None,
    max_train_images: Annotated[int | None, typer.Option("--max-train-images", metavar="N", help="Training images per fold `kit plan` counts.")] = None,
    memory_gb: Annotated[float | None, typer.Option("--memory-gb", metavar="GB",
        help="Advise for a device with GB of memory (e.g. 16 for a T4) instead of this one's.")] = None,
    compile_model: Annotated[bool | None, typer.Option("--compile/--no-compile",
        help="Compile each model to check torch.compile (default: on a GPU, or when the variant sets compile = true).")] = None,
) -> None:
    """Check each variant on this machine before hours are spent: device, precision, compile, memory, speed, disk."""
    from kit.config import resolve_variants
    from kit.stages.doctor import doctor as run_doctor

    cfg = _cfg()
    overrides = {k: v for k, v in {"epochs": epochs, "image_size": image_size, "batch_size": batch_size,
                                   "max_train_images": max_train_images}.items() if v is not None}
    if memory_gb is not None and (not math.isfinite(memory_gb) or memory_gb <= 0 or memory_gb > 2**20):
        raise KitError(f"--memory-gb {memory_gb}: give the device's memory in GB, e.g. 16")
    run_doctor(cfg, resolve_variants(_split_names(variants), cfg), overrides or None,
               device_memory=None if memory_gb is None else int(memory_gb * 2**30), compile_check=compile_model, console=console)


@app.command()
def plan(
    hours: Annotated[float | None, typer.Option("--hours", metavar="H", help="Time available: what of the grid fits in H hours.")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", metavar="N", help="Devices that run jobs at once (default: 1, 2, 4 and 8 side by side).")] = None,
) -> None:
    """The grid's time (variants × folds × epochs × images) from the rates `kit doctor` measured, and the commands to run it."""
    from kit.stages.plan import plan as run_plan

    run_plan(_cfg(), hours=hours, gpus=gpus, console=console)


def main() -> None:
    """Entry point: bad input (KitError, or a file operation that failed) becomes one line on stderr and
    exit code 2; Ctrl-C becomes one "interrupted" line and exit code 130 (SIGTERM: 143); never a traceback."""
    previous_sigterm = _terminate_like_ctrl_c()
    _state["started"] = time.perf_counter()  # the command's wall time (kit.timings) counts the stage's imports (torch, …)
    try:
        app()
    except KitError as exc:
        _fail(str(exc), exc.exit_code)
    except OSError as exc:  # a file operation the kit's own checks did not turn into a KitError
        if exc.filename:
            _fail(f"{exc.filename}: {exc.strerror or exc}; check that path (permissions, free space) and run again", 2)
        _fail(f"{exc.strerror or exc} ({type(exc).__name__}); run again once it is fixed", 2)
    except KeyboardInterrupt as exc:
        _interrupted(_terminated(exc))
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C (and SIGTERM's Terminated) into a silent exit with code 130
            _interrupted(_terminated(exc))
        raise
    except Exception:  # a bug in the kit: its traceback, without any form of a Kaggle credential it may hold
        import traceback

        from kit.errors import scrub_secrets

        sys.stderr.write(scrub_secrets(traceback.format_exc()))
        sys.exit(1)
    finally:
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)


def _terminated(exc: BaseException) -> bool:
    """Whether SIGTERM's Terminated is `exc` or in its chain (typer re-raises it as Exit(130))."""
    from kit.errors import Terminated

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, Terminated):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _fail(message: str, code: int) -> None:
    line = " ".join(message.split())  # one line, whatever the message holds
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _terminate_like_ctrl_c():
    """SIGTERM (kill, a scheduler's time limit) raises Terminated in this process, so temp files are removed and
    one line is printed. Children forked later (loader workers) get the default action back."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        from kit.errors import Terminated

        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


_AFTER_INTERRUPT = {  # what to run after Ctrl-C, by command
    "train": "`kit train --resume` continues training",
    "calibrate": "run `kit calibrate` again (it starts over; the earlier calibrations are as they were)",
    "blend": "run `kit blend` again (it starts over; the earlier blend files are as they were)",
    "submissions": "the ledger is as it was; run `kit submissions` again",
    "dashboard": "the dashboard has stopped",
}


def _command_name(args: list[str]) -> str:
    """The command of a command line (`kit --config c.toml blend ...` -> 'blend'), or ''."""
    rest = iter(_config_first(args))
    for token in rest:
        if token in _CONFIG_FLAGS:
            next(rest, None)
        elif not token.startswith("-"):
            return token
    return ""


def _interrupted(terminated: bool = False) -> None:
    command = _command_name(sys.argv[1:])
    advice = _AFTER_INTERRUPT.get(command, f"run `kit {command}` again" if command else "run the command again")
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    err_console.print(f"{what}: files written so far are complete, none is half-written; {advice}", highlight=False, soft_wrap=True)
    sys.exit(143 if terminated else 130)
