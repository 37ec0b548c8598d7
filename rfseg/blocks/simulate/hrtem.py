"""HRTEM of Au nanoparticles on amorphous carbon by abTEM multislice, with exact masks from the atom positions.

Recipe (all lengths in Å inside this module, as abTEM uses):
- Sample: fcc Au particles (d ~ U(2, 6) nm by default) of the shapes real Au takes, from ``ase.cluster``: Wulff
  polyhedra, truncated octahedra, Marks decahedra and icosahedra (multiply twinned), half of them with corners
  rounded; 30 % near a low-index zone axis (visible fringes), the rest randomly oriented; 2-5 per field, half of them
  put against an earlier one with overlapping projections (atoms closer than 2.6 Å removed: fused at a neck), free
  to cross the periodic field's edge. They rest on a 30-50 Å amorphous-carbon film (2.0 g/cm3, random sequential
  addition with 1.4 Å minimum C-C distance, periodic in x and y).
- Microscope: 300 kV plane wave, Lobato potential, 2 Å slices, sampling ~0.1 Å; aberration-corrected lens (Cs =
  -15 µm, 30 mrad aperture) at Scherzer defocus for the particles' mid-plane plus a per-micrograph normal draw of
  sd 10 nm (focus set by eye varies), residual two-fold astigmatism up to 5 nm at a random angle, 30 Å focal spread
  and 0.2 mrad beam convergence (temporal and spatial coherence envelopes); an image spread of 0.65 Å (Gaussian
  sigma: vibration, drift and instabilities, which damp real lattice and speckle contrast about threefold against
  ideal simulations, the Stobbs factor); a slow illumination change of up to 10 % over the field; Fourier crop to
  the output grid.
- Camera: shot noise at a dose drawn log-uniformly from a range, half of it counted (DQE 0.5, of a scintillator
  camera at 300 kV), then signal and noise alike blurred by a Gaussian point spread of 1 px (sigma), which makes the
  noise coarse-grained as on real cameras; no readout noise and no dose-independent noise floor by default
  (``detector_read_noise``, ``detector_noise_floor``).
The mask of a particle is the convex hull of its projected atoms grown by 1.44 Å. These defaults were chosen by
``benchmarks/realism.py``: at 5 nm and 423 e/Å² the published real-data networks judge such micrographs as they
judge real ones (docs/explanation/simulator.md).
"""

from __future__ import annotations

import math

import numpy as np

from rfseg.errors import UserError

ENERGY_EV = 300e3
CS_A = -1.5e5
AU_DENSITY_PER_A3 = 0.0589
CARBON_DENSITY_PER_A3 = 0.100
#: thermal displacement (sd along each axis, Å) at room temperature: Au from its Debye-Waller factor B = 0.62 Å^2
#: (u = sqrt(B / 8 pi^2)); amorphous carbon's similar figure
THERMAL_SD_A = {"Au": 0.089, "C": 0.08}


SHAPES = ("wulff", "octahedron", "decahedron", "icosahedron")

