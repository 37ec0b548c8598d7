"""The one owner of model bundles and training checkpoints.

A bundle is a folder with ``model.pt`` (a plain state dict, loadable with ``weights_only=True``), ``model.json``
(architecture, pixel size, the preprocessing recipe the network expects, training settings or provenance, and the
SHA-256 of ``model.pt``) and, for trained networks, ``history.csv``. ``rfseg train`` and ``rfseg import`` write
bundles; ``evaluate``, ``predict``, ``erf`` and the figures read them.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
from pathlib import Path

import pandas as pd
import torch

from rfseg.blocks import io
from rfseg.blocks.models import ArchSpec, build_model
from rfseg.blocks.preprocess import Recipe
from rfseg.errors import UserError

WEIGHTS, META, HISTORY = "model.pt", "model.json", "history.csv"


def bundle_files(folder) -> dict[str, Path]:
    folder = Path(folder)
    return {"weights": folder / WEIGHTS, "meta": folder / META, "history": folder / HISTORY}


def is_bundle(path) -> bool:
    files = bundle_files(path)
    return Path(path).is_dir() and files["meta"].is_file()


sha256 = io.sha256


def check_bundle_dir(folder, reads=()) -> Path:
    """The bundle folder ``folder`` after checking that writing a bundle there replaces only files rfseg wrote.

    Raises
    ------
    UserError
        If ``folder`` is an existing file, overlaps one of ``reads`` (the run's inputs: a patch folder, the
        checkpoint being imported), or holds a ``model.pt``, ``model.json`` or ``history.csv`` that rfseg's marker
        there does not list (a user's file)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: the output folder is an existing file: choose a folder name (--out)")
    resolved = folder.resolve()
    for r in reads:
        r = Path(r).resolve()
        if r == resolved or r in resolved.parents or resolved in r.parents:
            raise UserError(f"{folder}: the model folder and the input {r} overlap: choose a separate output folder "
                            f"(--out)")
    if folder.is_dir():
        ours = io.written_by_rfseg(folder)
        taken = [n for n in (WEIGHTS, META, HISTORY) if (folder / n).exists() and n not in ours]
        if taken:
            raise UserError(f"{folder}: holds {', '.join(taken)}, which rfseg did not write: move them away or "
                            f"choose another output folder (--out); rfseg replaces only what it wrote itself")
    return folder


def _torch_bytes(obj) -> bytes:
    """torch.save through memory, so the archive's inner name does not come from a temporary file's name: the same
    tensors give the same bytes (and the same SHA-256)."""
    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_bundle(folder, state_dict: dict, meta: dict, history: pd.DataFrame | None = None, reads=()) -> dict:
    """Write a model bundle: ``model.pt`` (a plain state dict), ``model.json`` recording its SHA-256 under
    ``weights_sha256`` (so that a model.json beside weights of another model is refused on load), and
    ``history.csv`` when given. Every file is written to a temporary name first and only then are all renamed, so
    a failure (a full disk) leaves no part of the bundle; files rfseg did not write are never replaced
    (:func:`check_bundle_dir`). Returns the metadata as written."""
    folder = check_bundle_dir(folder, reads)
    weights = _torch_bytes({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})
    meta = {**meta, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    files = {WEIGHTS: weights, META: (json.dumps(meta, indent=2, default=io.json_default) + "\n").encode()}
    if history is not None:
        files[HISTORY] = history.to_csv(index=False).encode()
    ours = io.written_by_rfseg(folder) | set(files)
    files[io.OUTPUT_MARKER] = io.marker_text(ours).encode()
    created = not folder.exists()
    written = []
    try:
        for name, data in files.items():
            with io.atomic_path(folder / name, rename=False) as tmp:
                tmp.write_bytes(data)
            written.append((tmp, folder / name))
        for tmp, path in written:
            os.replace(tmp, path)
        written = []
    except BaseException as e:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise io.disk_error(e, folder) or e from None
    return meta


def _check_meta(meta: dict, where: Path) -> None:
    """Every key rfseg reads from a model.json, of the type it needs; UserError naming the file and the key."""
    def bad(key, what):
        raise UserError(f"{where}: {key} must be {what}, got {meta.get(key)!r}: is it the model.json rfseg wrote "
                        f"for these weights?")

    if not isinstance(meta, dict):
        raise UserError(f"{where}: the model description is not a JSON object: is it an rfseg model.json?")
    for key in ("arch", "name"):
        if key not in meta:
            raise UserError(f"{where}: the model description lacks {key!r}: is it an rfseg model.json?")
    def parses(key, parse, what):
        if not isinstance(meta[key], dict):
            bad(key, what)
        try:
            parse(meta[key])
        except UserError as e:
            raise UserError(f"{where}: {key}: {e}") from None
        except (TypeError, ValueError, KeyError):
            bad(key, what)

    parses("arch", ArchSpec.from_dict, "an object with blocks, pools, dilations and mode")
    if "pixel_size_nm" not in meta:
        bad("pixel_size_nm", "the training data's pixel size in nm/px (null if uncalibrated)")
    px, (lo, hi) = meta["pixel_size_nm"], io.PIXEL_SIZE_RANGE_NM
    if px is not None and (isinstance(px, bool) or not isinstance(px, (int, float)) or not lo <= px <= hi):
        bad("pixel_size_nm", f"a pixel size between {lo:g} and {hi:g} nm/px, or null")
    for key in ("patch_size_px", "rf_px", "params"):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            bad(key, "a positive integer")
    if isinstance(meta.get("seed"), bool) or not isinstance(meta.get("seed"), int):
        bad("seed", "an integer")
    if meta.get("preprocess") is not None:
        parses("preprocess", Recipe.from_dict, "an object (the preprocessing recipe rfseg records) or null")


def read_bundle_meta(folder) -> dict:
    """The ``model.json`` of a bundle, checked key by key; UserError naming the file if the folder is no bundle,
    the file is truncated, or a key rfseg needs is missing or of the wrong type."""
    files = bundle_files(folder)
    if not files["meta"].is_file() or not files["weights"].is_file():
        raise UserError(f"{folder}: a model needs model.pt and model.json side by side (as 'rfseg train' and "
                        f"'rfseg import' write them)")
    meta = io.read_json(files["meta"], "model description")
    _check_meta(meta, files["meta"])
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
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise UserError(f"{files['weights']}: the weights hold NaN or infinite values ({_names(broken)}): the model "
                        f"is broken (a diverged training?); retrain it or use another model")
    return model.to(device).eval(), meta


def _names(keys, limit=2) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# ----------------------------------------------------------------------------------------------- checkpoint
def _save(path, obj) -> None:
    data = _torch_bytes(obj)
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_checkpoint(path, state: dict) -> None:
    """A training checkpoint (tensors, numbers, strings, lists and dicts only), written atomically."""
    _save(path, state)


def read_checkpoint(path) -> dict | None:
    """The checkpoint at ``path``, None if there is none. Loaded weights-only (no code is unpickled).

    Raises UserError if the file is corrupt or is not a training checkpoint that rfseg wrote: such a file is never
    replaced."""
    path = Path(path)
    if not path.exists():
        return None
    refuse = (f"move it away or give another checkpoint path (--checkpoint); rfseg replaces only checkpoints it "
              f"wrote itself")
    if not path.is_file():
        raise UserError(f"{path}: the checkpoint path is a folder: {refuse}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a training checkpoint rfseg can read ({type(e).__name__}): {refuse}") from None
    if not isinstance(state, dict) or "config_hash" not in state or "model" not in state:
        raise UserError(f"{path}: not a training checkpoint rfseg wrote: {refuse}")
    return state
