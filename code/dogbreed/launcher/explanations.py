"""Class activation maps through the launcher: ask for them, check them, draw them.

``predict --explain OUT.png`` (and ``deploy --local --predict IMAGE --explain OUT.png``) sends
one request with the custom attribute ``explain=cam`` and gets the JSON answer with its
``explanation``; the overlay is drawn here from that answer's grid and box, with the same
:func:`dogbreed.explain.overlay` the serving image uses to answer ``Accept: image/png``. One
request rather than a second one for the PNG: the model runs (and is billed) once, and the
printed box and the saved picture come from the same answer, not from two requests that an
endpoint being updated could send to two model versions.

``transform --explain`` sets :data:`ENV` in the job's container instead: batch transform
sends no per-record headers, so the container's default is the only way to ask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dogbreed import explain, images
from dogbreed.explain import ExplainError, Explanation
from dogbreed.launcher.hosting import EndpointError
from dogbreed.launcher.validation import LauncherError

# What the serving image reads (dogbreed.serving.environment, dogbreed.serving.request;
# a test keeps them equal).
ENV = "DOGBREED_EXPLAIN"
METHOD = explain.CAM  # what --explain asks for
CUSTOM_ATTRIBUTES = f"explain={METHOD}"
KEY = "explanation"  # where the answer carries it
WHY_MISSING = "a serving image from before class activation maps, or a code/inference.py that changes the answer?"


def overlay_path(value: str, flag: str = "--explain") -> Path:
    """Where the overlay goes: a ``.png`` file in an existing directory, checked before any request."""
    path = Path(value).expanduser()
    if path.suffix.lower() != ".png":
        raise LauncherError(f"{flag} {value!r}: name a .png file (the overlay is a PNG picture)")
    if path.is_dir():
        raise LauncherError(f"{flag} {value!r} is a directory: name a .png file")
    if not path.parent.is_dir():
        raise LauncherError(f"{flag} {value!r}: no such directory {str(path.parent)!r}")
    return path


def has_explanation(answer: Any) -> bool:
    """Whether a parsed answer carries an ``explanation`` object."""
    return isinstance(answer, dict) and isinstance(answer.get(KEY), dict)


def of_answer(answer: Any, endpoint: str) -> Explanation:
    """The answer's ``explanation``; :class:`EndpointError` saying why when it has none or a malformed one."""
    if not has_explanation(answer):
        raise EndpointError(f"endpoint {endpoint} answered without an {KEY!r} ({WHY_MISSING})")
    try:
        return Explanation.from_dict(answer[KEY])
    except ExplainError as exc:
        raise EndpointError(f"endpoint {endpoint}: the answer's {KEY} {exc}") from exc


def describe(explanation: Explanation) -> str:
    """One line: the explained class and the box around its hottest region, in the image's pixels."""
    x0, y0, x1, y1 = (round(v, 1) for v in explanation.box)
    return f"{KEY}: {explanation.label}, box x0={x0:g} y0={y0:g} x1={x1:g} y1={y1:g} (image pixels)"


def overlay_png(image: str | Path, explanation: Explanation) -> bytes:
    """The picture at ``image``, upright as the endpoint decoded it, with the map drawn over it, as PNG."""
    # No pixel limit: the endpoint has decoded this very file under its own.
    picture = images.open_image(Path(image), max_pixels=None)
    return explain.png_bytes(explain.overlay(picture, explanation))