#: the realism knobs of :func:`simulate_image` as users give them (config key = CLI option with dashes) -> (keyword,
#: factor from the user's unit to the keyword's, type, help)
KNOBS = {
    "defocus_spread_nm": ("defocus_spread_a", 10, float, "sd of the defocus between micrographs around Scherzer"),
    "focal_spread_nm": ("focal_spread_a", 10, float, "focal spread (1/e width): temporal coherence"),
    "convergence_mrad": ("convergence_mrad", 1, float, "beam convergence semi-angle: spatial coherence"),
    "astigmatism_nm": ("astigmatism_a", 10, float, "largest residual two-fold astigmatism"),
    "aperture_mrad": ("aperture_mrad", 1, float, "objective aperture semi-angle"),
    "image_spread_nm": ("image_spread_a", 10, float, "image spread (Gaussian sigma): vibration, drift, instabilities"),
    "detector_psf_px": ("detector_psf_px", 1, float, "camera point spread (Gaussian sigma, px); blurs the noise too"),
    "detector_dqe": ("detector_dqe", 1, float, "camera detective quantum efficiency (share of the dose counted)"),
    "detector_read_noise": ("detector_read_noise", 1, float,
                            "camera readout noise (sd, counted electrons per pixel): white, after the point spread"),
    "detector_noise_floor": ("detector_noise_floor", 1, float,
                             "camera noise that does not grow with the dose (sd, counted electrons per pixel), before "
                             "the point spread: the DQE falls at low dose"),
    "frozen_phonons": ("frozen_phonons", 1, int,
                       "thermal vibration: frozen-phonon configurations averaged (0: off; cost grows with it)"),
    "illumination_variation": ("illumination_variation", 1, float, "slow illumination change over the field"),
    "n_particles": ("n_particles", 1, int, "particles per micrograph, a range lo,hi"),
    "shapes": ("shapes", 1, str, "particle shapes drawn from: " + ", ".join(SHAPES)),
    "zone_axis_fraction": ("zone_axis_fraction", 1, float, "share of particles near a low-index zone axis"),
    "touching_fraction": ("touching_fraction", 1, float, "share of particles placed against an earlier one"),
    "cross_border": ("cross_border", 1, bool, "particles may cross the field's edge"),
}


def knob_keywords(knobs: dict) -> dict:
    """:data:`KNOBS` in their users' units (config keys) -> :func:`simulate_image` keywords in Å; unknown keys raise."""
    out = {}
    for key, value in knobs.items():
        if key not in KNOBS:
            raise UserError(f"unknown simulate option {key!r}; the HRTEM ones are {', '.join(KNOBS)}")
        name, factor, _, _ = KNOBS[key]
        scale = (lambda v: v * factor) if factor != 1 else (lambda v: v)
        out[name] = tuple(scale(v) for v in value) if isinstance(value, (list, tuple)) else scale(value)
    return out


def _wavelength_a(energy_ev: float) -> float:
    m0c2, hc = 510998.95, 12398.4198
    return hc / math.sqrt(energy_ev * (2 * m0c2 + energy_ev))


def scherzer_defocus_a(cs_a: float = CS_A, energy_ev: float = ENERGY_EV) -> float:
    """Scherzer defocus in Å (abTEM's sign: positive = underfocus); -66.6 Å for Cs = -15 µm at 300 kV."""
    return math.copysign(math.sqrt(1.5 * abs(cs_a) * _wavelength_a(energy_ev)), cs_a)


