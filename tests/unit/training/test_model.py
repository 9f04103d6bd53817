import pytest
import torch
import torchvision

import dogbreed.training.model as model_module
from dogbreed.training.failure import TrainingError
from dogbreed.architectures import architecture
from dogbreed.training.model import build_model, set_train_mode, weight_file_names


def test_weight_file_names_come_from_torchvision():
    assert weight_file_names(architecture("resnet18")) == ["resnet18-f37072fd.pth"]
    assert set(weight_file_names(architecture("resnet50"))) == {"resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"}


def assert_trunk_equals(model, path):
    saved = torch.load(path, weights_only=True)
    state = model.state_dict()
    trunk = [k for k in saved if not k.startswith("fc.")]
    assert trunk and all(torch.equal(state[k], saved[k]) for k in trunk)


def test_loads_torchvision_cache_layout(fake_torch_home, fake_weights):
    model = build_model("resnet18", 5, "imagenet", "all", channel=None, torch_home=fake_torch_home)
    assert_trunk_equals(model, fake_weights)
    assert model.fc.out_features == 5


def test_loads_from_pretrained_channel_and_explicit_path(tmp_path, fake_weights):
    channel = tmp_path / "pretrained"
    channel.mkdir()
    (channel / "my-weights.pt").write_bytes(fake_weights.read_bytes())
    model = build_model("resnet18", 3, "imagenet", "none", channel=channel, torch_home=tmp_path / "empty")
    assert_trunk_equals(model, fake_weights)
    model = build_model("resnet18", 3, str(fake_weights), "none", channel=None, torch_home=tmp_path / "empty")
    assert_trunk_equals(model, fake_weights)


def test_no_weights_fails_clearly(tmp_path, monkeypatch):
    calls = []

    def offline(arch):
        calls.append(arch.name)
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(model_module, "_download_state_dict", offline)
    with pytest.raises(TrainingError) as info:
        build_model("resnet18", 3, "imagenet", "all", channel=tmp_path / "nochannel", torch_home=tmp_path)
    message = str(info.value)
    assert calls == ["resnet18"]
    assert str(tmp_path / "hub" / "checkpoints") in message and "resnet18-f37072fd.pth" in message
    assert "name resolution" in message and "pretrained" in message and "pretrained=none" in message


def test_wrong_arch_weights_fail(tmp_path, fake_weights):
    with pytest.raises(TrainingError, match="do not fit resnet34"):
        build_model("resnet34", 3, str(fake_weights), "all")


def test_pretrained_none_is_random(tmp_path, fake_torch_home, fake_weights):
    """pretrained=none loads nothing, though weights lie where pretrained=imagenet would find them (the
    torch cache and the pretrained channel): the trunk is torchvision's random initialisation, drawn anew
    from each seed, and all of it trains."""
    channel = tmp_path / "pretrained"
    channel.mkdir()
    (channel / fake_weights.name).write_bytes(fake_weights.read_bytes())
    saved = torch.load(fake_weights, weights_only=True)
    # Conv and linear weights: BatchNorm's start at ones and zeros whatever the seed.
    drawn = [k for k, v in saved.items() if v.dim() > 1 and not k.startswith("fc.")]
    assert drawn

    def trunk(seed: int) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model("resnet18", 3, "none", "none", channel=channel, torch_home=fake_torch_home)
        assert all(p.requires_grad for p in model.parameters())
        return model.state_dict()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        fresh = torchvision.models.resnet18().state_dict()
    first, second = trunk(7), trunk(8)
    assert not any(torch.equal(first[k], saved[k]) for k in drawn), "pretrained=none loaded the weights file"
    assert all(torch.equal(first[k], fresh[k]) for k in saved if not k.startswith("fc.")), \
        "not torchvision's random initialisation"
    assert not any(torch.equal(first[k], second[k]) for k in drawn), "the same weights from two seeds"


@pytest.mark.parametrize(
    "freeze, trainable_prefixes",
    [
        ("all", {"fc"}),
        ("none", {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}),
        ("layer2", {"layer3", "layer4", "fc"}),
        ("layer4", {"fc"}),
        ("layer1", {"layer2", "layer3", "layer4", "fc"}),
    ],
)
def test_freeze(freeze, trainable_prefixes, fake_weights):
    model = build_model("resnet18", 3, str(fake_weights), freeze)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name.split(".")[0] for name, p in model.named_parameters() if not p.requires_grad}
    assert trainable == trainable_prefixes
    assert not trainable & frozen


def test_frozen_batchnorm_stays_in_eval_mode(fake_weights):
    model = build_model("resnet18", 3, str(fake_weights), "layer3")
    set_train_mode(model, architecture("resnet18"), "layer3")
    assert not model.layer3[0].bn1.training and not model.bn1.training
    assert model.layer4[0].bn1.training and model.fc.training
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64) * 5)
    assert torch.equal(model.layer1[0].bn1.running_mean, before)
