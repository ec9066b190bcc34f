"""The demo's stages, timed for two versions of the kit on this machine in one run: each stage's time ratio, and
the stages more than 10% slower than before named (exit status 1).

The two versions: `--new` (default: this checkout, uncommitted changes included) and `--base` (a git ref, default
the last tag or else HEAD~1, or a folder). Each is copied into a temporary folder (a ref through `git archive`) and
run with this interpreter's packages (PYTHONPATH = the copy), so nothing is installed. The commands are each
version's own `make -n demo` (its Makefile is the one list of the demo's stages), its `kit` lines only; the same
stage of the two versions runs back to back (the order alternating by repeat), so both see the same load.

By default a small demo (`--n-train 300 --size 32`, `--epochs 1 --image-size 32 --folds 2`, written into a copy of
the configs, the same for both versions); `--full` runs the demo as `make demo` does. The figure a stage gets is
its command's wall time (interpreter start and imports included), the median over `--repeats`.

Run: `.venv/bin/python -m benchmarks.bench_stages [--base REF|DIR] [--repeats 3] [--full]`;
results in benchmarks/results/bench_stages.json (machine, load, versions, per-stage seconds and ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "bench_stages.json"
BENCH_CONFIG = "configs/bench_stages.toml"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_stages", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="git ref or folder of the version to compare against (default: the last tag, else HEAD~1)")
    p.add_argument("--new", default=str(REPO), help="folder of the version under test (default: this checkout)")
    p.add_argument("--repeats", type=int, default=1, help="whole demos per version (median per stage)")
    p.add_argument("--threshold", type=float, default=0.10, help="a stage slower by more than this fraction is named")
    p.add_argument("--min-seconds", type=float, default=0.5, help="... and by more than this many seconds (timer noise)")
    p.add_argument("--full", action="store_true", help="the demo as `make demo` runs it (its data size, epochs, folds)")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--size", type=int, default=32, help="synthetic image side in pixels")
    p.add_argument("--epochs", type=int, default=1, help="every variant's epochs")
    p.add_argument("--image-size", type=int, default=32, help="every variant's input size")
    p.add_argument("--folds", type=int, default=2, help="folds.n_folds")
    p.add_argument("--variants", help="comma list of the variants to train (default: the config's)")
    p.add_argument("--make-target", action="append", default=[], metavar="TARGET",
                   help="also time `make TARGET` (e.g. test, test-fast) of each version as one stage, after the demo; repeatable")
    p.add_argument("--out", default=str(RESULTS), help="results JSON ('' to write none)")
    return p.parse_args(argv)


def default_base() -> str:
    tag = subprocess.run(["git", "describe", "--tags", "--abbrev=0"], cwd=REPO, capture_output=True, text=True)
    return tag.stdout.strip() if tag.returncode == 0 and tag.stdout.strip() else "HEAD~1"


def materialize(version: str, dest: Path) -> str:
    """Copy `version` (a git checkout: its tracked and untracked-but-not-ignored files; another folder: all but
    .venv, data, runs and caches; or a git ref of this repository) to `dest`; what it is, in words."""
    if Path(version).is_dir() and not (Path(version) / ".git").exists():  # a plain copy of the kit (the test makes one)
        root = Path(version).resolve()

        def outputs(folder: str, names: list[str]) -> set[str]:  # the demo's outputs at the top only (kit/data is code)
            top = {".git", ".venv", ".cache", "data", "runs"} if Path(folder).resolve() == root else set()
            return {n for n in names if n in top or n == "__pycache__"}

        shutil.copytree(root, dest, ignore=outputs)
        return str(Path(version).resolve())
    dest.mkdir(parents=True)
    if Path(version).is_dir():
        src = Path(version).resolve()
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, capture_output=True, check=True)
        for name in filter(None, listed.stdout.decode().split("\0")):
            if (src / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / name, dest / name)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=src, capture_output=True, text=True).stdout.strip()
        return f"{src} at {head}{' with uncommitted changes' if dirty else ''}"
    commit = subprocess.run(["git", "rev-parse", "--short", f"{version}^{{commit}}"], cwd=REPO, capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--base {version}: neither a folder nor a git ref of {REPO}")
    archive = subprocess.run(["git", "archive", "--format=tar", commit.stdout.strip()], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return f"{version} ({commit.stdout.strip()})"


def set_keys(path: Path, values: dict[str, str]) -> None:
    """Set top-level-looking `key = value` lines of a TOML file (the demo's configs have each key once)."""
    text = path.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
        if n != 1:
            raise SystemExit(f"{path}: expected one '{key} = ...' line to set for the small demo, found {n}")
    path.write_text(text)


def small_demo(tree: Path, args: argparse.Namespace) -> None:
    """The same small-demo settings in a version's copy: configs/bench_stages.toml and its variants' epochs and size."""
    config = (tree / "configs" / "competition.toml").read_text()
    (tree / BENCH_CONFIG).write_text(config)
    values = {"n_folds": str(args.folds)}
    if args.variants:
        values["variants"] = json.dumps(args.variants.split(","))
    set_keys(tree / BENCH_CONFIG, values)
    variants = args.variants.split(",") if args.variants else json.loads(re.search(r"(?m)^variants\s*=\s*(\[[^\]]*\])", config).group(1))
    for v in variants:
        set_keys(tree / "configs" / "models" / f"{v}.toml", {"epochs": str(args.epochs), "image_size": str(args.image_size)})


def demo_commands(tree: Path, args: argparse.Namespace) -> list[list[str]]:
    """The version's `make demo` commands that run `kit` (in order), with this interpreter's environment."""
    make = ["make", "-n", "--no-print-directory", "-C", str(tree), "demo", f"VENV={sys.prefix}"]
    if not args.full:
        make += [f"CONFIG={BENCH_CONFIG}", f"SYNTH_ARGS=--n-train {args.n_train} --n-test {args.n_test} --size {args.size}"]
    lines = subprocess.run(make, capture_output=True, text=True, check=True).stdout.splitlines()
    kit = str(Path(sys.prefix) / "bin" / "kit")
    commands = [shlex.split(line) for line in lines if line.startswith(kit + " ")]
    return [c for c in commands if stage_of(c) != "timings"]  # the log's own bookkeeping, not a stage


def target_commands(tree: Path, target: str) -> list[list[str]]:
    """`make -n TARGET`'s lines that run this interpreter's tools (ruff, pytest), to run back to back as one stage."""
    lines = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(tree), target, f"VENV={sys.prefix}"],
                           capture_output=True, text=True).stdout.splitlines()
    return [shlex.split(line) for line in lines if line.startswith(str(Path(sys.prefix) / "bin") + "/")]


