"""Pictures of a segmentation for people: a micrograph with its particles outlined and a scale bar, and one
self-contained HTML page per predict run. Pure functions over arrays; PNGs are made with numpy and Pillow."""

from __future__ import annotations

import base64
import html
import io as _io
import math

import numpy as np
import pandas as pd

#: a picture's longest side in px; larger micrographs are shown subsampled
MAX_SIDE_PX = 1024
OUTLINE_RGB = (255, 140, 0)
UNCERTAINTY_RGB = (40, 120, 255)


def _nice_length(target: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above ``target`` (> 0)."""
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def overlay_rgb(image: np.ndarray, labels: np.ndarray, pixel_size_nm: float | None,
                uncertainty: np.ndarray | None = None) -> np.ndarray:
    """The micrograph in grey (1st to 99th percentile), particle outlines in orange, the ensemble's uncertainty
    shaded in blue (strongest at a standard deviation of 0.25 and above) and a scale bar in nm (px when
    uncalibrated), subsampled to at most :data:`MAX_SIDE_PX` a side.

    Parameters
    ----------
    image : (rows, cols) float, the raw micrograph
    labels : (rows, cols) int, the particles, 0 = background (the same grid as ``image``, else ``image`` is resized)
    pixel_size_nm : float or None, of ``labels``
    uncertainty : (rows, cols) float or None

    Returns
    -------
    (rows', cols', 3) uint8
    """
    from PIL import Image, ImageDraw
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    image = np.asarray(image, np.float32)
    if image.shape != labels.shape:
        image = resize(image, labels.shape, order=1, preserve_range=True)
    step = max(1, math.ceil(max(labels.shape) / MAX_SIDE_PX))
    img, lab = image[::step, ::step], labels[::step, ::step]
    lo, hi = np.percentile(img, [1, 99])
    grey = np.clip((img - lo) / (hi - lo if hi > lo else 1), 0, 1)
    rgb = np.repeat(grey[..., None] * 255, 3, axis=2)
    if uncertainty is not None:
        alpha = np.clip(uncertainty[::step, ::step] / 0.25, 0, 1)[..., None] * 0.6
        rgb = rgb * (1 - alpha) + np.array(UNCERTAINTY_RGB) * alpha
    rgb[find_boundaries(lab, mode="inner")] = OUTLINE_RGB
    picture = Image.fromarray(rgb.astype(np.uint8))
    px, unit = (pixel_size_nm * step, "nm") if pixel_size_nm else (float(step), "px")
    length = _nice_length(picture.width * px / 5)
    bar = round(length / px)
    draw = ImageDraw.Draw(picture)
    x0, y0 = 10, picture.height - 16
    draw.rectangle([x0 - 4, y0 - 16, x0 + max(bar, 40) + 4, y0 + 10], fill=(0, 0, 0))
    draw.rectangle([x0, y0, x0 + bar, y0 + 5], fill=(255, 255, 255))
    draw.text((x0, y0 - 14), f"{length:g} {unit}", fill=(255, 255, 255))
    return np.asarray(picture)


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = _io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _size_histogram(particles: pd.DataFrame) -> bytes:
    """PNG of the particles' equivalent diameters (nm, or px when uncalibrated) across the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = "equivalent_diameter_nm" if particles.get("equivalent_diameter_nm", pd.Series(dtype=float)).notna(
    ).any() else "equivalent_diameter_px"
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    values = particles[column].dropna() if column in particles else pd.Series(dtype=float)
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#4c72b0")
    ax.set_xlabel(f"equivalent diameter ({column.rsplit('_', 1)[1]})")
    ax.set_ylabel("particles")
    ax.set_title(f"{len(values)} particles")
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def index_html(summary: pd.DataFrame, overlays: dict[str, bytes], particles: pd.DataFrame, title: str) -> str:
    """One self-contained page (images inline): the run's summary table, the particle-size distribution and every
    micrograph's overlay. On load it records in ``data-images-loaded`` how many of its images the browser
    decoded (for a check in a real browser)."""
    figures = "\n".join(f"<figure>{_img(data, name)}<figcaption>{html.escape(name)}</figcaption></figure>"
                        for name, data in overlays.items())
    table = summary.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;}} table{{border-collapse:collapse;font-size:90%;}}
td,th{{padding:2px 8px;border-bottom:1px solid #ccc;text-align:right;}} figure{{display:inline-block;margin:0 1em 1em 0;}}
figure img{{max-width:480px;}}</style></head>
<body data-images-loaded="0">
<h1>{html.escape(title)}</h1>
<p>Particles outlined in orange; blue shading: the networks' disagreement (ensembles). Written by rfseg predict.</p>
<h2>Summary</h2>
{table}
<h2>Particle sizes</h2>
{_img(_size_histogram(particles), "particle-size distribution")}
<h2>Micrographs</h2>
{figures}
<script>window.addEventListener("load", function () {{
  var ok = Array.prototype.filter.call(document.images, function (i) {{ return i.complete && i.naturalWidth > 0; }});
  document.body.setAttribute("data-images-loaded", ok.length + " of " + document.images.length);
}});</script>
</body></html>
"""
