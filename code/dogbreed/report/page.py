"""Build ``report.html`` (one self-contained file: figures inlined) and the PNG figures beside it.

Each part (curves, rules, profile, results) is built on its own: a part whose data is
missing or unreadable becomes a warning at the top of the page, never a broken report.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from dogbreed.job_outputs import (
    CONFUSION_MATRIX_FILE,
    CORRECT,
    DATA_CHECK_FILE,
    EXPLANATIONS_DIR,
    METRICS_FILE,
    MISTAKE,
    REPORT_FILE,
    SEARCH_DIR,
    DataCheck,
    ExplainedPhoto,
    ExplanationsIndex,
)
from dogbreed.profile_format import Profile, load_profile
from dogbreed.report.bottlenecks import evaluate_bottlenecks
from dogbreed.report.data import SplitResults, StepSplit, SystemSeries, read_curves
from dogbreed.report.search import TRIALS_FILE, SearchSummary

log = logging.getLogger(__name__)

DATA_FILE = "report.json"  # the rule and bottleneck verdicts, for programs
FIGURES_DIR = "report_figures"
SPLITS = ("valid", "test")
# The job writes overlays of about 20 KB (JPEG, 384 pixels); anything far bigger is not inlined.
MAX_INLINE_BYTES = 512 * 1024
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@dataclass
class Figure:
    section: str
    name: str  # the PNG's file name, without .png
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Picture:
    """An image file inlined into the page, with its caption."""

    caption: str
    data_uri: str


@dataclass
class PhotoCard:
    """One explained test photo: its caption and its overlays (a mistake: predicted, then true class)."""

    caption: str
    pictures: list[Picture]


@dataclass
class ExplainedSection:
    """The class activation maps section: the worst mistakes and correct photos, and how they were chosen."""

    mistakes: list[PhotoCard]
    correct: list[PhotoCard]
    correct_rule: str


@dataclass
class ClassCounts:
    """One class in the Data section: its images per split beside its test accuracy and loss weight."""

    name: str
    counts: list[int]  # in DataSection.splits' order
    test_accuracy: float | None  # None: no test results
    weight: float | None  # None: class_weights=none


@dataclass
class Finding:
    """One kind of finding of the data check, with every file it names."""

    key: str
    what: str
    files: list[str]


@dataclass
class DataSection:
    """The data check's counts and findings (``data_check.json``)."""

    splits: list[str]
    classes: list[ClassCounts]
    unreadable: dict[str, int]
    findings: list[Finding]
    seconds: float

    def train_images(self, name: str) -> int | None:
        """The class's training images (None: a class the check did not see), for the results' tables."""
        if "train" not in self.splits:
            return None
        column = self.splits.index("train")
        return next((row.counts[column] for row in self.classes if row.name == name), None)


@dataclass
class Card:
    key: str
    label: str
    value: str


@dataclass
class VerdictRow:
    """One rule or bottleneck check as the page shows it."""

    name: str
    verdict: str  # "issues found", "no issues", "not evaluated"
    css: str
    message: str
    step: int | None = None
    advice: str = ""

    @property
    def finding(self) -> str:
        return self.message


@dataclass
class EpochRow:
    epoch: int
    train_loss: float
    train_accuracy: float
    valid_loss: float
    valid_accuracy: float


@dataclass
class ReportPage:
    """Everything the template shows."""

    title: str
    subtitle: str
    kind: str = "training"  # or "search": the hyperparameter search's own page
    cards: list[Card] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    epochs: list[EpochRow] = field(default_factory=list)
    rules: list[VerdictRow] = field(default_factory=list)
    bottlenecks: list[VerdictRow] = field(default_factory=list)
    operator_columns: list[str] = field(default_factory=list)
    operators: list[list[str]] = field(default_factory=list)
    splits: list[SplitResults] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    search: SearchSummary | None = None
    explained: ExplainedSection | None = None
    data_check: DataSection | None = None
    search_cards: list[Card] = field(default_factory=list)
    # The verdicts as plain data, written beside the page as report.json.
    data: dict[str, list] = field(default_factory=lambda: {"rules": [], "bottlenecks": []})

    def figures_in(self, section: str) -> list[Figure]:
        return [f for f in self.figures if f.section == section]


def verdict_row(
    name: str, evaluated: bool, triggered: bool, message: str, step: int | None = None, advice: str = ""
) -> VerdictRow:
    if not evaluated:
        return VerdictRow(name, "not evaluated", "unknown", message, step, advice)
    if triggered:
        return VerdictRow(name, "issues found", "issues", message, step, advice)
    return VerdictRow(name, "no issues", "ok", message, step, advice)


