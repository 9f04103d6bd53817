import shutil

import pytest
import torch
from torchvision import transforms as T

from tests.unit.training.conftest import CLASS_DIRS, make_split
from tests.unit.training.corrupt_images import add_corrupt_images
from dogbreed.training.data import (
    EvalTransform, EpochBatches, Normalize, Sample, class_name, collate, make_loader, scan_split, train_transform,
)
from dogbreed.training.failure import TrainingError
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


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = make_split(tmp_path / "train", per_class=3)
    add_corrupt_images(root / CLASS_DIRS[0])
    split = scan_split("train", root)
    # The header check catches two at scan time; the truncated one passes it.
    assert sorted(p.rsplit("/", 1)[-1] for p in split.unreadable) == ["empty.jpg", "text.jpg"]
    assert len(split.samples) == 10 and split.total == 12
    loader = make_loader(split, EvalTransform(Preprocessing(72, 64)), 4, False, 0, False)
    seen, bad = 0, []
    for batch in loader:
        assert batch.images.shape[0] == batch.labels.shape[0] == len(batch)
        seen += len(batch)
        bad += batch.unreadable
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
    batch = collate([Sample(None, 0, 5, "broken")])
    assert len(batch) == 0 and batch.unreadable == [(5, "broken")]


def test_transforms_share_normalisation_and_eval_is_preprocessing(tmp_path, real_photos):
    from dogbreed.images import open_image

    pre = Preprocessing(resize_size=256, crop_size=224)
    normalize = Normalize.of(pre)
    for path in real_photos:
        image = open_image(path)
        pixels = EvalTransform(pre)(image)
        assert pixels.dtype == torch.uint8
        # The job's batch normalisation is the serving image's preprocessing, bit for bit.
        assert torch.equal(normalize(pixels[None])[0], torch.from_numpy(pre(image)))
    augmented = train_transform(pre)(image)
    assert augmented.shape == (3, 224, 224) and augmented.dtype == torch.uint8
    # ... and torchvision's ToTensor + Normalize on the augmented crop, bit for bit.
    expected = T.Normalize(pre.mean, pre.std)(T.ToTensor()(T.ToPILImage()(augmented)))
    assert torch.equal(normalize(augmented[None])[0], expected)


def epoch_batches(loader, epoch, start=0):
    loader.batch_sampler.set_epoch(epoch, start)
    return [(b.images.clone(), b.labels.clone()) for b in loader]


def test_loader_with_workers_sends_batches_through_a_pipe_not_shared_memory(tmp_path):
    split = scan_split("train", make_split(tmp_path / "train", per_class=2))
    loader = make_loader(split, train_transform(Preprocessing(72, 64)), 4, True, 2, False, seed=0, timeout=60)
    batches = list(loader)
    assert sum(len(b) for b in batches) == 6
    # torch moves a worker's tensors through /dev/shm (64 MB in a default container);
    # ours arrive as bytes, so nothing of theirs is shared memory.
    assert not any(b.images.is_shared() or b.labels.is_shared() for b in batches)
    shutil.rmtree(tmp_path / "train")


def test_an_epoch_is_the_same_with_any_number_of_workers_and_when_resumed(tmp_path):
    split = scan_split("train", make_split(tmp_path / "train", per_class=5))
    transform = train_transform(Preprocessing(72, 64))
    alone = make_loader(split, transform, 4, True, 0, False, seed=3)
    workers = make_loader(split, transform, 4, True, 2, False, seed=3, timeout=60)
    for epoch in (1, 2):
        expected = epoch_batches(alone, epoch)
        got = epoch_batches(workers, epoch)
        assert len(expected) == 4 and len(got) == 4
        for (x, y), (x2, y2) in zip(expected, got):
            assert torch.equal(x, x2) and torch.equal(y, y2)
        # Resuming after 8 images: the rest of the very same epoch.
        tail = epoch_batches(alone, epoch, start=8)
        assert len(tail) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(tail, expected[2:]))
    one, two = epoch_batches(alone, 1), epoch_batches(alone, 2)
    assert not torch.equal(torch.cat([y for _, y in one]), torch.cat([y for _, y in two])) or not torch.equal(
        one[0][0], two[0][0]
    ), "two epochs drew the same order and augmentations"


def test_epoch_batches_cover_each_sample_once():
    sampler = EpochBatches(10, 4, shuffle=True, seed=0)
    keys = [key for batch in sampler for key in batch]
    assert sorted(i for i, _ in keys) == list(range(10)) and len(sampler) == 3
    assert all(isinstance(seed, int) for _, seed in keys)
    sampler.set_epoch(1, start=8)
    assert len(sampler) == 1 and [i for i, _ in next(iter(sampler))] == [i for i, _ in keys[8:]]
    evaluation = EpochBatches(5, 2, shuffle=False)
    assert [[i for i, _ in b] for b in evaluation] == [[0, 1], [2, 3], [4]]
    assert all(seed is None for b in evaluation for _, seed in b)


@pytest.mark.parametrize("num_samples, batch_size, world", [(408, 8, 2), (25, 4, 3), (10, 4, 4), (7, 3, 2)])
def test_processes_share_each_step_of_the_one_process_order(num_samples, batch_size, world):
    """World W with batch B: step i's slices, together, are step i of one process with batch W*B."""
    from dogbreed.training.data import EpochBatches

    one = EpochBatches(num_samples, batch_size * world, shuffle=True, seed=3)
    ranks = [EpochBatches(num_samples, batch_size, shuffle=True, seed=3, rank=r, world_size=world)
             for r in range(world)]
    for sampler in (one, *ranks):
        sampler.set_epoch(2)
    steps = [list(s) for s in ranks]
    assert len({len(s) for s in steps}) == 1 and all(len(s) == len(r) for s, r in zip(steps, ranks))
    for i, whole in enumerate(one):
        if i == len(steps[0]):  # the short final step with fewer samples than processes is left out
            assert len(whole) < world
            break
        joined = [key for rank_steps in steps for key in rank_steps[i]]
        assert sorted(joined) == sorted(whole) and all(rank_steps[i] for rank_steps in steps)
    # Evaluation keeps every sample (a process may get an empty slice).
    evals = [EpochBatches(num_samples, batch_size, shuffle=False, rank=r, world_size=world) for r in range(world)]
    assert sorted(i for e in evals for keys in e for i, _ in keys) == list(range(num_samples))
