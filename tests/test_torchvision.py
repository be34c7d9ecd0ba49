"""--variant torchvision against torchvision's own AlexNet definition (tests/torchvision_ref.py says how)."""
from __future__ import annotations

import pytest
import torch

from model.alexnet import build_model
from tests.torchvision_ref import load_alexnet_module, torchvision_alexnet, torchvision_version

pytestmark = pytest.mark.skipif(torchvision_version() is None,
                                reason="torchvision not installed (make install adds it with --no-deps)")


def test_the_reference_is_torchvisions_source():
    ns = load_alexnet_module()
    assert ns["AlexNet"].__module__ == "torchvision_alexnet_source"
    meta = ns["AlexNet_Weights"].IMAGENET1K_V1.meta  # the published accuracy this project's README quotes
    assert meta["_metrics"]["ImageNet-1K"] == {"acc@1": 56.522, "acc@5": 79.066}
    assert meta["num_params"] == 61_100_840


def test_state_dict_keys_shapes_and_logits():
    torch.manual_seed(0)
    tv = torchvision_alexnet().eval()
    ours = build_model("torchvision", 1000).eval()
    want = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == want
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)
    # and the other way round, with a class count of one's own
    small = build_model("torchvision", 10)
    tv10 = torchvision_alexnet(num_classes=10)
    tv10.load_state_dict(small.state_dict(), strict=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torchvision imports beside CUDA torch only)")
def test_against_the_imported_package_on_gpu():
    import torchvision.models

    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval().cuda()
    ours = build_model("torchvision", 1000).eval().cuda()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=1e-5)

