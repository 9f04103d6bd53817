"""The int8 model: ``model.onnx`` statically quantized with ONNX Runtime, and what it costs.

ONNX Runtime's CPU recipe: QDQ format, unsigned int8 activations and signed int8 weights
(the pair its fast x86 kernels take; see :data:`INT8_FORMAT`),
per-channel weight scales, activation ranges calibrated (MinMax) on training images in
the evaluation view. Both models then classify the same preprocessed validation images,
and :class:`~dogbreed.artifacts.Int8Export` records both top-1 accuracies in
``model.json``; the endpoint serves int8 only when the loss is small enough.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from dogbreed.artifacts import INT8_ONNX_FILE, ONNX_FEATURE_MAP, ONNX_FILE, ONNX_INPUT, ONNX_OUTPUT, Int8Export
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.data import EvalTransform, ImageDataset, Split
from dogbreed.training.failure import TrainingError
from dogbreed.training.loop import GracefulStop, StopRequested, note_unreadable

log = logging.getLogger(__name__)

# Unsigned activations, signed weights: on x86, ONNX Runtime's fast int8 convolutions are
# u8s8 (VPMADDUBSW / VNNI). Measured with ORT 1.32 on a 2-core AVX-512 VNNI EPYC, ResNet50
# at 224 px, batch 1: s8s8 ran 49.8 ms on one thread against 21.9 ms for u8s8 (fp32 76.1).
# u8s8 is also the pair that can saturate on CPUs without VNNI, which int8_reduce_range
# (7-bit weights, the default) rules out.
INT8_FORMAT = "QDQ u8s8 per-channel"
# How activation ranges are set from the calibration images: their extremes (MinMax), or
# the 99.999th percentile of their histogram, which outlying activations cannot stretch
# (EfficientNet-Lite0 needs it: see Architecture.int8_calibration).
CALIBRATIONS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
BATCH_SIZE = 16


@dataclass
class EvalBatch:
    """Readable images of a split in the evaluation view: the model's float32 input and the labels."""

    inputs: np.ndarray  # (N, 3, H, W) float32, normalised
    labels: np.ndarray  # (N,) int64


def eval_batches(
    split: Split,
    preprocessing: Preprocessing,
    order: Iterable[int],
    stop: GracefulStop,
    limit: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[EvalBatch]:
    """Batches of the split's images in ``order``, decoded as the job's loaders decode them.

    Images already known to be unreadable are passed over; new ones are recorded in the
    split (and logged) as the loaders do. Stops after ``limit`` readable images. A SIGTERM
    raises :class:`StopRequested` between batches (the flag alone: only rank 0 gets here,
    so no collective check).
    """
    dataset = ImageDataset(split.samples, EvalTransform(preprocessing))
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    taken = 0
    for index in order:
        if limit is not None and taken >= limit:
            break
        if str(split.samples[index][0]) in split.unreadable:
            continue
        sample = dataset[(index, None)]
        if sample.unreadable is not None:
            note_unreadable(split, [(index, sample.unreadable)])
            continue
        assert sample.image is not None  # a sample without a reason to be unreadable has its image
        pixels.append(sample.image.numpy())
        labels.append(sample.label)
        taken += 1
        if len(pixels) == batch_size:
            yield _batch(preprocessing, pixels, labels, stop)
            pixels, labels = [], []
    if pixels:
        yield _batch(preprocessing, pixels, labels, stop)


def _batch(preprocessing: Preprocessing, pixels: list[np.ndarray], labels: list[int], stop: GracefulStop) -> EvalBatch:
    if stop.requested:
        raise StopRequested()
    return EvalBatch(preprocessing.normalize(np.stack(pixels)), np.asarray(labels, np.int64))


class CalibrationImages(CalibrationDataReader):
    """ONNX Runtime's calibration input: the batches of :func:`eval_batches`, decoded once and
    handed over a range of batches at a time.

    :func:`quantize` has ONNX Runtime collect one batch at a time (its ``CalibStridedMinMax``
    option strides any calibrator), so the percentile calibration holds one batch's
    activations in memory rather than every calibration image's.
    """

    def __init__(self, batches: Iterator[EvalBatch], stop: GracefulStop):
        self._batches = list(batches)
        self._stop = stop
        self.images = sum(len(batch.labels) for batch in self._batches)
        self._pending = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._stop.requested:
            raise StopRequested()
        batch = next(self._pending, None)
        return None if batch is None else {ONNX_INPUT: batch.inputs}


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Drop the INFO lines the quantizer logs on the root logger (a few per layer, e.g. "Created a
    copy of bias input"); named loggers, the job's included, are unaffected."""
    quiet = _BelowWarning()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


def nodes_kept_float(model_path: Path) -> list[str]:
    """The names of the nodes the int8 model keeps in float32.

    * Shape arithmetic: TF-style "same" padding (EfficientNet-Lite's stride-2 convolutions)
      is computed in the graph from the input's shape, and a quantized Concat of those pad
      widths rounds a 1 to 0, which shrinks the feature map (7x7 became 6x6). Every node
      that no image data flows into is such arithmetic (or a constant).
    * The head: pooling, flattening and the linear layer after the feature map output, so
      the int8 model's logits are its own feature map's pooled mean through the float head
      and its class activation maps are as exact as the fp32 model's. The head is a few
      thousand multiplications: float costs nothing measurable there.
    """
    import onnx  # noqa: PLC0415 - the quantizer's own dependency

    graph = onnx.load(str(model_path)).graph
    data = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    after_feature_map, kept = {ONNX_FEATURE_MAP}, []
    for node in graph.node:  # topologically sorted
        if node.op_type not in ("Shape", "Size") and data.intersection(node.input):
            data.update(node.output)
        else:
            kept.append(node.name)
            continue
        if after_feature_map.intersection(node.input):
            after_feature_map.update(node.output)
            kept.append(node.name)
    return kept


def quantize(
    fp32_path: Path, int8_path: Path, calibration: CalibrationImages, reduce_range: bool, method: CalibrationMethod
) -> None:
    """Write the static int8 QDQ model of ``fp32_path`` to ``int8_path``, calibrated on ``calibration``."""
    with tempfile.TemporaryDirectory(prefix="dogbreed-int8-") as tmp, quiet_root_logger():
        # Shape inference and graph optimisation first, as ONNX Runtime advises (BN is already
        # folded into the convolutions by the export; this mostly fuses and annotates shapes).
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_path),
            calibration,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            calibrate_method=method,
            calibration_providers=["CPUExecutionProvider"],
            nodes_to_exclude=nodes_kept_float(prepared),
            extra_options={"CalibStridedMinMax": 1},  # one batch at a time (see CalibrationImages)
        )


