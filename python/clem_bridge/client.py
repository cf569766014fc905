"""HTTP client of the clem-bridge server (httpx); used by ``clem-bridge register --server`` and tests.

    with Client("http://127.0.0.1:8765") as c:
        job = c.register("em.tif", "lm.tif", preset="fast")      # or c.fiducials(...), c.correlate(...)
        job = c.wait(job, progress=lambda j: print(j["stage"], j["progress"]))
        record = c.result(job)                       # the transform JSON (dict)
        c.download(job, "lm_warped.tif", "out/lm_warped.tif")

Images are file paths or numpy arrays (sent as TIFF).  Every server error raises
:class:`~clem_bridge.errors.ServerError` carrying the server's sentence, status and code; a server
that cannot be reached raises :class:`~clem_bridge.errors.ServerUnreachable` (a ``ConnectionError``).
"""
from __future__ import annotations

import io as _bytes_io
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import httpx
import numpy as np
import tifffile

from .errors import InputError, ServerError, ServerUnreachable
from .result import Registration
from .schema import PixelSize, TransformRecord

ImageLike = Union[str, Path, np.ndarray]
JobLike = Union[str, dict]
TERMINAL = {"done", "failed", "cancelled", "interrupted"}


def _job_id(job: JobLike) -> str:
    return job["id"] if isinstance(job, dict) else str(job)


def _part(image: ImageLike, name: str) -> tuple[str, Any, str]:
    if isinstance(image, np.ndarray):
        buf = _bytes_io.BytesIO()
        tifffile.imwrite(buf, image)
        return f"{name}.tif", buf.getvalue(), "image/tiff"
    path = Path(image)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    return path.name, path.read_bytes(), "application/octet-stream"


def _px(p: Optional[PixelSize | dict]) -> Optional[dict]:
    return p.model_dump() if isinstance(p, PixelSize) else p


