# -*- coding: utf-8 -*-
"""clem-bridge Fiji commands (Plugins > CLEM): what each menu script does, on top of the shared modules

* clem_bridge_host: log, one-line errors, dialogs and exit codes (only on the headless command line),
* clem_bridge_http: the server (HTTP/JSON, jobs, starting a local ``clem-bridge serve``),
* clem_bridge_images: opening, channels, calibration, saving,
* clem_bridge_transforms: matrices, transform files, warping (compiled helper ClemWarp.groovy).

A menu script is its ``#@`` parameters plus ``run_command(<its file name>, lambda: <command>(...))``.
Every registration result carries ``status`` (ok / uncertain / failed) and ``warnings``: both go to the
log, a dialog in the GUI when not ok, exit code 3 for ``failed`` on the headless command line.
"""
import codecs
import re

from java.io import File

from ij import IJ

from clem_bridge_host import ClemError, is_headless, log, message, outcome, report, run_command, worst  # noqa: F401
import clem_bridge_http as http
import clem_bridge_images as images
import clem_bridge_transforms as transforms

BUDGET_TERMS = (("sigma_em", "sigma EM"), ("sigma_lm", "sigma LM"), ("sigma_alignment", "sigma alignment"),
                ("sigma_total", "sigma total"), ("fre", "FRE"), ("tre_loo", "TRE leave-one-out"))
STACK_HINT = " unless both images are Z stacks (then it registers them in 3-D)"
FIDUCIAL_VIEWS = ("lm_warped.tif", "fusion.png", "tre_map.png")
SUMMARY_COLUMNS = ["pair", "status", "source", "em_file", "lm_file", "mi", "ncc", "overlap", "ms_ssim",
                   "warnings", "error"]


# --- the menu commands --------------------------------------------------------------------

def register(em_file, em_title, lm_file, lm_title, reg_channel, channels, server_url, token, preset, seed,
             out_dir):
    """Register EM-LM (MINE) on the server, warp the LM channels with ImageJ; returns (warped, status)."""
    em = images.input_image(em_file, em_title, "EM image")
    lm = images.input_image(lm_file, lm_title, "LM image")
    if em.getNSlices() > 1 and lm.getNSlices() > 1:
        return register3d(em, lm, reg_channel, channels, server_url, token, seed, out_dir)
    _check_planes(em, lm, "Register EM-LM", STACK_HINT)
    out = images.output_dir(out_dir)
    server = http.connect(server_url, token)
    f2m, warped, comp, record = register_and_apply(server, em, lm, reg_channel, channels, out, preset, seed)
    log("CLEM: registered %s to %s; fixed_to_moving = %s; files in %s" % (lm.getTitle(), em.getTitle(), f2m, out))
    if not is_headless():
        comp.show()
    status, warnings = outcome(record)
    report(status, warnings, "CLEM registration")
    return warped, status


def register3d(em, lm, reg_channel, channels, server_url, token, seed, out_dir):
    """Register EM-LM on two Z stacks: 3-D registration on the server (``POST /v1/register3d``, voxel sizes from
    the ImageJ calibration), every file of the job saved in ``out_dir`` and the LM channels on the EM grid
    (lm_warped.tif, a calibrated hyperstack) opened; returns (warped, status)."""
    params = {"reg_channel": int(reg_channel), "seed": int(seed), "channels": images.parse_channels(channels) or None}
    for key, imp, what in (("em_voxel", em, "EM"), ("lm_voxel", lm, "LM")):
        params[key] = images.voxel_um(imp)
        if params[key] is None:
            raise ClemError("the %s stack %s has no voxel size in a length unit; set it (voxel depth included) in "
                            "Image > Properties" % (what, imp.getTitle()))
        log("CLEM 3-D: %s voxel %s um (x, y, z) for %s" % (what, " x ".join("%.4g" % v for v in params[key]),
                                                          imp.getTitle()))
    out = images.output_dir(out_dir)
    record, saved = _send_pair(server_url, token, "/v1/register3d", em, lm, params, "CLEM 3-D registration", out)
    log("CLEM 3-D: registered %s to %s; fixed_to_moving = %s; files in %s"
        % (lm.getTitle(), em.getTitle(), record.get("fixed_to_moving"), out))
    warped = _open_view(saved, "lm_warped.tif", em.getTitle())
    status, warnings = outcome(record)
    report(status, warnings, "CLEM 3-D registration")
    return warped, status


