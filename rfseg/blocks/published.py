"""Reading the paper's lab's published PyTorch checkpoints safely, and mapping them onto :class:`ResidualUNet`.

The lab published whole pickled ``nn.Module`` objects (``torch.save(model)``), not state dicts. Unpickling such a file
normally runs whatever the pickle names; here PyTorch's weights-only unpickler is given exactly the class names those
files use, each mapped to an inert stand-in (:class:`StoredModule`) that only keeps the attribute dict it is handed.
Any other global (``os.system``, say) makes the unpickler stop, and the file is refused. Two layouts are known:

- ``hrtem-generalization`` (ScottLabUCB/HRTEM-Generalization, N = 4): ``downs.{i}``, ``pools.{i}``, ``bottleneck``,
  ``upsamples.{i}``, ``ups.{i}`` (``ups.0`` the deepest decoder), ``final_conv``; class ``__main__.UNet``.
- ``receptive-field`` (ScottLabUCB/HRTEM-Receptive-Field, N = 2): ``down1``, ``down2``, ``pool1``, ``pool2``,
  ``bottleneck``, ``up1``, ``up2`` (``up1`` the deepest), ``final_conv``; class ``__main__.UNet`` or
  ``__main__.UNet_MaxPool``.

Blocks are ``conv1``, ``bn1``, ``conv2``, ``bn2`` and ``conv_add`` (the 1x1 projection), as in rfseg's residual block.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from rfseg.blocks.models import ArchSpec, build_model
from rfseg.errors import UserError

LAYOUTS = ("hrtem-generalization", "receptive-field")
MODULE_CLASSES = {
    "__main__.UNet": "UNet", "__main__.UNet_MaxPool": "UNet", "__main__.ResidualBlock": "ResidualBlock",
    "torch.nn.modules.container.ModuleList": "ModuleList", "torch.nn.modules.conv.Conv2d": "Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d": "BatchNorm2d", "torch.nn.modules.activation.ReLU": "ReLU",
    "torch.nn.modules.pooling.MaxPool2d": "MaxPool2d", "torch.nn.modules.upsampling.Upsample": "Upsample",
}
BLOCK_PARTS = ("conv1", "bn1", "conv2", "bn2", "conv_add")


class StoredModule:
    """An inert stand-in for a pickled ``nn.Module``: it keeps the attribute dict it is given and runs nothing."""

    kind = "module"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a module state that is not a dict")
        self.__dict__["state"] = state

    @property
    def modules(self) -> dict:
        return dict(self.state.get("_modules") or {})

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if v is not None:
                    out[k] = v.detach() if isinstance(v, torch.Tensor) else v
        return out

    def attr(self, name, default=None):
        return self.state.get(name, default)


_STAND_INS = {full: type(short, (StoredModule,), {"kind": short}) for full, short in MODULE_CLASSES.items()}


def load_module_tree(path) -> StoredModule:
    """The module tree of a pickled network, loaded without executing it.

    Raises
    ------
    UserError
        Naming the file, if it is not a torch checkpoint, is truncated, names any global outside
        :data:`MODULE_CLASSES` and PyTorch's tensor rebuilders (nothing is executed), or is not a module.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    legacy = not zipfile.is_zipfile(path)
    if legacy and not _is_legacy(path):
        raise UserError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive, or before PyTorch 1.6 its "
                        f"legacy format): is the file complete and really a network of the lab?")
    allowed = [(cls, full) for full, cls in _STAND_INS.items()]
    try:
        if legacy:
            obj = _load_legacy(path)
        else:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).split("\n")[0].strip()
        raise UserError(f"{path}: refused without running it: the pickle asks for something other than the "
                        f"classes of the lab's published networks ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError, OSError) as e:
        raise UserError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]});"
                        f" is the file complete?") from None
    if not isinstance(obj, StoredModule) or obj.kind != "UNet":
        raise UserError(f"{path}: holds a {type(obj).__name__}, not a pickled UNet module of the lab's layouts "
                        f"({', '.join(LAYOUTS)})")
    return obj


def _is_legacy(path: Path) -> bool:
    """Whether the file starts as PyTorch's legacy (pre-1.6, non-zip) serialisation does: a pickled magic number."""
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f).load() == torch.serialization.MAGIC_NUMBER
    except Exception:
        return False


