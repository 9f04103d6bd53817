"""The model bench/serve measures when none is given: a ResNet50 trained by the training image.

A short job on the 3-breed photos (random ImageNet-shaped backbone, frozen; the fc
trained on cached features), run in ``dogbreed-train`` exactly as ``make train-local``
runs it, so the model directory holds whatever the training job exports today
(model.pt, model.onnx, model.json and any other precision it writes). The serving cost
of a ResNet50 does not depend on its weights. Kept under build/bench/ and reused;
delete that folder to make a new one (after the training image's export changed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import preflight

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "code"))
DEFAULT_TREE = REPO / "build" / "bench" / "serve-resnet50"
HYPERPARAMETERS = {"arch": "resnet50", "pretrained": "none", "freeze": "all", "epochs": "3", "seed": "0",
                   "debug": "false", "profile": "false"}
# The pretrained EfficientNet-Lite0 with the frozen recipe (bench/serve --archs, serve_archs, soak, serverless).
LITE0_TREE = REPO / "build" / "bench" / "serve-efficientnet_lite0"
LITE0_HYPERPARAMETERS = {"arch": "efficientnet_lite0", "pretrained": "imagenet", "freeze": "all", "epochs": "5",
                         "seed": "0", "debug": "false", "profile": "false"}


def ensure_model_dir(data: Path, train_image: str, tree: Path = DEFAULT_TREE,
                     hyperparameters: dict[str, str] = HYPERPARAMETERS) -> Path:
    """``tree``/model, trained in ``train_image`` on ``data`` with ``hyperparameters``, unless it holds one."""
    model_dir = tree / "model"
    if (model_dir / "model.json").is_file():
        return model_dir
    from dogbreed.tools.opt_ml import build_tree

    preflight.require_images(f"bench/{Path(sys.argv[0]).stem}", train_image)
    print(f"no model at {model_dir}: training a {hyperparameters['arch']} in {train_image} on {data} (a few minutes)",
          flush=True)
    build_tree(data, tree, hyperparameters)
    proc = subprocess.run(["docker", "run", "--rm", "-v", f"{tree.resolve()}:/opt/ml", train_image, "train"],
                          capture_output=True, text=True, timeout=3600)
    failure = tree / "output" / "failure"
    if proc.returncode != 0 or not (model_dir / "model.json").is_file():
        reason = failure.read_text().strip() if failure.is_file() else "no failure file"
        raise SystemExit(f"the training job exited {proc.returncode} ({reason}); make a model with "
                         f"`make train-local DATA=...` and pass --model-dir:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return model_dir