def correlate(em_file, chromatin_file, chromatin_channel, lm_file, channels, model, server_url, token, out_dir):
    """DeepCLEM on the server (chromatin channel as the CLI picks it: blue of RGB unless given), then the LM
    channels warped with ImageJ; returns (warped, status)."""
    em = images.open_image(em_file, "EM image")
    chromatin = images.open_image(chromatin_file, "chromatin image")
    ci = images.chromatin_channel(chromatin, chromatin_channel)
    has_lm = lm_file is not None and str(lm_file).strip() not in ("", ".")
    lm = images.open_image(lm_file, "LM image") if has_lm else chromatin
    out = images.output_dir(out_dir)
    server = http.connect(server_url, token)
    files = [("em", "em.tif", images.tiff_bytes(em)),
             ("chromatin", "chromatin.tif", images.tiff_bytes(images.select_channels(chromatin, [ci])))]
    try:
        record, _ = server.submit_and_wait("/v1/correlate", files,
                                           {"model": model, "chromatin_channel": 0, "channels": [0]}, "DeepCLEM")
    except ClemError as e:
        if "HTTP 404" in message(e):
            raise ClemError("the CLEM server at %s lacks the DeepCLEM chromatin model (it has no "
                            "POST /v1/correlate); update the server or use Register EM-LM" % server.url)
        if "HTTP 422" in message(e) and "model" in message(e):
            raise ClemError("the CLEM server at %s lacks the DeepCLEM chromatin model '%s' (%s)"
                            % (server.url, model, message(e).split(": ", 1)[-1]))
        raise
    f2m = transforms.check_matrix(record.get("fixed_to_moving"), "the server's fixed_to_moving")
    f2m, warped, comp, _ = register_and_apply(server, em, lm, 0, channels, out, f2m=f2m, record=record)
    log("DeepCLEM: correlated channel %d of %s to %s; files in %s" % (ci, chromatin.getTitle(), em.getTitle(), out))
    metrics = record.get("metrics") or {}
    if "expected_error_px" in metrics:
        log("DeepCLEM: expected error %.1f EM px (%d nuclei aligned one by one)"
            % (metrics["expected_error_px"], metrics.get("local_nuclei", 0)))
    if not is_headless():
        comp.show()
    status, warnings = outcome(record)
    report(status, warnings, "DeepCLEM correlation")
    return warped, status