def _part(page: ReportPage, what: str, build: Callable[[], None]) -> None:
    """Run one part of the report; its failure becomes a warning on the page and in the log."""
    try:
        build()
    except Exception as exc:  # noqa: BLE001 - one missing part must not lose the others
        reason = f"{what}: not available ({type(exc).__name__}: {exc})"
        log.warning("report: %s", reason)
        page.warnings.append(reason)


def add_summary(page: ReportPage, metrics: dict[str, Any]) -> None:
    final = metrics.get("final", {})
    names = [
        ("valid_accuracy", "valid accuracy (best epoch)"),
        ("test_accuracy", "test accuracy"),
        ("valid_loss", "valid loss (best epoch)"),
        ("test_loss", "test loss"),
        ("best_epoch", "best epoch"),
        ("epochs_trained", "epochs trained"),
    ]
    for key, label in names:
        if key in final:
            value = final[key]
            page.cards.append(Card(key, label, f"{value:.4f}" if isinstance(value, float) else str(value)))
    page.hyperparameters = dict(metrics.get("hyperparameters", {}))


def add_curves(page: ReportPage, trial_dir: Path, best_epoch: int | None) -> None:
    from dogbreed.report import figures  # noqa: PLC0415 - matplotlib only when drawing (training.job imports us)

    steps, epochs = read_curves(trial_dir)
    if not steps.steps:
        raise ValueError(f"the trial {trial_dir} has no training steps")
    page.figures.append(Figure("curves", "steps", "Training loss and accuracy per step", figures.step_curves(steps)))
    if epochs.epochs:
        page.figures.append(
            Figure("curves", "epochs", "Loss and accuracy per epoch", figures.epoch_curves(epochs, best_epoch))
        )
    page.epochs = [
        EpochRow(*row)
        for row in zip(
            epochs.epochs,
            epochs.train_loss,
            epochs.train_accuracy,
            epochs.valid_loss,
            epochs.valid_accuracy,
            strict=True,
        )
    ]


def add_results(page: ReportPage, output_dir: Path) -> None:
    from dogbreed.report import figures  # noqa: PLC0415 - matplotlib only when drawing (training.job imports us)

    for split in SPLITS:
        if not (output_dir / split / CONFUSION_MATRIX_FILE).is_file():
            continue
        results = SplitResults.from_csv(output_dir / split)
        page.splits.append(results)
        title = f"{split} confusion matrix"
        page.figures.append(
            Figure(
                f"confusion-{split}",
                f"confusion_{split}",
                title,
                figures.confusion_matrix(results.matrix, results.classes, title),
            )
        )


def add_data_check(page: ReportPage, output_dir: Path) -> None:
    """The Data section: images per class and split beside the test accuracy, and the check's findings
    (call after :func:`add_results`, whose test split it reads)."""
    check = DataCheck.read(output_dir)
    test = next((s for s in page.splits if s.split == "test"), None)
    accuracy = {r.name: r.accuracy for r in test.per_class()} if test else {}
    weights = check.class_weights or [None] * len(check.classes)
    splits = list(check.counts)
    rows = [
        ClassCounts(name, [check.counts[s][i] for s in splits], accuracy.get(name), weight)
        for i, (name, weight) in enumerate(zip(check.classes, weights, strict=True))
    ]
    findings = [
        Finding("leaks", "in two splits (leakage)", [f"{leak.first} = {leak.second}" for leak in check.leaks]),
        Finding("duplicates", "identical within a split", [" = ".join(group) for group in check.duplicates]),
        Finding("small", f"smaller than the {check.image_size}-pixel crop", list(check.small)),
        Finding("grey", "greyscale", list(check.grey)),
        Finding("cmyk", "CMYK", list(check.cmyk)),
    ]
    page.data_check = DataSection(splits, rows, dict(check.unreadable), findings, check.seconds)
    if check.leaks:  # the test figures may be flattered: say so at the top
        pairs = sorted({leak.pair for leak in check.leaks})
        page.warnings.append(
            f"data: {len(check.leaks)} files are in two splits ({', '.join(pairs)}): leakage, see Data"
        )


def inline(path: Path) -> str:
    """A ``data:`` URI of an image file (JPEG or PNG, at most :data:`MAX_INLINE_BYTES`)."""
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path.name} is not a JPEG or PNG file")
    if path.stat().st_size > MAX_INLINE_BYTES:
        raise ValueError(f"{path.name} is {path.stat().st_size} bytes, over {MAX_INLINE_BYTES}")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def photo_card(photo: ExplainedPhoto, directory: Path) -> PhotoCard:
    """The captions say what the model answered, and whose map each overlay is."""
    if photo.kind == MISTAKE:
        caption = f"true {photo.true_label}, predicted {photo.predicted_label} ({photo.probability:.1%})"
        captions = [
            f"map of {photo.predicted_label} (predicted)",
            f"map of {photo.true_label} (true class, {photo.true_probability:.1%})",
        ]
    else:
        caption = f"{photo.true_label}, predicted with {photo.probability:.1%}"
        captions = [f"map of {photo.predicted_label}"]
    pictures = [Picture(text, inline(directory / m.file)) for text, m in zip(captions, photo.maps, strict=True)]
    return PhotoCard(caption, pictures)