def top1(
    sessions: Sequence[ort.InferenceSession], split: Split, preprocessing: Preprocessing, stop: GracefulStop
) -> tuple[int, list[int]]:
    """``(images, correct per session)``: every session classifies the same readable images of ``split``."""
    images, correct = 0, [0] * len(sessions)
    for batch in eval_batches(split, preprocessing, range(len(split.samples)), stop):
        for i, session in enumerate(sessions):
            logits = session.run([ONNX_OUTPUT], {ONNX_INPUT: batch.inputs})[0]
            correct[i] += int((logits.argmax(axis=1) == batch.labels).sum())
        images += len(batch.labels)
    return images, correct


def export_int8(
    model_dir: Path,
    preprocessing: Preprocessing,
    train: Split,
    valid: Split,
    calibration_images: int,
    reduce_range: bool,
    seed: int,
    stop: GracefulStop,
    calibration_method: str = "minmax",
) -> Int8Export:
    """Write ``model.int8.onnx`` beside ``model.onnx`` and measure both on ``valid``.

    Calibrates on up to ``calibration_images`` training images drawn at random (``seed``),
    so every class is seen, with ``calibration_method`` (a key of :data:`CALIBRATIONS`). Raises
    :class:`TrainingError` with the reason when ONNX Runtime
    cannot quantize or run the model, and :class:`StopRequested` on SIGTERM.
    """
    model_dir = Path(model_dir)
    order = np.random.default_rng(seed).permutation(len(train.samples)).tolist()
    calibration = CalibrationImages(eval_batches(train, preprocessing, order, stop, limit=calibration_images), stop)
    try:
        quantize(
            model_dir / ONNX_FILE,
            model_dir / INT8_ONNX_FILE,
            calibration,
            reduce_range,
            CALIBRATIONS[calibration_method],
        )
        sessions = [
            ort.InferenceSession(str(model_dir / name), providers=["CPUExecutionProvider"])
            for name in (ONNX_FILE, INT8_ONNX_FILE)
        ]
        images, (fp32_correct, int8_correct) = top1(sessions, valid, preprocessing, stop)
    except (StopRequested, TrainingError):
        raise
    except Exception as exc:
        raise TrainingError(
            f"the int8 export failed: {type(exc).__name__}: {exc}; set int8=false to export the fp32 model only"
        ) from exc
    if images == 0:
        raise TrainingError("the int8 export found no readable images in the valid split to measure it on")
    export = Int8Export(
        file=INT8_ONNX_FILE,
        format=INT8_FORMAT,
        calibration=CALIBRATIONS[calibration_method].name,
        calibration_images=calibration.images,
        reduce_range=reduce_range,
        valid_images=images,
        fp32_valid_top1=fp32_correct / images,
        int8_valid_top1=int8_correct / images,
    )
    log.info(
        "int8: valid top-1 %.3f vs fp32 %.3f (%+.1f points) on %d images; calibrated (%s) on %d train images, "
        "reduce_range=%s",
        export.int8_valid_top1,
        export.fp32_valid_top1,
        export.change_points,
        images,
        export.calibration,
        calibration.images,
        reduce_range,
    )
    return export
