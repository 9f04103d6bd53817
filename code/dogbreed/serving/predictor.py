"""Loading the exported model and turning image bytes into breed predictions.

The model directory is the training job's output (see :mod:`dogbreed.artifacts`):
``model.json`` gives the classes and the preprocessing, ``model.onnx`` the network and
``model.int8.onnx``, when the job exported one, its int8 version (:func:`choose_precision`
picks which to serve).
Decoding is :func:`dogbreed.images.open_image` and preprocessing is
:class:`dogbreed.preprocessing.Preprocessing`, the same code the training side
evaluates with.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dogbreed.artifacts import ONNX_FILE, ONNX_INPUT, ONNX_OUTPUT, ModelLoadError, ModelMetadata
from dogbreed.images import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageTooLargeError, open_image
from dogbreed.serving import content_types
from dogbreed.serving.environment import DEFAULT_INT8_MAX_LOSS, INT8_MAX_LOSS_ENV, PRECISION_ENV
from dogbreed.serving.errors import BadRequestError, PayloadTooLargeError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


def choose_precision(metadata: ModelMetadata, requested: str, max_loss_points: float) -> tuple[str, str]:
    """``(precision, reason)``: which of the model's ONNX files to serve, ``"fp32"`` or ``"int8"``, and why.

    ``requested`` is ``DOGBREED_PRECISION``: ``fp32`` or ``int8`` is served as asked (int8
    on a model without an int8 export raises :class:`ModelLoadError`); ``auto`` serves int8
    only when ``model.json`` records that it loses at most ``max_loss_points`` percentage
    points of validation top-1 against fp32.
    """
    int8 = metadata.int8
    if requested == "fp32":
        return "fp32", f"{PRECISION_ENV}=fp32"
    if requested == "int8":
        if int8 is None:
            raise ModelLoadError(
                f"{PRECISION_ENV}=int8, but this model has no int8 export (model.json records none: trained with "
                f"int8=false or before int8 exports); unset {PRECISION_ENV} or set it to fp32"
            )
        return "int8", f"{PRECISION_ENV}=int8; {int8.summary()}"
    if requested != "auto":
        raise ValueError(f"precision {requested!r} is not auto, fp32 or int8")
    if int8 is None:
        return "fp32", "the model has no int8 export (trained with int8=false or before int8 exports)"
    figures = f"{int8.summary()}, limit {max_loss_points:g} points ({INT8_MAX_LOSS_ENV})"
    if int8.loss_points <= max_loss_points + 1e-9:  # rounding must not turn a loss of exactly the limit away
        return "int8", figures
    return "fp32", f"int8 loses too much: {figures}"


def _onnxruntime():
    import onnxruntime

    return onnxruntime


def make_session_options(threads: int):
    """ONNX Runtime options for one worker: ``threads`` intra-op threads, full graph optimisation.

    Inter-op parallelism stays at 1 (a ResNet is one chain of ops) and spinning is off
    so idle threads do not burn the cores another worker is using.
    """
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return options


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c.isspace() for c in text)


def decode_image(
    body: bytes | bytearray | None,
    content_type: str | None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Check one request and decode its body into an upright RGB PIL image.

    Needs no model, so it is the default ``input_fn``'s whole work. Raises the
    :mod:`dogbreed.serving.errors` a client should see: 415 for the Content-Type, 413
    over ``max_payload_bytes`` or ``max_image_pixels`` (read from the header, before
    decoding), 400 for an empty, textual, truncated or corrupt body.
    """
    content_types.parse(content_type)
    size = 0 if body is None else len(body)
    if size > max_payload_bytes:
        raise PayloadTooLargeError(
            f"the request body is {size} bytes, over the limit of {max_payload_bytes} bytes "
            f"({max_payload_bytes / 1048576:g} MiB); send a smaller or more compressed image"
        )
    if size == 0:
        raise BadRequestError("the request body is empty; send the image file's bytes as the body")
    try:
        return open_image(bytes(body), max_image_pixels)
    except ImageTooLargeError as exc:
        raise PayloadTooLargeError(str(exc)) from exc
    except ImageDecodeError as exc:
        hint = ""
        if _looks_like_text(body):
            hint = " (the body looks like text: send the raw image bytes, not JSON, base64 or a file name)"
        raise BadRequestError(f"could not read the body as an image: {exc}{hint}") from exc


