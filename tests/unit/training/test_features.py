"""Cached backbone features: the same head as the full forward pass, and never a stale cache."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from dogbreed.preprocessing import Preprocessing
from dogbreed.training.config import TrainConfig
from dogbreed.training.data import EvalTransform, make_loader, scan_split
from dogbreed.architectures import architecture
from dogbreed.training.feature_cache import FeatureLoader, SplitFeatures, extract, feature_key, trunk_checksum
from dogbreed.training.job import main
from dogbreed.training.failure import ConfigError
from dogbreed.training.loop import GracefulStop
from tests.unit.training.conftest import CLASS_DIRS, fast_args


def run_job(opt_ml, capsys, *extra: str, out: str = "run") -> tuple[int, str, dict]:
    """One job writing to ``opt_ml/<out>``: its exit status, log and metrics.json."""
    dirs = ["--model-dir", str(opt_ml / out / "model"), "--output-data-dir", str(opt_ml / out / "data"),
            "--checkpoint-dir", str(opt_ml / out / "ckpt")]
    status = main(fast_args("--epochs", "3", "--patience", "0", "--debug", "off", "--profile", "off", *dirs, *extra))
    log = capsys.readouterr().out
    metrics_path = opt_ml / out / "data" / "metrics.json"
    return status, log, json.loads(metrics_path.read_text()) if metrics_path.exists() else {}


def test_head_on_features_equals_the_full_forward_pass(opt_ml, capsys):
    """Augmentation off, same seed: the features job's model is the full-forward job's, within float error."""
    status, log, full = run_job(opt_ml, capsys, "--augment", "false", "--features", "off", out="full")
    assert status == 0, log[-3000:]
    assert "features:" not in log
    status, log, cached = run_job(opt_ml, capsys, "--augment", "false", "--features", "on", out="cached")
    assert status == 0, log[-3000:]
    assert "features: train: computing 1 view(s) of 24 images" in log
    assert set(cached["features"]) == {"train", "valid", "test"}

    a = torch.load(opt_ml / "full" / "model" / "model.pt", weights_only=True)
    b = torch.load(opt_ml / "cached" / "model" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:  # the trunk is untouched and exported whole; the heads agree
        if name.startswith("fc."):
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["fc.weight"], torch.zeros_like(a["fc.weight"]))
    for h_full, h_cached in zip(full["history"], cached["history"], strict=True):
        for metric in ("train_loss", "valid_loss", "train_accuracy", "valid_accuracy"):
            assert h_cached[metric] == pytest.approx(h_full[metric], rel=1e-4, abs=1e-6), metric
    assert cached["final"]["test_accuracy"] == full["final"]["test_accuracy"]
    assert (opt_ml / "cached" / "model" / "model.onnx").is_file()


def test_a_rerun_reuses_the_cache_and_any_changed_input_recomputes(opt_ml, capsys):
    status, log, metrics = run_job(opt_ml, capsys)
    assert status == 0, log[-3000:]
    caches = sorted(p.name for p in (opt_ml / "run" / "data" / "features").iterdir())
    assert [c.split("-")[0] for c in caches] == ["test", "train", "valid"]
    first = metrics

    status, log, metrics = run_job(opt_ml, capsys)
    assert status == 0
    assert "computing" not in log and log.count("using the cache") == 3
    assert {s["source"] for s in metrics["features"].values()} == {"cache"}
    assert metrics["history"] == [{**h, "images_per_sec": m["images_per_sec"], "epoch_seconds": m["epoch_seconds"]}
                                  for h, m in zip(first["history"], metrics["history"])]

    # One training image changes content (same name, same folder): train alone is recomputed.
    image = next((opt_ml / "input" / "data" / "train" / CLASS_DIRS[0]).iterdir())
    Image.fromarray(np.full((48, 64, 3), 17, dtype=np.uint8)).save(image)
    status, log, _ = run_job(opt_ml, capsys)
    assert status == 0
    assert "features: train: no cache matches this job" in log and "its files_sha256 differ" in log
    assert "features: train: computing" in log
    assert "valid: computing" not in log and "test: computing" not in log

    # Other crops, views or weights: every key field that changes is named.
    status, log, _ = run_job(opt_ml, capsys, "--image-size", "56", "--feature_views", "3")
    assert status == 0
    assert "its preprocessing, views, augmentation differ" in log
    assert "valid: no cache matches this job" in log and "its preprocessing differ" in log
    status, log, _ = run_job(opt_ml, capsys, "--pretrained", "none")
    assert status == 0
    assert "weights_sha256" in log


def test_a_features_job_feeds_a_later_job_through_the_features_channel(opt_ml, capsys, monkeypatch, tmp_path):
    status, log, metrics = run_job(opt_ml, capsys, "--features_only", "true", out="features-job")
    assert status == 0, log[-3000:]
    assert metrics["history"] == [] and set(metrics["features"]) == {"train", "valid", "test"}
    assert not (opt_ml / "features-job" / "model").exists()
    # The job's output.tar.gz as SageMaker would hand it over in the channel.
    channel = tmp_path / "channel"
    channel.mkdir()
    with tarfile.open(channel / "output.tar.gz", "w:gz") as tar:
        tar.add(opt_ml / "features-job" / "data", arcname=".")
    monkeypatch.setenv("SM_CHANNEL_FEATURES", str(channel))
    status, log, metrics = run_job(opt_ml, capsys, out="trial")
    assert status == 0, log[-3000:]
    assert "computing" not in log and log.count("using the cache") == 3
    assert "features: 3 cache files in" in log
    # What it read is not copied into its own output (a trial's output stays small).
    assert not (opt_ml / "trial" / "data" / "features").exists()
    assert (opt_ml / "trial" / "model" / "model.pt").is_file()


def test_undecodable_images_are_counted_whether_computed_or_cached(opt_ml, capsys):
    good = next((opt_ml / "input" / "data" / "train" / CLASS_DIRS[1]).iterdir()).read_bytes()
    (opt_ml / "input" / "data" / "train" / CLASS_DIRS[1] / "truncated.jpg").write_bytes(good[: len(good) // 2])
    for _ in range(2):
        status, log, metrics = run_job(opt_ml, capsys, "--max_unreadable_fraction", "0.1")
        assert status == 0, log[-3000:]
        assert list(metrics["unreadable"]["train"]) == [
            str(opt_ml / "input" / "data" / "train" / CLASS_DIRS[1] / "truncated.jpg")]
    assert "using the cache" in log


@pytest.mark.parametrize("args, message", [
    (["--features", "on", "--freeze", "layer3"], "features=on needs freeze=all"),
    (["--features_only", "true", "--features", "off"], "features_only=true needs features on"),
    (["--feature_views", "0"], "feature_views=0 must be >= 1"),
])
def test_contradictory_feature_settings_are_refused(opt_ml, capsys, args, message):
    status, log, _ = run_job(opt_ml, capsys, *args)
    assert status == 2
    assert message in (opt_ml / "output" / "failure").read_text()


def test_auto_means_on_exactly_when_the_whole_trunk_is_frozen():
    assert TrainConfig(freeze="all").use_features
    assert not TrainConfig(freeze="layer4").use_features
    assert not TrainConfig(freeze="all", features="off").use_features
    with pytest.raises(ConfigError):
        TrainConfig(freeze="none", features="on")


def test_feature_batches_follow_the_image_loader_order_and_resume_position(opt_ml):
    """Same (seed, epoch) permutation as the image loader, from any start; augmented views drawn per image."""
    import torchvision

    split = scan_split("train", opt_ml / "input" / "data" / "train")
    preprocessing = Preprocessing(resize_size=72, crop_size=64)
    model = torchvision.models.resnet18(num_classes=3)
    arch = architecture("resnet18")
    key = feature_key(split, "resnet18", trunk_checksum(model, arch), preprocessing, views=3, augment=True, seed=5)
    cached = extract(model, arch, split, key, preprocessing, torch.device("cpu"), 5, 0, 10, 5, GracefulStop())
    assert cached.features.shape == (3, 24, 512) and bool(cached.readable.all())
    assert not torch.equal(cached.features[0], cached.features[1])  # different random crops

    images = make_loader(split, EvalTransform(preprocessing), 5, True, 0, False, seed=5)
    features = FeatureLoader(cached, 5, shuffle=True, seed=5, device=torch.device("cpu"))
    for start in (0, 10):
        images.batch_sampler.set_epoch(2, start=start)
        features.batch_sampler.set_epoch(2, start=start)
        image_order = [i for keys in images.batch_sampler for i, _ in keys]
        batches = list(features)
        assert torch.cat([b.indices for b in batches]).tolist() == image_order
        assert len(image_order) == 24 - start
    views_used = set()
    for keys, batch in zip(features.batch_sampler, features):
        for (index, seed), row in zip(keys, batch.images):
            views_used.add(seed % 3)
            assert torch.equal(row, cached.features[seed % 3, index])
    assert views_used == {0, 1, 2}
    # A round trip through the file format keeps everything.
    again = SplitFeatures.from_dict(cached.to_dict())
    assert again.key == cached.key and torch.equal(again.features, cached.features)


def test_sigterm_while_computing_features_exits_143_and_keeps_no_partial_cache(opt_ml, caplog):
    from dogbreed.training.config import load_config
    from dogbreed.training.environment import TrainingEnvironment
    from dogbreed.training.failure import EXIT_SIGTERM
    from dogbreed.training.job import run

    env = TrainingEnvironment.from_env()
    config, paths = load_config(fast_args("--epochs", "1"), env)
    stop = GracefulStop()
    stop.requested = True  # SIGTERM arrived before the first batch of the first split
    assert run(config, paths, env, stop) == EXIT_SIGTERM
    assert "SIGTERM: stopped while computing features" in caplog.text
    assert not list((opt_ml / "output" / "data" / "features").glob("*.pt"))
    assert not (opt_ml / "checkpoints" / "checkpoint.pt").exists()
