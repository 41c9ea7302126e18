"""`minitron run RECIPE --verify`: rerun a recipe from nothing into a scratch folder and check that its findings
come out as the committed ones say.

    minitron run recipes/tiny/smoke.yaml --verify               # CI: scratch under work/verify/, exit 1 on a change
    minitron run recipes/smollm2.yaml --verify --work-dir /tmp/v

Two checks, against the findings folder the recipe names (`findings.out`, committed under results/):
- every verdict (paper figure and claim) must have the same outcome: held, did not hold, inconclusive, not
  testable, or the same under one seed;
- every headline number, i.e. each numeric cell of the findings' tables, must lie within the recipe's stated
  relative tolerance (`findings.tolerance`, default 0.05) of the committed one. Throughput is left to its
  verdict: tokens per second belong to the machine, not to the recipe. Columns of counts (tokens, params,
  seeds), of spreads and of differences between columns are not headline numbers.
The report (`verify.md` in the scratch folder, and the log) lists every change; nothing is written into the
committed folder.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from minitron.core.errors import MissingInput, RunFailed

log = logging.getLogger("minitron")

DEFAULT_TOLERANCE = 0.05
SKIPPED_TABLES = ("throughput.csv",)
"""Machine-dependent: their verdicts are compared, their numbers are not."""
SKIPPED_COLUMNS = ("tokens", "params", "seeds", "draws", "final_sd", "start", "end", "block_len")


class VerificationFailed(RunFailed):
    """A rerun's verdict or headline number differs from the committed findings beyond the stated tolerance."""


@dataclass
class Change:
    what: str
    committed: str
    rerun: str


def _verdicts(folder: Path) -> dict[tuple[str, str], str]:
    from minitron import findings

    table = pd.read_csv(folder / "findings.csv")
    outcomes = {}
    for row in table.to_dict("records"):
        fields = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
                  if k in findings.Verdict.__dataclass_fields__}
        outcomes[(row["figure"], row["claim"])] = findings.Verdict(**fields).outcome
    return outcomes


def _numbers(folder: Path) -> dict[str, float]:
    """Every headline number of the findings' tables, keyed 'table / row / column'."""
    found = {}
    for path in sorted(folder.glob("*.csv")):
        if path.name in ("findings.csv",) + SKIPPED_TABLES:
            continue
        table = pd.read_csv(path)
        key = table.columns[0]
        if key == "method":  # the depth scan: a row is a removed layer set
            table.insert(0, "row", table["method"] + " " + table["layers"].astype(str))
            key = "row"
        for row in table.to_dict("records"):
            for column, value in row.items():
                if (column == key or column in SKIPPED_COLUMNS or " vs " in column
                        or not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)):
                    continue
                found[f"{path.stem} / {row[key]} / {column}"] = float(value)
    return found


def compare(committed: Path, rerun: Path, tolerance: float = DEFAULT_TOLERANCE) -> tuple[list[Change], int, int]:
    """The changes from `committed` to `rerun` findings, and how many verdicts and numbers were compared."""
    if not (committed / "findings.csv").is_file():
        raise MissingInput(f"no committed findings at {committed} (findings.csv): run the recipe without "
                                "--verify first, and commit its findings folder")
    changes = []
    old_verdicts, new_verdicts = _verdicts(committed), _verdicts(rerun)
    for key in old_verdicts.keys() | new_verdicts.keys():
        old, new = old_verdicts.get(key, "absent"), new_verdicts.get(key, "absent")
        if old != new:
            changes.append(Change(f"verdict: {key[0]}: {key[1]}", old, new))
    old_numbers, new_numbers = _numbers(committed), _numbers(rerun)
    for key in sorted(old_numbers.keys() | new_numbers.keys()):
        old, new = old_numbers.get(key), new_numbers.get(key)
        if old is None or new is None:
            changes.append(Change(key, "absent" if old is None else f"{old:.4g}", "absent" if new is None else f"{new:.4g}"))
        elif abs(new - old) > tolerance * abs(old) + 1e-6:
            changes.append(Change(key, f"{old:.4g}", f"{new:.4g} ({(new - old) / abs(old or 1):+.1%})"))
    return changes, len(old_verdicts), len(old_numbers)


def report(changes: list[Change], verdicts: int, numbers: int, tolerance: float, committed: Path) -> str:
    head = (f"verify against {committed}: {verdicts} verdicts and {numbers} numbers compared (relative tolerance "
            f"{tolerance:g}): ")
    if not changes:
        return head + "every verdict the same, every number within tolerance\n"
    table = pd.DataFrame([vars(c) for c in changes]).to_markdown(index=False)
    return head + f"{len(changes)} changed\n\n{table}\n"


def verify(committed: Path, rerun: Path, tolerance: float, out: Path) -> None:
    """Compare, write the report to `out`, log it, and raise VerificationFailed on any change."""
    changes, verdicts, numbers = compare(committed, rerun, tolerance)
    text = report(changes, verdicts, numbers, tolerance, committed)
    out.write_text(text)
    log.info("%s", text.rstrip())
    if changes:
        raise VerificationFailed(f"{len(changes)} finding(s) changed against {committed}; the list: {out}")
