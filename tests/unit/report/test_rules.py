"""SageMaker's built-in rules on real smdebug trials: a tiny ResNet18 trained healthily, or built to fail.

Each trial is recorded by the job's own hook (``create_hook``) on 64-pixel images of a
learnable toy task (the class's colour channel is bright), a few steps on the CPU.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from dogbreed.report.rules import (
    RULE_NAMES, SAGEMAKER_RULES, ExplodingTensor, JobFacts, LossNotDecreasing, LossPoint, Overfit, RuleSpec, RuleStatus,
    evaluate_rules, open_trial,
    run_rule, window_checks,
)
from dogbreed.training.debugger import create_hook

NAMES = ["VanishingGradient", "ExplodingTensor", "LossNotDecreasing", "Overfit", "Overtraining",
         "PoorWeightInitialization"]


def toy_batches(count: int = 2, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of 64-pixel images whose class is the brightest colour channel."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        labels = torch.arange(size) % 3
        images = torch.rand(size, 3, 64, 64, generator=generator) * 0.5
        images[torch.arange(size), labels] += 1.0
        batches.append((images, labels))
    return batches


def record(root: Path, *, lr: float = 1e-3, sgd: bool = False, rounds: int = 1, train_steps: int = 12,
           eval_steps: int = 0, batch_count: int = 2, wrong_eval_labels: bool = False,
           prepare: Callable[[nn.Module], None] | None = None) -> Path:
    """A trial of ``rounds`` x (``train_steps`` Adam or SGD steps, ``eval_steps`` evaluation steps)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    if prepare:
        prepare(model)
    criterion = nn.CrossEntropyLoss()
    hook = create_hook(root / "no-debughookconfig.json", str(root / "trial"), model, criterion)
    optimizer = (torch.optim.SGD if sgd else torch.optim.Adam)(model.parameters(), lr=lr)
    batches = toy_batches(batch_count)
    for _ in range(rounds):
        hook.set_mode("train")
        for step in range(train_steps):
            images, labels = batches[step % len(batches)]
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        hook.set_mode("eval")
        with torch.no_grad():  # BatchNorm stays on batch statistics: the same data score as in training
            for step in range(eval_steps):
                images, labels = batches[step % len(batches)]
                criterion(model(images), (labels + 1) % 3 if wrong_eval_labels else labels)
    hook.close()
    return root / "trial"


def by_name(trial: Path) -> dict:
    verdicts = evaluate_rules(trial)
    assert [v.name for v in verdicts] == NAMES
    return {v.name: v for v in verdicts}


def zero_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.zeros_(module.weight)


def tiny_layer3(model: nn.Module) -> None:
    """layer3's BatchNorm scales a thousand times too small: its activations nearly vanish."""
    for module in model.layer3.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.mul_(1e-3)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    return record(tmp_path_factory.mktemp("healthy"), rounds=2, train_steps=12, eval_steps=2)


@pytest.fixture(scope="module")
def exploding(tmp_path_factory) -> Path:
    """SGD with lr=1000: the loss grows 1e4-fold a step and turns NaN at step 5. (Adam's steps
    are bounded by lr: its loss reaches 1e8 but BatchNorm keeps everything finite.)"""
    return record(tmp_path_factory.mktemp("exploding"), lr=1000.0, sgd=True, train_steps=12)


@pytest.fixture(scope="module")
def constant(tmp_path_factory) -> Path:
    """lr=0 on a single batch: the same loss, step after step."""
    return record(tmp_path_factory.mktemp("constant"), lr=0.0, rounds=7, train_steps=2, eval_steps=1, batch_count=1)


def test_a_healthy_run_trips_no_gradient_or_loss_rule(healthy):
    rules = by_name(healthy)
    for name in ("VanishingGradient", "ExplodingTensor", "LossNotDecreasing", "Overfit"):
        assert rules[name].status is RuleStatus.NO_ISSUES_FOUND, rules[name]
        assert rules[name].step is None and rules[name].message
    # Two evaluation passes cannot show 10 passes without progress: not enough data, not "no issues".
    assert rules["Overtraining"].status is RuleStatus.NOT_EVALUATED
    assert "evaluation passes" in rules["Overtraining"].message


def test_the_verdicts_carry_sagemakers_default_parameters(healthy):
    rules = by_name(healthy)
    assert rules["VanishingGradient"].parameters == {"threshold": 1e-7, "skip_cancelled_biases": True}
    assert rules["ExplodingTensor"].parameters == {"collection_names": None, "tensor_regex": None, "only_nan": False}
    # Ours: one comparison per epoch (12 training steps here) of the training loss; Overfit's absolute gap.
    assert rules["LossNotDecreasing"].parameters == {
        "collection_names": None, "tensor_regex": None, "use_losses_collection": True, "num_steps": 12,
        "diff_percent": 0.1, "increase_threshold_percent": 5.0, "mode": "TRAIN", "patience": 3}
    assert rules["Overfit"].parameters == {"tensor_regex": None, "start_step": 0, "patience": 1,
                                           "ratio_threshold": 0.1, "min_gap": 0.1}
    sagemaker = {v.name: v for v in evaluate_rules(healthy, sagemaker_defaults=True)}
    assert sagemaker["LossNotDecreasing"].parameters["num_steps"] == 10
    assert sagemaker["LossNotDecreasing"].parameters["mode"] is None
    assert sagemaker["LossNotDecreasing"].parameters["patience"] == 1
    assert sagemaker["Overfit"].parameters["min_gap"] == 0.0
    assert rules["Overtraining"].parameters == {"patience_train": 5, "patience_validation": 10, "delta": 0.01}
    assert rules["PoorWeightInitialization"].parameters == {
        "activation_inputs_regex": ".*relu_input", "threshold": 10.0, "distribution_range": 0.001, "patience": 5,
        "steps": 10}


