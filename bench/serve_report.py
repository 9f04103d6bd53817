"""What bench/serve prints: the setup, the figures side by side, the ratios against the targets, one JSON line."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

C4_THROUGHPUT_TARGET = 2.5  # ours / baseline requests/s at concurrency 4, at least
C1_LATENCY_TARGET = 1 / 3  # ours / baseline median at concurrency 1, at most
IN_PROCESS_TARGET = 0.85  # ours / in-process requests/s at concurrency 4, at least
IN_PROCESS_C1_TARGET = 1.5  # ours / in-process median at concurrency 1, at most
# At fp32 the two servers run the same network on the same pixels (dogbreed's
# preprocessing reproduces torchvision's); below this top-1 agreement, or above this
# probability difference (float32 rounding is ~1e-6), they do not serve the same model.
AGREEMENT_FLOOR = 0.95
PROBABILITY_GAP_LIMIT = 1e-3


@dataclass
class Figures:
    """One concurrency level's latency and rate."""

    median_ms: float
    p99_ms: float
    rps: float


@dataclass
class KindRun:
    """One kind of request to the same server (plain, X-Explain: cam, Accept: image/png): figures and answer size."""

    figures: dict[int, Figures]
    answer_bytes: float  # mean over a few photos


@dataclass
class ServerRun:
    """One server's figures per concurrency, its answer per photo, and what it logged of its setup.

    ``kinds``, with ``--explain``: every kind of request it was driven with, the plain one included.
    """

    figures: dict[int, Figures]
    top1: list[str]
    probabilities: list[dict[str, float]]  # label -> probability, the top k the server answered
    setup: list[str] = field(default_factory=list)
    kinds: dict[str, KindRun] = field(default_factory=dict)


@dataclass
class InProcessRun:
    """The whole request in one process (bench/inprocess.py): figures per concurrency, layout, precision.

    ``stages_ms``: the handler's stages one photo at a time (decode, preprocess, run, answer + JSON), medians.
    """

    figures: dict[int, Figures]
    precision: str
    workers: int
    ort_threads: int
    stages_ms: dict[str, float]


@dataclass
class Facts:
    """The run's setting, printed above the figures."""

    cpu: str
    model_dir: Path
    photos: int
    requests: int
    warmup: int
    image: str
    env: dict[str, str]
    load: tuple[tuple[float, ...], tuple[float, ...]]  # load averages before and after


@dataclass
class Target:
    """One ratio of the issue's targets, and whether it is met."""

    name: str
    value: float
    goal: str
    passed: bool

    def line(self) -> str:
        shown = f"{self.value:.0%}" if self.goal.endswith("%") else f"{self.value:.2f}x"
        return f"  {self.name:<44} {shown:>7}  (target {self.goal})  {'PASS' if self.passed else 'FAIL'}"


def targets(ours: ServerRun, baseline: ServerRun | None, alone: InProcessRun) -> list[Target]:
    """The issue's targets, for the concurrency levels that were measured (against the baseline when it ran)."""
    out = []
    if 4 in ours.figures and baseline is not None:
        ratio = ours.figures[4].rps / baseline.figures[4].rps
        out.append(Target("c4 req/s, ours / baseline", ratio, f">= {C4_THROUGHPUT_TARGET}x", ratio >= C4_THROUGHPUT_TARGET))
    if 1 in ours.figures and baseline is not None:
        ratio = ours.figures[1].median_ms / baseline.figures[1].median_ms
        out.append(Target("c1 median, ours / baseline", ratio, f"<= {C1_LATENCY_TARGET:.2f}x", ratio <= C1_LATENCY_TARGET))
    if 4 in ours.figures:
        ratio = ours.figures[4].rps / alone.figures[4].rps
        out.append(Target("c4 req/s, ours / in-process", ratio, f">= {IN_PROCESS_TARGET:.0%}", ratio >= IN_PROCESS_TARGET))
    if 1 in ours.figures:
        ratio = ours.figures[1].median_ms / alone.figures[1].median_ms
        out.append(Target("c1 median, ours / in-process", ratio, f"<= {IN_PROCESS_C1_TARGET:g}x",
                          ratio <= IN_PROCESS_C1_TARGET))
    return out


