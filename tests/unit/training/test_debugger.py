import json
import math
import subprocess
import sys

from tests.unit.training.conftest import fast_args
from dogbreed.training.debugger import NoHook, SmdebugHook, create_hook
from dogbreed.training.model import build_model
from dogbreed.training.job import main


def test_local_trial_records_losses(opt_ml, tmp_path, capsys):
    from smdebug.trials import create_trial
    import smdebug.pytorch as smd

    trial_dir = tmp_path / "trial"
    assert main(fast_args("--epochs", "1", "--smdebug_dir", str(trial_dir))) == 0
    trial = create_trial(str(trial_dir))
    losses = trial.tensor_names(collection="losses")
    assert losses == ["CrossEntropyLoss_output_0"]
    loss = trial.tensor(losses[0])
    train_steps = loss.steps(mode=smd.modes.TRAIN)
    eval_steps = loss.steps(mode=smd.modes.EVAL)
    # 24 train images in batches of 8; valid (12) and test (12) in batches of 8.
    assert len(train_steps) == 3 and len(eval_steps) == 4
    values = [float(loss.value(s, mode=smd.modes.TRAIN)) for s in train_steps]
    assert all(math.isfinite(v) and v > 0 for v in values)


def test_no_config_no_flag_means_no_hook_and_no_import(tmp_path):
    model = build_model("resnet18", 3, "none", "all")
    assert isinstance(create_hook(tmp_path / "debughookconfig.json", "", model, None), NoHook)
    code = (
        "import sys, dogbreed.training; from dogbreed.training.debugger import create_hook, NoHook; "
        f"assert isinstance(create_hook('{tmp_path}/none.json', '', None, None), NoHook); "
        "assert 'smdebug' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hook_from_sagemaker_config(tmp_path):
    import torch

    out = tmp_path / "tensors"
    config = tmp_path / "debughookconfig.json"
    config.write_text(json.dumps({
        "LocalPath": str(out),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [{"CollectionName": "losses"}],
    }))
    model = build_model("resnet18", 3, "none", "all")
    criterion = torch.nn.CrossEntropyLoss()
    hook = create_hook(config, str(tmp_path / "ignored"), model, criterion)
    assert isinstance(hook, SmdebugHook) and hook.hook.out_dir == str(out)
    hook.set_mode("train")
    criterion(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1])).backward()
    hook.close()
    assert list(out.rglob("*.tfevents")) or list(out.rglob("*events*"))
    assert not (tmp_path / "ignored").exists()