def add_explanations(page: ReportPage, output_dir: Path) -> None:
    """The overlays the job wrote for its worst test mistakes and most confident correct photos."""
    directory = output_dir / EXPLANATIONS_DIR
    explanations = ExplanationsIndex.read(directory)
    correct = explanations.of_kind(CORRECT)
    if len(correct) < explanations.classes_with_correct:
        rule = (
            f"the most confident correct photo of each of the {len(correct)} classes with the lowest test "
            f"accuracy (of the {explanations.classes_with_correct} classes with a correct test photo)"
        )
    else:
        rule = "the most confident correct photo of each class that has one"
    page.explained = ExplainedSection(
        [photo_card(p, directory) for p in explanations.of_kind(MISTAKE)],
        [photo_card(p, directory) for p in correct],
        rule,
    )


def add_search(page: ReportPage, search_dir: Path) -> None:
    """The hyperparameter search that chose this job's hyperparameters (``tune/trials.json``)."""
    from dogbreed.report import figures  # noqa: PLC0415 - matplotlib only when drawing (training.job imports us)

    summary = SearchSummary.read(search_dir)
    page.search = summary
    best = summary.best
    page.search_cards = [
        Card("search_best", f"best {summary.objective}", f"{best.value:.4f}" if best else "none"),
        Card(
            "search_trials",
            "trials (complete / pruned / failed)",
            f"{summary.count('COMPLETE')} / {summary.count('PRUNED')} / {summary.count('FAIL')}",
        ),
        Card("search_seconds", "search wall time", f"{summary.seconds:.0f} s"),
    ]
    page.figures.append(
        Figure(
            "search",
            "search_trials",
            "Trials of the hyperparameter search",
            figures.search_trials(summary.trials, summary.objective),
        )
    )


def build_search_page(search_dir: Path, title: str = "dogbreed hyperparameter search") -> Path:
    """The search's own page, ``tune.html`` (and its figures) in ``search_dir``."""
    page = ReportPage(title=title, subtitle=f"built {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", kind="search")
    add_search(page, Path(search_dir))
    return write_report(page, Path(search_dir), "tune.html")


def render(page: ReportPage) -> str:
    environment = Environment(loader=PackageLoader("dogbreed.report", "."), autoescape=select_autoescape(["j2"]))
    return environment.get_template("report.html.j2").render(report=page)


def write_report(page: ReportPage, output_dir: Path, name: str = REPORT_FILE) -> Path:
    """``report.html`` (or ``name``), ``report.json`` and ``report_figures/*.png`` into ``output_dir``."""
    figures_dir = output_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    for figure in page.figures:
        (figures_dir / f"{figure.name}.png").write_bytes(figure.png)
    path = output_dir / name
    path.write_text(render(page), encoding="utf-8")
    (output_dir / DATA_FILE).write_text(json.dumps({**page.data, "warnings": page.warnings}, indent=2) + "\n")
    return path


def build_report(
    output_dir: Path,
    trial_dir: Path | None,
    profile_dir: Path | None,
    title: str = "dogbreed training report",
    sagemaker_defaults: bool = False,
) -> Path:
    """Read a job's outputs and write its report into ``output_dir``; returns the report's path.

    ``sagemaker_defaults``: the Debugger rules exactly as SageMaker runs them (see
    :func:`dogbreed.report.rules.evaluate_rules`).
    """
    output_dir = Path(output_dir)
    metrics = json.loads((output_dir / METRICS_FILE).read_text())
    subtitle = f"{len(metrics.get('classes', []))} classes · built {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    page = ReportPage(title=title, subtitle=subtitle)
    add_summary(page, metrics)
    best = metrics.get("final", {}).get("best_epoch")
    if trial_dir is not None and Path(trial_dir).is_dir():
        _part(page, "training curves", lambda: add_curves(page, Path(trial_dir), best))
        hyperparameters = metrics.get("hyperparameters", {})
        _part(page, "Debugger rules", lambda: add_rules(page, Path(trial_dir), hyperparameters, sagemaker_defaults))
    else:
        page.warnings.append("training curves and Debugger rules: no smdebug trial (debug=off)")
    if profile_dir is not None and Path(profile_dir).is_dir():
        _part(page, "profile", lambda: add_profile(page, Path(profile_dir)))
    else:
        page.warnings.append("profile: no profile was recorded (profile=off)")
    _part(page, "results", lambda: add_results(page, output_dir))
    if (output_dir / DATA_CHECK_FILE).is_file():
        _part(page, "data check", lambda: add_data_check(page, output_dir))
    else:
        page.warnings.append(f"data: no {DATA_CHECK_FILE} (a job from before the data check)")
    if "test_accuracy" not in metrics.get("final", {}):  # a stale folder of an earlier run is not this job's
        page.warnings.append("class activation maps: none, the job evaluated no test split")
    else:
        _part(page, "class activation maps", lambda: add_explanations(page, output_dir))
    if (output_dir / SEARCH_DIR / TRIALS_FILE).is_file():
        _part(page, "hyperparameter search", lambda: add_search(page, output_dir / SEARCH_DIR))
    return write_report(page, output_dir)