def model_arch(model_dir: Path) -> str:
    """The network model.json names."""
    return str(json.loads((model_dir / "model.json").read_text())["arch"])


def model_summary(model_dir: Path) -> str:
    meta = json.loads((model_dir / "model.json").read_text())
    files = ", ".join(sorted(p.name for p in model_dir.iterdir() if p.suffix in (".onnx", ".pt")))
    return f"{model_dir} ({meta['arch']}, {len(meta['classes'])} classes; {files})"


def figure_cells(f: Figures) -> str:
    return f"{f.median_ms:>7.1f} / {f.p99_ms:>7.1f} {f.rps:>6.1f}"


@dataclass
class Agreement:
    """How far the two servers' answers to the same photos agree."""

    agree: int
    photos: int
    gap: float  # the largest probability difference on any photo and class
    baseline_top1: Counter

    @property
    def share(self) -> float:
        return self.agree / self.photos

    def same_model(self, precision: str) -> bool:
        """At fp32 the answers must match; at another precision they may differ a little."""
        return precision != "fp32" or (self.share >= AGREEMENT_FLOOR and self.gap <= PROBABILITY_GAP_LIMIT)


def agreement(ours: ServerRun, baseline: ServerRun) -> Agreement:
    # Top-1 alone says little when a model answers one class for most photos: compare the probabilities too.
    gap = max(abs(p - theirs[label]) for mine, theirs in zip(ours.probabilities, baseline.probabilities)
              for label, p in mine.items() if label in theirs)
    return Agreement(sum(a == b for a, b in zip(ours.top1, baseline.top1)), len(ours.top1), gap,
                     Counter(baseline.top1))


def print_setup(facts: Facts, baseline: ServerRun | None, ours: ServerRun, alone: InProcessRun) -> bool:
    """The run's setting; returns False when the two servers disagree on an fp32 model."""
    print(f"CPU: {facts.cpu}")
    print(f"load average before/after: {' '.join(f'{v:.2f}' for v in facts.load[0])} / "
          f"{' '.join(f'{v:.2f}' for v in facts.load[1])} (other work on these CPUs makes every figure noisy)")
    print(f"model: {model_summary(facts.model_dir)}")
    print(f"photos: {facts.photos}; requests per level: {facts.requests} after {facts.warmup} warm-up requests (excluded)")
    print(f"ours: {' '.join([facts.image, *(f'-e {k}={v}' for k, v in facts.env.items())])}; "
          f"{alone.workers} worker(s) x {alone.ort_threads} ORT thread(s), precision {alone.precision}")
    for line in ours.setup:
        print(f"  log: {_message(line)}")
    stages = ", ".join(f"{name} {ms:.1f}" for name, ms in alone.stages_ms.items())
    print(f"in-process: the whole request through the handler's handle() in {facts.image}, same layout and "
          f"precision, no HTTP; its stages, ms per photo one at a time: {stages}")
    if baseline is None:
        print("baseline: not run (--no-baseline, or a network the seed-style server cannot load)")
        return True
    print("baseline: MMS + sagemaker-inference + eager PyTorch fp32 (bench/baseline), the toolkit's defaults")
    for line in baseline.setup:
        print(f"  log: {_message(line)}")
    same = agreement(ours, baseline)
    print(f"top-1 agreement, ours ({alone.precision}) vs baseline (fp32): {same.agree}/{same.photos} ({same.share:.1%}); "
          f"largest probability difference on any photo and class: {same.gap:.2g}")
    print("  baseline's top-1 answers: " + ", ".join(f"{label} {n}" for label, n in same.baseline_top1.most_common()))
    if not same.same_model(alone.precision):
        print(f"  DISAGREE: at fp32 the servers should agree on >= {AGREEMENT_FLOOR:.0%} of the photos within "
              f"{PROBABILITY_GAP_LIMIT:g}; the figures compare different models")
        return False
    return True