def batch(in_dir, em_pattern, lm_pattern, reg_channel, channels, reuse, server_url, token, preset, out_dir):
    """Register every EM/LM pair of a folder (or the first, reusing its transform); one folder per pair
    and summary.csv; returns (summary path, worst status)."""
    out = images.output_dir(out_dir)
    pairs = match_pairs(in_dir, em_pattern, lm_pattern)
    server = http.connect(server_url, token)
    rows, f2m, first_status = [], None, None
    for i, name in enumerate(sorted(pairs)):
        em_path, lm_path = pairs[name]
        row = {"pair": name, "em_file": em_path, "lm_file": lm_path}
        log("CLEM batch: pair %d/%d %s" % (i + 1, len(pairs), name))
        try:
            em, lm = images.open_image(em_path, "EM image"), images.open_image(lm_path, "LM image")
            pair_dir = images.output_dir(File(out, name).getPath())
            given = f2m if reuse else None
            m, _, _, record = register_and_apply(server, em, lm, reg_channel, channels, pair_dir, preset,
                                                 f2m=given, label="CLEM %s" % name)
            status, warnings = first_status if given else outcome(record)
            row.update(status=status, warnings="; ".join(warnings), source="reused" if given else "registered")
            row.update((k, (record or {}).get("metrics", {}).get(k)) for k in ("mi", "ncc", "overlap", "ms_ssim"))
            f2m, first_status = f2m or m, first_status or (status, warnings)
        except ClemError as e:
            if "cannot reach" in message(e) or "rejected the token" in message(e):
                raise
            row.update(status="error", error=message(e))
        rows.append(row)
    path = File(out, "summary.csv").getPath()
    write_summary_csv(path, rows, SUMMARY_COLUMNS)
    errors = [r["pair"] for r in rows if r["status"] == "error"]
    log("CLEM batch: %d pairs, %d errors; summary in %s" % (len(rows), len(errors), path))
    if errors:
        raise ClemError("%d of %d pairs failed (%s); see %s" % (len(errors), len(rows), ", ".join(errors), path))
    status = worst(r["status"] for r in rows)
    report(status, ["pair %s: %s (%s)" % (r["pair"], r["status"], r["warnings"] or "no reason given")
                    for r in rows if r["status"] != "ok"], "CLEM batch")
    return path, status


def fiducials(em_file, em_title, lm_file, lm_title, lm_channel, bead_nm, model, polarity, localisation,
              server_url, token, out_dir):
    """Register Fiducials: beads found, matched and fitted on the server (``POST /v1/fiducials``), every file
    of the job saved in ``out_dir``; opens the warped LM, the fusion and the TRE map and logs the error
    budget; returns (warped LM, status)."""
    em = images.input_image(em_file, em_title, "EM image")
    lm = images.input_image(lm_file, lm_title, "LM image")
    _check_planes(em, lm, "fiducial registration")
    n = len(images.channel_processors(lm))
    if not 0 <= int(lm_channel) < n:
        raise ClemError("LM bead channel %d does not exist in %s (it has %d)" % (lm_channel, lm.getTitle(), n))
    params = {"bead_nm": float(bead_nm), "polarity": polarity, "lm_channel": int(lm_channel),
              "localisation": localisation}
    if model and model != "auto":
        params["model"] = model
    for key, imp, what in (("em_pixel_size", em, "EM"), ("lm_pixel_size", lm, "LM")):
        params[key] = images.pixel_size(imp)
        if params[key] is None:
            raise ClemError("the %s image %s has no pixel size; set it in Image > Properties (the bead size and "
                            "the scale come from it)" % (what, imp.getTitle()))
    out = images.output_dir(out_dir)
    if images.point_selection(em) and images.point_selection(lm):
        log("CLEM fiducials: both images carry point selections; Plugins > CLEM > Register Landmarks fits those")
    record, saved = _send_pair(server_url, token, "/v1/fiducials", em, lm, params, "CLEM fiducials", out)
    log("CLEM fiducials: registered %s to %s by beads; fixed_to_moving = %s; files in %s"
        % (lm.getTitle(), em.getTitle(), record.get("fixed_to_moving"), out))
    log_error_budget(record, "CLEM fiducials")
    views = [_open_view(saved, name, em.getTitle()) for name in FIDUCIAL_VIEWS]
    status, warnings = outcome(record)
    report(status, warnings, "CLEM fiducials")
    return views[0], status


