"""A split labelled by a manifest: a Ground Truth output manifest or a built-in algorithm ``.lst``.

:func:`find_manifest` says whether a channel is labelled this way (see :mod:`dogbreed.manifest_format`
for where the manifest lies), :func:`read_manifest` turns it into the same ``(path, class index)``
list and class names that class folders give. A bad record fails the job with one line naming
``file:line`` and why; the first bad record in the file's order is the one named.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogbreed.manifest_format import (
    CLASS_MAP_FILE,
    LST_SUFFIX,
    MANIFEST_CHANNEL_SUFFIX,
    MANIFEST_SUFFIXES,
    METADATA_SUFFIX,
    SOURCE_REF,
    source_prefix,
)
from dogbreed.training.failure import TrainingError


@dataclass(frozen=True)
class Record:
    """One manifest line: where it is, the image it names and its class index."""

    line: int
    ref: str
    label: int


@dataclass(frozen=True)
class Labelled:
    """A manifest read and checked: every record's image and class index, and the class names by index."""

    manifest: Path
    samples: list[tuple[Path, int]]
    classes: list[str]


def find_manifest(channel: Path) -> Path | None:
    """The manifest labelling ``channel``: the one in its sibling ``<name>_manifest`` channel, else
    the one at the top of ``channel``; None when there is none (class folders)."""
    sibling = channel.with_name(channel.name + MANIFEST_CHANNEL_SUFFIX)
    folder = sibling if sibling.is_dir() else channel
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(MANIFEST_SUFFIXES))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise TrainingError(f"the channel {folder} holds {len(found)} manifests ({names}): give it one")
    if not found and folder == sibling:
        raise TrainingError(f"the channel {sibling} holds no .manifest or .lst file")
    return found[0] if found else None


def read_manifest(manifest: Path, images: Path, label_attribute: str = "") -> Labelled:
    """Read ``manifest``, whose images lie in the channel folder ``images``; raise :class:`TrainingError`
    naming the first bad record. ``label_attribute`` picks a Ground Truth label among several."""
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read the manifest {manifest}: {exc}") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise TrainingError(f"the manifest {manifest} has no records")
    given = _class_map_file(manifest.parent / CLASS_MAP_FILE)
    if manifest.name.lower().endswith(LST_SUFFIX):
        records = [_lst_record(manifest, number, line) for number, line in lines]
        names = dict(given) if given is not None else {}
        if given is None:  # the built-in algorithm's classes are bare indices
            names = {r.label: str(r.label) for r in records}
    else:
        records, names = _ground_truth(manifest, lines, label_attribute)
        names = dict(given) if given is not None else names
    classes = _class_list(manifest, records, names)
    prefix = source_prefix([r.ref for r in records])
    samples = [(_image_path(manifest, r, images, prefix), r.label) for r in records]
    return Labelled(manifest, samples, classes)


def _fail(manifest: Path, line: int, why: str) -> TrainingError:
    return TrainingError(f"bad manifest record {manifest}:{line}: {why}")


def _class_map_file(path: Path) -> dict[int, str] | None:
    """``classes.json`` beside the manifest: ``{"0": "Poodle", ...}`` or ``["Poodle", ...]``."""
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        items = enumerate(loaded) if isinstance(loaded, list) else loaded.items()
        return {int(key): str(value) for key, value in items}
    except (OSError, ValueError, AttributeError) as exc:
        raise TrainingError(f'{path} is not a class map ({exc}); write {{"0": "name", ...}} or ["name", ...]') from None


