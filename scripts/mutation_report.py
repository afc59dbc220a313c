"""Mutation testing of the core modules with mutmut 3, and the report of its results.

Run from the repository root (``make mutation`` installs mutmut and calls this)::

    python scripts/mutation_report.py run                  # every module in [tool.mutmut] only_mutate
    python scripts/mutation_report.py run losses nn.isa    # a part: ocnet_edu.losses, ocnet_edu.nn.isa
    python scripts/mutation_report.py report               # rewrite docs/mutation/report.md only

``run`` calls ``mutmut run`` once per area (``nn``, ``heads``, ``engine``, ``losses``, ``metrics``,
``data.transforms``) in ``mutants/<area>/``, with the area's own test files
(``[tool.ocnet_edu.mutation.tests]`` in ``pyproject.toml``) as mutmut's test selection (mutants and
their results stay in ``mutants/``, which is not committed), times it, appends the run (command,
modules, wall time, machine) to ``docs/mutation/runs.jsonl`` and rewrites the report. ``report``
reads the results of the last run of every mutant from the area runs'
``mutants/<area>/mutants/**/*.meta`` merged with the committed store ``docs/mutation/results.json``
(results of earlier runs, per source file with its SHA-256, used while the file is unchanged),
rewrites the store, and takes the runs from ``runs.jsonl`` and the mutants judged equivalent (one
line each with the reason) from ``docs/mutation/equivalent.tsv``.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path.cwd()
DOCS = ROOT / "docs" / "mutation"
RUNS = DOCS / "runs.jsonl"
EQUIVALENT = DOCS / "equivalent.tsv"
REPORT = DOCS / "report.md"
RESULTS = DOCS / "results.json"
MUTANTS = ROOT / "mutants"

#: mutmut's exit codes of a mutant's test run, by the status it gives them (mutmut/stats.py)
STATUS_BY_EXIT_CODE = {
    1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
    35: "suspicious", 36: "timeout", 37: "caught by type check", -24: "timeout", 24: "timeout",
    152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault", 2: "not checked", None: "not checked",
}
COLUMNS = ["killed", "timeout", "survived", "equivalent", "no tests", "suspicious", "segfault", "not checked"]


def status_of(exit_code: int | None) -> str:
    """mutmut's name for the result of a mutant (an interrupted run is 'not checked'; anything else
    outside :data:`COLUMNS` is 'suspicious', as mutmut calls unknown exit codes)."""
    status = STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")
    return status if status in COLUMNS else "suspicious"


def module_globs(modules: list[str]) -> list[str]:
    """Mutant-name patterns of modules (``nn.isa``, ``heads``), functions or single mutants in mutmut's
    spelling (``engine.evaluate.x_sliding_window_logits``, ``losses.x_poly_lr_factor__mutmut_3``),
    relative to ``ocnet_edu``."""
    globs = []
    for m in (m.strip(".") for m in modules):
        last = m.rsplit(".", 1)[-1]
        if "__mutmut_" in last:  # one mutant
            globs.append(f"ocnet_edu.{m}")
        else:
            globs.append(f"ocnet_edu.{m}__mutmut_*" if last.startswith(("x_", "xǁ")) else f"ocnet_edu.{m}.*")
    return globs


def machine() -> str:
    """CPU model, cores and load average: the numbers a wall time needs beside it."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load} at the end"


def source_digest(source: str) -> str:
    """SHA-256 of a source file of the checkout (``ocnet_edu/...``): which version a result is of."""
    return hashlib.sha256((ROOT / source).read_bytes()).hexdigest()


RUN_DIGESTS = "sources.json"


def write_run_digests(work: Path) -> None:
    """Record, in ``mutants/<area>/sources.json``, the digest of every source file as a run of the
    area starts: mutmut's results there are of those versions (it regenerates the mutants of a
    changed function at each run), and only while a file keeps its digest are they its results."""
    digests = {path.relative_to(ROOT).as_posix(): source_digest(path.relative_to(ROOT).as_posix())
               for path in sorted((ROOT / "ocnet_edu").rglob("*.py"))}
    (work / RUN_DIGESTS).write_text(json.dumps(digests, indent=0, sort_keys=True) + "\n")