def landmarks(em_file, em_title, lm_file, lm_title, model, channels, server_url, token, out_dir):
    """Register Landmarks: the multi-point selections of the EM and LM images (same features, same order)
    fitted on the server (``POST /v1/landmarks``), the LM channels warped with ImageJ and saved with the
    transform files; logs the error report; returns (warped, status)."""
    em = images.input_image(em_file, em_title, "EM image")
    lm = images.input_image(lm_file, lm_title, "LM image")
    fixed, moving = images.point_selection(em), images.point_selection(lm)
    if not fixed or not moving:
        raise ClemError("Register Landmarks needs a multi-point selection on both images (EM %s: %s, LM %s: %s); "
                        "click the same features in the same order with the Multi-point tool"
                        % (em.getTitle(), _points_text(fixed), lm.getTitle(), _points_text(moving)))
    if len(fixed) != len(moving):
        raise ClemError("the EM has %d points but the LM %d; click every landmark on both images, in the same "
                        "order" % (len(fixed), len(moving)))
    body = {"fixed": fixed, "moving": moving, "model": model,
            "fixed_shape": [em.getHeight(), em.getWidth()], "moving_shape": [lm.getHeight(), lm.getWidth()]}
    for key, imp in (("fixed_pixel_size", em), ("moving_pixel_size", lm)):
        if images.pixel_size(imp) is not None:
            body[key] = images.pixel_size(imp)
    out = images.output_dir(out_dir)
    server = http.connect(server_url, token)
    record = server.post_json("/v1/landmarks", body)
    f2m = transforms.check_matrix(record.get("fixed_to_moving"), "the server's fixed_to_moving")
    f2m, warped, comp, _ = register_and_apply(server, em, lm, 0, channels, out, f2m=f2m, record=record)
    log("CLEM landmarks: fitted %d point pairs (%s) of %s to %s; fixed_to_moving = %s; files in %s"
        % (len(fixed), model, lm.getTitle(), em.getTitle(), f2m, out))
    log_error_budget(record, "CLEM landmarks")
    if not is_headless():
        comp.show()
    status, warnings = outcome(record)
    report(status, warnings, "CLEM landmarks")
    return warped, status


def server_status(server_url, token):
    """One line about the server from /v1/health (a local server is started when none answers)."""
    h = http.connect(server_url, token, timeout_s=10).get_json("/v1/health")
    text = ("CLEM server %s: status %s, version %s, device %s, queue %s queued / %s running, models: %s"
            % (server_url, h.get("status"), h.get("version"), h.get("device"), h.get("queued"),
               h.get("running"), ", ".join(h.get("models") or []) or "none loaded"))
    log(text)
    if not is_headless():
        from ij import IJ
        IJ.showMessage("CLEM server status", text.replace(": ", ":\n", 1).replace(", ", "\n"))
    return text


# --- shared steps -------------------------------------------------------------------------

def register_and_apply(server, em_imp, lm_imp, reg_channel, channels, out_dir, preset="fast", seed=0,
                       f2m=None, record=None, label="CLEM registration"):
    """Register (unless ``f2m`` is given), warp the LM ``channels`` with ImageJ, save everything in ``out_dir``.

    Returns (fixed_to_moving, warped ImagePlus, composite, record).  Files: transform.json,
    bigwarp_landmarks.csv, moving-bigWarp.xml, mpicbg_affine.xml, warped_channels.tif, composite.tif.
    """
    if f2m is None:
        files = [("em", "em.tif", images.tiff_bytes(em_imp)),
                 ("lm", "lm.tif", images.tiff_bytes(images.select_channels(lm_imp, [reg_channel])))]
        params = {"preset": preset, "seed": int(seed), "reg_channel": 0, "channels": [0]}
        record, _ = server.submit_and_wait("/v1/register", files, params, label)
        f2m = transforms.check_matrix(record.get("fixed_to_moving"), "the server's fixed_to_moving")
    warped = transforms.warp_image(images.select_channels(lm_imp, channels), f2m, em_imp,
                                   "warped_" + lm_imp.getTitle())
    comp = images.composite(em_imp, [warped], "CLEM_" + em_imp.getTitle())
    images.save_tiff(warped, File(out_dir, "warped_channels.tif").getPath())
    images.save_tiff(comp, File(out_dir, "composite.tif").getPath())
    transforms.write_transform_files(out_dir, f2m, em_imp, lm_imp, lm_imp.getTitle(), record)
    return f2m, warped, comp, record