def print_all(facts: Facts, baseline: ServerRun | None, ours: ServerRun, alone: InProcessRun, layouts: list) -> int:
    """Print everything; returns the exit code (1 when the servers disagree on an fp32 model)."""
    agreed = print_setup(facts, baseline, ours, alone)
    header = (f"{'concurrency':>11} | {'ours median/p99 ms  req/s':>25} | {'baseline median/p99 ms req/s':>28} | "
              f"{'in-process median/p99 ms req/s':>30}")
    print(f"\n{header}\n{'-' * len(header)}")
    for c in ours.figures:
        theirs = "-" if baseline is None else figure_cells(baseline.figures[c])
        print(f"{c:>11} | {figure_cells(ours.figures[c]):>25} | {theirs:>28} | {figure_cells(alone.figures[c]):>30}")
    checks = targets(ours, baseline, alone)
    print(f"\ntargets ({model_arch(facts.model_dir)}, {alone.precision}):")
    for target in checks:
        print(target.line())
    if ours.kinds:
        print_kinds(ours.kinds)
    if layouts:
        print_layouts(layouts)
    same = None if baseline is None else agreement(ours, baseline)
    print(json.dumps({
        "cpu": facts.cpu, "model_dir": str(facts.model_dir), "photos": facts.photos, "requests": facts.requests,
        "env": facts.env, "precision": alone.precision, "layout": [alone.workers, alone.ort_threads],
        "agreement": same and same.share, "probability_gap": same and same.gap, "ours": _figures_json(ours.figures),
        "baseline": baseline and _figures_json(baseline.figures), "in_process": _figures_json(alone.figures),
        "in_process_stages_ms": alone.stages_ms, "targets": [asdict(t) for t in checks],
        "kinds": {kind: {"answer_bytes": run.answer_bytes, **_figures_json(run.figures)}
                  for kind, run in ours.kinds.items()},
        "layouts": [{"workers": w, "ort_threads": t, "ours": _figures_json(run.figures),
                     "in_process": _figures_json(ip.figures)} for (w, t), run, ip in layouts],
    }))
    return 0 if agreed else 1


def print_kinds(kinds: dict[str, KindRun]) -> None:
    """Our server per kind of request, each against the plain request (the first kind) of the same run."""
    print("\nclass activation maps (our server, same run; x: against its plain requests at that concurrency):")
    header = (f"{'request':>18} | {'answer':>9} | {'concurrency':>11} | {'median/p99 ms  req/s':>24} | "
              f"{'median x':>8} {'req/s x':>8}")
    print(header)
    print("-" * len(header))
    plain = next(iter(kinds.values()))
    for kind, run in kinds.items():
        for c, f in run.figures.items():
            base = plain.figures[c]
            print(f"{kind:>18} | {_size(run.answer_bytes):>9} | {c:>11} | {figure_cells(f):>24} | "
                  f"{f.median_ms / base.median_ms:>7.2f}x {f.rps / base.rps:>7.2f}x")


def _size(n: float) -> str:
    return f"{n / 1024:.1f} kB" if n < 1024 * 1024 else f"{n / 1048576:.2f} MB"


def print_layouts(layouts: list) -> None:
    """Our server per workers x ORT threads, beside the model alone in the same layout."""
    print("\nlayouts (our server; in-process in the same layout):")
    header = f"{'workers x threads':>17} | {'c1 median ms':>12} {'c4 req/s':>9} | {'in-process c1 median ms':>23} {'c4 req/s':>9}"
    print(header)
    print("-" * len(header))
    for (workers, threads), run, alone in layouts:
        c1, c4 = run.figures.get(1), run.figures.get(4)
        a1, a4 = alone.figures.get(1), alone.figures.get(4)
        print(f"{f'{workers} x {threads}':>17} | {_cell(c1, 'median_ms'):>12} {_cell(c4, 'rps'):>9} | "
              f"{_cell(a1, 'median_ms'):>23} {_cell(a4, 'rps'):>9}")


def _message(log_line: str) -> str:
    """A log line without its timestamp and logger."""
    return log_line.split(" - ", 1)[-1].strip()[:160]


def _cell(figures: Figures | None, name: str) -> str:
    return "-" if figures is None else f"{getattr(figures, name):.1f}"


def _figures_json(figures: dict[int, Figures]) -> dict[str, dict]:
    return {f"c{c}": asdict(f) for c, f in figures.items()}
