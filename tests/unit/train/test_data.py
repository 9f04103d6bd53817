import shutil

import pytest
import torch

from tests.unit.train.conftest import CLASS_DIRS, make_split
from dogbreed.data import (
    EvalTransform, class_name, collate_skip_unreadable, make_loader, scan_split, train_transform,
)
from dogbreed.failure import TrainingError
from dogbreed.preprocessing import Preprocessing


@pytest.mark.parametrize(
    "folder, name",
    [
        ("001.Affenpinscher", "Affenpinscher"),
        ("063.German_shepherd_dog", "German shepherd dog"),
        ("Golden_retriever", "Golden retriever"),
        ("133.Yorkshire_terrier", "Yorkshire terrier"),
    ],
)
def test_class_name(folder, name):
    assert class_name(folder) == name


def test_scan_sorts_classes_and_ignores_other_files(tmp_path):
    root = make_split(tmp_path / "train", class_dirs=["002.B", "001.A"], per_class=2)
    (root / "001.A" / "notes.txt").write_text("not an image")
    (root / "001.A" / "Upper.JPEG").write_bytes((root / "001.A" / "000.jpg").read_bytes())
    split = scan_split("train", root)
    assert split.class_dirs == ["001.A", "002.B"]
    assert sorted(p.name for p, label in split.samples if label == 0) == ["000.jpg", "001.jpg", "Upper.JPEG"]
    assert {label for _, label in split.samples} == {0, 1}
    assert split.unreadable == {}


def test_class_sets_must_match_between_splits(tmp_path):
    train = scan_split("train", make_split(tmp_path / "train", per_class=1))
    make_split(tmp_path / "valid", class_dirs=[*CLASS_DIRS[:2], "099.Extra_dog"], per_class=1)
    with pytest.raises(TrainingError) as info:
        scan_split("valid", tmp_path / "valid", train.class_dirs)
    assert "063.German_shepherd_dog" in str(info.value) and "099.Extra_dog" in str(info.value)


def test_missing_channel_empty_folder_no_classes(tmp_path):
    with pytest.raises(TrainingError, match="train channel is missing"):
        scan_split("train", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="no class folders"):
        scan_split("train", tmp_path / "empty")
    root = make_split(tmp_path / "train", per_class=1)
    for f in (root / CLASS_DIRS[1]).iterdir():
        f.unlink()
    with pytest.raises(TrainingError, match=f"{CLASS_DIRS[1]}.*no images"):
        scan_split("train", root)


def add_corrupt_images(folder):
    """A zero-byte file, text renamed .jpg and a truncated JPEG (whose header is fine)."""
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture")
    good = next(folder.glob("0*.jpg")).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = make_split(tmp_path / "train", per_class=3)
    add_corrupt_images(root / CLASS_DIRS[0])
    split = scan_split("train", root)
    # The header check catches two at scan time; the truncated one passes it.
    assert sorted(p.rsplit("/", 1)[-1] for p in split.unreadable) == ["empty.jpg", "text.jpg"]
    assert len(split.samples) == 10 and split.total == 12
    loader = make_loader(split, EvalTransform(Preprocessing(72, 64)), 4, False, 0, False)
    seen, bad = 0, []
    for images, labels, skipped in loader:
        assert images.shape[0] == labels.shape[0]
        seen += len(labels)
        bad += skipped
    assert seen == 9 and len(bad) == 1 and "truncated" in bad[0][1]
    assert split.samples[bad[0][0]][0].name == "truncated.jpg"


def test_unreadable_fraction_check(tmp_path):
    root = make_split(tmp_path / "train", per_class=3)
    add_corrupt_images(root / CLASS_DIRS[0])
    split = scan_split("train", root)
    split.check_unreadable(0.2)  # 2 of 12 = 17%
    with pytest.raises(TrainingError, match=r"2 of 12 images .* train split"):
        split.check_unreadable(0.05)


def test_collate_with_only_unreadable_images():
    images, labels, bad = collate_skip_unreadable([(None, 0, 5, "broken")])
    assert len(labels) == 0 and bad == [(5, "broken")]


def test_transforms_share_normalisation_and_eval_is_preprocessing(tmp_path, real_photos):
    from dogbreed.images import open_image

    pre = Preprocessing(resize_size=256, crop_size=224)
    image = open_image(real_photos[0])
    assert torch.equal(EvalTransform(pre)(image), torch.from_numpy(pre(image)))
    augmented = train_transform(pre)(image)
    assert augmented.shape == (3, 224, 224)
    normalize = train_transform(pre).transforms[-1]
    assert tuple(normalize.mean) == pre.mean and tuple(normalize.std) == pre.std


def test_loader_with_workers(tmp_path):
    split = scan_split("train", make_split(tmp_path / "train", per_class=2))
    loader = make_loader(split, train_transform(Preprocessing(72, 64)), 4, True, 1, False, torch.Generator().manual_seed(0))
    assert sum(len(labels) for _, labels, _ in loader) == 6
    shutil.rmtree(tmp_path / "train")
