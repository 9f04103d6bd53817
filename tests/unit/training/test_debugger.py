import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from tests.unit.training.conftest import fast_args
from dogbreed.training.debugger import DETAIL_INTERVAL, DETAIL_STEPS, NoHook, SmdebugHook, create_hook
from dogbreed.training.failure import TrainingError
from dogbreed.training.job import main
from dogbreed.training.model import build_model

LOSS = "CrossEntropyLoss_output_0"


def run_steps(hook, model: nn.Module, train: int, evaluate: int = 0) -> None:
    """``train`` Adam steps then ``evaluate`` evaluation steps on random 64-pixel batches of 4."""
    criterion = next(m for m in hook.hook.module_set if isinstance(m, nn.CrossEntropyLoss))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    hook.set_mode("train")
    for _ in range(train):
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hook.set_mode("eval")
    with torch.no_grad():
        for _ in range(evaluate):
            criterion(model(images), labels)


def resnet18_hook(trial_dir: Path, **kwargs):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    hook = create_hook(trial_dir.parent / "no-debughookconfig.json", str(trial_dir), model, nn.CrossEntropyLoss(),
                       **kwargs)
    return hook, model


def read_trial(path: Path):
    from dogbreed.report.rules import open_trial  # quiet smdebug

    return open_trial(path)


def step_bytes(trial_dir: Path, step: int) -> int:
    """What one global step takes on disk: its index and event files."""
    return sum(f.stat().st_size for f in trial_dir.rglob(f"{step:012d}*") if f.is_file())


def test_local_trial_records_losses(opt_ml, tmp_path, capsys):
    import smdebug.pytorch as smd
    from smdebug.trials import create_trial

    trial_dir = tmp_path / "trial"
    assert main(fast_args("--epochs", "1", "--smdebug_dir", str(trial_dir))) == 0
    trial = create_trial(str(trial_dir))
    losses = trial.tensor_names(collection="losses")
    assert losses == [LOSS]
    loss = trial.tensor(losses[0])
    train_steps = loss.steps(mode=smd.modes.TRAIN)
    eval_steps = loss.steps(mode=smd.modes.EVAL)
    # 24 train images in batches of 8; valid (12) and test (12) in batches of 8.
    assert len(train_steps) == 3 and len(eval_steps) == 4
    values = [float(loss.value(s, mode=smd.modes.TRAIN)) for s in train_steps]
    assert all(math.isfinite(v) and v > 0 for v in values)


def test_no_config_no_flag_means_no_hook_and_no_import(tmp_path):
    model = build_model("resnet18", 3, "none", "all")
    hook = create_hook(tmp_path / "debughookconfig.json", "", model, None)
    assert isinstance(hook, NoHook) and not hook.recording and hook.steps() == {}
    code = (
        "import sys, dogbreed.training; from dogbreed.training.debugger import create_hook, NoHook; "
        f"assert isinstance(create_hook('{tmp_path}/none.json', '', None, None), NoHook); "
        "assert 'smdebug' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hook_from_sagemaker_config_keeps_its_collections_and_adds_the_rules_ones(tmp_path):
    import smdebug.pytorch as smd

    out = tmp_path / "tensors"
    config = tmp_path / "debughookconfig.json"
    config.write_text(json.dumps({
        "LocalPath": str(out),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [{"CollectionName": "losses"},
                                     {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "7"}}],
    }))
    model = build_model("resnet18", 3, "none", "all")
    criterion = torch.nn.CrossEntropyLoss()
    hook = create_hook(config, str(tmp_path / "ignored"), model, criterion)
    assert isinstance(hook, SmdebugHook) and hook.hook.out_dir == str(out)
    assert {"losses", "gradients", "relu_input"} <= set(hook.hook.include_collections)
    # SageMaker's gradients settings win; relu_input, which it lacks, is ours.
    assert hook.hook.get_collection("gradients").save_config.get_save_config(smd.modes.TRAIN).save_interval == 7
    assert hook.hook.get_collection("relu_input").reduction_config.save_raw_tensor is False
    hook.set_mode("train")
    criterion(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1])).backward()
    hook.close()
    assert list(out.rglob("*.tfevents")) or list(out.rglob("*events*"))
    assert not (tmp_path / "ignored").exists()


