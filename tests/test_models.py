"""`astlab.engine.models`: small nets, torchvision/timm dispatch, pretrained heads (mocked: nothing is downloaded), name errors."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from astlab.config import ConfigError
from astlab.engine.models import SMALL_MODELS, CifarResNet, count_params, create_model


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_small_nets_shapes(name):
    m = create_model(name, 7)
    assert isinstance(m, CifarResNet)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_resnet18_cifar_layout():
    m = create_model("resnet18_cifar", 10)
    stem = m.stem[0]
    assert (stem.kernel_size, stem.stride) == ((3, 3), (1, 1))
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    assert [len(s) for s in m.stages] == [2, 2, 2, 2]
    assert [s[0].conv1.out_channels for s in m.stages] == [64, 128, 256, 512]
    assert 11.0e6 < count_params(m) < 11.3e6  # ResNet-18 class
    assert m.stages(m.stem(torch.randn(1, 3, 32, 32))).shape == (1, 512, 4, 4)


def test_count_params():
    m = nn.Linear(3, 4)
    assert count_params(m) == 16
    m.bias.requires_grad_(False)
    assert (count_params(m), count_params(m, trainable_only=True)) == (16, 12)


def test_torchvision_and_timm_dispatch():
    assert type(create_model("resnet18", 5)).__module__.startswith("torchvision.")
    assert type(create_model("tv/resnet18", 5)).__module__.startswith("torchvision.")
    assert type(create_model("timm/resnet18", 5)).__module__.startswith("timm.")
    m = create_model("test_efficientnet", 3)  # timm only
    assert type(m).__module__.startswith("timm.")
    assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_image_size_reaches_vits():
    v = create_model("vit_b_32", 4, image_size=64)
    assert v.image_size == 64 and v.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    t = create_model("test_vit", 4, image_size=32)
    assert t(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_aux_heads_dropped():
    out = create_model("googlenet", 4).train()(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)


@pytest.mark.parametrize("name,hint", [("resnet_smal", "resnet_small"), ("resnet18_cifr", "resnet18_cifar"),
                                       ("efficentnet_b0", "efficientnet_b0"), ("tv/resnet18d", "tv/resnet18"),
                                       ("timm/resnet_18", "timm/resnet18")])
def test_unknown_name_suggests(name, hint):
    with pytest.raises(ValueError) as e:
        create_model(name, 10)
    msg = str(e.value)
    assert isinstance(e.value, ConfigError)
    assert f"model.name '{name}'" in msg and hint in msg and "Did you mean" in msg


def test_unknown_name_without_close_match():
    with pytest.raises(ValueError, match="prefix 'tv/' or 'timm/'"):
        create_model("qqqqqqqqqqqqqqqq", 10)


def test_small_nets_have_no_pretrained_weights():
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("resnet_small", 10, pretrained=True)


# ---- pretrained paths, with the download replaced by a stand-in ------------------------------------------------

@pytest.fixture
def fake_tv(monkeypatch):
    "Replace torchvision's get_model with one that builds the net on the meta device and records the call."
    real, calls = tvm.get_model, []

    def fake(name, **kw):
        calls.append((name, dict(kw)))
        w = kw.pop("weights", None)
        assert "num_classes" not in kw or w is None, "torchvision refuses num_classes != weights' classes"
        with torch.device("meta"):
            return real(name, weights=None, **kw)

    monkeypatch.setattr(tvm, "get_model", fake)
    return calls


@pytest.mark.parametrize("name,head", [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"),
                                       ("efficientnet_b0", "classifier.1"), ("convnext_tiny", "classifier.2"),
                                       ("vit_b_16", "heads.head"), ("swin_t", "head"), ("densenet121", "classifier"),
                                       ("squeezenet1_0", "classifier.1"), ("inception_v3", "fc")])
def test_pretrained_torchvision_replaces_head(fake_tv, name, head):
    m = create_model(name, 7, pretrained=True, image_size=224)
    (called, kw), = fake_tv
    assert called == name and kw["weights"] is tvm.get_model_weights(name).DEFAULT
    layer = m.get_submodule(head)
    assert (layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels) == 7
    assert not any(isinstance(x, nn.Linear) and x.out_features == 1000 for x in m.modules())


def test_pretrained_torchvision_keeps_head_when_classes_match(fake_tv):
    m = create_model("resnet18", 1000, pretrained=True)
    assert m.fc.out_features == 1000
    assert fake_tv[0][1]["weights"] is tvm.ResNet18_Weights.DEFAULT


def test_pretrained_head_replacement_keeps_backbone():
    "On real modules: the backbone's weights are untouched, the new head is fresh and on the same device/dtype."
    from astlab.engine.models import _replace_head
    net = tvm.get_model("resnet18", weights=None)
    before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert _replace_head(net, 1000, 3) == "fc"
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert net.fc.out_features == 3 and net.fc.weight.dtype == torch.float32


def test_pretrained_torchvision_vit_needs_its_size():
    with pytest.raises(ValueError, match="dataset.image_size: 224"):
        create_model("vit_b_16", 10, pretrained=True, image_size=32)


def test_pretrained_timm_passes_through(monkeypatch):
    calls = []

    def fake(name, **kw):
        calls.append((name, kw))
        if "img_size" in kw:
            raise TypeError("ResNet.__init__() got an unexpected keyword argument 'img_size'")
        return nn.Linear(2, kw["num_classes"])

    monkeypatch.setattr(timm, "create_model", fake)
    m = create_model("timm/resnet18", 6, pretrained=True, image_size=64)
    assert m.out_features == 6
    assert calls == [("resnet18", dict(pretrained=True, num_classes=6, img_size=64)),
                     ("resnet18", dict(pretrained=True, num_classes=6))]