def add_rules(page: ReportPage, trial_dir: Path, hyperparameters: dict[str, Any], sagemaker_defaults: bool) -> None:
    """The Debugger rules' verdicts on the job's trial (``hyperparameters``: the job's, from metrics.json)."""
    from dogbreed.report.rules import JobFacts, evaluate_rules  # noqa: PLC0415 - smdebug only when there is a trial

    facts = JobFacts.from_hyperparameters(hyperparameters)
    for rule in evaluate_rules(trial_dir, facts, sagemaker_defaults):
        page.rules.append(verdict_row(rule.name, rule.evaluated, rule.triggered, rule.message, rule.step))
        page.data["rules"].append(
            {
                "name": rule.name,
                "evaluated": rule.evaluated,
                "triggered": rule.triggered,
                "step": rule.step,
                "message": rule.message,
                "parameters": rule.parameters,
            }
        )


def add_profile(page: ReportPage, profile_dir: Path) -> None:
    from dogbreed.report import figures  # noqa: PLC0415 - matplotlib only when drawing (training.job imports us)

    profile = load_profile(profile_dir)
    has_gpu = profile.metadata is not None and str(profile.metadata.device).startswith("cuda")
    for check in evaluate_bottlenecks(profile, has_gpu=has_gpu):
        page.bottlenecks.append(
            verdict_row(
                check.name,
                check.evaluated,
                check.triggered,
                check.finding,
                advice=check.advice if check.triggered else "",
            )
        )
        page.data["bottlenecks"].append(vars(check).copy())
    system = system_series(profile)
    if system.seconds:
        page.figures.append(Figure("profile", "system", "System utilisation", figures.system_utilisation(system)))
    split = step_split(profile)
    if split.steps:
        page.figures.append(
            Figure(
                "profile",
                "step_split",
                "Training step time: data, forward/backward, optimizer",
                figures.step_split(split),
            )
        )
    if profile.operators is not None:
        page.operator_columns = ["operator", "calls", "self CPU ms", "total CPU ms", "share of self CPU %"]
        page.operators = [
            [op.name, str(op.calls), f"{op.self_ms:.2f}", f"{op.total_ms:.2f}", f"{op.share_percent:.1f}"]
            for op in profile.operators.by_self_cpu[:15]
        ]


def system_series(profile: Profile) -> SystemSeries:
    """The monitor's samples as the figure plots them, in seconds since the first sample."""
    series = SystemSeries()
    if not profile.samples:
        return series
    start = profile.samples[0].timestamp
    for sample in profile.samples:
        series.seconds.append(sample.timestamp - start)
        series.cpu_per_core.append(list(sample.cpu_percent))
        series.memory_percent.append(sample.memory_percent)
        series.disk_read.append(sample.disk_read_bytes_per_s or 0.0)
        series.disk_write.append(sample.disk_write_bytes_per_s or 0.0)
        series.net_recv.append(sample.net_recv_bytes_per_s or 0.0)
        series.net_sent.append(sample.net_sent_bytes_per_s or 0.0)
        if sample.gpu_percent is not None:
            series.gpu_utilisation.append(sample.gpu_percent)
            series.gpu_memory_percent.append(sample.gpu_memory_percent or 0.0)
    return series


def step_split(profile: Profile) -> StepSplit:
    """The training steps' timings, numbered in the order they ran."""
    split = StepSplit()
    for index, step in enumerate(s for s in profile.steps if s.mode == "train"):
        split.steps.append(index)
        split.data_seconds.append(step.data_seconds)
        split.forward_backward_seconds.append(step.forward_backward_seconds)
        split.optimizer_seconds.append(step.optimizer_seconds)
    return split