def _lst_record(manifest: Path, number: int, line: str) -> Record:
    """``index<TAB>label<TAB>relative/path.jpg``; the label may be written as a float (``1.000000``)."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < 3:
        raise _fail(manifest, number, f"{len(fields)} tab-separated fields, expected index, label, path")
    if len(fields) > 3:
        raise _fail(manifest, number, f"{len(fields) - 2} labels: this job trains one label per image")
    try:
        value = float(fields[1])
    except ValueError:
        raise _fail(manifest, number, f"label {fields[1]!r} is not a number") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise _fail(manifest, number, f"label {fields[1]!r} is not a class index (0, 1, 2, ...)")
    return Record(number, fields[2].strip(), int(value))


def _ground_truth(
    manifest: Path, lines: list[tuple[int, str]], label_attribute: str
) -> tuple[list[Record], dict[int, str]]:
    """The records of a Ground Truth output manifest, and the class names its metadata gives."""
    records: list[Record] = []
    names: dict[int, str] = {}
    named_at: dict[int, int] = {}  # class index -> the line that named it
    attribute, first = label_attribute, 0
    for number, line in lines:
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise _fail(manifest, number, f"not a JSON object ({exc})") from None
        ref = record.get(SOURCE_REF) if isinstance(record, dict) else None
        if not isinstance(ref, str) or not ref:
            raise _fail(manifest, number, f"no {SOURCE_REF!r} (a manifest names each image's S3 URI)")
        candidates = sorted(k for k in record if k != SOURCE_REF and not k.endswith(METADATA_SUFFIX))
        if not label_attribute and len(candidates) != 1:
            raise _fail(
                manifest,
                number,
                f"{len(candidates)} label attributes ({', '.join(candidates) or 'none'}); "
                "name one with the hyperparameter label_attribute",
            )
        here = label_attribute or candidates[0]
        if not attribute:
            attribute, first = here, number
        if here != attribute or here not in record:
            raise _fail(manifest, number, f"mixed label attributes: {here!r} here, {attribute!r} on line {first}")
        label = _label(manifest, number, record[here])
        for index, name in _metadata_names(manifest, number, record.get(here + METADATA_SUFFIX), label).items():
            if names.setdefault(index, name) != name:
                raise _fail(
                    manifest, number, f"class {index} is {name!r} here, {names[index]!r} on line {named_at[index]}"
                )
            named_at.setdefault(index, number)
        records.append(Record(number, ref, label))
    return records, names


def _label(manifest: Path, number: int, value: Any) -> int:
    if isinstance(value, list):
        raise _fail(manifest, number, f"a multi-label record (label {value}): this job trains one label per image")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(manifest, number, f"label {value!r} is not a class index (0, 1, 2, ...)")
    return value


def _metadata_names(manifest: Path, number: int, metadata: Any, label: int) -> dict[int, str]:
    """The class names one record's metadata gives: its ``class-map``, else its ``class-name``."""
    if not isinstance(metadata, dict):
        return {}
    class_map = metadata.get("class-map")
    if isinstance(class_map, dict):
        try:
            return {int(key): str(value) for key, value in class_map.items()}
        except ValueError:
            raise _fail(manifest, number, f"class-map keys {sorted(class_map)} are not class indices") from None
    name = metadata.get("class-name")
    return {label: str(name)} if isinstance(name, str) and name else {}


def _class_list(manifest: Path, records: list[Record], names: dict[int, str]) -> list[str]:
    """Class names by index 0..K-1: every label must have a name, every index up to the largest a record."""
    for record in records:
        if record.label not in names:
            raise _fail(
                manifest,
                record.line,
                f"unknown label {record.label} (no class-map, class-name or {CLASS_MAP_FILE} names it)",
            )
    count = max(names) + 1
    unnamed = [index for index in range(count) if index not in names]
    if unnamed:
        raise TrainingError(
            f"the manifest {manifest} names no class {unnamed[0]} (labels must be 0..{count - 1}); "
            f"give every class a name in {CLASS_MAP_FILE}"
        )
    return [names[index] for index in range(count)]


def _image_path(manifest: Path, record: Record, images: Path, prefix: str) -> Path:
    """An S3 reference below ``prefix``, or a path relative to the channel; the file must be there."""
    ref = record.ref
    if ref.startswith("s3://"):
        relative = ref[len(prefix) :]
    elif "://" in ref or ref.startswith("/"):
        raise _fail(manifest, record.line, f"{ref!r}: an image is an s3:// URI or a path relative to the channel")
    else:
        relative = ref
    path = images / relative
    if ".." in Path(relative).parts or not path.is_file():
        raise _fail(manifest, record.line, f"image {ref!r} is not in the channel (no file {path})")
    return path
