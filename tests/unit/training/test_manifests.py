"""Labels from a Ground Truth output manifest or a built-in algorithm ``.lst``: readers and their errors."""

import json
import shutil

import pytest

from dogbreed.artifacts import ModelMetadata
from dogbreed.manifest_format import source_prefix
from dogbreed.training.data import scan_split
from dogbreed.training.failure import TrainingError
from dogbreed.training.feature_cache import files_checksum
from dogbreed.training.job import main
from dogbreed.training.manifests import find_manifest
from tests.unit.training.conftest import CLASS_DIRS, fast_args, make_split
from tests.unit.training.corrupt_images import add_corrupt_images
from tests.unit.training.manifest_files import BUCKET_PREFIX, ground_truth_line, write_ground_truth

NAMES = ["Affenpinscher", "Afghan hound", "German shepherd dog"]


@pytest.fixture
def photos(tmp_path):
    """Two small generated JPEGs per class: (path, label, class name)."""
    root = make_split(tmp_path / "generated", per_class=2)
    return [(p, c, NAMES[c]) for c, d in enumerate(CLASS_DIRS) for p in sorted((root / d).iterdir())]


def test_ground_truth_manifest_labels_the_channel_like_class_folders(tmp_path, photos):
    channel = tmp_path / "train"
    write_ground_truth(channel, photos)
    split = scan_split("train", channel)
    assert split.classes == NAMES and split.class_dirs == NAMES
    assert split.manifest == channel / "output.manifest"
    assert [(p.relative_to(channel).as_posix(), label) for p, label in split.samples] == [
        (f"{label}/{p.name}", label) for p, label, _ in photos
    ]


def test_class_map_names_the_classes_and_a_sibling_channel_may_hold_the_manifest(tmp_path, photos):
    channel = tmp_path / "valid"
    write_ground_truth(channel, photos)
    class_map = {"0": "Affen", "1": "Afghan", "2": "Shepherd"}
    lines = [ground_truth_line(BUCKET_PREFIX + f"{c}/{p.name}", c, class_map=class_map) for p, c, _ in photos]
    (channel / "output.manifest").unlink()
    (tmp_path / "valid_manifest").mkdir()
    (tmp_path / "valid_manifest" / "output.manifest").write_text("\n".join(lines))
    split = scan_split("valid", channel, ["Affen", "Afghan", "Shepherd"])
    assert split.classes == ["Affen", "Afghan", "Shepherd"] and len(split.samples) == 6


def test_lst_names_classes_by_index_or_by_classes_json(tmp_path, photos):
    channel = tmp_path / "train"
    lines = []
    for i, (path, label, _) in enumerate(photos):
        (channel / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, channel / "img" / f"{i}.jpg")
        lines.append(f"{i}\t{label}.000000\timg/{i}.jpg")
    (channel / "train.lst").write_text("\n".join(lines) + "\n")
    split = scan_split("train", channel)
    assert split.classes == ["0", "1", "2"] and [label for _, label in split.samples] == [0, 0, 1, 1, 2, 2]
    (channel / "classes.json").write_text(json.dumps(NAMES))
    assert scan_split("train", channel).classes == NAMES


def test_undecodable_images_are_counted_as_for_folders(tmp_path, photos):
    channel = tmp_path / "train"
    manifest = write_ground_truth(channel, photos)
    add_corrupt_images(channel / "0")
    for bad in ("empty.jpg", "text.jpg", "truncated.jpg"):
        manifest.write_text(manifest.read_text() + ground_truth_line(BUCKET_PREFIX + f"0/{bad}", 0, NAMES[0]) + "\n")
    split = scan_split("train", channel)
    assert sorted(p.rsplit("/", 1)[1] for p in split.unreadable) == ["empty.jpg", "text.jpg"]  # truncated: at load
    assert len(split.samples) == 7 and split.total == 9


@pytest.mark.parametrize(
    "line, why",
    [
        ("not json", "not a JSON object"),
        ('{"breed": 0}', "no 'source-ref'"),
        (ground_truth_line(BUCKET_PREFIX + "0/missing.jpg", 0, "Affenpinscher"), "not in the channel"),
        (ground_truth_line(BUCKET_PREFIX + "0/000.jpg", 7, None), "unknown label 7"),
        (ground_truth_line(BUCKET_PREFIX + "0/000.jpg", 0, "Affenpinscher", attribute="colour"), "mixed label attributes"),
        (ground_truth_line(BUCKET_PREFIX + "0/000.jpg", [0, 1], "Affenpinscher"), "multi-label"),
        (ground_truth_line(BUCKET_PREFIX + "0/000.jpg", 1, "Poodle"), "class 1 is 'Poodle' here, 'Afghan hound' on line 3"),
        (ground_truth_line(BUCKET_PREFIX + "../000.jpg", 0, "Affenpinscher"), "not in the channel"),
    ],
)
def test_a_bad_record_fails_naming_its_file_and_line(tmp_path, photos, line, why):
    channel = tmp_path / "train"
    manifest = write_ground_truth(channel, photos)
    good = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*good[:4], line, *good[4:]]) + "\n")
    with pytest.raises(TrainingError) as info:
        scan_split("train", channel)
    assert str(info.value).startswith(f"bad manifest record {manifest}:5: ")
    assert why in str(info.value)