class Client:
    """A connection to one clem-bridge server; ``token`` is sent as ``Authorization: Bearer``."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            r = self._http.request(method, "/v1" + path, **kw)
        except httpx.TimeoutException:
            raise ServerError(f"the server at {self.url} did not answer within the timeout", 0, "timeout") from None
        except httpx.TransportError as e:
            raise ServerUnreachable(f"no clem-bridge server answers at {self.url} ({type(e).__name__}); "
                                    "start one with 'clem-bridge serve' or check the URL", 0, "unreachable") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                detail, code = body["detail"], body["error"]
            except (ValueError, KeyError, TypeError):
                detail, code = f"HTTP {r.status_code}: {r.text[:200]}", "http_error"
            raise ServerError(str(detail), r.status_code, str(code))
        return r

    # --- queries ----------------------------------------------------------------------------
    def health(self) -> dict:
        return self._request("GET", "/health").json()

    def job(self, job: JobLike, wait: float = 0) -> dict:
        """Status of a job; ``wait`` > 0 returns as soon as it finishes or after ``wait`` seconds."""
        return self._request("GET", f"/jobs/{_job_id(job)}", params={"wait": wait},
                             timeout=self.timeout + wait).json()

    def jobs(self, status: Optional[str] = None) -> list[dict]:
        return self._request("GET", "/jobs", params={"status": status} if status else {}).json()["jobs"]

    # --- jobs -------------------------------------------------------------------------------
    def register(self, em: ImageLike, lm: ImageLike, *, extra: Sequence[ImageLike] = (), preset: str = "fast",
                 seed: int = 0, reg_channel: int = 0, channels: Optional[Sequence[int]] = None,
                 em_pixel_size: Optional[PixelSize | dict] = None, lm_pixel_size: Optional[PixelSize | dict] = None,
                 prepare: bool = False, psr: Optional[float] = None, wait: float = 0) -> dict:
        """Submit a registration (EM = fixed, LM = moving); returns the job (finished if it ended within ``wait``)."""
        params = {"preset": preset, "seed": seed, "reg_channel": reg_channel,
                  "channels": list(channels) if channels is not None else None,
                  "em_pixel_size": _px(em_pixel_size), "lm_pixel_size": _px(lm_pixel_size),
                  "prepare": prepare, "psr": psr}
        files = [("em", _part(em, "em")), ("lm", _part(lm, "lm"))]
        files += [("extra", _part(x, f"extra{k}")) for k, x in enumerate(extra)]
        return self._request("POST", "/register", files=files, data={"params": json.dumps(params)},
                             params={"wait": wait}, timeout=self.timeout + wait).json()

    def register3d(self, em: ImageLike, lm: ImageLike, *, method: str = "mine", tilt_search: bool = True,
                   seed: int = 0, reg_channel: int = 0, channels: Optional[Sequence[int]] = None,
                   em_voxel: Optional[Sequence[float]] = None, lm_voxel: Optional[Sequence[float]] = None,
                   wait: float = 0) -> dict:
        """Submit a 3-D registration of an LM Z stack onto an EM volume (TIFF stacks; ``em_voxel`` / ``lm_voxel``
        ``[x, y, z]`` in µm override the files' calibration); returns the job."""
        params = {"method": method, "tilt_search": tilt_search, "seed": seed, "reg_channel": reg_channel,
                  "channels": list(channels) if channels is not None else None,
                  "em_voxel": None if em_voxel is None else [float(v) for v in em_voxel],
                  "lm_voxel": None if lm_voxel is None else [float(v) for v in lm_voxel]}
        files = [("em", _part(em, "em")), ("lm", _part(lm, "lm"))]
        return self._request("POST", "/register3d", files=files, data={"params": json.dumps(params)},
                             params={"wait": wait}, timeout=self.timeout + wait).json()

    def wait(self, job: JobLike, progress: Optional[Callable[[dict], None]] = None,
             timeout: Optional[float] = None, poll: float = 1.0) -> dict:
        """Block until the job is finished (any end state); ``progress(job)`` gets every status seen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll if deadline is None else min(poll, deadline - time.monotonic())
            status = self.job(job, wait=max(0.0, left))
            if progress:
                progress(status)
            if status["status"] in TERMINAL:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {status['id']} is still {status['status']} after {timeout} s")

    def result(self, job: JobLike) -> dict:
        """The finished job's result (for registration: the transform JSON); ServerError if it did not finish."""
        return self._request("GET", f"/jobs/{_job_id(job)}/result").json()

    def download(self, job: JobLike, name: str, path) -> Path:
        """Save the artifact ``name`` (e.g. 'lm_warped.tif', 'overlay.png') of a job to ``path``."""
        r = self._request("GET", f"/jobs/{_job_id(job)}/artifacts/{name}")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(r.content)
        return out

    def cancel(self, job: JobLike) -> dict:
        """Cancel a queued/running job, or delete a finished one; returns ``{"id", "status"}``."""
        return self._request("DELETE", f"/jobs/{_job_id(job)}").json()

    def correlate(self, em: ImageLike, chromatin: ImageLike, *, extra: Sequence[ImageLike] = (),
                  model: Optional[str] = None, chromatin_channel: Optional[int] = None,
                  channels: Optional[Sequence[int]] = None, max_rotation: float = 180.0,
                  transform: str = "similarity", nuclei_refinement: bool = True, scale_from_pixel_size: bool = True,
                  em_pixel_size: Optional[PixelSize | dict] = None,
                  chromatin_pixel_size: Optional[PixelSize | dict] = None, wait: float = 0) -> dict:
        """Submit a DeepCLEM correlation (EM = fixed, chromatin = moving; ``model`` None = the server's default)."""
        params = {"chromatin_channel": chromatin_channel, "channels": list(channels) if channels is not None else None,
                  "max_rotation": max_rotation, "transform": transform, "nuclei_refinement": nuclei_refinement,
                  "scale_from_pixel_size": scale_from_pixel_size,
                  "em_pixel_size": _px(em_pixel_size), "chromatin_pixel_size": _px(chromatin_pixel_size),
                  **({"model": model} if model is not None else {})}
        files = [("em", _part(em, "em")), ("chromatin", _part(chromatin, "chromatin"))]
        files += [("extra", _part(x, f"extra{k}")) for k, x in enumerate(extra)]
        return self._request("POST", "/correlate", files=files, data={"params": json.dumps(params)},
                             params={"wait": wait}, timeout=self.timeout + wait).json()

    def fiducials(self, em: ImageLike, lm: ImageLike, *, bead_nm: float = 200.0, model: Optional[str] = None,
                  polarity: str = "auto", lm_channel: int = 0, localisation: str = "quadratic",
                  em_pixel_size: Optional[PixelSize | dict] = None, lm_pixel_size: Optional[PixelSize | dict] = None,
                  wait: float = 0) -> dict:
        """Submit a fiducial-bead registration (EM = fixed, LM = moving; ``model`` None = the server's default)."""
        params = {"bead_nm": bead_nm, "model": model, "polarity": polarity, "lm_channel": lm_channel,
                  "localisation": localisation, "em_pixel_size": _px(em_pixel_size),
                  "lm_pixel_size": _px(lm_pixel_size)}
        files = [("em", _part(em, "em")), ("lm", _part(lm, "lm"))]
        return self._request("POST", "/fiducials", files=files, data={"params": json.dumps(params)},
                             params={"wait": wait}, timeout=self.timeout + wait).json()

    def landmarks(self, fixed, moving, *, model: str = "affine", fixed_shape: Optional[Sequence[int]] = None,
                  moving_shape: Optional[Sequence[int]] = None, fixed_pixel_size: Optional[PixelSize | dict] = None,
                  moving_pixel_size: Optional[PixelSize | dict] = None) -> Registration:
        """Fit landmark pairs in pixels (``fixed`` on the EM, ``moving`` on the LM, (N, 2) x, y in the same order)
        on the server; returns the registration with its error budget (a bad set of pairs is a 422 ServerError)."""
        body = {"fixed": np.asarray(fixed, dtype=float).tolist(), "moving": np.asarray(moving, dtype=float).tolist(),
                "model": model, "fixed_shape": None if fixed_shape is None else [int(v) for v in fixed_shape],
                "moving_shape": None if moving_shape is None else [int(v) for v in moving_shape],
                "fixed_pixel_size": _px(fixed_pixel_size), "moving_pixel_size": _px(moving_pixel_size)}
        rec = self._request("POST", "/landmarks", json=body).json()
        return Registration.from_record(TransformRecord.model_validate(rec))

    def register_files(self, em, lm, out_dir, *, extra_channel_paths: Sequence = (),
                       progress: Optional[Callable[[Any], None]] = None, **params) -> Registration:
        """:func:`~clem_bridge.workflows.register.register_files` run on the server: submit, feed the server's
        progress to ``progress(Progress)``, download every artifact into ``out_dir``; Ctrl-C cancels the job."""
        return self._finish(self.register(em, lm, extra=list(extra_channel_paths), **params), out_dir, progress)

    def register3d_files(self, em, lm, out_dir, *, progress: Optional[Callable[[Any], None]] = None,
                         **params) -> Registration:
        """:func:`~clem_bridge.workflows.register3d.register_volume_files` run on the server, as
        :meth:`register_files` (``transform.json`` with ``ndim`` 3, ``lm_warped.tif``, ... in ``out_dir``)."""
        return self._finish(self.register3d(em, lm, **params), out_dir, progress)

    def correlate_files(self, em, chromatin, out_dir, *, extra_channel_paths: Sequence = (),
                        progress: Optional[Callable[[Any], None]] = None, **params) -> Registration:
        """:func:`~clem_bridge.workflows.correlate.correlate_files` run on the server, as :meth:`register_files`."""
        return self._finish(self.correlate(em, chromatin, extra=list(extra_channel_paths), **params), out_dir,
                            progress)

    def fiducials_files(self, em, lm, out_dir, *, progress: Optional[Callable[[Any], None]] = None,
                        **params) -> Registration:
        """:func:`~clem_bridge.workflows.fiducials.fiducials_files` run on the server, as :meth:`register_files`
        (``transform.json`` with ``error_budget``, ``lm_warped.tif``, ``tre_map.png``, ``fusion.png``,
        ``bead_landmarks.csv``, ... in ``out_dir``)."""
        return self._finish(self.fiducials(em, lm, **params), out_dir, progress)

    def _finish(self, job: dict, out_dir, progress: Optional[Callable[[Any], None]]) -> Registration:
        """Wait for ``job`` with progress, download its artifacts into ``out_dir``; Ctrl-C cancels the job."""
        from .progress import Progress

        def report(j: dict) -> None:
            if progress and j.get("stage"):
                progress(Progress(j["stage"], j["iteration"] or 0, j["total"], j["mi"], j["progress"]))
        try:
            job = self.wait(job, progress=report)
        except KeyboardInterrupt:
            self.cancel(job)
            raise
        if job["status"] != "done":
            why = job["error"]["detail"] if job.get("error") else job["status"]
            raise ServerError(f"server job {job['id']} ended {job['status']}: {why}", 0, job["status"])
        rec = TransformRecord.model_validate(self.result(job))
        for name in job["artifacts"]:
            self.download(job, name, Path(out_dir) / name)
        return Registration.from_record(rec)

    def apply(self, images: Sequence[ImageLike] | ImageLike, fixed_to_moving, fixed_shape: Sequence[int], *,
              interpolation: str = "bilinear", pixel_size: Optional[PixelSize | dict] = None,
              path=None) -> np.ndarray:
        """Warp LM image(s) onto a ``fixed_shape`` (h, w) canvas on the server; returns (C, H, W), saved if ``path``."""
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        params = {"fixed_to_moving": np.asarray(fixed_to_moving, dtype=float).tolist(),
                  "fixed_shape": [int(v) for v in fixed_shape], "interpolation": interpolation,
                  "pixel_size": _px(pixel_size)}
        files = [("images", _part(im, f"image{k}")) for k, im in enumerate(images)]
        r = self._request("POST", "/apply", files=files, data={"params": json.dumps(params)})
        if path is not None:
            Path(path).write_bytes(r.content)
        data = tifffile.imread(_bytes_io.BytesIO(r.content))
        return data if data.ndim == 3 else data[None]
