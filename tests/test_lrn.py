"""model/lrn.py: the paper's formula written out by hand, Caffe's convention, the columns, the gradient."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from model.alexnet import AlexNet
from model.lrn import LRN, local_response_norm


def paper_lrn_by_hand(a: torch.Tensor, n=5, k=2.0, alpha=1e-4, beta=0.75, columns=1) -> torch.Tensor:
    """Section 3.3: b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]^2)^beta,
    with N the maps of i's own column."""
    b = torch.empty_like(a)
    per = a.shape[1] // columns
    for i in range(a.shape[1]):
        lo, hi = (i // per) * per, (i // per + 1) * per - 1
        s = sum(a[:, j] ** 2 for j in range(max(lo, i - n // 2), min(hi, i + n // 2) + 1))
        b[:, i] = a[:, i] / (k + alpha * s) ** beta
    return b


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_paper_formula(layout):
    torch.manual_seed(0)
    a = (torch.randn(2, 10, 3, 4, dtype=torch.float64) * 40).contiguous(memory_format=layout)  # big: alpha matters
    want = paper_lrn_by_hand(a)
    got = LRN(5, alpha=1e-4, beta=0.75, k=2.0, convention="paper")(a)
    torch.testing.assert_close(got, want)
    assert got.is_contiguous(memory_format=layout)
    # PyTorch's module (Caffe's convention) is a 5x weaker normalisation at the same alpha ...
    assert not torch.allclose(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a), want)
    # ... and equals ours with convention="caffe", or the paper's with alpha * n.
    torch.testing.assert_close(LRN(5, alpha=1e-4, convention="caffe")(a), nn.LocalResponseNorm(5, alpha=1e-4, k=2.0)(a))
    torch.testing.assert_close(nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(a), want)


def test_columns_do_not_share_a_window():
    torch.manual_seed(0)
    a = torch.randn(2, 12, 3, 3, dtype=torch.float64) * 40
    got = LRN(5, groups=2)(a)
    torch.testing.assert_close(got, paper_lrn_by_hand(a, columns=2))
    # Changing the second column leaves the first untouched (it would not with one column).
    b = a.clone()
    b[:, 6:] *= 3
    torch.testing.assert_close(LRN(5, groups=2)(b)[:, :6], got[:, :6])
    assert not torch.allclose(LRN(5, groups=1)(b)[:, :6], LRN(5, groups=1)(a)[:, :6])


@pytest.mark.parametrize("size,groups", [(5, 1), (5, 2), (4, 1), (3, 3)])
def test_gradient(size, groups):
    torch.manual_seed(0)
    a = (torch.randn(2, 6, 3, 3, dtype=torch.float64) * 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 1e-2, 0.75, 2.0, groups=groups), (a,))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_matches_pytorch_in_float32(layout):
    """The fast path equals PyTorch's LRN, forward and backward, to float tolerance (Caffe's convention)."""
    torch.manual_seed(0)
    x = (torch.randn(4, 96, 11, 11).relu() * 30).contiguous(memory_format=layout)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(x)
    y1 = LRN(5, alpha=1e-3, convention="caffe")(x1)
    y2 = nn.LocalResponseNorm(5, alpha=1e-3, k=2.0)(x2)
    torch.testing.assert_close(y1, y2)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)
    assert x1.grad.is_contiguous(memory_format=layout)


def test_alexnets_conv1_response_norm_is_the_papers_per_column():
    torch.manual_seed(0)
    m = AlexNet(num_classes=10).double()
    x = torch.randn(1, 3, 67, 67, dtype=torch.float64) * 50   # strong activations: alpha's factor of 5 shows
    a = m.features[1](m.features[0](x))                        # conv1, ReLU
    torch.testing.assert_close(m.features[2](a), paper_lrn_by_hand(a, columns=2))


def test_alexnet_lrn_choice():
    paper = [m for m in AlexNet().features if isinstance(m, LRN)]
    assert [(m.convention, m.groups, m.alpha, m.size) for m in paper] == [("paper", 2, 1e-4, 5)] * 2
    caffe = [m for m in AlexNet(lrn="caffe").features if isinstance(m, LRN)]
    assert [(m.convention, m.groups) for m in caffe] == [("caffe", 1)] * 2
    with pytest.raises(ValueError, match="unknown LRN"):
        AlexNet(lrn="cudnn")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_lrn_on_gpu():
    x = (torch.randn(8, 96, 55, 55, device="cuda").relu() * 4).contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = LRN(5, alpha=5e-4, convention="caffe")(x1), nn.LocalResponseNorm(5, alpha=5e-4, k=2.0)(x2)
    torch.testing.assert_close(y1, y2)
    y1.sum().backward()
    y2.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