def test_an_exploding_run_trips_exploding_tensor_and_loss_not_decreasing(exploding):
    rules = by_name(exploding)
    exploded = rules["ExplodingTensor"]
    assert exploded.triggered and exploded.step is not None
    assert "NaN" in exploded.message or "inf" in exploded.message
    assert rules["LossNotDecreasing"].triggered and rules["LossNotDecreasing"].step == 10
    # Only the steps after the explosion hold NaN: with only_nan the rule may fire later, never earlier.
    only_nan = run_rule(RuleSpec(ExplodingTensor, {"only_nan": True}), open_trial(exploding))
    assert only_nan.step is None or only_nan.step >= exploded.step


def test_a_constant_loss_trips_loss_not_decreasing_and_overtraining(constant):
    rules = by_name(constant)
    stalled = rules["LossNotDecreasing"]
    assert stalled.triggered and "not 0.1% lower" in stalled.message
    # Windows of an epoch (2 steps), 3 failed comparisons in a row (the job's patience): at TRAIN steps 2, 4
    # and 6; TRAIN step 6, the 4th round's first step, is global step 3 * 3 + 0.
    assert stalled.step == 9 and "(3 comparisons in a row)" in stalled.message
    # SageMaker's default reads the EVAL losses first, in windows of 10 steps: 7 are not enough.
    as_sagemaker = {v.name: v for v in evaluate_rules(constant, sagemaker_defaults=True)}
    assert as_sagemaker["LossNotDecreasing"].status is RuleStatus.NOT_EVALUATED
    assert "EVAL steps" in as_sagemaker["LossNotDecreasing"].message
    over = rules["Overtraining"]
    assert over.triggered and "training loss has not improved" in over.message
    assert over.step == 3 * 5 + 1  # the 6th training phase ends at global step 16
    assert not rules["ExplodingTensor"].triggered and not rules["VanishingGradient"].triggered


def test_a_gap_between_training_and_validation_loss_trips_overfit(tmp_path):
    rules = by_name(record(tmp_path, train_steps=8, eval_steps=2, wrong_eval_labels=True))
    overfit = rules["Overfit"]
    assert overfit.triggered and overfit.step == 9  # the end of the evaluation pass
    assert "above training loss" in overfit.message


def test_zero_weights_trip_vanishing_gradient_and_poor_weight_initialization(tmp_path):
    rules = by_name(record(tmp_path, train_steps=3, prepare=zero_weights))
    vanishing = rules["VanishingGradient"]
    assert vanishing.triggered and vanishing.step == 0
    assert vanishing.message.startswith("gradient/ResNet_") and "< 1e-07 at step 0" in vanishing.message
    poor = rules["PoorWeightInitialization"]
    assert poor.triggered and poor.step == 0 and "constant" in poor.message
    # 3 steps, no evaluation: the loss and validation rules have nothing to go on.
    for name in ("LossNotDecreasing", "Overfit", "Overtraining"):
        assert rules[name].status is RuleStatus.NOT_EVALUATED, rules[name]


def test_a_layer_with_tiny_activations_trips_poor_weight_initialization(tmp_path):
    rules = by_name(record(tmp_path, train_steps=2, prepare=tiny_layer3))
    poor = rules["PoorWeightInitialization"]
    assert poor.triggered and poor.step == 0
    assert "activation input variances differ" in poor.message and "layer3." in poor.message


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "missing",
    lambda tmp: tmp,  # an empty directory
    lambda tmp: (tmp / "collections" / "000000000").mkdir(parents=True) or tmp,  # no collections file
])
def test_no_trial_gives_not_evaluated_verdicts(tmp_path, make):
    verdicts = evaluate_rules(make(tmp_path))
    assert [v.name for v in verdicts] == NAMES
    assert all(v.status is RuleStatus.NOT_EVALUATED and not v.triggered and v.message for v in verdicts)


def test_a_corrupt_trial_gives_not_evaluated_verdicts(tmp_path, exploding):
    trial = tmp_path / "trial"
    shutil.copytree(exploding, trial)
    indexes = list((trial / "index").rglob("*.json"))
    assert indexes, f"the trial {exploding} has no index files to corrupt"
    for index in indexes:
        index.write_text("{not json")
    verdicts = evaluate_rules(trial)
    assert [v.name for v in verdicts] == NAMES
    assert all(not v.evaluated for v in verdicts)


