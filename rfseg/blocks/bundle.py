"""The one owner of model bundles and training checkpoints.

A bundle is a folder with ``model.pt`` (a plain state dict, loadable with ``weights_only=True``), ``model.json``
(architecture, pixel size, the preprocessing recipe the network expects, training settings or provenance, and the
SHA-256 of ``model.pt``) and, for trained networks, ``history.csv``. ``rfseg train`` and ``rfseg import`` write
bundles; ``evaluate``, ``predict``, ``erf`` and the figures read them.
"""

from __future__ import annotations

import hashlib
import io as _io
from pathlib import Path

import pandas as pd
import torch

from rfseg.blocks import io
from rfseg.blocks.models import ArchSpec, build_model
from rfseg.errors import UserError

WEIGHTS, META, HISTORY = "model.pt", "model.json", "history.csv"


def bundle_files(folder) -> dict[str, Path]:
    folder = Path(folder)
    return {"weights": folder / WEIGHTS, "meta": folder / META, "history": folder / HISTORY}


def is_bundle(path) -> bool:
    files = bundle_files(path)
    return Path(path).is_dir() and files["meta"].is_file()


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(folder, state_dict: dict, meta: dict, history: pd.DataFrame | None = None) -> dict:
    """Write a model bundle: ``model.pt`` (a plain state dict), then ``model.json`` recording its SHA-256 under
    ``weights_sha256`` (so that a model.json beside weights of another model is refused on load), and
    ``history.csv`` when given. Returns the metadata as written."""
    files = bundle_files(folder)
    if history is not None:
        io.write_csv(history, files["history"])
    _save(files["weights"], {k: v.detach().cpu().contiguous() for k, v in state_dict.items()})
    meta = {**meta, "weights_sha256": sha256(files["weights"])}
    io.write_json(meta, files["meta"])
    return meta


def read_bundle_meta(folder) -> dict:
    """The ``model.json`` of a bundle; UserError if the folder is no bundle or the file is truncated."""
    files = bundle_files(folder)
    if not files["meta"].is_file() or not files["weights"].is_file():
        raise UserError(f"{folder}: a model needs model.pt and model.json side by side (as 'rfseg train' and "
                        f"'rfseg import' write them)")
    meta = io.read_json(files["meta"], "model description")
    for key in ("arch", "name"):
        if key not in meta:
            raise UserError(f"{files['meta']}: the model description lacks {key!r}: is it an rfseg model.json?")
    return meta


def load_bundle(folder, device="cpu"):
    """Rebuild a model from its bundle.

    Returns
    -------
    (model in eval mode on ``device``, metadata dict)

    Raises
    ------
    UserError
        If the files are missing or truncated, ``model.pt`` is not the file ``model.json`` describes (SHA-256), or
        the weights do not fit the architecture.
    """
    files = bundle_files(folder)
    meta = read_bundle_meta(folder)
    expected = meta.get("weights_sha256")
    if expected and sha256(files["weights"]) != expected:
        raise UserError(f"{files['weights']}: these weights are not the ones {files['meta']} describes (SHA-256 "
                        f"differs): the two files belong to different models; copy them together")
    spec = ArchSpec.from_dict(meta["arch"])
    model = build_model(spec)
    try:
        state = torch.load(files["weights"], map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{files['weights']}: cannot load the weights ({type(e).__name__}); is the file complete?"
                        ) from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise UserError(f"{files['weights']}: the weights do not fit architecture {spec.name} from {files['meta']}: "
                        f"the two files belong to different models") from None
    return model.to(device).eval(), meta


# ----------------------------------------------------------------------------------------------- checkpoint
def _save(path, obj) -> None:
    """torch.save through memory, so the archive's inner name does not come from the temporary file's name: the same
    tensors give the same bytes (and the same SHA-256)."""
    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def write_checkpoint(path, state: dict) -> None:
    """A training checkpoint (tensors, numbers, strings, lists and dicts only), written atomically."""
    _save(path, state)


def read_checkpoint(path) -> dict | None:
    """The checkpoint at ``path``, None if there is none. Loaded weights-only (no code is unpickled); UserError if
    it is corrupt."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: the checkpoint is corrupt or unreadable ({type(e).__name__}): delete it to "
                        f"start this training run over") from None


