import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import dogbreed.training.export
from dogbreed.artifacts import ModelMetadata
from dogbreed.training.export import export_model_dir
from dogbreed.training.failure import TrainingError
from dogbreed.images import open_image
from dogbreed.training.model import build_model
from dogbreed.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def trained_like_model(fake_weights):
    torch.manual_seed(0)
    model = build_model("resnet18", 3, str(fake_weights), "none")
    # Non-trivial BatchNorm statistics, as a fine-tuned model has.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 224, 224))
    return model.eval()


def test_onnx_matches_pytorch_on_real_photos(trained_like_model, real_photos, tmp_path):
    pre = Preprocessing()
    batch = torch.stack([torch.from_numpy(pre(open_image(p))) for p in real_photos])
    metadata = ModelMetadata(arch="resnet18", classes=["Beagle", "Siberian husky", "Toy poodle"], preprocessing=pre)
    diff = export_model_dir(trained_like_model, metadata, tmp_path, batch[:4]).onnx_max_abs_diff
    assert diff is not None and diff <= 1e-4

    model_proto = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(model_proto)
    assert [i.name for i in model_proto.graph.input] == ["input"]
    assert [o.name for o in model_proto.graph.output] == ["logits", "feature_map"]
    assert max(op.version for op in model_proto.opset_import if op.domain in ("", "ai.onnx")) == 17

    # All photos in one batch of another size: the batch axis is dynamic.
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": batch.numpy()})[0]
    with torch.no_grad():
        expected = trained_like_model(batch).numpy()
    assert got.shape == (len(real_photos), 3)
    assert np.max(np.abs(got - expected)) <= 1e-4

    reloaded = build_model("resnet18", 3, "none", "none")
    reloaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert ModelMetadata.load(tmp_path).classes == metadata.classes


def test_parity_failure_fails_the_export(trained_like_model, tmp_path, monkeypatch):
    monkeypatch.setattr(dogbreed.training.export, "ONNX_TOLERANCE", -1.0)
    metadata = ModelMetadata(arch="resnet18", classes=["a", "b", "c"], preprocessing=Preprocessing(72, 64))
    with pytest.raises(TrainingError, match="disagrees"):
        export_model_dir(trained_like_model, metadata, tmp_path, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("arch_name", ["resnet18", "efficientnet_lite0"])
def test_maps_are_exact_in_both_onnx_models(arch_name, real_photos, tmp_path):
    """For every architecture family, the fp32 and int8 models' feature map output with ``head.npz``
    gives maps whose mean plus the bias is the model's own logit."""
    from types import SimpleNamespace

    from dogbreed.architectures import architecture
    from dogbreed.explain import Head, class_map
    from dogbreed.training.model import build_network
    from dogbreed.training.quantize import CALIBRATIONS, CalibrationImages, quantize

    arch = architecture(arch_name)
    torch.manual_seed(0)
    network = build_network(arch, 3).eval()
    pre = Preprocessing(mean=arch.mean, std=arch.std)
    batch = np.stack([pre(open_image(p)) for p in real_photos[:4]])
    metadata = ModelMetadata(arch=arch_name, classes=["a", "b", "c"], preprocessing=pre)
    export_model_dir(network, metadata, tmp_path)
    calibration = CalibrationImages(iter([SimpleNamespace(inputs=batch, labels=np.zeros(4))]),
                                    SimpleNamespace(requested=False))
    quantize(tmp_path / "model.onnx", tmp_path / "model.int8.onnx", calibration, True, CALIBRATIONS["minmax"])

    saved = ModelMetadata.load(tmp_path)
    assert saved.explain is not None and saved.explain.grid == (7, 7)
    head = Head.load(tmp_path / saved.explain.head_file)
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        logits, feature_maps = session.run(["logits", "feature_map"], {"input": batch})
        # The int8 model's shape arithmetic stays float: its map has the fp32 model's grid.
        assert feature_maps.shape[2:] == saved.explain.grid, name
        scale = max(1.0, float(np.abs(logits).max()))
        for i in range(len(batch)):
            for c in range(3):
                explained = class_map(feature_maps[i], head, c).mean() + head.bias[c]
                assert abs(explained - logits[i, c]) <= 1e-4 * scale, (name, i, c)