def _rsa_kernel():
    import numba

    @numba.njit(cache=True)
    def rsa(n_target, lx, ly, lz, dmin, seed, max_tries):
        np.random.seed(seed)
        nx, ny, nz = max(1, int(lx // dmin)), max(1, int(ly // dmin)), max(1, int(lz // dmin))
        cap = 12
        grid = np.full((nx, ny, nz, cap), -1, np.int64)
        count = np.zeros((nx, ny, nz), np.int64)
        pos = np.empty((n_target, 3))
        n, tries, d2 = 0, 0, dmin * dmin
        while n < n_target and tries < max_tries:
            tries += 1
            x, y, z = np.random.random() * lx, np.random.random() * ly, np.random.random() * lz
            ix, iy, iz = min(int(x / lx * nx), nx - 1), min(int(y / ly * ny), ny - 1), min(int(z / lz * nz), nz - 1)
            ok = count[ix, iy, iz] < cap
            for dx in range(-1, 2):
                for dy in range(-1, 2):
                    for dz in range(-1, 2):
                        jz = iz + dz
                        if not ok or jz < 0 or jz >= nz:
                            continue
                        jx, jy = (ix + dx) % nx, (iy + dy) % ny
                        for k in range(count[jx, jy, jz]):
                            p = pos[grid[jx, jy, jz, k]]
                            ex = x - p[0]
                            ex -= lx * round(ex / lx)
                            ey = y - p[1]
                            ey -= ly * round(ey / ly)
                            ez = z - p[2]
                            if ex * ex + ey * ey + ez * ez < d2:
                                ok = False
                                break
            if ok:
                pos[n] = (x, y, z)
                grid[ix, iy, iz, count[ix, iy, iz]] = n
                count[ix, iy, iz] += 1
                n += 1
        return pos[:n]

    return rsa


_RSA = None


def amorphous_carbon(lx: float, ly: float, thickness: float, seed: int, dmin: float = 1.4) -> np.ndarray:
    """Random carbon positions (n, 3) in Å filling lx x ly x thickness at 0.100 atoms/Å3, periodic in x and y."""
    global _RSA
    if _RSA is None:
        _RSA = _rsa_kernel()
    n = int(CARBON_DENSITY_PER_A3 * lx * ly * thickness)
    return _RSA(n, lx, ly, thickness, dmin, seed, 60 * n)


def _orientation(rng: np.random.Generator, zone_axis_fraction: float):
    from scipy.spatial.transform import Rotation

    if rng.random() >= zone_axis_fraction:
        return Rotation.random(random_state=rng), "random"
    zone = Rotation.identity() if rng.random() < 0.5 else Rotation.from_euler("x", 45, degrees=True)
    tilt_axis = np.array([*rng.normal(size=2), 0.0])
    tilt = Rotation.from_rotvec(tilt_axis / np.linalg.norm(tilt_axis) * np.radians(rng.uniform(0, 4)))
    spin = Rotation.from_euler("z", rng.uniform(0, 360), degrees=True)
    return spin * tilt * zone, "zone_axis"


def _cluster(shape: str, size: int, rng: np.random.Generator):
    """One ase.cluster Au particle of ``shape`` at integer size parameter ``size`` (larger = more atoms)."""
    from ase.cluster import Decahedron, Icosahedron, Octahedron, wulff_construction

    a = 4.08
    if shape == "wulff":  # size = atom count
        return wulff_construction("Au", [(1, 0, 0), (1, 1, 1)], [rng.uniform(1.0, 1.25), 1.0], size, "fcc",
                                  rounding="above", latticeconstant=a)
    if shape == "octahedron":  # truncated octahedron: corners cut by about a third of the edge
        return Octahedron("Au", 2 * size + 1, cutoff=round((2 * size + 1) * rng.uniform(0.25, 0.34)),
                          latticeconstant=a)
    if shape == "decahedron":  # Marks decahedron (re-entrant notches at the twin boundaries)
        return Decahedron("Au", size, size, min(2, size // 3), latticeconstant=a)
    return Icosahedron("Au", size, latticeconstant=a)


def particle_atoms(shape: str, diameter_a: float, rng: np.random.Generator, round_corners: bool) -> np.ndarray:
    """Centred (n, 3) Au positions in Å of a particle of ``shape`` with about the volume of a ``diameter_a`` sphere.

    Multiply twinned (decahedra, icosahedra) and truncated-octahedral particles come from ``ase.cluster`` at the
    size parameter whose atom count is closest to the sphere's; ``round_corners`` trims atoms beyond 0.9 of the
    largest radius (the rounded particles of real samples) unless that would remove most of them."""
    n_atoms = round(math.pi / 6 * diameter_a**3 * AU_DENSITY_PER_A3)
    if shape == "wulff":
        xyz = _cluster("wulff", n_atoms, rng).positions
    else:
        best = None
        for size in range(2, 40):
            xyz = _cluster(shape, size, rng).positions
            if best is None or abs(len(xyz) - n_atoms) < abs(len(best) - n_atoms):
                best = xyz
            if len(xyz) >= n_atoms:
                break
        xyz = best
    xyz = xyz - xyz.mean(0)
    if round_corners:
        r = np.linalg.norm(xyz, axis=1)
        inner = r <= 0.9 * r.max()
        if inner.mean() >= 0.5:  # a cluster of a few shells (13 atoms) has no corners to round: all would go
            xyz = xyz[inner]
    return xyz


def _particle_mask(xy: np.ndarray, shape: tuple[int, int], pixel_a: float, grow: float = 1.44) -> np.ndarray:
    """Pixels inside the convex hull of projected atoms ``xy`` (Å, unwrapped) grown by ``grow``; the field is
    periodic, so a particle crossing an edge comes back in at the opposite one."""
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull

    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], 1) * grow
    pts = (xy[:, None, :] + ring[None]).reshape(-1, 2)
    mask = np.zeros(shape, bool)
    field = np.array([shape[1], shape[0]]) * pixel_a
    unshifted = pts[ConvexHull(pts).vertices]
    for shift_x in (-field[0], 0, field[0]):
        for shift_y in (-field[1], 0, field[1]):
            hull = unshifted + [shift_x, shift_y]
            lo = np.floor(hull.min(0) / pixel_a).astype(int).clip(0)
            hi = np.ceil(hull.max(0) / pixel_a).astype(int).clip(max=[shape[1] - 1, shape[0] - 1])
            if (hi < lo).any():
                continue
            cols, rows = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
            inside = MplPath(hull).contains_points(np.stack([cols.ravel(), rows.ravel()], 1) * pixel_a)
            mask[rows.ravel()[inside], cols.ravel()[inside]] = True
    return mask


def _place_particles(rng, L, top, *, diameter_nm, n_particles, shapes, zone_axis_fraction, touching_fraction,
                     cross_border):
    """Au particles resting on the support: list of (unwrapped xyz Å, kind). A touching particle is put against an
    earlier one with overlapping projections (fraction ``touching_fraction``); atoms closer than 2.6 Å to an earlier
    particle's are removed, which fuses the two at a neck. Clashes and necks are found across the periodic field's
    edges as well, where particles that cross an edge meet."""
    from scipy.spatial import cKDTree

    placed, centres, radii = [], [], []
    want = int(rng.integers(n_particles[0], n_particles[1] + 1))
    for _ in range(200):
        if len(placed) == want:
            break
        d = rng.uniform(*diameter_nm) * 10
        r_est = 0.6 * d + 1.5
        partner = None  # the earlier particle this one is put against, if any
        if placed and rng.random() < touching_fraction:
            partner = int(rng.integers(len(placed)))
            angle = rng.uniform(0, 2 * np.pi)
            c = centres[partner] + (radii[partner] + r_est) * rng.uniform(0.75, 0.95) * np.array(
                [np.cos(angle), np.sin(angle)])
            margin = -r_est if cross_border else 5 + r_est
            if not (margin <= c[0] <= L - margin and margin <= c[1] <= L - margin):
                continue
        else:
            lo, hi = (0.0, L) if cross_border else (5 + r_est, L - 5 - r_est)
            if hi <= lo:
                continue
            c = rng.uniform(lo, hi, 2)
        if any(k != partner and np.hypot(*_nearest_image(c - centres[k], L)) < r_est + radii[k] + 3
               for k in range(len(placed))):
            continue
        shape = shapes[int(rng.integers(len(shapes)))]
        rot, kind = _orientation(rng, zone_axis_fraction)
        xyz = rot.apply(particle_atoms(shape, d, rng, round_corners=rng.random() < 0.5))
        xyz += [c[0], c[1], top + 1.5 - xyz[:, 2].min()]
        if placed:  # distances across the periodic field's edges too (z is not periodic: a box far taller)
            box = [L, L, 1e6]
            earlier = np.concatenate([p for p, _ in placed])
            near = cKDTree(earlier % box, boxsize=box).query(xyz % box, distance_upper_bound=2.6)[0]
            xyz = xyz[~np.isfinite(near)]
        placed.append((xyz, f"{shape}_{kind}"))
        centres.append(c)
        radii.append(r_est)
    return placed


def _nearest_image(d: np.ndarray, period: float) -> np.ndarray:
    """Offset ``d`` between two points of a periodic field, taken to the nearest periodic image."""
    return d - period * np.round(d / period)


def illumination(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A slow illumination field 1 + amplitude * q(y, x), q a random quadratic surface scaled to max |q| = 1."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    q = sum(c * t for c, t in zip(rng.normal(size=5), (x, y, x * y, x * x, y * y)))
    return (1 + amplitude * q / max(np.abs(q).max(), 1e-12)).astype(np.float32)


def detector(intensity: np.ndarray, counts_per_px: float, psf_px: float, dqe: float, rng: np.random.Generator,
             read_noise: float = 0.0, noise_floor: float = 0.0):
    """A counting camera behind a scintillator: shot noise on ``dqe`` * ``counts_per_px`` electrons per pixel at
    intensity 1; with ``noise_floor`` > 0, Gaussian noise of that sd in counted electrons per pixel that does not grow
    with the dose; then signal and noise alike blurred by a Gaussian point spread of ``psf_px`` (sigma, px), so the
    noise comes out correlated over the point spread (noise power ~ MTF^2); then, with ``read_noise`` > 0, the
    readout's own noise, white Gaussian of that sd in counted electrons per pixel. Both dose-independent terms matter
    at low dose only: the noise floor lowers the DQE to ``dqe / (1 + noise_floor**2 / (dqe * counts_per_px))``, the
    way integrating cameras' DQE falls at low dose, with the noise correlated like the shot noise. Returned in
    intensity units."""
    from scipy import ndimage

    from rfseg.blocks.simulate import poisson_noise

    counted = dqe * counts_per_px
    noisy = poisson_noise(intensity, counted, rng)
    if noise_floor > 0:
        noisy = (noisy + rng.normal(0.0, noise_floor / counted, noisy.shape)).astype(np.float32)
    image = ndimage.gaussian_filter(noisy, psf_px, mode="wrap").astype(np.float32) if psf_px > 0 else noisy
    if read_noise > 0:
        image = (image + rng.normal(0.0, read_noise / counted, image.shape)).astype(np.float32)
    return image


#: keywords of :func:`simulate_image` that are widths, spreads or noise levels (>= 0), that must be > 0, and the
#: shares in [0, 1] (zero allowed: True) or (0, 1] (False)
_AT_LEAST_ZERO = ("defocus_spread_a", "focal_spread_a", "convergence_mrad", "astigmatism_a", "image_spread_a",
                  "detector_psf_px", "detector_read_noise", "detector_noise_floor", "illumination_variation",
                  "frozen_phonons")
_ABOVE_ZERO = ("aperture_mrad",)
_SHARES = {"zone_axis_fraction": True, "touching_fraction": True, "detector_dqe": False}


def _check_knob_ranges(keywords: dict) -> None:
    """Raise a :class:`UserError` naming the config key and CLI option, in the user's unit, for a knob out of range."""
    for key, zero_allowed in _SHARES.items():
        value = keywords[key]
        if not (0 <= value <= 1 and (zero_allowed or value > 0)):
            interval = "[0, 1]" if zero_allowed else "(0, 1]"
            raise UserError(f"simulate {key} (--{key.replace('_', '-')}) must lie in {interval}, got {value}")
    config_key = {name: (key, factor) for key, (name, factor, _, _) in KNOBS.items()}
    for name in _AT_LEAST_ZERO + _ABOVE_ZERO:
        value = keywords[name]
        if value < 0 or (name in _ABOVE_ZERO and value == 0):
            key, factor = config_key[name]
            bound = "above 0" if name in _ABOVE_ZERO else "at least 0"
            raise UserError(f"simulate {key} (--{key.replace('_', '-')}) must be {bound}, got {value / factor:g}")
    if keywords["illumination_variation"] > 0.9:  # as the config schema: a share of the mean intensity
        raise UserError(f"simulate illumination_variation (--illumination-variation) must be at most 0.9, got "
                        f"{keywords['illumination_variation']:g}")


def route_abtem_fft_to_scipy() -> bool:
    """Make abTEM's FFTs of numpy arrays run in ``scipy.fft`` instead of ``numpy.fft``; returns whether it could.

    The multislice spends most of its time in FFTs of complex64 waves, and numpy's forward transform of complex64 ran
    4x slower than scipy's on an Intel Xeon with AMX (1024², one thread: 35 against 7.5 ms; a micrograph of 512² took
    3.8 s against 8.4). Both are pocketfft without planning, so a seed still gives the same micrograph every time;
    FFTW computes the same way only when it plans by estimate, and its estimated plans were 3x slower than numpy's.
    abTEM (1.0) offers numpy, FFTW and MKL, not scipy, so its dispatcher for numpy arrays is wrapped; an abTEM without
    that dispatcher keeps numpy's FFT (micrographs then differ in their last bits, and with them some Poisson draws)."""
    from abtem.core import fft as abtem_fft

    dispatch = getattr(abtem_fft, "_fft_dispatch", None)
    if dispatch is None:
        return False
    if getattr(dispatch, "routes_to_scipy", False):
        return True
    import scipy.fft

    def scipy_dispatch(x, func_name, overwrite_x=False, **kwargs):
        if isinstance(x, np.ndarray):
            return getattr(scipy.fft, func_name)(x, overwrite_x=overwrite_x, **kwargs)
        return dispatch(x, func_name, overwrite_x, **kwargs)

    scipy_dispatch.routes_to_scipy = True
    abtem_fft._fft_dispatch = scipy_dispatch
    return True


def simulate_image(rng: np.random.Generator, *, size=512, pixel_size_nm=0.02152, diameter_nm=(2.0, 6.0),
                   n_particles=(2, 5), dose_e_per_a2=(300.0, 3000.0), carbon_thickness_a=(30.0, 50.0),
                   defocus_offset_a=0.0, defocus_spread_a=100.0, focal_spread_a=30.0, convergence_mrad=0.2,
                   astigmatism_a=50.0, detector_psf_px=1.0, detector_dqe=0.5, detector_read_noise=0.0,
                   detector_noise_floor=0.0, illumination_variation=0.1, shapes=SHAPES, zone_axis_fraction=0.3,
                   touching_fraction=0.5, cross_border=True, aperture_mrad=30.0, image_spread_a=0.65, frozen_phonons=0,
                   oversampling=2):
    """One HRTEM micrograph. Returns (intensity float32 (size, size), labels uint16, params dict).

    Lengths in Å, doses in e/Å². The defocus of a micrograph is Scherzer + ``defocus_offset_a`` + a normal draw of
    sd ``defocus_spread_a``; two-fold astigmatism is drawn uniformly up to ``astigmatism_a`` at a random angle.
    ``focal_spread_a`` (1/e width) and ``convergence_mrad`` (beam semi-angle) set the temporal and spatial coherence
    envelopes, ``detector_psf_px`` / ``detector_dqe`` / ``detector_read_noise`` / ``detector_noise_floor`` the camera
    (:func:`detector`), ``illumination_variation`` a slow multiplicative field (:func:`illumination`).
    ``frozen_phonons`` > 0 averages the image over that many configurations of thermally displaced atoms
    (:data:`THERMAL_SD_A`): the finest lattice fringes are damped (Debye-Waller); the particles do not get darker
    (tested). Particles: ``shapes`` drawn from :data:`SHAPES`, ``zone_axis_fraction`` of them near a low-index zone
    axis, ``touching_fraction`` put against an earlier one, ``cross_border`` lets them cross the (periodic) field's
    edge."""
    import abtem
    from ase import Atoms

    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown or not shapes:
        raise UserError(f"simulate shapes must be among {', '.join(SHAPES)}, got {', '.join(unknown) or 'none'}")
    _check_knob_ranges(locals())
    if len(n_particles) != 2 or not 0 <= n_particles[0] <= n_particles[1]:
        raise UserError(f"simulate n_particles (--n-particles) must be a range lo,hi with 0 <= lo <= hi, got "
                        f"{','.join(map(str, n_particles))}")
    abtem.config.set({"fft": "numpy", "diagnostics.progress_bar": False})
    route_abtem_fft_to_scipy()
    px = pixel_size_nm * 10
    L = size * px
    if not cross_border and L - 10 - 2 * (0.6 * diameter_nm[1] * 10 + 1.5) <= 0:
        raise UserError(f"a {size} px field at {pixel_size_nm:g} nm/px ({L / 10:.1f} nm) cannot hold particles of up "
                        f"to {diameter_nm[1]:g} nm: raise --size or lower --diameter-nm")
    t_c = rng.uniform(*carbon_thickness_a)
    scene_seed = int(rng.integers(2**31))
    carbon = amorphous_carbon(L, L, t_c, scene_seed) + [0, 0, 2.0]
    top = 2.0 + t_c
    placed = _place_particles(rng, L, top, diameter_nm=diameter_nm, n_particles=n_particles, shapes=shapes,
                              zone_axis_fraction=zone_axis_fraction, touching_fraction=touching_fraction,
                              cross_border=cross_border)
    particles = [xyz for xyz, _ in placed]
    au = np.concatenate(particles) if particles else np.empty((0, 3))
    au_in_cell = np.concatenate([au[:, :2] % L, au[:, 2:]], 1)
    cell_z = max(top, au[:, 2].max() if len(au) else top) + 2.0
    atoms = Atoms(numbers=[6] * len(carbon) + [79] * len(au), positions=np.concatenate([carbon, au_in_cell]),
                  cell=[L, L, cell_z], pbc=True)
    mid = np.mean([xyz[:, 2].mean() for xyz in particles]) if particles else top
    # the CTF acts at the exit plane, below the particles; the offset and spread move away from Scherzer
    defocus = scherzer_defocus_a() + defocus_offset_a + defocus_spread_a * rng.normal() + (cell_z - mid)
    astigmatism, astigmatism_angle = astigmatism_a * rng.random(), rng.uniform(0, np.pi)
    if frozen_phonons > 0:  # seeded apart from rng: the same micrograph, only vibrating (a paired comparison)
        atoms = abtem.FrozenPhonons(atoms, num_configs=frozen_phonons, sigmas=THERMAL_SD_A,
                                    seed=int(np.random.SeedSequence([scene_seed, 1]).generate_state(1)[0]))
    potential = abtem.Potential(atoms, gpts=size * oversampling, slice_thickness=2, parametrization="lobato",
                                projection="infinite")
    ctf = abtem.CTF(Cs=CS_A, defocus=defocus, astigmatism=astigmatism, astigmatism_angle=astigmatism_angle,
                    focal_spread=focal_spread_a, angular_spread=convergence_mrad, semiangle_cutoff=aperture_mrad,
                    energy=ENERGY_EV)
    wave = abtem.PlaneWave(energy=ENERGY_EV).multislice(potential).apply_ctf(ctf).intensity()
    clean = wave.interpolate(gpts=(size, size), method="fft").compute(progress_bar=False).array
    clean = (clean.mean(0) if clean.ndim == 3 else clean).T  # frozen phonons: the configurations' mean intensity
    if image_spread_a > 0:  # vibration, drift and instabilities: a Gaussian envelope on the image (Stobbs factor)
        from scipy import ndimage

        clean = ndimage.gaussian_filter(clean, image_spread_a / px, mode="wrap")
    if illumination_variation > 0:
        clean = clean * illumination((size, size), illumination_variation, rng)
    dose = float(np.exp(rng.uniform(np.log(dose_e_per_a2[0]), np.log(dose_e_per_a2[1]))))
    image = detector(clean, dose * px**2, detector_psf_px, detector_dqe, rng, detector_read_noise,
                     detector_noise_floor)
    labels = np.zeros((size, size), np.uint16)
    for k, xyz in enumerate(particles, start=1):
        labels[_particle_mask(xyz[:, :2], (size, size), px) & (labels == 0)] = k
    kinds = [kind for _, kind in placed]
    params = {"n_particles": len(particles), "dose_e_per_A2": dose, "carbon_thickness_A": t_c,
              "defocus_A": defocus - (cell_z - mid), "astigmatism_A": astigmatism,
              "zone_axis_particles": sum(k.endswith("zone_axis") for k in kinds),
              "particle_kinds": " ".join(kinds)}
    return image, labels, params


def simulate_dataset(n_images: int, seed: int, **kwargs):
    """Yield (name, image, labels, pixel_size_nm, params) for ``n_images`` micrographs from one seed; ``workers``
    processes make them in parallel (:func:`rfseg.blocks.simulate.seeded_frames`), the same ones for any number."""
    from rfseg.blocks.simulate import seeded_frames

    return seeded_frames(simulate_image, "hrtem", n_images, seed, 0.02152, **kwargs)
