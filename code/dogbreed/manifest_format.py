"""Labels from a manifest instead of class folders: the facts the job and the launcher share.

A split's manifest is a Ground Truth output manifest (``*.manifest``, JSON Lines with
``source-ref``) or the built-in image classification algorithm's ``*.lst``
(``index<TAB>label<TAB>path``). It lies in the split's channel beside its images, or
alone in a sibling channel ``<split>_manifest`` (the launcher's layout for an S3 manifest).
A ``source-ref`` in S3 names the image at its key below :func:`source_prefix` of the
manifest's references, inside the images' channel; the launcher points that channel there.
"""

from __future__ import annotations

import posixpath

GROUND_TRUTH_SUFFIX = ".manifest"
LST_SUFFIX = ".lst"
MANIFEST_SUFFIXES = (GROUND_TRUTH_SUFFIX, LST_SUFFIX)
MANIFEST_CHANNEL_SUFFIX = "_manifest"  # the channel "train_manifest" holds the train split's manifest
CLASS_MAP_FILE = "classes.json"  # optional, beside the manifest: {"0": "Poodle", ...}
SOURCE_REF = "source-ref"
METADATA_SUFFIX = "-metadata"


def is_manifest(name: str) -> bool:
    """Whether a file or URI names a manifest (by its suffix)."""
    return name.lower().endswith(MANIFEST_SUFFIXES)


def source_prefix(refs: list[str]) -> str:
    """The deepest ``s3://bucket/folder/`` holding every S3 reference (``""`` without any).

    Raises ValueError for references in several buckets: one channel cannot hold them.
    """
    s3 = [ref for ref in refs if ref.startswith("s3://")]
    if not s3:
        return ""
    buckets = {ref[len("s3://") :].split("/", 1)[0] for ref in s3}
    if len(buckets) > 1:
        raise ValueError(f"the images are in {len(buckets)} buckets ({', '.join(sorted(buckets))}); use one")
    folders = [posixpath.dirname(ref[len("s3://") :]) + "/" for ref in s3]
    common = posixpath.commonpath(folders) if len(folders) > 1 else folders[0].rstrip("/")
    return f"s3://{common.rstrip('/')}/"