def read_run_digests(work: Path) -> dict[str, str]:
    """The digests :func:`write_run_digests` recorded for an area (none before its first run)."""
    path = work / RUN_DIGESTS
    return json.loads(path.read_text()) if path.exists() else {}


def read_mutmut_results() -> dict[str, dict[str, str]]:
    """``{source file: {mutant name: status}}`` from mutmut's ``*.py.meta`` files of the area runs
    (``mutants/<area>/mutants/``; each area's directory holds the results of the files it mutates)."""
    results: dict[str, dict[str, str]] = {}
    for root in sorted(p / "mutants" for p in MUTANTS.glob("*") if (p / "mutants").is_dir()):
        generated_from = read_run_digests(root.parent)
        for meta in sorted(root.glob("ocnet_edu/**/*.py.meta")):
            data = json.loads(meta.read_text())
            source = meta.relative_to(root).as_posix().removesuffix(".meta")
            # results of a version of the file other than the checkout's are not this file's results
            if data["exit_code_by_key"] and (ROOT / source).exists() and generated_from.get(source) == source_digest(source):
                results[source] = {name: status_of(code) for name, code in sorted(data["exit_code_by_key"].items())}
    return results


def read_results() -> dict[str, dict[str, str]]:
    """Every mutant's latest result: mutmut's (``mutants/``, not committed) where it has run the mutant,
    else the committed one (``docs/mutation/results.json``) if the source file is unchanged since.

    ``mutants/`` holds only what was run in this checkout; the committed store is what lets runs in
    parts, on different days or machines, add up. A result of a file that has changed since is dropped
    (its mutants count as not checked), since mutmut numbers the mutants of a function in order.
    """
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    fresh = read_mutmut_results()
    merged: dict[str, dict[str, str]] = {}
    for source in sorted(set(stored) | set(fresh)):
        if not (ROOT / source).exists():
            continue
        kept = stored.get(source, {})
        old = kept.get("mutants", {}) if kept.get("sha256") == source_digest(source) else {}
        new = fresh.get(source, {})
        merged[source] = {name: new[name] if new.get(name, "not checked") != "not checked" else old.get(name, "not checked")
                          for name in sorted(set(old) | set(new))}
    return merged


def store_results(results: dict[str, dict[str, str]]) -> None:
    """Write the checked results with each source file's digest to ``docs/mutation/results.json``
    (mutants not checked are left out: the next run's ``mutants/`` lists them again)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    checked = {source: {name: status for name, status in mutants.items() if status != "not checked"}
               for source, mutants in sorted(results.items())}
    RESULTS.write_text(json.dumps({source: {"sha256": source_digest(source), "mutants": mutants}
                                   for source, mutants in checked.items() if mutants}, indent=0, sort_keys=True) + "\n")


def read_equivalent() -> dict[str, str]:
    """``{mutant name: why it is equivalent}`` from ``equivalent.tsv`` (``#`` lines are comments)."""
    if not EQUIVALENT.exists():
        return {}
    reasons = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, reason = line.split("\t", 1)
            reasons[name.strip()] = reason.strip()
    return reasons


EINOPS_FUNCTIONS = {"rearrange", "reduce", "repeat", "einsum", "pack", "unpack"}
EINOPS_RENAME = ("an einops or einsum pattern with its axes renamed (upper/lower case) on both sides, in a call that gives no axis "
                 "size by keyword: the same operation (recognised by scripts/mutation_report.py)")


def mutant_source(source: str, function: str) -> ast.AST | None:
    """The syntax tree of the mutated copy of ``source`` (``ocnet_edu/...py``) that defines
    ``function`` (``x_f__mutmut_3``) in an area run's directory (each holds the whole package,
    mutated in its own area); None without one."""
    for path in sorted(MUTANTS.glob(f"*/mutants/{source}")):
        if path.is_file() and f"def {function}(" in (text := path.read_text()):
            return ast.parse(text)
    return None


def _function(tree: ast.AST, name: str) -> ast.FunctionDef | None:
    return next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name), None)


