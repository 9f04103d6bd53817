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
    diff = export_model_dir(trained_like_model, metadata, tmp_path, batch[:4])
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
