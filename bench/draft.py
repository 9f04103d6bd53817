#!/usr/bin/env python3
"""JPEG decoding at reduced scale (Pillow's ``draft``) against full decoding, for serving.

    bench/draft [--photos DIR ...] [--model-dir DIR ...] [--repeat 3] [--upscale 4]

``Image.draft("RGB", size)`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (its DCT
scaling) when the result still covers ``size``; here ``size`` is what the evaluation
transform resizes to (the shorter side to ``resize_size``), so only photos at least twice
that size are decoded smaller. Full decoding followed by :class:`Preprocessing` is the
training transform (``dogbreed.images.open_image``); the draft path is the same code after
``draft``. Per photo, on this machine's CPU: the decode and decode + preprocess time of
each (the best of ``--repeat`` runs), and for each model (served precision, ONNX Runtime
through the serving package's :class:`Predictor`) the top-1 agreement and the largest and
mean absolute difference of the model input and of the logits. Both models are
bench/serve's (trained for it when missing). The shared photos are small (median
500x333), so ``--upscale N`` also stands in for camera-sized uploads: each photo enlarged
N times (bicubic) and saved again as a quality-90 JPEG, both paths decoding those bytes.
Prints what it compares first and a JSON object last. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import preflight  # noqa: E402
import serve  # noqa: E402
import serve_model  # noqa: E402

from dogbreed.images import open_image, to_rgb  # noqa: E402
from dogbreed.preprocessing import Preprocessing  # noqa: E402


def decode_full(body: bytes):
    """The training transform's decode: the whole picture."""
    return open_image(body)


def decode_draft(body: bytes, preprocessing: Preprocessing):
    """The same decode after asking libjpeg for the smallest scale that still covers the resize."""
    from PIL import Image

    image = Image.open(io.BytesIO(body))
    image.draft("RGB", preprocessing.resized_size(*image.size))
    image.load()
    return to_rgb(image)


def upscaled(body: bytes, factor: int) -> bytes:
    """The photo ``factor`` times larger, as a quality-90 JPEG (a camera-sized upload)."""
    from PIL import Image

    image = open_image(body)
    out = io.BytesIO()
    image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
    return out.getvalue()


def best_ms(fn, repeat: int) -> float:
    """The fastest of ``repeat`` calls, in ms: the least disturbed by other work on the CPUs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def timings(bodies: list[bytes], preprocessing: Preprocessing, repeat: int) -> dict[str, float]:
    """Total ms over all photos: decode and decode + preprocess, full and draft."""
    out = {"full decode": 0.0, "draft decode": 0.0, "full decode + preprocess": 0.0, "draft decode + preprocess": 0.0}
    for body in bodies:
        out["full decode"] += best_ms(lambda: decode_full(body), repeat)
        out["draft decode"] += best_ms(lambda: decode_draft(body, preprocessing), repeat)
        out["full decode + preprocess"] += best_ms(lambda: preprocessing(decode_full(body)), repeat)
        out["draft decode + preprocess"] += best_ms(lambda: preprocessing(decode_draft(body, preprocessing)), repeat)
    return out


def agreement(predictor, bodies: list[bytes]) -> dict[str, float]:
    """Top-1 agreement and input/logit differences, draft against full, for one model."""
    pre = predictor.preprocessing
    same, input_max, input_sum, logit_max, logit_sum = 0, 0.0, 0.0, 0.0, 0.0
    for body in bodies:
        full, draft = pre(decode_full(body)), pre(decode_draft(body, pre))
        a, b = predictor.run(full[None])[0], predictor.run(draft[None])[0]
        same += int(np.argmax(a) == np.argmax(b))
        input_max, input_sum = max(input_max, float(np.abs(full - draft).max())), input_sum + float(np.abs(full - draft).mean())
        logit_max, logit_sum = max(logit_max, float(np.abs(a - b).max())), logit_sum + float(np.abs(a - b).mean())
    n = len(bodies)
    return {"top1_same": same, "photos": n, "input_max_abs": input_max, "input_mean_abs": input_sum / n,
            "logits_max_abs": logit_max, "logits_mean_abs": logit_sum / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/draft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, nargs="+", default=[serve.DATA / "test", serve.DATA / "valid"])
    parser.add_argument("--model-dir", type=Path, nargs="+", help="default: bench/serve's ResNet50 and EfficientNet-Lite0")
    parser.add_argument("--train-image", default="dogbreed-train:latest", help="trains a missing default model")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--upscale", type=int, default=1, help="enlarge each photo this many times first")
    args = parser.parse_args(argv)
    from PIL import Image

    from dogbreed.serving.predictor import Predictor

    paths = [p for folder in args.photos for p in sorted(folder.rglob("*.jpg"))]
    if not paths:
        raise SystemExit(f"bench/draft: no .jpg photos under {', '.join(map(str, args.photos))}")
    bodies = [p.read_bytes() if args.upscale == 1 else upscaled(p.read_bytes(), args.upscale) for p in paths]
    preprocessing = Preprocessing()
    reduced = sum(1 for b in bodies if min(Image.open(io.BytesIO(b)).size) >= 2 * preprocessing.resize_size)
    cpu = preflight.cpu_description()
    print(f"bench/draft: JPEG decode with Image.draft against full decode (the training transform), "
          f"{len(bodies)} photos from {', '.join(map(str, args.photos))}"
          f"{f', each enlarged {args.upscale}x' if args.upscale > 1 else ''} ({reduced} at least "
          f"{2 * preprocessing.resize_size} px on the shorter side, the only ones draft decodes smaller); {cpu}",
          flush=True)
    model_dirs = args.model_dir or [serve_model.ensure_model_dir(serve.DATA, args.train_image, *model)
                                    for model in serve.DEFAULT_MODELS.values()]
    times = timings(bodies, preprocessing, args.repeat)
    print(f"\ntime over the {len(bodies)} photos (best of {args.repeat} per photo), draft / full:")
    for stage in ("decode", "decode + preprocess"):
        full, draft = times[f"full {stage}"], times[f"draft {stage}"]
        print(f"  {stage:<20} full {full / len(bodies):6.2f} ms/photo  draft {draft / len(bodies):6.2f} ms/photo  "
              f"{draft / full:.2f}x")
    models = {}
    print("\nagreement, draft against full decode, per model (its served precision):")
    for model_dir in model_dirs:
        predictor = Predictor(model_dir)
        name = f"{predictor.metadata.arch} {predictor.precision}"
        models[name] = agreement(predictor, bodies)
        m = models[name]
        print(f"  {name:<24} top-1 same {m['top1_same']}/{m['photos']}; input |diff| max {m['input_max_abs']:.3f} "
              f"mean {m['input_mean_abs']:.4f}; logits |diff| max {m['logits_max_abs']:.3f} "
              f"mean {m['logits_mean_abs']:.4f}")
    print(json.dumps({"cpu": cpu, "photos": len(bodies), "upscale": args.upscale, "reduced_by_draft": reduced,
                      "ms_per_photo": {k: v / len(bodies) for k, v in times.items()}, "models": models}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