def is_einops_rename(name: str, source: str) -> bool:
    """Whether mutant ``name`` of ``source`` only changes the case of an einops pattern passed straight
    to an einops function without keyword arguments (``"n h w -> n 1 h w"`` to ``"N H W -> N 1 H W"``):
    the axis names are labels, so when they stay distinct the operation is the same. With an axis
    size given by keyword (``g=4``) the renamed pattern fails, so such calls are not accepted here."""
    function = name.rsplit(".", 1)[-1]
    tree = mutant_source(source, function)
    if tree is None:
        return False
    mutant, original = _function(tree, function), _function(tree, function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    if mutant is None or original is None:
        return False
    strings = [[n for n in ast.walk(f) if isinstance(n, ast.Constant) and isinstance(n.value, str)] for f in (original, mutant)]
    changed = [(a, b) for a, b in zip(*strings) if a.value != b.value]
    if len(strings[0]) != len(strings[1]) or len(changed) != 1:
        return False
    before, after = changed[0]
    tokens = set(re.findall(r"[A-Za-z_]\w*", before.value))
    if before.value.casefold() != after.value.casefold() or len({t.casefold() for t in tokens}) != len(tokens):
        return False
    calls = [n for n in ast.walk(mutant) if isinstance(n, ast.Call) and any(a is after for a in n.args)]
    if not calls or calls[0].keywords:
        return False
    func = calls[0].func
    if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) not in EINOPS_FUNCTIONS:
        return False
    after.value = before.value  # otherwise the same function?
    return [ast.dump(n) for n in (*original.args.args, *original.body)] == [ast.dump(n) for n in (*mutant.args.args, *mutant.body)]


def record_einops_renames(results: dict[str, dict[str, str]], equivalent: dict[str, str]) -> dict[str, str]:
    """Add the surviving einops renames (:func:`is_einops_rename`) not yet listed to ``equivalent.tsv``,
    where they can be read and reviewed like the others; return the updated reasons."""
    found = {name: EINOPS_RENAME for source, mutants in results.items() for name, status in mutants.items()
             if status == "survived" and name not in equivalent and is_einops_rename(name, source)}
    if found:
        EQUIVALENT.parent.mkdir(parents=True, exist_ok=True)
        with EQUIVALENT.open("a") as f:
            f.writelines(f"{name}\t{reason}\n" for name, reason in sorted(found.items()))
    return {**equivalent, **found}


def matching_area(module: str, areas) -> str | None:
    """The area of ``areas`` that holds ``module`` (a module, function or mutant name relative to
    ``ocnet_edu``: ``nn.isa`` is in ``nn``), the longest that matches; None if none does."""
    return next((name for name in sorted(areas, key=len, reverse=True)
                 if module == name or module.startswith(name + ".")), None)


def area(source: str, areas) -> str:
    """The area a source file (``ocnet_edu/nn/isa.py``) belongs to, or the module's own name."""
    module = ".".join(source.removesuffix(".py").split("/")[1:])
    return matching_area(module, areas) or module


def score(counts: Counter) -> str:
    """Killed (timeouts count as killed) over the non-equivalent mutants that were run or had no test."""
    judged = sum(counts[c] for c in COLUMNS if c not in ("equivalent", "not checked"))
    return "—" if judged == 0 else f"{100 * (counts['killed'] + counts['timeout']) / judged:.1f}%"


def table(rows: list[tuple[str, Counter]]) -> list[str]:
    """A markdown table: one row per name, the status counts, the score."""
    lines = ["| module | " + " | ".join(COLUMNS) + " | total | killed |", "|" + " --- |" * (len(COLUMNS) + 3)]
    for name, counts in rows:
        total = sum(counts[c] for c in COLUMNS)
        lines.append(f"| `{name}` | " + " | ".join(str(counts[c]) for c in COLUMNS) + f" | {total} | {score(counts)} |")
    return lines


def short(text: str, names: int = 3) -> str:
    """``text`` with a list of more than ``names`` module or mutant names cut to the first ones."""
    head, quote, rest = text.partition('"')
    listed = (rest.rstrip('"') if quote else text).split()
    if len(listed) <= names:
        return text
    cut = " ".join(listed[:names]) + f" … (+{len(listed) - names} more)"
    return f'{head}"{cut}"' if quote else cut