def test_a_killed_jobs_trial_is_read_as_it_is(tmp_path, healthy):
    """No end-of-job file, and a step missing: smdebug may wait for more; we take what is there."""
    trial = tmp_path / "trial"
    shutil.copytree(healthy, trial)
    (trial / "training_job_end.ts").unlink()
    next((trial / "index").rglob("000000000020_*.json")).unlink()
    verdicts = []
    worker = threading.Thread(target=lambda: verdicts.extend(evaluate_rules(trial)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert verdicts, "evaluate_rules is still waiting for the trial"
    assert [v.status for v in verdicts] == [v.status for v in evaluate_rules(healthy)]


def test_smdebug_stays_quiet(healthy, capfd):
    evaluate_rules(healthy)
    out, err = capfd.readouterr()
    assert out == "" and "smdebug" not in err


def test_loss_windows_compare_means_num_steps_apart():
    series = [LossPoint(s, 100 + s, float(25 - s)) for s in range(25)]
    checks = window_checks("loss", series, num_steps=10)
    assert [(c.step, c.current.first, c.current.last, c.previous.last) for c in checks] == [
        (110, 1, 10, 0), (120, 11, 20, 10)]
    assert checks[1].current.mean == pytest.approx(25 - 15.5) and checks[1].previous.mean == pytest.approx(25 - 5.5)
    # Losses saved every 3 steps (as in the docs' example): each loss against the one 12 steps back.
    sparse = [LossPoint(s, s, 1.0) for s in range(0, 40, 3)]
    assert [(c.current.last, c.previous.last) for c in window_checks("loss", sparse, 10)] == [(12, 0), (24, 12),
                                                                                               (36, 24)]


def test_rules_run_in_a_fixed_order():
    assert [spec.rule.__name__ for spec in SAGEMAKER_RULES] == list(RULE_NAMES) == NAMES
    assert LossNotDecreasing.Params().mode is None  # SageMaker's default; evaluate_rules asks for TRAIN


def test_poor_weight_initialization_is_not_applied_to_pretrained_weights(constant):
    """The constant-loss trial fires PoorWeightInitialization; on a pretrained network the report says why it
    does not apply, and SageMaker's semantics still fire it."""
    assert by_name(constant)["PoorWeightInitialization"].triggered
    pretrained = {v.name: v for v in evaluate_rules(constant, JobFacts(pretrained=True))}
    verdict = pretrained["PoorWeightInitialization"]
    assert verdict.status is RuleStatus.NOT_EVALUATED and "pretrained weights" in verdict.message
    assert "--sagemaker-defaults" in verdict.message
    as_sagemaker = {v.name: v for v in evaluate_rules(constant, JobFacts(pretrained=True), sagemaker_defaults=True)}
    assert as_sagemaker["PoorWeightInitialization"].triggered
    assert JobFacts.from_hyperparameters({"pretrained": "imagenet"}).pretrained
    assert not JobFacts.from_hyperparameters({"pretrained": "none"}).pretrained


def test_overfit_needs_an_absolute_gap_as_well_as_the_ratio():
    """A nearly perfect job: training loss 0.002, validation 0.011 is 450% above but 0.009 nats apart."""
    from dogbreed.report.rules import Phase

    def compare(min_gap: float) -> bool:
        rule = Overfit.__new__(Overfit)
        rule.params, rule.checked, rule.finding = Overfit.Params(min_gap=min_gap), 0, ""
        rule.exceeded = {"loss": 0}
        return rule.compare("loss", Phase("TRAIN", 0, 9, [0.002]), Phase("EVAL", 10, 11, [0.011]))

    assert compare(min_gap=0.0)  # SageMaker's rule fires
    assert not compare(min_gap=0.1)


def test_a_bias_that_a_batchnorm_cancels_is_no_vanishing_gradient(tmp_path):
    """A BatchNorm shift followed, through a 1x1 convolution, by a BatchNorm in training mode (as before
    EfficientNet's head convolution) gets a zero gradient by construction: SageMaker's rule fires on it,
    the report's names it and finds no issue."""
    def cancelled_shift(model: nn.Module) -> None:
        model.avgpool = nn.Sequential(nn.BatchNorm2d(512), nn.Conv2d(512, 512, 1, bias=False), nn.BatchNorm2d(512),
                                      nn.AdaptiveAvgPool2d(1))

    trial = record(tmp_path, train_steps=3, prepare=cancelled_shift)
    sagemaker = {v.name: v for v in evaluate_rules(trial, sagemaker_defaults=True)}["VanishingGradient"]
    assert sagemaker.triggered and "avgpool.0.bias" in sagemaker.message
    ours = by_name(trial)["VanishingGradient"]
    assert ours.status is RuleStatus.NO_ISSUES_FOUND
    assert "1 bias that a BatchNorm cancels" in ours.message and "avgpool.0.bias" in ours.message
