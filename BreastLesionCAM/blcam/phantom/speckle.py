"""B-mode image formation: scatterers → PSF → envelope → attenuation/TGC → log compression.

The tissue model hands over two maps on the voxel grid: the *echogenicity* (scatterer
amplitude, in dB relative to fibroglandular tissue) and the *attenuation* coefficient
(one-way, dB/cm at the centre frequency). Everything a reader recognises in an ultrasound
image then follows from the physics rather than being painted on:

* **Speckle.** Each voxel holds a complex circular Gaussian scatterer sum (many
  sub-resolution scatterers → central limit). Convolving with the point-spread function is
  linear, so the echo stays circular Gaussian and its magnitude is Rayleigh distributed
  (mean/std = 1.91) wherever the tissue is homogeneous: fully developed speckle. The PSF
  is a separable Gaussian, finest along the beam (axial resolution is set by the pulse
  length), coarser laterally (the focused aperture) and coarsest in elevation (ABUS probes
  have a thick slice), so speckle grains are elongated the way they are in real scans.
* **Attenuation.** An echo from depth z has travelled through all the tissue above it and
  back, so its amplitude falls by ``2 · cumsum(alpha)`` dB along the beam. Time-gain
  compensation restores only the *average* tissue loss, so whatever attenuates more than
  average (a solid mass, a rib) leaves a posterior acoustic shadow, and whatever attenuates
  less (a fluid cyst) leaves posterior enhancement: both appear without special-casing.
* **Receiver noise** is added at the transducer, before TGC, so it is amplified with depth
  and fills shadows and cysts with a faint grain instead of pure black, as on a scanner.
* **Log compression** maps a fixed ``dynamic_range_db`` window to uint8, like the display
  pipeline of a scanner: a fixed window (not per-volume normalisation) keeps grey levels
  comparable between volumes, as in a clinical protocol with fixed presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..axes import Floats

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
LN10 = float(np.log(10.0))
TRUNCATE = 3.0  # Gaussian kernels cut at 3 sigma: enough for the statistics, and faster
SLICES_PER_CHUNK = 16  # elementwise steps done k-slab by k-slab need no full-size temporary


@dataclass(frozen=True)
class Transducer:
    """Acquisition and display settings of the simulated ABUS probe (all physical units).

    ``psf_fwhm_mm`` is in array order (k = elevation, j = axial, i = lateral). The TGC
    compensates ``tgc_fraction`` of the loss of tissue with ``tgc_alpha_db_cm`` (round trip),
    leaving a gentle darkening with depth as on an under-compensated clinical preset.
    """

    psf_fwhm_mm: tuple[float, float, float] = (1.4, 0.3, 0.8)
    tgc_alpha_db_cm: float = 5.0
    tgc_fraction: float = 0.85
    noise_db: float = -72.0
    dynamic_range_db: float = 50.0
    top_db: float = 15.0


def psf_sigma_voxels(spacing: Floats, psf_fwhm_mm: Floats) -> tuple[float, float, float]:
    """Gaussian PSF standard deviation in voxels for each axis (k, j, i)."""
    return tuple(float(f) * FWHM_TO_SIGMA / float(s) for f, s in zip(psf_fwhm_mm, spacing))


def _energy_gain(sigma: Floats) -> float:
    """Σh² of the separable kernel that ``gaussian_filter`` applies with ``sigma``.

    Filtering white noise multiplies its power by Σh²; dividing it out makes the mean echo
    power independent of spacing and PSF, so grey levels mean the same at any resolution.
    """
    gain = 1.0
    for s in sigma:
        if s <= 0:
            continue
        n = 2 * int(TRUNCATE * s + 0.5) + 1
        delta = np.zeros(n)
        delta[n // 2] = 1.0
        h = ndi.gaussian_filter1d(delta, s, truncate=TRUNCATE, mode="constant")
        gain *= float(np.sum(h * h))
    return gain


def speckle_power(rng: np.random.Generator, power: np.ndarray, spacing: Floats, psf_fwhm_mm: Floats
                  ) -> np.ndarray:
    """|PSF ∗ scatterers|² for scatterers of mean power ``power`` (float32, same shape).

    ``power`` is overwritten (it becomes the scratch buffer), to keep the peak memory at
    three volumes. The result has, in a homogeneous region, an exponential distribution with
    mean ``power``: the square of a Rayleigh envelope.
    """
    sigma = psf_sigma_voxels(spacing, psf_fwhm_mm)
    amp = np.sqrt(power, out=power)
    amp *= np.float32(1.0 / np.sqrt(2.0 * _energy_gain(sigma)))
    re = rng.standard_normal(amp.shape, dtype=np.float32)
    im = rng.standard_normal(amp.shape, dtype=np.float32)
    re *= amp
    im *= amp
    ndi.gaussian_filter(re, sigma, output=re, truncate=TRUNCATE)
    ndi.gaussian_filter(im, sigma, output=im, truncate=TRUNCATE)
    re *= re
    im *= im
    re += im
    return re


def envelope(rng: np.random.Generator, echo_db: np.ndarray, spacing: Floats,
             psf_fwhm_mm: Floats = Transducer.psf_fwhm_mm) -> np.ndarray:
    """Speckle envelope (linear amplitude) of an echogenicity map, without attenuation.

    The public entry point for checking speckle statistics: for a constant ``echo_db`` the
    result is Rayleigh distributed (mean/std ≈ 1.91).
    """
    power = np.exp(np.asarray(echo_db, np.float32) * np.float32(LN10 / 10.0)).astype(np.float32)
    return np.sqrt(speckle_power(rng, power, spacing, psf_fwhm_mm))


def tgc_db(n_depth: int, dz_mm: float, transducer: Transducer) -> np.ndarray:
    """Depth gain curve in dB, shape (1, J, 1): compensates part of the mean tissue loss."""
    z_cm = (np.arange(n_depth, dtype=np.float32) + 0.5) * np.float32(dz_mm / 10.0)
    gain = transducer.tgc_fraction * 2.0 * transducer.tgc_alpha_db_cm * z_cm
    return gain.astype(np.float32)[None, :, None]


def form_bmode(rng: np.random.Generator, echo_db: np.ndarray, alpha_db_cm: np.ndarray,
               spacing: Floats, transducer: Transducer = Transducer(), gain_db: float = 0.0,
               return_envelope: bool = False):
    """Simulate the uint8 B-mode volume from the tissue maps (both float32, (k, j, i)).

    Neither input is modified. With ``return_envelope`` the linear envelope after TGC and
    before log compression is returned too, for statistical checks.
    """
    power = attenuated_power(echo_db, alpha_db_cm, spacing, transducer)
    return bmode_from_power(rng, power, spacing, transducer, gain_db, return_envelope)


def attenuated_power(echo_db: np.ndarray, alpha_db_cm: np.ndarray, spacing: Floats,
                     transducer: Transducer = Transducer()) -> np.ndarray:
    """Mean echo power at the transducer (linear, float32), receiver noise included.

    The first half of :func:`form_bmode`, apart so that a caller can drop the tissue maps
    before the speckle step: at ABUS size (865×682×354) each map is 0.8 GB, and keeping both
    alive next to the three speckle buffers made that step the peak of a volume.
    """
    dz_cm = float(spacing[1]) / 10.0
    # Round-trip loss down to the middle of each voxel: 2·(Σ_{above} α + α/2)·dz.
    loss = np.cumsum(alpha_db_cm, axis=1, dtype=np.float32)
    for k0 in range(0, loss.shape[0], SLICES_PER_CHUNK):   # no full-volume temporary
        k1 = k0 + SLICES_PER_CHUNK
        loss[k0:k1] -= 0.5 * alpha_db_cm[k0:k1]
    loss *= np.float32(-2.0 * dz_cm)
    np.maximum(loss, np.float32(-200.0), out=loss)  # far below the noise; avoids underflow
    loss += echo_db
    loss *= np.float32(LN10 / 10.0)
    power = np.exp(loss, out=loss)
    power += np.float32(10.0 ** (transducer.noise_db / 10.0))
    return power


def bmode_from_power(rng: np.random.Generator, power: np.ndarray, spacing: Floats,
                     transducer: Transducer = Transducer(), gain_db: float = 0.0,
                     return_envelope: bool = False):
    """Speckle, TGC and log compression of :func:`attenuated_power`'s output (overwritten)."""
    power = speckle_power(rng, power, spacing, transducer.psf_fwhm_mm)
    gain = tgc_db(power.shape[1], float(spacing[1]), transducer) + np.float32(gain_db)
    env = None
    if return_envelope:
        env = np.sqrt(power) * (10.0 ** (gain / 20.0)).astype(np.float32)
    # 10·log10(power) is the envelope in dB; shift and scale the display window to 0..255.
    np.maximum(power, np.float32(1e-30), out=power)
    level = np.log10(power, out=power)
    level *= np.float32(10.0)
    level += gain - np.float32(transducer.top_db - transducer.dynamic_range_db)
    level *= np.float32(255.0 / transducer.dynamic_range_db)
    np.clip(level, 0.0, 255.0, out=level)
    image = level.astype(np.uint8)
    return (image, env) if return_envelope else image
