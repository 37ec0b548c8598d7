"""Stage: a published network -> an rfseg model bundle (``rfseg import``), and the bundles shipped with rfseg.

The checkpoint is read without executing its pickle (:mod:`rfseg.blocks.published`), its architecture inferred from
the tensors and the stored modules and checked, and a bundle written: ``model.pt`` (rfseg's state dict) and
``model.json`` with the architecture, the pixel size, the preprocessing the network expects (the lab's recipe: x-ray
removal at 1500 counts, the Bézier flat field, standardisation of the whole micrograph) and the provenance (source
repository, file, SHA-256, license, training data). ``predict``, ``evaluate`` and the workflow use it like a
trained bundle.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from rfseg.blocks import bundle, io
from rfseg.blocks.measures import LAB_RECIPE
from rfseg.blocks.models import count_params, build_model, receptive_field
from rfseg.blocks.published import convert
from rfseg.errors import UserError

#: where the published networks come from; their inputs were prepared by LAB_RECIPE (the lab's dataset-creation
#: notebook)
LAB_REPOSITORY = "ScottLabUCB/HRTEM-Generalization"
LAB_COMMIT = "0da34bbadcad1965f26b37177ad8a166a2c7261b"
LAB_PATCH_SIZE_PX = 512
PRETRAINED = Path(__file__).resolve().parents[2] / "resources" / "pretrained"
#: the bundles shipped in resources/pretrained: name -> the lab's files (members, in fold order)
SHIPPED = {
    "au-5nm-423e": [f"UNet_5nmAu330kX423eUTC_fold{k}_seed{s}_model.h5"
                    for k, s in enumerate((962, 1662, 621, 72115, 45521))],
    "au-2.2nm-423e": ["UNet_2p2nmAu330kX423eUTC_fold0_seed962_model.h5"],
    "au-10nm-425e": ["UNet_10nmAu330kX425eUTC_fold0_seed962_model.h5"],
    "au-5nm-80e": ["UNet_5nmAu330kX80eUTC_fold0_seed962_model.h5"],
    "au-5nm-884e": ["UNet_5nmAu330kX884eUTC_fold0_seed962_model.h5"],
}


def _details_row(details, file_name: str) -> dict:
    """The row of the lab's model_details.csv for ``file_name`` (names matched case-insensitively)."""
    table = pd.read_csv(details)
    hit = table[table["Model Name"].str.lower() == file_name.lower()]
    if hit.empty:
        raise UserError(f"{details}: no row for {file_name} (column 'Model Name'): give the training data with "
                        f"--pixel-size and the provenance options instead")
    r = hit.iloc[0]
    return {"dataset": r["Dataset Trained On"], "diameter_nm": float(r["Np Diameter (nm)"]),
            "material": r["Np Material"], "pixel_size_nm": float(r["Pixel Scale (nm)"]),
            "dose_e_per_A2": float(r["Dosage (e/A2)"]), "fold": int(r["Fold"])}


def import_network(checkpoint, out_dir, *, details=None, pixel_size_nm: float | None = None, name: str | None = None,
                   member: str | None = None, repository: str = LAB_REPOSITORY, commit: str | None = LAB_COMMIT,
                   license: str = "MIT", patch_size_px: int = LAB_PATCH_SIZE_PX, **provenance) -> dict:
    """Turn a published checkpoint into an rfseg bundle in ``out_dir``; returns its ``model.json``.

    Parameters
    ----------
    checkpoint : a pickled network of one of the lab's layouts (never executed)
    details : the lab's model_details.csv, for pixel size, dataset, material, diameter, dose and fold
    pixel_size_nm : nm/px of the training data (when there is no ``details``)
    name, member : the bundle's name (e.g. ``au-5nm-423e``) and member (e.g. ``fold0``), for tables and ensembles
    provenance : dataset, material, diameter_nm, dose_e_per_A2, fold (override or complete ``details``)
    """
    checkpoint = Path(checkpoint)
    out_dir = bundle.check_bundle_dir(out_dir, reads=[checkpoint])  # before reading anything
    spec, state, layout = convert(checkpoint)
    info = _details_row(details, checkpoint.name) if details else {}
    info.update({k: v for k, v in provenance.items() if v is not None})
    px = pixel_size_nm if pixel_size_nm is not None else info.pop("pixel_size_nm", None)
    info.pop("pixel_size_nm", None)
    if px is None:
        raise UserError(f"{checkpoint}: the pixel size of the network's training data is unknown: give --details "
                        f"(the lab's model_details.csv) or --pixel-size")
    seed = re.search(r"seed(\d+)", checkpoint.name)
    fold = info.get("fold")
    rf = receptive_field(build_model(spec))
    meta = {
        "arch": spec.to_dict(), "name": spec.name, "params": count_params(build_model(spec)), "rf_px": rf,
        "rf_nm": rf * px, "pixel_size_nm": px, "patch_size_px": patch_size_px,
        "seed": int(seed[1]) if seed else (fold if fold is not None else 0),
        "preprocess": LAB_RECIPE.to_dict(),
        "normalisation": "whole-micrograph standardisation (mean 0, std 1) after x-ray removal and the Bézier flat "
                         "field, as the lab prepared its training data",
        "source": "published", "model_name": name or checkpoint.stem, "member": member or (
            f"fold{fold}" if fold is not None else checkpoint.stem),
        "provenance": {"repository": repository, "commit": commit, "file": checkpoint.name,
                       "sha256": bundle.sha256(checkpoint), "license": license, "layout": layout, **info},
        "versions": {"rfseg": __import__("rfseg").__version__},
    }
    with io.output_lock(out_dir):
        return bundle.write_bundle(out_dir, state, meta, reads=[checkpoint])


def import_shipped(source_dir, out_root=PRETRAINED) -> list[dict]:
    """Regenerate the shipped bundles (:data:`SHIPPED`) from the lab's files in ``source_dir`` (which also holds
    model_details.csv and the LICENSE) into ``out_root/<name>/<member>/``; copies the LICENSE beside them."""
    source_dir, out_root = Path(source_dir), Path(out_root)
    details = source_dir / "model_details.csv"
    metas = []
    for name, files in SHIPPED.items():
        for f in files:
            row = _details_row(details, f)
            metas.append(import_network(source_dir / f, out_root / name / f"fold{row['fold']}", details=details,
                                        name=name, member=f"fold{row['fold']}"))
    licence = source_dir / "LICENSE"
    if licence.is_file():
        with io.atomic_path(out_root / "LICENSE") as tmp:
            tmp.write_bytes(licence.read_bytes())
    return metas


def shipped_models(root=PRETRAINED) -> pd.DataFrame:
    """One row per shipped bundle name: members, architecture, pixel size and what it was trained on."""
    rows = []
    for name in SHIPPED:
        folders = sorted((Path(root) / name).glob("*/model.json"))
        if not folders:
            continue
        metas = [bundle.read_bundle_meta(f.parent) for f in folders]
        p = metas[0]["provenance"]
        rows.append({"name": name, "members": len(metas), "path": str(Path(root) / name),
                     "arch": metas[0]["name"], "pixel_size_nm": metas[0]["pixel_size_nm"],
                     "material": p.get("material"), "diameter_nm": p.get("diameter_nm"),
                     "dose_e_per_A2": p.get("dose_e_per_A2"), "trained_on": p.get("dataset"),
                     "source": f"{p['repository']} ({p['license']})"})
    return pd.DataFrame(rows)
