"""Loading the exported model and turning image bytes into breed predictions.

The model directory is the training job's output (see :mod:`dogbreed.artifacts`):
``model.json`` gives the classes and the preprocessing, ``model.onnx`` the network and
``model.int8.onnx``, when the job exported one, its int8 version (:func:`choose_precision`
picks which to serve), and ``head.npz`` with the ONNX models' ``feature_map`` output the
class activation maps (:mod:`dogbreed.explain`) of models exported since they exist.
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
import onnxruntime as ort
from PIL import Image

from dogbreed.artifacts import ONNX_FILE, ONNX_INPUT, ONNX_OUTPUT, ModelLoadError, ModelMetadata
from dogbreed.explain import CHOICES as EXPLAIN_CHOICES
from dogbreed.explain import METHODS as EXPLAIN_METHODS
from dogbreed.explain import NO_MAP, ExplainError, Explanation, Head
from dogbreed.explain import explain as explain_class
from dogbreed.images import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageTooLargeError, open_image
from dogbreed.serving import content_types
from dogbreed.serving.environment import DEFAULT_INT8_MAX_LOSS, INT8_MAX_LOSS_ENV, PRECISION_ENV
from dogbreed.serving.errors import BadRequestError, NotExplainableError, PayloadTooLargeError

logger = logging.getLogger(__name__)

# ONNX Runtime's log severities (onnxruntime.capi OrtLoggingLevel): 0 verbose ... 4 fatal.
ORT_INFO = 1
ORT_ERROR = 3

DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# The warm-up checks that the head on the mean of the feature map gives the logits, within
# this much per unit of the largest logit (at least 1): float32 sums in another order.
HEAD_TOLERANCE = 1e-3


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


def ort_log_severity(log_level: int) -> int:
    """ONNX Runtime's log severity for a Python logging level: its info lines at debug, else errors only.

    Its warnings are about graph rewrites, nothing a user of the endpoint can act on.
    """
    return ORT_INFO if log_level <= logging.DEBUG else ORT_ERROR


def make_session_options(threads: int, log_level: int = logging.INFO):
    """ONNX Runtime options for one worker: ``threads`` intra-op threads, full graph optimisation.

    Inter-op parallelism stays at 1 (a ResNet is one chain of ops) and spinning is off
    so idle threads do not burn the cores another worker is using. ``log_level`` is the
    container's (SAGEMAKER_CONTAINER_LOG_LEVEL), see :func:`ort_log_severity`.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = ort_log_severity(log_level)
    return options