def write_report() -> str:
    """Rewrite ``docs/mutation/report.md`` (and the store, ``results.json``) from the results in
    ``mutants/`` and the store; return the report's text."""
    results, equivalent = read_results(), read_equivalent()
    areas = area_tests() if (ROOT / "pyproject.toml").exists() else {}
    store_results(results)
    equivalent = record_einops_renames(results, equivalent)
    by_file: dict[str, Counter] = {}
    by_area: dict[str, Counter] = defaultdict(Counter)
    survivors, explained = [], []
    for source, mutants in results.items():
        counts = Counter()
        for name, status in mutants.items():
            if status == "survived" and name in equivalent:
                status = "equivalent"
                explained.append((name, equivalent[name]))
            elif status in ("survived", "suspicious", "no tests"):
                survivors.append((name, status))
            counts[status] += 1
        by_file[source] = counts
        by_area[area(source, areas)] += counts
    for name in areas:
        by_area.setdefault(name, Counter())  # an area never run: a row of zeros, its total unknown
    total = sum(by_area.values(), Counter())
    runs = [json.loads(line) for line in RUNS.read_text().splitlines()] if RUNS.exists() else []
    stale = sorted(set(equivalent) - {name for name, _ in explained})
    out = [
        "# Mutation testing of the core modules",
        "",
        "Generated by `scripts/mutation_report.py` from mutmut's results (`mutants/`, not committed) and the",
        "committed store of earlier results (`docs/mutation/results.json`, kept per source file while the file is unchanged) — do",
        "not edit by hand. Run `make mutation` (everything) or `make mutation MODULES=\"losses nn.isa\"` (a part;",
        "names relative to `ocnet_edu`). Each area (`nn`, `heads`, `engine`, `losses`, `metrics`,",
        "`data.transforms`) runs in its own `mutants/<area>/` against its own test files",
        "(`pyproject.toml`, `[tool.ocnet_edu.mutation.tests]`, less the markers `[tool.mutmut]` leaves out), and",
        "mutmut runs, for each mutant, only those of them that called the mutated function. A mutant is *killed* when a test fails, *timeout* when the tests ran far longer",
        "than unmutated (counted as killed), *survived* when every test passed, *no tests* when no test calls",
        "its function (a gap, counted against the score), *equivalent* when it survived and",
        "`docs/mutation/equivalent.tsv` says why no test can tell it from the original (the script adds the",
        "einops patterns whose axes a mutant only renames by case, with that reason; the others are written by hand).",
        "**killed** = (killed + timeout) / (all − equivalent − not checked).",
        "",
        f"Checked so far: {sum(total.values()) - total['not checked']} of {sum(total.values())} mutants"
        " (not checked: never run yet; the scores are over the checked ones).",
        "",
        "## By area",
        "",
        *table(sorted(by_area.items()) + [("all", total)]),
        "",
        "## By file",
        "",
        *table(sorted(by_file.items())),
        "",
        "## Runs",
        "",
        "Each run re-runs every mutant of the modules it names; the tables above hold the latest result of",
        "each mutant. Wall times include, on a fresh `mutants/<area>/`, generating the mutants and recording",
        "which test calls what (about 6 min for the whole suite before areas had their own tests).",
        "",
        "| ended (UTC) | command | modules | mutants run | wall time | machine |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {r['date']} | `{short(r['command'])}` | {short(r['modules'])} | {r['mutants']} | {r['wall_s'] / 60:.1f} min |"
          f" {r['machine']} |" for r in runs),
        "",
        f"## Surviving mutants not explained ({len(survivors)})",
        "",
        *([f"- `{name}` ({status})" for name, status in survivors] or ["None."]),
        "",
        f"## Equivalent mutants ({len(explained)})",
        "",
        "`mutmut show NAME` prints the change.",
        "",
        *([f"- `{name}`: {why}" for name, why in sorted(explained)] or ["None."]),
        "",
    ]
    if stale:
        out += ["## Listed as equivalent but not surviving now", "", *(f"- `{name}`" for name in stale), ""]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(out))
    return "\n".join(out)


