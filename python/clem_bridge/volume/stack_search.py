"""Search an EM block in an LM stack as one 3-D template (rotation about z, mirror, z direction, translation).

A few EM planes spaced a whole number of LM z-steps apart are matched together: a hypothesis (handedness,
rotation, z direction, LM slice of the first plane) puts plane ``j`` on slice ``k0 + direction * j``, and
its score is the mean over the planes of the normalised correlation of gradient magnitudes (the criterion of
:mod:`clem_bridge.register.search`) at one common translation; a plane outside the stack adds 0.  Noise
peaks of single (plane, slice) pairs do not line up across planes, so the true pose stands out where one
pair alone does not (small EM fields of a few cells: a wrong pair scores as high as the right one).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..peaks import distinct, subpixel_peak
from ..register.search import candidate, gradient_magnitude, mapped_canvas
from ..transforms import center_of


@dataclass
class StackMatch:
    """``fixed_to_moving``: plane px → slice px (3×3); ``slices``: LM slice of each plane (may lie outside)."""
    fixed_to_moving: np.ndarray
    rotation_deg: float
    scale: float
    mirrored: bool
    direction: int
    slices: tuple[int, ...]
    score: float


def plane_positions(depth: int, planes_per_slice: float, max_planes: int = 3) -> tuple[np.ndarray, int]:
    """EM z positions (voxels, centred, ``spacing`` LM z-steps apart) and ``spacing``: as many whole LM
    z-steps as the EM depth holds, at most ``max_planes``; one central plane in a shallower EM."""
    n_fit = int((depth - 1) / planes_per_slice) + 1
    spacing = int(np.ceil(n_fit / max_planes))
    n = min(int((depth - 1) / (planes_per_slice * spacing)) + 1, max_planes)
    return (depth - 1) / 2.0 + (np.arange(n) - (n - 1) / 2.0) * spacing * planes_per_slice, spacing


class StackMatcher:
    """Gradient images of EM planes (n, h, w) and LM slices (K, H, W) at one pixel size."""

    def __init__(self, planes: np.ndarray, slices: np.ndarray, spacing: int = 1, sigma: float = 1.0):
        self.pg = [gradient_magnitude(p, sigma) for p in planes]
        self.sg = [gradient_magnitude(s, sigma) for s in slices]
        self.plane_shape, self.slice_shape = planes.shape[1:], slices.shape[1:]
        self.spacing = spacing

    def slices_of(self, k0: int, direction: int) -> tuple[int, ...]:
        return tuple(k0 + direction * self.spacing * j for j in range(len(self.pg)))

    def responses(self, fixed_to_moving: np.ndarray, margin: int, ks) -> dict[int, list[np.ndarray]]:
        """``{k: [correlation of plane j with slice k for every plane shift within ±margin px]}``; entry
        [margin + dy, margin + dx] is for ``fixed_to_moving`` composed with a plane shift (dx, dy)."""
        out = {}
        for k in ks:
            canvas = mapped_canvas(self.sg[k], fixed_to_moving, self.plane_shape, (margin, margin))
            out[k] = [cv2.matchTemplate(canvas, p, cv2.TM_CCOEFF_NORMED) for p in self.pg]
        return out

    def combined(self, resp: dict, k0: int, direction: int) -> np.ndarray:
        """Mean over the planes of their slices' responses (0 for a plane outside the stack)."""
        total = None
        for j, k in enumerate(self.slices_of(k0, direction)):
            if k in resp:
                total = resp[k][j].copy() if total is None else total + resp[k][j]
        return total / len(self.pg)

    def sweep(self, angle_step: float, margin: int) -> list[tuple]:
        """Every (handedness, rotation, direction, k0) at scale 1: (score, angle, mirrored, direction, k0,
        slice px of the plane centre) at the best translation, best first."""
        n_k = len(self.sg)
        directions = (1, -1) if len(self.pg) > 1 else (1,)
        span = self.spacing * (len(self.pg) - 1)
        cx, cy = center_of(self.plane_shape)
        found = []
        for mirrored in (False, True):
            for angle in np.arange(-180.0, 180.0, angle_step):
                base = candidate(self.plane_shape, self.slice_shape, angle, 1.0, mirrored)
                resp = self.responses(base, margin, range(n_k))
                for d in directions:
                    for k0 in range(-span, n_k + span):
                        if not any(0 <= k < n_k for k in self.slices_of(k0, d)):
                            continue
                        _, best, _, (u, v) = cv2.minMaxLoc(self.combined(resp, k0, d))
                        to = base @ (cx + u - margin, cy + v - margin, 1.0)
                        found.append((float(best), float(angle), mirrored, d, k0, to[:2]))
        return sorted(found, key=lambda f: -f[0])

    def score(self, angle: float, scale: float, mirrored: bool, direction: int, k0: int, centre_to,
              margin: int) -> tuple[float, np.ndarray]:
        """(score, fixed_to_moving) of the best translation that puts the plane centre within ±margin plane px
        of ``centre_to`` (slice px)."""
        base = candidate(self.plane_shape, self.slice_shape, angle, scale, mirrored)
        cf = np.array(center_of(self.plane_shape))
        s = np.linalg.solve(base[:2, :2], np.asarray(centre_to, float) - base[:2, :2] @ cf - base[:2, 2])
        base = base @ np.array([[1, 0, s[0]], [0, 1, s[1]], [0, 0, 1.0]])
        ks = [k for k in self.slices_of(k0, direction) if 0 <= k < len(self.sg)]
        resp = self.combined(self.responses(base, margin, ks), k0, direction)
        _, _, _, loc = cv2.minMaxLoc(resp)
        u, v, best = subpixel_peak(resp, loc)
        return float(best), base @ np.array([[1, 0, u - margin], [0, 1, v - margin], [0, 0, 1.0]])


