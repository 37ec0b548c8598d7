"""HRTEM of Au nanoparticles on amorphous carbon by abTEM multislice, with exact masks from the atom positions.

Recipe (all lengths in Å inside this module, as abTEM uses): Wulff-shaped fcc Au particles (d ~ U(2, 6) nm) resting on
a 30-50 Å amorphous-carbon film (2.0 g/cm3, random sequential addition with 1.4 Å minimum C-C distance, periodic in
x and y); 300 kV plane wave, Lobato potential, 2 Å slices, sampling ~0.1 Å; aberration-corrected lens (Cs = -15 µm,
Scherzer defocus at the particles' mid-plane, 30 Å focal spread, 30 mrad aperture); Fourier crop to the output grid;
Poisson noise at a dose drawn log-uniformly from a range. Half the particles are near a low-index zone axis (visible
fringes), half randomly oriented. The mask of a particle is the convex hull of its projected atoms grown by 1.44 Å.
"""

from __future__ import annotations

import math

import numpy as np

from rfseg.errors import UserError

ENERGY_EV = 300e3
CS_A = -1.5e5
AU_DENSITY_PER_A3 = 0.0589
CARBON_DENSITY_PER_A3 = 0.100


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


def _orientation(rng: np.random.Generator):
    from scipy.spatial.transform import Rotation

    if rng.random() < 0.5:
        return Rotation.random(random_state=rng), "random"
    zone = Rotation.identity() if rng.random() < 0.5 else Rotation.from_euler("x", 45, degrees=True)
    tilt_axis = np.array([*rng.normal(size=2), 0.0])
    tilt = Rotation.from_rotvec(tilt_axis / np.linalg.norm(tilt_axis) * np.radians(rng.uniform(0, 4)))
    spin = Rotation.from_euler("z", rng.uniform(0, 360), degrees=True)
    return spin * tilt * zone, "zone_axis"


def _particle_mask(xy: np.ndarray, shape: tuple[int, int], pixel_a: float, grow: float = 1.44) -> np.ndarray:
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull

    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], 1) * grow
    pts = (xy[:, None, :] + ring[None]).reshape(-1, 2)
    hull = pts[ConvexHull(pts).vertices]
    lo = np.floor(hull.min(0) / pixel_a).astype(int).clip(0)
    hi = np.ceil(hull.max(0) / pixel_a).astype(int).clip(max=[shape[1] - 1, shape[0] - 1])
    cols, rows = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    inside = MplPath(hull).contains_points(np.stack([cols.ravel(), rows.ravel()], 1) * pixel_a)
    mask = np.zeros(shape, bool)
    mask[rows.ravel()[inside], cols.ravel()[inside]] = True
    return mask


def simulate_image(rng: np.random.Generator, *, size=512, pixel_size_nm=0.02152, diameter_nm=(2.0, 6.0),
                   n_particles=(2, 4), dose_e_per_a2=(300.0, 3000.0), carbon_thickness_a=(30.0, 50.0),
                   defocus_offset_a=0.0, oversampling=2, threads=1):
    """One HRTEM micrograph. Returns (intensity float32 (size, size), labels uint16, params dict)."""
    import abtem
    from ase import Atoms

    from rfseg.blocks.simulate import poisson_noise
    from ase.cluster import wulff_construction

    # FFTW_MEASURE may pick a different algorithm on every run and so change the last bits of the image (and with
    # them the Poisson draws); FFTW_ESTIMATE plans the same way every time, so a seed gives the same micrograph.
    abtem.config.set({"fftw.threads": threads, "fftw.planning_effort": "FFTW_ESTIMATE",
                      "diagnostics.progress_bar": False})
    px = pixel_size_nm * 10
    L = size * px
    if L - 10 - 2 * (0.6 * diameter_nm[1] * 10 + 1.5) <= 0:
        raise UserError(f"a {size} px field at {pixel_size_nm:g} nm/px ({L / 10:.1f} nm) cannot hold particles of up "
                        f"to {diameter_nm[1]:g} nm: raise --size or lower --diameter-nm")
    t_c = rng.uniform(*carbon_thickness_a)
    carbon = amorphous_carbon(L, L, t_c, int(rng.integers(2**31))) + [0, 0, 2.0]
    top = 2.0 + t_c
    particles, centres, radii, kinds = [], [], [], []
    want = int(rng.integers(n_particles[0], n_particles[1] + 1))
    for _ in range(200):
        if len(particles) == want:
            break
        d = rng.uniform(*diameter_nm) * 10
        r_est = 0.6 * d + 1.5
        if L - 10 - 2 * r_est <= 0:
            continue
        c = rng.uniform(5 + r_est, L - 5 - r_est, 2)
        if any(np.hypot(*(c - c2)) < r_est + r2 + 3 for c2, r2 in zip(centres, radii)):
            continue
        n_atoms = round(math.pi / 6 * d**3 * AU_DENSITY_PER_A3)
        p = wulff_construction("Au", [(1, 0, 0), (1, 1, 1)], [rng.uniform(1.0, 1.25), 1.0], n_atoms, "fcc",
                               rounding="above", latticeconstant=4.08)
        rot, kind = _orientation(rng)
        xyz = rot.apply(p.positions - p.positions.mean(0))
        xyz += [c[0], c[1], top + 1.5 - xyz[:, 2].min()]
        particles.append(xyz)
        centres.append(c)
        radii.append(r_est)
        kinds.append(kind)
    au = np.concatenate(particles) if particles else np.empty((0, 3))
    cell_z = max(top, au[:, 2].max() if len(au) else top) + 2.0
    atoms = Atoms(numbers=[6] * len(carbon) + [79] * len(au), positions=np.concatenate([carbon, au]),
                  cell=[L, L, cell_z], pbc=True)
    mid = np.mean([xyz[:, 2].mean() for xyz in particles]) if particles else top
    # the CTF acts at the exit plane, below the particles; an offset moves away from Scherzer (contrast knob)
    defocus = scherzer_defocus_a() + defocus_offset_a + (cell_z - mid)
    potential = abtem.Potential(atoms, gpts=size * oversampling, slice_thickness=2, parametrization="lobato",
                                projection="infinite")
    ctf = abtem.CTF(Cs=CS_A, defocus=defocus, focal_spread=30, semiangle_cutoff=30, energy=ENERGY_EV)
    wave = abtem.PlaneWave(energy=ENERGY_EV).multislice(potential).apply_ctf(ctf).intensity()
    clean = wave.interpolate(gpts=(size, size), method="fft").compute(progress_bar=False).array.T
    dose = float(np.exp(rng.uniform(np.log(dose_e_per_a2[0]), np.log(dose_e_per_a2[1]))))
    image = poisson_noise(clean, dose * px**2, rng)
    labels = np.zeros((size, size), np.uint16)
    for k, xyz in enumerate(particles, start=1):
        labels[_particle_mask(xyz[:, :2], (size, size), px) & (labels == 0)] = k
    params = {"n_particles": len(particles), "dose_e_per_A2": dose, "carbon_thickness_A": t_c,
              "zone_axis_particles": kinds.count("zone_axis")}
    return image, labels, params


def simulate_dataset(n_images: int, seed: int, **kwargs):
    """Yield (name, image, labels, pixel_size_nm, params) for ``n_images`` micrographs from one seed."""
    from rfseg.blocks.simulate import seeded_frames

    return seeded_frames(simulate_image, "hrtem", n_images, seed, 0.02152, **kwargs)