def log_error_budget(record, label):
    """One log line with the registration's error budget (``error_budget`` of the transform JSON)."""
    b = record.get("error_budget") or {}
    if not b:
        return
    unit = b.get("unit") or "nm"
    terms = ", ".join("%s %s" % (name, _number(b.get("%s_%s" % (key, unit)))) for key, name in BUDGET_TERMS)
    log("%s: %s pairs matched; error budget (%s): %s" % (label, b.get("n_matched"), unit, terms))


def _number(v):
    return "n/a" if v is None else "%.1f" % v


def _points_text(points):
    return "%d points" % len(points) if points else "no point selection"


def _check_planes(em, lm, command, hint=""):
    """2-D images, else a clear error: the EM one plane, the LM one plane per channel (a plain stack counts as
    channels, a hyperstack must have no z or time)."""
    lm_planes = lm.getStackSize() // lm.getNChannels() if lm.getNChannels() > 1 else 1
    for imp, what, planes in ((em, "EM", em.getStackSize()), (lm, "LM", lm_planes)):
        if planes > 1:
            raise ClemError("the %s image %s is a stack (%d planes); %s is 2-D%s"
                            % (what, imp.getTitle(), imp.getStackSize(), command, hint))


def _send_pair(server_url, token, endpoint, em, lm, params, label, out):
    """Upload the EM and LM images to the server's ``endpoint``, wait for the job and save every file it made in
    ``out``; returns (result record, {file name: saved path})."""
    server = http.connect(server_url, token)
    files = [("em", _upload_name(em), images.tiff_bytes(em)), ("lm", _upload_name(lm), images.tiff_bytes(lm))]
    record, job = server.submit_and_wait(endpoint, files, params, label, wait_s=10)
    return record, dict((name, server.download(job, name, out)) for name in job.get("artifacts") or [])


def _upload_name(imp):
    stem = re.sub(r"\.(tiff?|png|jpe?g|gif|bmp)$", "", imp.getTitle(), flags=re.I)
    return (re.sub(r"[^\w.-]+", "_", stem) or "image") + ".tif"


def _open_view(saved, name, em_title):
    """Open a downloaded artifact (shown in the GUI); None when the job did not write it."""
    if name not in saved:
        return None
    imp = IJ.openImage(saved[name])
    if imp is None:
        raise ClemError("ImageJ cannot open the server's %s" % saved[name])
    imp.setTitle("%s_%s" % (name.rsplit(".", 1)[0], em_title))
    if not is_headless():
        imp.show()
    return imp


def match_pairs(folder, em_pattern, lm_pattern):
    """{pair name: (em path, lm path)} for files matching the glob patterns, ``*`` = the pair name."""
    def rx(pattern):
        if pattern.count("*") != 1:
            raise ClemError("a file name pattern needs exactly one * for the pair name, got '%s'" % pattern)
        return re.compile("^" + re.escape(pattern).replace("\\*", "(.+)") + "$")
    d = File(str(folder))
    if not d.isDirectory():
        raise ClemError("input folder not found: %s" % folder)
    em_rx, lm_rx = rx(em_pattern), rx(lm_pattern)
    ems, lms = {}, {}
    for name in sorted(d.list()):
        for found, r in ((ems, em_rx), (lms, lm_rx)):
            m = r.match(name)
            if m:
                found[m.group(1)] = File(d, name).getPath()
    pairs = dict((k, (ems[k], lms[k])) for k in ems if k in lms)
    for k in sorted(set(ems) ^ set(lms)):
        log("CLEM batch: %s has no partner; skipped" % (ems.get(k) or lms.get(k)))
    if not pairs:
        raise ClemError("no EM/LM pairs in %s match %s and %s" % (folder, em_pattern, lm_pattern))
    return pairs


def write_summary_csv(path, rows, columns):
    def cell(v):
        return '"%s"' % ("" if v is None else unicode(v)).replace('"', '""')
    with codecs.open(str(path), "w", "utf-8") as fh:
        fh.write("\n".join([",".join(columns)] + [",".join(cell(r.get(c)) for c in columns) for r in rows]) + "\n")