def _neighbours(angle_tol: float):
    """Same handedness and direction, slices within one, angles within ``angle_tol``: one sweep result."""
    return lambda f, o: (f[2] == o[2] and f[3] == o[3] and abs(f[4] - o[4]) <= 1
                         and abs((f[1] - o[1] + 180) % 360 - 180) <= angle_tol)


def stack_search(coarse: StackMatcher, fine: StackMatcher, coarse_to_fine: np.ndarray, *, max_shift_frac: float,
                 angle_step: float = 9.0, keep: int = 6, scales=(0.95, 1.0, 1.05)) -> list[StackMatch]:
    """Sweep every hypothesis on ``coarse`` (``coarse_to_fine``: its slice px → ``fine`` slice px, 3×3),
    refine the ``keep`` best distinct ones on ``fine`` in rotation (thirds of the step, then 1°) and scale
    near the coarse translation; best first."""
    margin = int(np.ceil(max_shift_frac * max(coarse.plane_shape)))
    seeds = distinct(coarse.sweep(angle_step, margin), keep, _neighbours(angle_step))
    local = int(np.ceil(2 * np.sqrt(abs(np.linalg.det(coarse_to_fine[:2, :2]))))) + 2
    cf = np.array(center_of(fine.plane_shape))
    out = []
    for _, angle, mirrored, d, k0, to in seeds:
        to = coarse_to_fine[:2, :2] @ to + coarse_to_fine[:2, 2]
        best = max(((*fine.score(a, s, mirrored, d, k0, to, local), a, s)
                    for a in angle + np.array([-1.0, 0.0, 1.0]) * angle_step / 3.0 for s in scales),
                   key=lambda r: r[0])
        _, m, a, s = best
        to = m[:2, :2] @ cf + m[:2, 2]
        score, m, a, s = max([best, *((*fine.score(a + da, s, mirrored, d, k0, to, 2), a + da, s)
                                      for da in (-1.0, 1.0))], key=lambda r: r[0])
        out.append(StackMatch(fixed_to_moving=m, rotation_deg=float((a + 180.0) % 360.0 - 180.0), scale=float(s),
                              mirrored=mirrored, direction=d, slices=fine.slices_of(k0, d), score=score))
    return sorted(out, key=lambda r: -r.score)