class Predictor:
    """The model of one directory, ready to answer ``predict`` calls.

    Construction validates everything up front (metadata, ONNX file, input/output
    names, output width against the class list, one warm-up run) and raises
    :class:`ModelLoadError` with a readable reason, so a bad model is found at start.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        threads: int = 1,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
        default_top_k: int = 5,
        precision: str = "auto",
        int8_max_loss: float = DEFAULT_INT8_MAX_LOSS,
    ):
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelLoadError(f"model directory {self.model_dir} does not exist; mount the model at /opt/ml/model")
        self.metadata = ModelMetadata.load(self.model_dir)
        self.classes = list(self.metadata.classes)
        self.preprocessing = self.metadata.preprocessing
        self.max_payload_bytes = max_payload_bytes
        self.max_image_pixels = max_image_pixels
        self.default_top_k = default_top_k
        # precision: "fp32" (model.onnx) or "int8" (model.int8.onnx); precision_reason says why.
        self.precision, self.precision_reason = choose_precision(self.metadata, precision, int8_max_loss)
        onnx_file = self.metadata.int8.file if self.precision == "int8" else ONNX_FILE
        self.session = self._load_session(self.model_dir / onnx_file, threads)
        self._warm_up()
        logger.info("serving %s (%s): %s", self.precision, onnx_file, self.precision_reason)

    def _load_session(self, path: Path, threads: int):
        if not path.is_file():
            hint = f" (or set {PRECISION_ENV}=fp32 to serve {ONNX_FILE})" if self.precision == "int8" else ""
            raise ModelLoadError(f"{path} is missing; the training job should have exported it{hint}")
        ort = _onnxruntime()
        try:
            session = ort.InferenceSession(
                str(path), sess_options=make_session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if ONNX_INPUT not in inputs or ONNX_OUTPUT not in outputs:
            raise ModelLoadError(
                f"{path} has inputs {inputs} and outputs {outputs}; expected {ONNX_INPUT!r} and {ONNX_OUTPUT!r}"
            )
        return session

    def _warm_up(self) -> None:
        # One run at load time: catches a class-count mismatch now rather than on the
        # first request, and pays ORT's first-run allocation cost before /ping is 200.
        size = self.preprocessing.crop_size
        try:
            logits = self.run(np.zeros((1, 3, size, size), np.float32))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"the ONNX model fails on a {size}x{size} input: {exc}") from exc
        if logits.shape != (1, len(self.classes)):
            raise ModelLoadError(
                f"the ONNX model outputs shape {tuple(logits.shape)} but model.json lists "
                f"{len(self.classes)} classes"
            )

    def decode(self, image_bytes: bytes, content_type: str | None = content_types.JPEG) -> Image.Image:
        """:func:`decode_image` with this predictor's limits."""
        return decode_image(image_bytes, content_type, self.max_payload_bytes, self.max_image_pixels)

    def preprocess(self, image_bytes: bytes, content_type: str | None = content_types.JPEG) -> np.ndarray:
        """Decode and preprocess: the (3, crop, crop) float32 array the model sees."""
        return self.preprocessing(self.decode(image_bytes, content_type))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on an (N, 3, H, W) float32 batch; returns the logits."""
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})[0]

    def resolve_top_k(self, top_k: Any) -> int:
        """Validate a requested ``top_k`` (None: the default), capped at the class count."""
        if top_k is None or (isinstance(top_k, str) and not top_k.strip()):
            top_k = self.default_top_k
        try:
            value = int(str(top_k).strip())
        except ValueError:
            raise BadRequestError(f"top_k={top_k!r} is not an integer; use a whole number from 1") from None
        if value < 1:
            raise BadRequestError(f"top_k={value} must be at least 1")
        return min(value, len(self.classes))

    def classify(self, image: Image.Image | np.ndarray, top_k: Any = None) -> dict[str, Any]:
        """An RGB image (or its preprocessed (3, H, W) array) -> the answer for ``top_k`` classes.

        ``{"predicted_class", "predicted_label", "top_k": [{"class", "label", "probability"}]}``,
        most probable first.
        """
        k = self.resolve_top_k(top_k)
        tensor = image if isinstance(image, np.ndarray) else self.preprocessing(image)
        logits = self.run(np.asarray(tensor, np.float32)[None])[0].astype(np.float64)
        # Softmax in float64, shifted by the max so large logits cannot overflow.
        exp = np.exp(logits - logits.max())
        probs = exp / exp.sum()
        order = np.argsort(-probs, kind="stable")[:k]
        best = int(order[0])
        return {
            "predicted_class": best,
            "predicted_label": self.classes[best],
            "top_k": [
                {"class": int(i), "label": self.classes[int(i)], "probability": round(float(probs[i]), 6)}
                for i in order
            ],
        }

    def predict(self, image_bytes: bytes, content_type: str | None, top_k: Any = None) -> dict[str, Any]:
        """Image bytes -> :meth:`classify`'s answer; the whole request path in one call."""
        content_types.parse(content_type)  # a wrong type is reported before anything else
        k = self.resolve_top_k(top_k)
        return self.classify(self.decode(image_bytes, content_type), k)
