"""Training and serving see the same tensors and the same predictions.

The real photos go through the training side's evaluation transform (torchvision with
model.json's parameters, and the training code's EvalTransform) and through the serving
handler's decode + preprocess path; the ONNX model behind the endpoint is compared with
the PyTorch model it was exported from.
"""

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from dogbreed.artifacts import ModelMetadata
from dogbreed.images import open_image


@pytest.fixture(scope="module")
def torchvision_eval(model_dir):
    p = ModelMetadata.load(model_dir).preprocessing
    return T.Compose([T.Resize(p.resize_size), T.CenterCrop(p.crop_size), T.ToTensor(), T.Normalize(p.mean, p.std)])


def test_tensors_match_torchvision(predictor, real_photos, torchvision_eval):
    assert len(real_photos) >= 9
    for path in real_photos:
        served = predictor.preprocess(path.read_bytes(), "image/jpeg")
        trained = torchvision_eval(open_image(path)).numpy()
        assert served.shape == trained.shape == (3, 224, 224), path
        np.testing.assert_allclose(served, trained, rtol=0, atol=1e-6, err_msg=str(path))


def test_tensors_match_the_training_eval_dataset(predictor, real_photos, model_dir):
    from dogbreed.training import data

    transform = data.EvalTransform(ModelMetadata.load(model_dir).preprocessing)
    dataset = data.ImageDataset([(p, 0) for p in real_photos], transform)
    for index, path in enumerate(real_photos):
        sample = dataset[index, None]  # an evaluation key: no augmentation seed
        assert sample.unreadable is None
        tensor = data.Normalize.of(transform.preprocessing)(sample.image[None])[0]
        np.testing.assert_allclose(predictor.preprocess(path.read_bytes()), tensor.numpy(), rtol=0, atol=1e-6)


def test_onnx_predictions_match_pytorch(torch_model_and_dir, predictor, real_photos, torchvision_eval):
    model, _ = torch_model_and_dir
    batch = torch.stack([torchvision_eval(open_image(p)) for p in real_photos])
    with torch.no_grad():
        expected = torch.softmax(model.eval()(batch), dim=1).numpy()
    for path, probs in zip(real_photos, expected):
        answer = predictor.predict(path.read_bytes(), "image/jpeg", top_k=3)
        assert answer["predicted_class"] == int(probs.argmax()), path
        for entry in answer["top_k"]:
            assert entry["probability"] == pytest.approx(float(probs[entry["class"]]), abs=1e-4)
