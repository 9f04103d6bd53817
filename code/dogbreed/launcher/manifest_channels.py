"""``--train``/``--valid``/``--test`` given a manifest instead of a folder: the channels the job reads.

On SageMaker a split's manifest travels alone in the channel ``<split>_manifest`` (an
``S3Prefix`` of the manifest's own URI) and the split's channel holds its images: for a Ground
Truth output manifest, the deepest S3 folder holding every ``source-ref``
(:func:`dogbreed.manifest_format.source_prefix`, which the job resolves them against; reading
the manifest is an S3 call, so :func:`images_prefix` runs with the job's launch); for a ``.lst``,
the folder the ``.lst`` lies in, which its paths are relative to. In local mode the split's folder
holds both (:func:`local_channel`).
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.launcher.validation import LauncherError
from dogbreed.manifest_format import (
    LST_SUFFIX,
    MANIFEST_CHANNEL_SUFFIX,
    SOURCE_REF,
    is_manifest,
    source_prefix,
)

__all__ = ["images_prefix", "is_manifest", "local_channel", "manifest_channel", "s3_channels"]


def manifest_channel(split: str) -> str:
    """The name of the channel holding ``split``'s manifest."""
    return split + MANIFEST_CHANNEL_SUFFIX


def s3_channels(split: str, uri: str) -> dict[str, str]:
    """The channels of a split given as an S3 manifest; a Ground Truth manifest's images channel is
    the manifest's URI until :func:`images_prefix` replaces it."""
    images = posixpath.dirname(uri) + "/" if uri.lower().endswith(LST_SUFFIX) else uri
    return {split: images, manifest_channel(split): uri}


def images_prefix(uri: str, flag: str, boto_session) -> str:
    """The S3 folder holding every image a Ground Truth output manifest names (read from S3)."""
    bucket, key = uri[len("s3://") :].split("/", 1)
    try:
        body = boto_session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise LauncherError(f"{flag} {uri}: cannot read the manifest: {exc}") from None
    refs = []
    for number, line in enumerate(body.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            ref = json.loads(line).get(SOURCE_REF)
        except (ValueError, AttributeError):
            ref = None
        if not isinstance(ref, str) or not ref.startswith("s3://"):
            raise LauncherError(f"{flag} {uri}:{number}: not a Ground Truth record with an s3:// {SOURCE_REF}")
        refs.append(ref)
    if not refs:
        raise LauncherError(f"{flag} {uri}: the manifest has no records")
    try:
        return source_prefix(refs)
    except ValueError as exc:
        raise LauncherError(f"{flag} {uri}: {exc}") from None


def local_channel(path: Path, flag: str) -> str:
    """Local mode: a manifest file's folder, which must hold its images and no other manifest."""
    others = sorted(p.name for p in path.parent.iterdir() if p.is_file() and is_manifest(p.name) and p != path)
    if others:
        raise LauncherError(
            f"{flag} {path}: its folder also holds {', '.join(others)}; in local mode each split's "
            "manifest lies alone in the folder of its images"
        )
    return str(path.parent.resolve())
