"""A course-style inference script: what users deploy with SageMaker's PyTorch container.

Eager PyTorch with torchvision transforms, the four functions of the toolkit's contract.
It reads dogbreed's model directory (``model.pt``, a torchvision ``state_dict``; the
classes and preprocessing from ``model.json``) so that the baseline serves exactly the
model dogbreed-serve does, but runs it the way the course's scripts run theirs.
"""

import io
import json
import os
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision import models, transforms

TOP_K = 5
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")

# input_fn is not given the model, so model_fn leaves the transform here (course scripts
# keep theirs at module level too).
_transform = None


@dataclass
class Model:
    net: torch.nn.Module
    classes: list


def model_fn(model_dir):
    """The torchvision network named in model.json (resnet50 here) with the fine-tuned weights."""
    global _transform
    with open(os.path.join(model_dir, "model.json")) as f:
        meta = json.load(f)
    net = getattr(models, meta.get("arch", "resnet50"))(num_classes=len(meta["classes"]))
    net.load_state_dict(torch.load(os.path.join(model_dir, "model.pt"), map_location="cpu"))
    net.eval()
    pre = meta["preprocessing"]
    _transform = transforms.Compose([
        transforms.Resize(pre["resize_size"]),
        transforms.CenterCrop(pre["crop_size"]),
        transforms.ToTensor(),
        transforms.Normalize(pre["mean"], pre["std"]),
    ])
    return Model(net, meta["classes"])


def input_fn(request_body, content_type):
    """Image bytes -> the normalised (3, H, W) tensor."""
    if content_type not in IMAGE_TYPES:
        raise ValueError(f"unsupported content type {content_type}")
    image = Image.open(io.BytesIO(request_body)).convert("RGB")
    return _transform(image)


def predict_fn(input_object, model):
    """Softmax over the classes; the top k labels with their probabilities."""
    with torch.no_grad():
        probs = torch.softmax(model.net(input_object.unsqueeze(0)), dim=1)[0]
    values, indices = probs.topk(min(TOP_K, len(model.classes)))
    return {
        "predicted_label": model.classes[int(indices[0])],
        "top_k": [{"label": model.classes[int(i)], "probability": float(p)} for p, i in zip(values, indices)],
    }


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
