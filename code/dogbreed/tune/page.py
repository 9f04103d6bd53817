"""The search's results: ``trials.json``/``trials.csv``, ``best_hyperparameters.json``, ``tune.html``
and a trials table in the log."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dogbreed.report.page import build_search_page
from dogbreed.report.search import SearchSummary, SearchTrial
from dogbreed.training.config import TrainConfig

log = logging.getLogger("dogbreed.tune")

OBJECTIVE = "valid_accuracy"


def summarise(study, searched: Sequence[str], seconds: float) -> SearchSummary:
    """The Optuna study as the report's :class:`SearchSummary`."""
    trials = [
        SearchTrial(
            number=t.number,
            state=t.state.name,
            value=t.value if t.state.name == "COMPLETE" else None,
            params=dict(t.params),
            best_epoch=t.user_attrs.get("best_epoch"),
            seconds=t.user_attrs.get("seconds"),
            history=list(t.user_attrs.get("history", [])),
        )
        for t in study.trials
    ]
    return SearchSummary(OBJECTIVE, list(searched), seconds, trials)


def write_results(study, config: TrainConfig, searched: Sequence[str], out_dir: Path, seconds: float) -> SearchSummary:
    """Write every result file into ``out_dir`` and log the trials table; returns the summary."""
    summary = summarise(study, searched, seconds)
    summary.write(out_dir)
    write_csv(summary, out_dir / "trials.csv")
    best = summary.best
    if best is not None:
        hyperparameters: dict[str, Any] = {**config.to_dict(), **best.params}
        (out_dir / "best_hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2) + "\n")
    for line in table(summary):
        log.info("%s", line)
    try:
        build_search_page(out_dir)
    except Exception as exc:  # noqa: BLE001 - the table and files are written; the page is a view of them
        log.warning("the search page could not be built (%s: %s)", type(exc).__name__, exc)
    return summary


def write_csv(summary: SearchSummary, path: Path) -> None:
    names = summary.searched
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", summary.objective, "best_epoch", "epochs", "seconds", *names])
        for t in summary.ranked():
            writer.writerow(
                [
                    t.number,
                    t.state.lower(),
                    "" if t.value is None else f"{t.value:.6f}",
                    t.best_epoch or "",
                    t.epochs,
                    "" if t.seconds is None else f"{t.seconds:.2f}",
                    *(t.params.get(n, "") for n in names),
                ]
            )


def table(summary: SearchSummary) -> list[str]:
    """The trials, best first, as aligned text lines."""
    lines = [f"{'trial':>5} {'state':<8} {summary.objective:>14} {'epochs':>6} {'seconds':>8}  hyperparameters"]
    for t in summary.ranked():
        value = "" if t.value is None else f"{t.value:.4f}"
        seconds = "" if t.seconds is None else f"{t.seconds:.1f}"
        lines.append(f"{t.number:>5} {t.state.lower():<8} {value:>14} {t.epochs:>6} {seconds:>8}  {t.params_text()}")
    return lines
