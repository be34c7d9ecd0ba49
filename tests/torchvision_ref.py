"""torchvision's own AlexNet definition, reached without importing torchvision.

PyPI's torchvision wheel links the CUDA build of torch and does not import beside the CPU build used here
(`make install` puts it in with --no-deps). So the installed wheel's `torchvision/models/alexnet.py` is read
from the distribution's file list and executed with its package-relative imports (weights enums, logging,
the model registry) replaced by stand-ins; its `AlexNet` class and `alexnet()` builder run as shipped.
Where torchvision imports (a CUDA machine), `torchvision.models.alexnet` is used itself.
"""
from __future__ import annotations

import ast
import importlib.metadata
from types import SimpleNamespace


def torchvision_version() -> str | None:
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


def _source() -> str:
    dist = importlib.metadata.distribution("torchvision")
    files = [f for f in dist.files or () if str(f).replace("\\", "/") == "torchvision/models/alexnet.py"]
    if not files:
        raise FileNotFoundError("the torchvision distribution lists no torchvision/models/alexnet.py")
    return files[0].read_text()


class _WeightsEnum:
    """Stand-in for torchvision.models._api.WeightsEnum: alexnet() only calls verify() on weights=None."""

    @classmethod
    def verify(cls, weights):
        if weights is not None:
            raise NotImplementedError("pretrained weights are not loaded through this stand-in")
        return None


_STUBS = {
    "ImageClassification": lambda **kw: None,
    "_log_api_usage_once": lambda obj: None,
    "register_model": lambda *a, **kw: (lambda fn: fn),
    "Weights": lambda **kw: SimpleNamespace(**kw),
    "WeightsEnum": _WeightsEnum,
    "_IMAGENET_CATEGORIES": [],
    "_ovewrite_named_param": lambda kwargs, name, value: kwargs.setdefault(name, value),
    "handle_legacy_interface": lambda **kw: (lambda fn: fn),
}


def load_alexnet_module() -> dict:
    """The namespace of torchvision/models/alexnet.py executed as shipped, minus its relative imports."""
    tree = ast.parse(_source())
    relative = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level > 0]
    missing = {a.asname or a.name for n in relative for a in n.names} - set(_STUBS)
    if missing:
        raise ImportError(f"torchvision's alexnet.py imports {sorted(missing)}, which have no stand-in here")
    tree.body = [n for n in tree.body if n not in relative]
    namespace = {"__name__": "torchvision_alexnet_source", **_STUBS}
    exec(compile(tree, "torchvision/models/alexnet.py", "exec"), namespace)
    return namespace


def torchvision_alexnet(**kwargs):
    """torchvision.models.alexnet(**kwargs) (random init): the package itself with a CUDA build of torch,
    else its source (importing it beside the CPU build half-registers its operators, so it is not tried)."""
    import torch
    if torch.version.cuda:
        import torchvision.models
        return torchvision.models.alexnet(**kwargs)
    return load_alexnet_module()["alexnet"](**kwargs)