def test_a_resnet18_trial_is_small_and_holds_reductions(tmp_path):
    from smdebug.core.modes import ModeKeys

    trial_dir = tmp_path / "trial"
    hook, model = resnet18_hook(trial_dir)
    run_steps(hook, model, train=DETAIL_STEPS + 2, evaluate=2)
    hook.close()
    trial = read_trial(trial_dir)

    # Reductions of gradients and ReLU inputs at the first training steps, no raw tensors.
    gradient = trial.tensor("gradient/ResNet_fc.weight")
    assert gradient.steps(mode=ModeKeys.TRAIN) == list(range(DETAIL_STEPS))
    assert set(gradient.reduction_values(0)) == {("std", False), ("mean", True)} and gradient.shape(0) == (3, 512)
    with pytest.raises(Exception, match="not saved"):
        gradient.value(0)
    relu_inputs = trial.tensor_names(collection="relu_input")
    assert len(relu_inputs) == 17 and {"relu_input_0", "layer1.0.relu_input_0", "layer1.0.relu_input_1"} <= set(
        relu_inputs)  # the stem's ReLU, then each block's ReLU module, called twice a step
    # The ReLU's input, not its output: BatchNorm's output (variance 1), not the rectified half (0.34).
    assert 0.8 < float(trial.tensor("layer1.0.relu_input_0").reduction_value(0, "variance")) < 1.2

    # Later training steps and evaluation steps hold the loss only.
    assert trial.tensor_names(step=DETAIL_STEPS + 1) == [LOSS]
    assert trial.tensor_names(step=DETAIL_STEPS + 3) == [LOSS] and trial.mode(DETAIL_STEPS + 3) == ModeKeys.EVAL
    collection = hook.hook.get_collection("gradients")
    assert collection.save_config.should_save_step(ModeKeys.TRAIN, DETAIL_INTERVAL)
    assert not collection.save_config.should_save_step(ModeKeys.TRAIN, DETAIL_INTERVAL + DETAIL_STEPS)
    assert not collection.save_config.should_save_step(ModeKeys.EVAL, 0)

    # A detail step costs some 50 kB, a loss-only step under 1 kB: a ten-epoch job stays at a few MB.
    assert step_bytes(trial_dir, 0) < 60_000 and step_bytes(trial_dir, DETAIL_STEPS + 1) < 1_000
    assert sum(f.stat().st_size for f in trial_dir.rglob("*") if f.is_file()) < 700_000


def test_a_resumed_job_continues_the_trial_and_its_step_numbers(tmp_path):
    from smdebug.core.modes import ModeKeys

    trial_dir = tmp_path / "trial"
    hook, model = resnet18_hook(trial_dir)
    run_steps(hook, model, train=5, evaluate=2)
    steps = hook.steps()
    hook.close()  # as on SIGTERM: smdebug marks the trial ended
    assert steps == {"GLOBAL": 6, "TRAIN": 4, "EVAL": 1}
    assert all(type(v) is int for v in steps.values())
    (trial_dir / "claim.smd").touch()  # as a killed job leaves it

    with pytest.raises(TrainingError, match="not empty"):
        resnet18_hook(trial_dir)  # a new job may not write into an old trial
    hook, model = resnet18_hook(trial_dir, resume_steps=json.loads(json.dumps(steps)))
    run_steps(hook, model, train=3, evaluate=1)
    assert hook.steps() == {"GLOBAL": 10, "TRAIN": 7, "EVAL": 2}
    hook.close()

    trial = read_trial(trial_dir)
    assert trial.steps() == list(range(11))
    assert [trial.mode(s).name for s in trial.steps()] == ["TRAIN"] * 5 + ["EVAL"] * 2 + ["TRAIN"] * 3 + ["EVAL"]
    loss = trial.tensor(LOSS)
    assert loss.steps(mode=ModeKeys.TRAIN) == list(range(8)) and loss.steps(mode=ModeKeys.EVAL) == [0, 1, 2]
    # The resumed job's first training steps are still among the first ten: reductions carry on.
    assert trial.tensor("gradient/ResNet_fc.weight").steps(mode=ModeKeys.TRAIN) == list(range(8))
    assert (trial_dir / "training_job_end.ts").is_file()


def test_steps_can_only_be_restored_before_the_first_step(tmp_path):
    hook, model = resnet18_hook(tmp_path / "trial")
    run_steps(hook, model, train=1)
    with pytest.raises(RuntimeError, match="before the first step"):
        hook.restore_steps({"GLOBAL": 5, "TRAIN": 5})
    hook.close()


def test_scalars_land_on_the_step_and_mode_they_were_saved_in(tmp_path):
    from smdebug.core.modes import ModeKeys

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    criterion = nn.CrossEntropyLoss()
    hook = create_hook(tmp_path / "none.json", str(tmp_path / "trial"), model, criterion)
    inputs, labels = torch.randn(4, 4), torch.tensor([0, 1, 0, 1])
    for epoch in range(2):
        hook.set_mode("train")
        for _ in range(3):
            criterion(model(inputs), labels).backward()
            hook.save_scalar("train/batch_accuracy", 0.5)
        hook.set_mode("eval")
        criterion(model(inputs), labels)
        hook.save_scalar("epoch/epoch", epoch)
    hook.close()
    trial = read_trial(tmp_path / "trial")
    assert [trial.mode(s).name for s in trial.steps()] == (["TRAIN"] * 3 + ["EVAL"]) * 2
    assert trial.tensor("scalar/train/batch_accuracy").steps(mode=ModeKeys.TRAIN) == list(range(6))
    assert trial.tensor("scalar/epoch/epoch").steps() == [3, 7]
    assert trial.tensor(LOSS).steps(mode=ModeKeys.TRAIN) == list(range(6))