def stage_of(command: list[str]) -> str:
    rest = iter(command[1:])
    for word in rest:
        if word in ("--config", "-c"):
            next(rest, None)
        elif not word.startswith("-"):
            return word
    return "?"


def run_stage(tree: Path, commands: list[list[str]], log: Path) -> float:
    """Seconds to run `commands` one after another in `tree` with its own kit; a failure stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    for command in commands:
        with open(log, "a") as f:
            f.write(f"$ {shlex.join(command)}\n")
            f.flush()
            done = subprocess.run(command, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise SystemExit(f"{tree}: `{shlex.join(command[1:])}` failed (exit {done.returncode}); its output ends:\n{tail}")
    return time.perf_counter() - start


def keyed(commands: list[list[str]]) -> dict[str, list[list[str]]]:
    """Stage names, a repeated command numbered (`blend`, `blend#2`) so the two versions pair up."""
    out, seen = {}, {}
    for c in commands:
        s = stage_of(c)
        seen[s] = seen.get(s, 0) + 1
        out[s if seen[s] == 1 else f"{s}#{seen[s]}"] = [c]
    return out


def compare(args: argparse.Namespace, console: Console) -> dict:
    base_version = args.base or default_base()
    load_before = os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_stages_") as tmp:
        described, commands = {}, {}
        for rep in range(args.repeats):
            trees = {}
            for side, version in (("base", base_version), ("new", args.new)):
                trees[side] = Path(tmp) / f"{side}{rep}"
                described[side] = materialize(version, trees[side])
                if not args.full:
                    small_demo(trees[side], args)
                commands[side] = keyed(demo_commands(trees[side], args))
                for target in args.make_target:
                    if target_commands(trees[side], target):
                        commands[side][f"make {target}"] = target_commands(trees[side], target)
            stages = list(dict.fromkeys([*commands["new"], *commands["base"]]))  # in the new demo's order
            order = ("base", "new") if rep % 2 == 0 else ("new", "base")
            for stage in stages:
                for side in order:
                    if stage in commands[side]:
                        seconds = run_stage(trees[side], commands[side][stage], Path(tmp) / f"{side}{rep}.log")
                        times.setdefault(stage, {"base": [], "new": []})[side].append(seconds)
                        console.print(f"repeat {rep + 1}/{args.repeats} {side:>4} {stage:<10} {seconds:7.1f} s", highlight=False)
            for tree in trees.values():
                shutil.rmtree(tree, ignore_errors=True)
    rows = []
    for stage, t in times.items():
        base, new = (statistics.median(t[s]) if t[s] else None for s in ("base", "new"))
        ratio = new / base if base and new else None
        slower = bool(ratio and ratio > 1 + args.threshold and new - base > args.min_seconds)
        rows.append({"stage": stage, "command": " && ".join(shlex.join(c[1:]) for c in commands["new" if stage in commands["new"] else "base"][stage]),
                     "base_s": t["base"], "new_s": t["new"], "base_median_s": base, "new_median_s": new,
                     "ratio": round(ratio, 3) if ratio else None, "slower": slower})
    total_base = sum(r["base_median_s"] or 0 for r in rows)
    total_new = sum(r["new_median_s"] or 0 for r in rows)
    return {
        "base": described["base"], "new": described["new"],
        "settings": {"full_demo": args.full, "repeats": args.repeats, "threshold": args.threshold, "min_seconds": args.min_seconds,
                     **({} if args.full else {k: getattr(args, k) for k in ("n_train", "n_test", "size", "epochs", "image_size", "folds", "variants")})},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_1min_before": round(load_before[0], 2), "load_1min_after": round(os.getloadavg()[0], 2),
                    "bytecode_cache": "off (PYTHONDONTWRITEBYTECODE): every command compiles what it imports"
                    if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on",
                    "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
        "stages": rows, "total": {"base_s": round(total_base, 2), "new_s": round(total_new, 2),
                                  "ratio": round(total_new / total_base, 3) if total_base else None},
        "slower": [r["stage"] for r in rows if r["slower"]],
    }


def print_result(result: dict, console: Console) -> None:
    table = Table(title=f"demo stages: {result['new']} vs {result['base']} (median of {result['settings']['repeats']}; "
                        f"load {result['machine']['load_1min_before']} → {result['machine']['load_1min_after']} on {result['machine']['cpus']} CPUs)")
    for column in ("stage", "base s", "new s", "new / base", ""):
        table.add_column(column, justify="left" if column in ("stage", "") else "right")
    for r in result["stages"]:
        fmt = lambda s: "-" if s is None else f"{s:.1f}"  # noqa: E731
        mark = f"[bold red]SLOWER by more than {result['settings']['threshold']:.0%}" if r["slower"] else ""
        table.add_row(r["stage"], fmt(r["base_median_s"]), fmt(r["new_median_s"]), "-" if r["ratio"] is None else f"{r['ratio']:.2f}", mark)
    total = result["total"]
    table.add_row("[bold]total", f"{total['base_s']:.1f}", f"{total['new_s']:.1f}", f"{total['ratio']:.2f}" if total["ratio"] else "-", "")
    console.print(table)
    if result["slower"]:
        console.print(f"[bold red]slower stages: {', '.join(result['slower'])}", highlight=False)
    else:
        console.print("no stage more than the threshold slower", highlight=False)


def main(argv: list[str] | None = None) -> dict:
    """`python -m benchmarks bench_stages` calls this with no arguments: the small demo against the default base."""
    console = Console()
    args = parse(argv if argv is not None else [])
    result = compare(args, console)
    print_result(result, console)
    if args.out and argv is not None:  # the benchmarks runner writes its own copy of the result
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"results in {args.out}", highlight=False)
    return result


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:])["slower"] else 0)
