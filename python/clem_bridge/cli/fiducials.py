"""Fiducial commands: ``fiducials`` (beads in both images), ``landmarks`` (a BigWarp CSV) and ``validate``
(the error of any registration at beads it never used)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import report_outcome, user_errors

MODELS = ("rigid", "similarity", "affine")


def _pixel_size(nm: Optional[float], flag: str):
    from ..schema import PixelSize

    if nm is None:
        return None
    if not nm > 0:
        raise InputError(f"{flag} must be a positive number of nm (got {nm})")
    return PixelSize(x=nm, y=nm, unit="nm")


def _print_budget(reg, out: Path, files) -> None:
    b = reg.error_budget
    u = b["unit"]

    def f(key):
        v = b.get(f"{key}_{u}")
        return "n/a" if v is None else f"{v:.1f}"
    typer.echo(f"{b['n_matched']} point pairs ({reg.params.get('model')}); error budget ({u}): "
               f"EM {f('sigma_em')}, LM {f('sigma_lm')}, alignment {f('sigma_alignment')} -> total "
               f"{f('sigma_total')}; FRE {f('fre')}, leave-one-out TRE {f('tre_loo')}")
    for name in files:
        if (out / name).exists():
            typer.echo(f"  {out / name}")
    report_outcome(reg)


def add_commands(app) -> None:
    """Register ``fiducials``, ``landmarks`` and ``validate`` on the typer ``app``."""
    from ..workflows.outputs import OVERLAY_PNG, TRANSFORM_JSON, WARPED_TIFF

    @app.command("fiducials")
    def fiducials_cmd(
        em: Path = typer.Argument(..., help="EM/SXT image (fixed) with beads."),
        lm: Path = typer.Argument(..., help="LM image (moving) with the same beads fluorescent."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        bead_nm: float = typer.Option(200.0, "--bead-nm", help="Bead diameter (nm)."),
        model: Optional[str] = typer.Option(None, "--model", help="rigid, similarity or affine "
                                            "(default similarity)."),
        polarity: str = typer.Option("auto", "--polarity", help="EM beads: auto, dark or bright."),
        lm_channel: int = typer.Option(0, "--lm-channel", help="LM channel with the beads (0-based)."),
        localisation: str = typer.Option("quadratic", "--localisation", help="quadratic (log-paraboloid) or "
                                         "gaussian."),
        em_pixel_size: Optional[float] = typer.Option(None, "--em-pixel-size", help="EM pixel size in nm "
                                                      "(overrides the file)."),
        lm_pixel_size: Optional[float] = typer.Option(None, "--lm-pixel-size", help="LM pixel size in nm "
                                                      "(overrides the file)."),
    ) -> None:
        """Register by fiducial beads; writes transform.json (with error_budget), lm_warped.tif, overlay.png,
        tre_map.png, fusion.png and bead_landmarks.csv (the matched beads, for BigWarp)."""
        from ..workflows.fiducials import BEADS_CSV, FUSION_PNG, TRE_MAP_PNG, fiducials_files

        with user_errors():
            if model is not None and model not in MODELS:
                raise InputError(f"--model must be one of {', '.join(MODELS)} (got {model!r})")
            if polarity not in ("auto", "dark", "bright"):
                raise InputError(f"--polarity must be auto, dark or bright (got {polarity!r})")
            if localisation not in ("quadratic", "gaussian"):
                raise InputError(f"--localisation must be quadratic or gaussian (got {localisation!r})")
            reg = fiducials_files(em, lm, out, lm_channel=lm_channel, bead_nm=bead_nm, model=model,
                                  polarity=polarity, localisation=localisation,
                                  em_pixel_size=_pixel_size(em_pixel_size, "--em-pixel-size"),
                                  lm_pixel_size=_pixel_size(lm_pixel_size, "--lm-pixel-size"))
            _print_budget(reg, out, (TRANSFORM_JSON, WARPED_TIFF, OVERLAY_PNG, TRE_MAP_PNG, FUSION_PNG, BEADS_CSV))

    @app.command("landmarks")
    def landmarks_cmd(
        csv_file: Path = typer.Argument(..., help="BigWarp landmarks CSV (moving = LM columns first, world units)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        em: Optional[Path] = typer.Option(None, "--em", help="EM image (fixed): its calibration converts world "
                                          "units, and the LM is warped onto it."),
        lm: Optional[Path] = typer.Option(None, "--lm", help="LM image (moving), with --em."),
        model: str = typer.Option("affine", "--model", help="rigid, similarity or affine."),
        em_pixel_size: Optional[float] = typer.Option(None, "--em-pixel-size", help="EM pixel size in nm."),
        lm_pixel_size: Optional[float] = typer.Option(None, "--lm-pixel-size", help="LM pixel size in nm."),
    ) -> None:
        """Fit landmark pairs with the error report; writes transform.json, tre_map.png (+ warped LM, overlay and
        fusion with --em/--lm)."""
        from ..workflows.fiducials import FUSION_PNG, TRE_MAP_PNG, landmarks_files

        with user_errors():
            if model not in MODELS:
                raise InputError(f"--model must be one of {', '.join(MODELS)} (got {model!r})")
            reg = landmarks_files(csv_file, out, em_path=em, lm_path=lm, model=model,
                                  em_pixel_size=_pixel_size(em_pixel_size, "--em-pixel-size"),
                                  lm_pixel_size=_pixel_size(lm_pixel_size, "--lm-pixel-size"))
            _print_budget(reg, out, (TRANSFORM_JSON, WARPED_TIFF, OVERLAY_PNG, TRE_MAP_PNG, FUSION_PNG))

    @app.command("validate")
    def validate_cmd(
        transform: Path = typer.Argument(..., help="transform.json of any registration (register, correlate, ...)."),
        fiducials: tuple[Path, Path] = typer.Option(..., "--fiducials", help="EM and LM images with beads: "
                                                    "--fiducials EM LM."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (validation.json)."),
        bead_nm: float = typer.Option(200.0, "--bead-nm", help="Bead diameter (nm)."),
        polarity: str = typer.Option("auto", "--polarity", help="EM beads: auto, dark or bright."),
        lm_channel: int = typer.Option(0, "--lm-channel", help="LM channel with the beads (0-based)."),
    ) -> None:
        """Measure a registration's error at fiducial beads it never used (independent accuracy)."""
        from ..workflows.fiducials import VALIDATION_JSON, validate_files

        with user_errors():
            r = validate_files(transform, fiducials[0], fiducials[1], out, lm_channel=lm_channel, bead_nm=bead_nm,
                               polarity=polarity)
            u = r["unit"]
            typer.echo(f"{r['method']} registration at {r['n_beads']} beads: RMS error {r['bead_rms']:.1f} {u} "
                       f"(bead localisation {r['bead_localisation']:.1f} {u}); over the EM field {r['field_rms']:.1f} "
                       f"{u} vs the bead transform (uncertainty {r['field_uncertainty']:.1f} {u})")
            typer.echo(f"  {out / VALIDATION_JSON}")
            if r["bead_registration"]["status"] != "ok":
                typer.echo(f"warning: the bead registration itself is {r['bead_registration']['status']}: "
                           + "; ".join(r["bead_registration"]["warnings"]), err=True)