@pytest.mark.parametrize(
    "line, why",
    [
        ("0\t1", "2 tab-separated fields"),
        ("0\tone\timg/0.jpg", "'one' is not a number"),
        ("0\t1.5\timg/0.jpg", "not a class index"),
        ("0\t1\t0\timg/0.jpg", "2 labels"),
        ("0\t1\timg/nope.jpg", "not in the channel"),
    ],
)
def test_a_bad_lst_line_fails_naming_it(tmp_path, photos, line, why):
    channel = tmp_path / "train"
    (channel / "img").mkdir(parents=True)
    shutil.copy(photos[0][0], channel / "img" / "0.jpg")
    (channel / "train.lst").write_text(f"0\t0\timg/0.jpg\n{line}\n")
    with pytest.raises(TrainingError, match=f"{channel / 'train.lst'}:2: .*{why}"):
        scan_split("train", channel)


def test_several_label_attributes_need_label_attribute(tmp_path, photos):
    channel = tmp_path / "train"
    manifest = write_ground_truth(channel, photos)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for record in records:
        record["breed-audit"], record["breed-audit-metadata"] = 0, {"class-name": "checked"}
    manifest.write_text("\n".join(json.dumps(r) for r in records))
    with pytest.raises(TrainingError, match=r":1: 2 label attributes \(breed, breed-audit\).*label_attribute"):
        scan_split("train", channel)
    assert scan_split("train", channel, label_attribute="breed").classes == NAMES


def test_class_sets_must_agree_and_gaps_are_errors(tmp_path, photos):
    write_ground_truth(tmp_path / "train", photos)
    write_ground_truth(tmp_path / "valid", photos[:4])  # no German shepherd dog
    with pytest.raises(TrainingError, match="valid split's classes differ.*missing in valid: \\['German shepherd dog'\\]"):
        scan_split("valid", tmp_path / "valid", NAMES)
    with pytest.raises(TrainingError, match="missing in valid: none; only in valid: none \\(in another order"):
        scan_split("valid", tmp_path / "train", list(reversed(NAMES)))  # the same names, other indices
    write_ground_truth(tmp_path / "gap", [photos[0], photos[4]])  # labels 0 and 2
    with pytest.raises(TrainingError, match="names no class 1"):
        scan_split("train", tmp_path / "gap")


def test_folder_layout_is_untouched_and_two_manifests_are_ambiguous(tmp_path, photos):
    root = make_split(tmp_path / "train", per_class=1)
    assert find_manifest(root) is None and scan_split("train", root).class_dirs == CLASS_DIRS
    write_ground_truth(tmp_path / "two", photos, "a.manifest")
    (tmp_path / "two" / "b.lst").write_text("0\t0\t0/000.jpg\n")
    with pytest.raises(TrainingError, match="holds 2 manifests \\(a.manifest, b.lst\\)"):
        scan_split("train", tmp_path / "two")
    (tmp_path / "three_manifest").mkdir()
    with pytest.raises(TrainingError, match="holds no .manifest or .lst"):
        scan_split("three", make_split(tmp_path / "three", per_class=1))


def test_source_prefix_is_the_deepest_common_folder():
    assert source_prefix(["s3://b/a/x/1.jpg", "s3://b/a/y/2.jpg"]) == "s3://b/a/"
    assert source_prefix(["s3://b/a/x/1.jpg"]) == "s3://b/a/x/"
    assert source_prefix(["s3://b/ab/1.jpg", "s3://b/ac/1.jpg"]) == "s3://b/"
    assert source_prefix(["img/1.jpg"]) == ""
    with pytest.raises(ValueError, match="2 buckets"):
        source_prefix(["s3://b/1.jpg", "s3://c/1.jpg"])


def real_manifest_channel(channel, dogs3, split: str, per_class: int) -> None:
    """A few of the shared photos of ``split`` with a Ground Truth manifest whose class map names the breeds."""
    breeds = sorted(d.name for d in (dogs3 / split).iterdir())
    class_map = {str(c): breed.split(".", 1)[1].replace("_", " ") for c, breed in enumerate(breeds)}
    lines = []
    for c, breed in enumerate(breeds):
        for photo in sorted((dogs3 / split / breed).glob("*.jpg"))[:per_class]:
            (channel / breed).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, channel / breed / photo.name)
            lines.append(ground_truth_line(f"{BUCKET_PREFIX}{breed}/{photo.name}", c, class_map=class_map))
    (channel / "output.manifest").write_text("\n".join(lines) + "\n")


def test_a_job_trains_on_manifests_and_a_bad_record_fails_it_in_one_line(opt_ml, fake_weights, dogs3):
    data = opt_ml / "input" / "data"
    for split, per_class in (("train", 4), ("valid", 2), ("test", 2)):
        shutil.rmtree(data / split)
        real_manifest_channel(data / split, dogs3, split, per_class)
    args = fast_args("--pretrained", str(fake_weights), "--epochs", "1", "--debug", "false", "--profile", "false")
    assert main(args) == 0
    metadata = ModelMetadata.load(opt_ml / "model")
    assert metadata.classes == ["Beagle", "Siberian husky", "Toy poodle"] == metadata.class_dirs
    metrics = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())
    assert "test_accuracy" in metrics["final"]

    manifest = data / "valid" / "output.manifest"
    manifest.write_text(manifest.read_text().replace("Beagle/", "Beagle/gone-", 1))
    assert main(args) == 1
    failure = (opt_ml / "output" / "failure").read_text()
    assert failure.startswith(f"bad manifest record {manifest}:1: image 's3://") and failure.count("\n") == 1


def test_relabelling_the_same_files_changes_the_feature_cache_key(tmp_path, photos):
    channel = tmp_path / "train"
    manifest = write_ground_truth(channel, photos)
    before = files_checksum(scan_split("train", channel))
    manifest.write_text(manifest.read_text().replace('"breed": 0', '"breed": 9').replace('"breed": 1', '"breed": 0')
                        .replace('"breed": 9', '"breed": 1'))
    assert files_checksum(scan_split("train", channel)) != before
