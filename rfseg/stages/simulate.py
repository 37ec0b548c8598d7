"""Stage: make a demo dataset of simulated micrographs with exact masks (``rfseg simulate``)."""

from __future__ import annotations

from rfseg.blocks import artifacts
from rfseg.errors import UserError, check_choice

KINDS = ("hrtem", "lowres")


def simulate(kind: str, out_dir, *, n_images: int, seed: int, size: int = 512, pixel_size_nm: float | None = None,
             diameter_nm=None, dose_e_per_A2=None, carbon_thickness_nm=None, defocus_offset_nm: float = 0.0,
             threads: int = 1, start: int = 0, progress=None, **hrtem_knobs):
    """Simulate ``n_images`` micrographs of ``kind`` ("hrtem" or "lowres") from ``seed`` into ``out_dir``.

    Lengths are in nm (diameters, support thickness, defocus offset), doses in e/Å²: a range (lo, hi) for HRTEM
    (log-uniform per micrograph) or one value. ``start`` > 0 makes only micrographs ``start`` to ``n_images - 1`` of
    the seeded dataset (each is the same as in the whole set). ``threads``: CPU cores; HRTEM makes that many
    micrographs at once, with the same result for any number. ``progress`` optionally wraps the frame iterator.
    ``hrtem_knobs``: the keys of :data:`rfseg.blocks.simulate.hrtem.KNOBS` in their stated units (HRTEM only).
    Returns the manifest (one row per micrograph with its simulation parameters)."""
    check_choice("simulate kind", kind, KINDS)
    if n_images < 1:
        raise UserError("--n-images (simulate.n_images) must be at least 1")
    kwargs = {"size": size}
    if pixel_size_nm:
        kwargs["pixel_size_nm"] = pixel_size_nm
    if diameter_nm:
        kwargs["diameter_nm"] = tuple(diameter_nm)
    if kind == "hrtem":
        from rfseg.blocks.simulate.hrtem import knob_keywords, simulate_dataset

        kwargs.update(knob_keywords(hrtem_knobs))
        kwargs["workers"] = threads  # one micrograph per core: its FFTs run on one thread
        kwargs["defocus_offset_a"] = 10 * defocus_offset_nm
        if carbon_thickness_nm:
            kwargs["carbon_thickness_a"] = tuple(10 * t for t in carbon_thickness_nm)
        if dose_e_per_A2:
            kwargs["dose_e_per_a2"] = (dose_e_per_A2[0], dose_e_per_A2[-1])
    else:
        from rfseg.blocks.simulate.lowres import simulate_dataset

        if hrtem_knobs:
            raise UserError(f"simulate options {', '.join(hrtem_knobs)} apply to hrtem only, not {kind}")

        if dose_e_per_A2:
            kwargs["dose_e_per_a2"] = dose_e_per_A2[0]
    frames = simulate_dataset(n_images, seed, start=start, **kwargs)
    return artifacts.write_simulated(out_dir, progress(frames, n_images - start) if progress else frames)