def _looks_like_text(data: bytes | bytearray) -> bool:
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
    if body is None or size == 0:
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
    names, output width against the class list, the head file against the feature map,
    warm-up runs) and raises :class:`ModelLoadError` with a readable reason, so a bad
    model is found at start.
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
        log_level: int = logging.INFO,
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
        onnx_file = ONNX_FILE
        if self.precision == "int8":
            assert self.metadata.int8 is not None, "choose_precision picks int8 only for a model with an int8 export"
            onnx_file = self.metadata.int8.file
        self.session = self._load_session(self.model_dir / onnx_file, threads, log_level)
        self._warm_up()
        # The head for class activation maps; None for a model exported before them.
        self.head = self._load_head(onnx_file)
        if self.head is not None:
            self._check_feature_map(self.head)
        logger.info("serving %s (%s): %s", self.precision, onnx_file, self.precision_reason)

    def _load_session(self, path: Path, threads: int, log_level: int):
        if not path.is_file():
            hint = f" (or set {PRECISION_ENV}=fp32 to serve {ONNX_FILE})" if self.precision == "int8" else ""
            raise ModelLoadError(f"{path} is missing; the training job should have exported it{hint}")
        try:
            session = ort.InferenceSession(
                str(path), sess_options=make_session_options(threads, log_level), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if ONNX_INPUT not in inputs or ONNX_OUTPUT not in outputs:
            raise ModelLoadError(
                f"{path} has inputs {inputs} and outputs {outputs}; expected {ONNX_INPUT!r} and {ONNX_OUTPUT!r}"
            )
        return session

    def _load_head(self, onnx_file: str) -> Head | None:
        cam = self.metadata.explain
        if cam is None:
            return None
        outputs = [o.name for o in self.session.get_outputs()]
        if cam.feature_map not in outputs:
            raise ModelLoadError(
                f"model.json promises class activation maps from the output {cam.feature_map!r}, but {onnx_file} "
                f"has outputs {outputs}; export the model again with this version"
            )
        try:
            head = Head.load(self.model_dir / cam.head_file)
        except ExplainError as exc:
            raise ModelLoadError(f"{exc} (model.json's explain.head_file); the training job writes it") from exc
        if head.weight.shape[0] != len(self.classes):
            raise ModelLoadError(
                f"{cam.head_file} holds a head for {head.weight.shape[0]} classes but model.json "
                f"lists {len(self.classes)}"
            )
        return head

    @property
    def can_explain(self) -> bool:
        """Whether this model gives class activation maps (models exported before them do not)."""
        return self.head is not None

    def _warm_up(self) -> None:
        # One run at load time: catches a class-count mismatch now rather than on the
        # first request, and pays ORT's first-run allocation cost before /ping is 200.
        size = self.preprocessing.crop_size
        try:
            logits = self.run(np.zeros((1, 3, size, size), np.float32))
        except Exception as exc:
            raise ModelLoadError(f"the ONNX model fails on a {size}x{size} input: {exc}") from exc
        if logits.shape != (1, len(self.classes)):
            raise ModelLoadError(
                f"the ONNX model outputs shape {tuple(logits.shape)} but model.json lists {len(self.classes)} classes"
            )

    def _check_feature_map(self, head: Head) -> None:
        # The explain path's first run (its own ORT allocations) and the proof that the map
        # sums to the logits: the feature map's shape fits the head and model.json, and the
        # head on its mean gives the logits the model outputs. Noise, not zeros: a zero input
        # can give an all-zero feature map, which any head of the right shape would pass.
        size = self.preprocessing.crop_size
        noise = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        try:
            logits, feature_map = self.run_explained(noise)
        except Exception as exc:
            raise ModelLoadError(
                f"the ONNX model fails to give its feature map on a {size}x{size} input: {exc}"
            ) from exc
        cam = self.metadata.explain
        assert cam is not None, "a head is loaded only for model.json's explain"
        expected = (1, head.weight.shape[1], *cam.grid)
        if feature_map.shape != expected:
            raise ModelLoadError(
                f"the ONNX model's {cam.feature_map} has shape {tuple(feature_map.shape)}; "
                f"{cam.head_file} and model.json's explain.grid expect {expected}"
            )
        pooled = feature_map[0].astype(np.float64).mean(axis=(1, 2))
        from_head = head.weight.astype(np.float64) @ pooled + head.bias
        difference = float(np.max(np.abs(from_head - logits[0])))
        if difference > HEAD_TOLERANCE * max(1.0, float(np.max(np.abs(logits)))):
            raise ModelLoadError(
                f"{cam.head_file} does not fit the ONNX model: the head on the mean of its "
                f"{cam.feature_map} differs from its logits by {difference:.3g}"
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

    def run_explained(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run`, also returning the (N, channels, h, w) feature map, in one pass; needs :attr:`can_explain`."""
        cam = self.metadata.explain
        assert cam is not None, "run_explained needs can_explain"
        logits, feature_map = self.session.run([ONNX_OUTPUT, cam.feature_map], {ONNX_INPUT: batch})
        return logits, feature_map

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

    def resolve_explain(self, method: str | None) -> str | None:
        """Validate a requested map (None or ``"none"``: no map) against what this model can give.

        Raises :class:`BadRequestError` for an unknown method and :class:`NotExplainableError`
        (422) saying why when this model gives no maps.
        """
        if method is None or method == NO_MAP:
            return None
        if method not in EXPLAIN_METHODS:
            raise BadRequestError(f"explain={method!r} is not one of {', '.join(EXPLAIN_CHOICES)}")
        if not self.can_explain:
            raise NotExplainableError(
                "this model cannot give class activation maps: it was exported before them (model.json has no "
                "explain, and there is no head.npz); train it again with this version, or ask for the prediction "
                "alone (no X-Explain: cam, explain=cam or Accept: image/png)"
            )
        return method

    def classify(
        self, image: Image.Image | np.ndarray, top_k: Any = None, explain: str | None = None
    ) -> dict[str, Any]:
        """An RGB image (or its preprocessed (3, H, W) array) -> the answer for ``top_k`` classes.

        ``{"predicted_class", "predicted_label", "top_k": [{"class", "label", "probability"}]}``,
        most probable first. With ``explain="cam"`` (see :meth:`resolve_explain`) the image
        must be the picture itself, and the answer is an :class:`ExplainedPrediction` that
        adds ``"explanation"``, the top class's map (:meth:`dogbreed.explain.Explanation.to_dict`).
        """
        k = self.resolve_top_k(top_k)
        if self.resolve_explain(explain) is not None:
            return self._classify_explained(image, k)
        tensor = image if isinstance(image, np.ndarray) else self.preprocessing(image)
        logits = self.run(np.asarray(tensor, np.float32)[None])[0]
        return self._answer(logits, k)

    def _classify_explained(self, image: Image.Image | np.ndarray, k: int) -> ExplainedPrediction:
        if not isinstance(image, Image.Image):
            # Only the default input_fn's picture says where the crop was: a user's input_fn gave something else.
            raise NotExplainableError(
                f"a class activation map is placed on the uploaded picture, but the model's input_fn gave a "
                f"{type(image).__name__}, not a PIL image; ask for the prediction alone (no X-Explain: cam, "
                f"explain=cam or Accept: image/png)"
            )
        logits, feature_map = self.run_explained(self.preprocessing(image)[None])
        answer = self._answer(logits[0], k)
        best = answer["predicted_class"]
        assert self.head is not None, "classify resolved the request against can_explain"
        explanation = explain_class(feature_map[0], self.head, best, self.classes[best], self.preprocessing, image.size)
        answer["explanation"] = explanation.to_dict()
        return ExplainedPrediction(answer, image, explanation)

    def _answer(self, logits: np.ndarray, k: int) -> dict[str, Any]:
        """One image's logits -> the JSON answer for its ``k`` most probable classes."""
        logits = logits.astype(np.float64)
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

    def predict(
        self, image_bytes: bytes, content_type: str | None, top_k: Any = None, explain: str | None = None
    ) -> dict[str, Any]:
        """Image bytes -> :meth:`classify`'s answer; the whole request path in one call."""
        content_types.parse(content_type)  # a wrong type is reported before anything else
        k = self.resolve_top_k(top_k)
        method = self.resolve_explain(explain)
        return self.classify(self.decode(image_bytes, content_type), k, method)


class ExplainedPrediction(dict):
    """:meth:`Predictor.classify`'s answer with a map: the JSON answer, ``"explanation"`` included.

    Also carries, as attributes that JSON encoding ignores, what the PNG answer is drawn
    from: the uploaded ``image`` and the :class:`~dogbreed.explain.Explanation`. A dict
    still, so a model's own ``output_fn`` gets what it always got, plus the explanation.
    """

    def __init__(self, answer: dict[str, Any], image: Image.Image, explanation: Explanation):
        super().__init__(answer)
        self.image = image
        self.explanation = explanation