class _PlainUnpickler(pickle.Unpickler):
    """Numbers, strings and containers only: any global is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed here")


class _LegacyUnpickler(pickle.Unpickler):
    """The main pickle of PyTorch's legacy format, restricted as the weights-only loader is: only the stand-ins of
    :data:`MODULE_CLASSES`, PyTorch's tensor rebuilders, storage types and OrderedDict resolve; every other global
    stops the load. Storages are allocated here and filled from the file afterwards; a saved module class (with its
    source, which is never looked at) becomes its stand-in."""

    _FUNCTIONS = {"torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
                  "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
                  "collections.OrderedDict": __import__("collections").OrderedDict,
                  "builtins.set": set, "__builtin__.set": set}

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in _STAND_INS:
            return _STAND_INS[full]
        if full in self._FUNCTIONS:
            return self._FUNCTIONS[full]
        if module == "torch" and name.endswith("Storage"):
            return torch.serialization.StorageType(name)
        raise pickle.UnpicklingError(f"global {full} is not allowed")

    def persistent_load(self, pid):
        kind = torch.serialization._maybe_decode_ascii(pid[0]) if isinstance(pid, tuple) and pid else None
        if kind == "module":
            return pid[1]  # already resolved to a stand-in by find_class
        if kind != "storage":
            raise pickle.UnpicklingError(f"persistent id {kind!r} is not allowed")
        storage_type, root_key, _location, numel, view = pid[1:]
        dtype = storage_type.dtype
        size = torch._utils._element_size(dtype)
        if root_key not in self.storages:
            self.storages[root_key] = torch.storage.TypedStorage(
                wrap_storage=torch.UntypedStorage(numel * size), dtype=dtype, _internal=True)
        root = self.storages[root_key]
        if view is None:
            return root
        _key, offset, view_size = view
        return torch.storage.TypedStorage(wrap_storage=root._untyped_storage[offset * size:(offset + view_size) * size],
                                          dtype=dtype, _internal=True)


def _load_legacy(path: Path):
    """The object of a legacy-format file (magic number, protocol, system info, the main pickle, the storage keys,
    then the raw storages), read with :class:`_LegacyUnpickler`: nothing in it is executed."""
    with open(path, "rb", 0) as f:
        for _ in range(3):  # magic number, protocol version, system info
            _PlainUnpickler(f).load()
        unpickler = _LegacyUnpickler(f)
        obj = unpickler.load()
        keys = _PlainUnpickler(f).load()
        offset = f.tell()
        for key in keys:
            storage = unpickler.storages[key]
            storage._untyped_storage._set_from_file(f, offset, True, torch._utils._element_size(storage.dtype))
            offset = f.tell()
    return obj


def _fail(path, what) -> None:
    raise UserError(f"{path}: does not fit the residual UNet family: {what}")


def _check_block(path, name, block, in_ch, out_ch) -> int:
    """Check one residual block's modules and widths; returns its dilation."""
    if not isinstance(block, StoredModule) or block.kind != "ResidualBlock":
        _fail(path, f"{name} is a {getattr(block, 'kind', type(block).__name__)}, not a residual block")
    parts = block.modules
    missing = [p for p in BLOCK_PARTS if p not in parts]
    if missing:
        _fail(path, f"{name} lacks {', '.join(missing)}")
    c1, c2, add = parts["conv1"], parts["conv2"], parts["conv_add"]
    for conv, cin, k in ((c1, in_ch, 3), (c2, out_ch, 3), (add, in_ch, 1)):
        got = (conv.attr("in_channels"), conv.attr("out_channels"), tuple(conv.attr("kernel_size")))
        if got != (cin, out_ch, (k, k)):
            _fail(path, f"{name}: a convolution is {got[0]}->{got[1]} channels with a {got[2]} kernel where the "
                        f"family has {cin}->{out_ch} with {k}x{k}")
    dilation = tuple(c1.attr("dilation"))
    if dilation != tuple(c2.attr("dilation")) or dilation[0] != dilation[1] or \
            tuple(c1.attr("padding")) != dilation:
        _fail(path, f"{name}: dilation {dilation} with padding {tuple(c1.attr('padding'))} ('same' padding needs "
                    f"padding = dilation in both convolutions)")
    for bn in ("bn1", "bn2"):
        if parts[bn].attr("num_features") != out_ch:
            _fail(path, f"{name}.{bn} normalises {parts[bn].attr('num_features')} channels, not {out_ch}")
    return dilation[0]


def _layout(path, top: dict):
    """(layout, encoders, pools, bottleneck, upsamples or None, decoders deepest first, head)."""
    if {"downs", "ups", "pools", "bottleneck", "final_conv"} <= set(top):
        ups = top["ups"].modules
        return ("hrtem-generalization", list(top["downs"].modules.values()), list(top["pools"].modules.values()),
                top["bottleneck"], list(top["upsamples"].modules.values()) if "upsamples" in top else None,
                [ups[k] for k in sorted(ups, key=int)], top["final_conv"])
    downs = sorted((k for k in top if k.startswith("down") and k[4:].isdigit()), key=lambda k: int(k[4:]))
    if downs and {"bottleneck", "final_conv"} <= set(top):
        n = len(downs)
        pools = [top.get(f"pool{i}") for i in range(1, n + 1)]
        ups = [top.get(f"up{i}") for i in range(1, n + 1)]
        if any(p is None for p in pools) or any(u is None for u in ups):
            _fail(path, f"a receptive-field layout with {n} down blocks needs pool1..pool{n} and up1..up{n}")
        upsamples = [top[f"upsample{i}"] for i in range(1, n + 1)] if all(f"upsample{i}" in top
                                                                           for i in range(1, n + 1)) else None
        return "receptive-field", [top[d] for d in downs], pools, top["bottleneck"], upsamples, ups, top["final_conv"]
    _fail(path, f"unknown layout of top-level modules {sorted(top)} (known: {', '.join(LAYOUTS)})")


