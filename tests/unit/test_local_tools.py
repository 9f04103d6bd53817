"""Host tools: the /opt/ml tree builder and the demo sample generator."""

from __future__ import annotations

import json
import os

import pytest

from dogbreed.tools import opt_ml, sample
from dogbreed.images import open_image


def test_sample_has_the_dogimages_layout(tmp_path):
    sample.generate(tmp_path, per_class=10, seed=3)
    for split, n in (("train", 7), ("valid", 2), ("test", 1)):
        folders = sorted(p.name for p in (tmp_path / split).iterdir())
        assert folders == list(sample.CLASSES)
        for folder in folders:
            files = list((tmp_path / split / folder).glob("*.jpg"))
            assert len(files) == n
            assert open_image(files[0]).mode == "RGB"


def test_tree_has_what_sagemaker_provides(tmp_path):
    data = sample.generate(tmp_path / "data", per_class=10)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    tree = opt_ml.build_tree(data, tmp_path / "opt_ml", {"lr": "0.01"}, weights)
    config = tree / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {"lr": "0.01"}
    assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"train", "valid", "test", "pretrained"}
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"
    src = next((data / "train" / sample.CLASSES[0]).iterdir())
    dst = tree / "input" / "data" / "train" / sample.CLASSES[0] / src.name
    assert os.path.samefile(src, dst) or dst.read_bytes() == src.read_bytes()
    assert (tree / "input" / "data" / "pretrained" / "w.pth").read_bytes() == b"weights"
    for sub in ("model", "output/data", "checkpoints"):
        assert (tree / sub).is_dir()


def test_rebuilding_clears_old_outputs_but_resume_keeps_checkpoints(tmp_path):
    data = sample.generate(tmp_path / "data", per_class=10)
    tree = opt_ml.build_tree(data, tmp_path / "opt_ml")
    (tree / "model" / "old.onnx").write_text("x")
    (tree / "checkpoints" / "checkpoint.pt").write_text("x")
    opt_ml.build_tree(data, tree, resume=True)
    assert not (tree / "model" / "old.onnx").exists()
    assert (tree / "checkpoints" / "checkpoint.pt").exists()
    opt_ml.build_tree(data, tree)
    assert not (tree / "checkpoints" / "checkpoint.pt").exists()


def test_missing_split_and_bad_arguments_are_clear(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no valid folder"):
        opt_ml.build_tree(tmp_path / "data", tmp_path / "opt_ml")
    with pytest.raises(SystemExit):
        opt_ml.main([str(tmp_path / "data"), str(tmp_path / "o"), "--hp", "no-equals-sign"])