def area_of_module(module: str) -> str:
    """The area (a key of ``[tool.ocnet_edu.mutation.tests]``) of a module, function or mutant name
    relative to ``ocnet_edu``: ``nn.isa`` is in ``nn``, ``data.transforms.xǁComposeǁ__call__`` in
    ``data.transforms``; exits naming the areas if it is in none."""
    areas = area_tests()
    name = matching_area(module, areas)
    if name is not None:
        return name
    raise SystemExit(f"mutation_report: {module!r} is in none of the areas of "
                     f"[tool.ocnet_edu.mutation.tests] in pyproject.toml: {', '.join(sorted(areas))}")


def area_tests() -> dict[str, list[str]]:
    """``{area: test files}`` from ``pyproject.toml`` (``[tool.ocnet_edu.mutation.tests]``)."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ocnet_edu"]["mutation"]["tests"]


def area_pyproject(area_name: str) -> str:
    """``pyproject.toml`` for mutmut's run of one area: the repository's, with ``[tool.mutmut]``
    mutating only the area and selecting its tests (with the repository's ``-m`` marker filter)."""
    text = (ROOT / "pyproject.toml").read_text()
    config = tomllib.loads(text)["tool"]["mutmut"]
    prefix = "ocnet_edu/" + area_name.replace(".", "/")
    only = [g for g in config["only_mutate"] if g == prefix + ".py" or g.startswith(prefix + "/")]
    selection = config["pytest_add_cli_args_test_selection"]
    marker = selection[selection.index("-m") + 1]
    config = {**config, "only_mutate": only, "pytest_add_cli_args_test_selection": [*area_tests()[area_name], "-m", marker]}
    # JSON arrays of plain strings and JSON strings are valid TOML
    table = "[tool.mutmut]\n" + "".join(f"{key} = {json.dumps(value, ensure_ascii=False)}\n" for key, value in config.items())
    start = text.index("[tool.mutmut]")
    end = text.find("\n[", start + 1)
    return text[:start] + table + (text[end + 1:] if end != -1 else "")


def prepare_area(area_name: str) -> Path:
    """``mutants/<area>/``: mutmut's working directory for the area, with links to the package, the
    tests and the configs and its own ``pyproject.toml``; mutmut keeps the area's mutants, results
    and record of which test calls what in ``mutants/<area>/mutants/`` from run to run."""
    work = MUTANTS / area_name
    work.mkdir(parents=True, exist_ok=True)
    for name in ("ocnet_edu", "tests", "configs"):
        link = work / name
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", name))
    pyproject = work / "pyproject.toml"
    text = area_pyproject(area_name)
    if not pyproject.exists() or pyproject.read_text() != text:
        pyproject.write_text(text)
    return work


def run(modules: list[str], jobs: int) -> int:
    """``mutmut run`` over ``modules`` (every area when empty), one area at a time in its own working
    directory with its own tests, timed and logged; then the report."""
    tests = area_tests()
    by_area: dict[str, list[str]] = defaultdict(list)
    for module in modules or sorted(tests):
        by_area[area_of_module(module)].append(module)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    code = 0
    for area_name, parts in by_area.items():
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *module_globs(parts)]
        print(f"mutation_report: area {area_name} ({len(tests[area_name])} test files)", flush=True)
        work = prepare_area(area_name)
        write_run_digests(work)
        code = subprocess.run(command, env=env, cwd=work, check=False).returncode or code
    wall = time.monotonic() - start
    checked = sum(1 for m in read_results().values() for n, s in m.items()
                  if any(fnmatch.fnmatchcase(n, g) for g in module_globs(modules) or ["ocnet_edu.*"]) and s != "not checked")
    entry = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": "make mutation" + (f' MODULES="{" ".join(modules)}"' if modules else ""),
        "modules": " ".join(modules) or "all",
        "mutants": checked,
        "wall_s": round(wall, 1),
        "machine": machine(),
        "exit_code": code,
    }
    DOCS.mkdir(parents=True, exist_ok=True)
    with RUNS.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    write_report()
    print(f"mutmut exited {code} after {wall / 60:.1f} min; report in {REPORT.relative_to(ROOT)}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run mutmut over some modules (default: all), then write the report")
    run_parser.add_argument("modules", nargs="*", help="modules relative to ocnet_edu, e.g. losses nn.isa heads")
    run_parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    sub.add_parser("report", help="rewrite docs/mutation/report.md from mutants/")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.modules, args.jobs)
    print(write_report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