def _rename(layout: str, key: str) -> str:
    head, _, rest = key.partition(".")
    if layout == "hrtem-generalization":
        head = {"downs": "encoders", "ups": "decoders"}.get(head, head)
        if head in ("encoders", "decoders"):
            i, _, rest = rest.partition(".")
            head = f"{head}.{i}"
    elif head.startswith("down") and head[4:].isdigit():
        head = f"encoders.{int(head[4:]) - 1}"
    elif head.startswith("up") and head[2:].isdigit():
        head = f"decoders.{int(head[2:]) - 1}"  # up1 is the deepest decoder, as rfseg's decoders.0
    if head == "final_conv":
        head = "head"
    return f"{head}.{rest.replace('conv_add', 'project')}"


def _all_tensors(module: StoredModule, prefix="") -> dict:
    out = {prefix + k: v for k, v in module.tensors().items()}
    for k, child in module.modules.items():
        if isinstance(child, StoredModule):
            out.update(_all_tensors(child, f"{prefix}{k}."))
    return out


def convert(path) -> tuple[ArchSpec, dict, str]:
    """(architecture, rfseg state dict, layout name) of a published checkpoint, after checking that every module
    fits the residual UNet family: residual blocks with widths 4, 8, 16, ..., max-pooling of kernel = stride in
    {2, 4, 8}, nearest upsampling by the same factor, decoders with the dilation of their encoder, a 1x1 head to 2
    classes. The state dict loads into ``build_model(spec)`` exactly (checked)."""
    tree = load_module_tree(path)
    layout, encoders, pools, bottleneck, upsamples, decoders, head = _layout(path, tree.modules)
    n = len(encoders)
    if not 2 <= n <= 5 or len(pools) != n or len(decoders) != n:
        _fail(path, f"{n} encoder blocks, {len(pools)} pools and {len(decoders)} decoders")
    widths = [4 * 2**i for i in range(n + 1)]
    in_ch = encoders[0].modules.get("conv1").attr("in_channels") if "conv1" in encoders[0].modules else None
    if in_ch != 1:
        _fail(path, f"the first convolution takes {in_ch} channels, not 1 (grey-scale micrographs)")
    dilations, sizes = [], []
    for i, block in enumerate(encoders):
        dilations.append(_check_block(path, f"encoder {i + 1}", block, 1 if i == 0 else widths[i - 1], widths[i]))
    dilations.append(_check_block(path, "bottleneck", bottleneck, widths[n - 1], widths[n]))
    for i, pool in enumerate(pools):
        if pool.kind != "MaxPool2d":
            _fail(path, f"pool {i + 1} is a {pool.kind}, the family max-pools")
        k, s = pool.attr("kernel_size"), pool.attr("stride")
        k, s = (k[0] if isinstance(k, (tuple, list)) else k), (s[0] if isinstance(s, (tuple, list)) else s)
        if k != s or k not in (2, 4, 8):
            _fail(path, f"pool {i + 1} has kernel {k} and stride {s}; the family pools by 2, 4 or 8 (kernel = stride)")
        sizes.append(int(k))
    below = widths[n]
    for j, block in enumerate(decoders):  # deepest first
        level = n - 1 - j
        d = _check_block(path, f"decoder {j + 1}", block, widths[level] + below, widths[level])
        if d != dilations[level]:
            _fail(path, f"decoder {j + 1} has dilation {d} but its encoder {dilations[level]}")
        below = widths[level]
    for j, up in enumerate(upsamples or []):
        if up.kind != "Upsample" or up.attr("mode") != "nearest" or float(up.attr("scale_factor")) != sizes[n - 1 - j]:
            _fail(path, f"upsampling {j + 1} is {up.attr('mode')} by {up.attr('scale_factor')}, not nearest by "
                        f"{sizes[n - 1 - j]}")
    if (head.attr("in_channels"), head.attr("out_channels"), tuple(head.attr("kernel_size"))) != (4, 2, (1, 1)):
        _fail(path, f"the head maps {head.attr('in_channels')} to {head.attr('out_channels')} channels; the family "
                    f"ends in a 1x1 convolution from 4 to 2 classes")
    spec = ArchSpec(n, tuple(sizes), tuple(dilations))
    state = {_rename(layout, key): value for key, value in _all_tensors(tree).items()}  # pools hold no tensors
    model = build_model(spec)
    expected = model.state_dict()
    if set(state) != set(expected):
        extra, lacking = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
        _fail(path, f"tensors {extra[:3]} are not in {spec.name}, and {lacking[:3]} are missing")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            _fail(path, f"{k} has shape {tuple(state[k].shape)}, {spec.name} needs {tuple(v.shape)}")
        state[k] = state[k].to(v.dtype)
    model.load_state_dict(state)
    return spec, state, layout
