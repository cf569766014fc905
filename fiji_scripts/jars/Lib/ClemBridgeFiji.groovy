// clem-bridge Groovy helper for the Fiji scripts (ImageJ 1 API and the JDK only), loaded at run time with
// jars/Lib on a GroovyClassLoader's class path (so that ClemWarp.groovy, the compiled warp kernel shared with
// the Jython library, is found too):
//   def loader = new GroovyClassLoader(getClass().classLoader); loader.addClasspath("<Fiji.app>/jars/Lib")
//   def Clem = loader.loadClass("ClemBridgeFiji")
// Same convention, file formats and host behaviour as the Jython modules (clem_bridge_transforms.py,
// clem_bridge_host.py): fixed_to_moving maps EM pixel -> LM pixel, pixel centres at integers (3-D: a 4x4 over
// voxel x, y, z from a transform JSON with ndim 3 or a 3-D BigWarp CSV, applied to stacks); exit codes only
// when the JVM was started to run the script headless from the command line. Problems are
// IllegalArgumentException with a one-sentence message.
import ij.IJ
import ij.ImagePlus
import ij.ImageStack
import ij.io.FileSaver
import ij.measure.Calibration
import ij.process.ImageProcessor
import java.awt.GraphicsEnvironment
import javax.xml.parsers.DocumentBuilderFactory

class ClemBridgeFiji {
    static final int EXIT_ERROR = 2

    // --- host: log, one-line errors, exit codes only on the headless command line ---------------

    static void log(String msg) {
        if (GraphicsEnvironment.isHeadless()) println(msg) else IJ.log(msg)
    }

    static List<String> commandLine() {
        File proc = new File("/proc/self/cmdline")
        if (proc.isFile()) return new String(proc.bytes, "UTF-8").split("\u0000").findAll { it } as List<String>
        return (System.getProperty("sun.java.command") ?: "").tokenize()
    }

    /** The JVM was started as ``... --run <path ending in script> ...`` (Fiji's headless command line). */
    static boolean launchedToRun(String script, List<String> words = commandLine()) {
        for (int i = 0; i + 1 < words.size(); i++)
            if (words[i] == "--run" && words[i + 1].replace('\\', '/').tokenize('/').last() == script) return true
        return false
    }

    static boolean exitCodesAllowed(String script) {
        String forced = System.getProperty("clem_bridge.exit")
        if (forced in ["true", "false"]) return forced == "true"
        if (System.getProperty("clem_bridge.raise") == "true" || !GraphicsEnvironment.isHeadless()) return false
        return launchedToRun(script)
    }

    static void fail(String msg, String script) {
        IJ.showStatus("")
        if (System.getProperty("clem_bridge.raise") == "true") throw new IllegalArgumentException(msg)
        if (!GraphicsEnvironment.isHeadless()) { IJ.error("CLEM", msg); return }
        System.err.println("error: " + msg)
        System.err.flush()
        if (exitCodesAllowed(script)) System.exit(EXIT_ERROR)
    }

    // --- the Apply CLEM Transform command ------------------------------------------------------

    static ImagePlus open(File f, String what) {
        if (f == null || !f.isFile()) throw new IllegalArgumentException("$what file not found: $f")
        def imp = IJ.openImage(f.path)
        if (imp == null) throw new IllegalArgumentException("ImageJ cannot open the $what file $f")
        return imp
    }

    /** Warp ``imageFile`` onto ``targetFile``'s canvas with a saved transform, save it; null after an error. */
    static ImagePlus applyTransform(File imageFile, File targetFile, File transformFile, File outFile, String script) {
        try {
            def lm = open(imageFile, "image"), em = open(targetFile, "target image")
            String path = transformFile?.path ?: ""
            String low = path.toLowerCase()
            boolean is3d = low.endsWith(".json") ? jsonNdim(text(path)) == 3 : low.endsWith(".csv") && csvFields(path) == 8
            def warped = is3d ? warpStack(lm, path, em) : warpImage(lm, readTransform(path, em.calibration, lm.calibration), em)
            if (outFile != null && !new FileSaver(warped).saveAsTiff(outFile.path)) throw new IllegalArgumentException("could not save $outFile")
            log("CLEM: applied ${transformFile.name}${is3d ? ' (3-D)' : ''} to ${lm.title}; saved ${outFile}")
            if (path.toLowerCase().endsWith(".json")) {
                def (status, warnings) = jsonStatus(text(path))
                warnings.each { log("warning: " + it) }
                if (status != "ok") log("CLEM: the registration behind ${transformFile.name} has status ${status}")
            }
            return warped
        } catch (IllegalArgumentException | IOException e) {
            fail(e.message, script)
            return null
        }
    }

    /** [status, warnings] of a transform JSON (pattern-parsed; no status = uncertain when it has warnings). */
    static List jsonStatus(String json) {
        String str = /"((?:[^"\\]|\\.)*)"/
        def w = json =~ /"warnings"\s*:\s*\[((?:\s*$str\s*,?)*)\s*\]/
        List<String> warnings = w.find() ? (w.group(1) =~ str).collect { (it as List)[1].replace('\\"', '"') } : []
        def s = json =~ /"status"\s*:\s*"(\w+)"/
        return [s.find() ? s.group(1) : (warnings ? "uncertain" : "ok"), warnings]
    }

    // --- matrices and transform files ----------------------------------------------------------

    static double[][] matmul(double[][] a, double[][] b) {
        double[][] c = new double[3][3]
        for (int i = 0; i < 3; i++) for (int j = 0; j < 3; j++) for (int k = 0; k < 3; k++) c[i][j] += a[i][k] * b[k][j]
        return c
    }

    static double[][] inverse(double[][] m) {
        double det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
        if (Math.abs(det) < 1e-12) throw new IllegalArgumentException("the transform is singular (it collapses the image)")
        double a = m[1][1] / det, b = -m[0][1] / det, c = -m[1][0] / det, d = m[0][0] / det
        return [[a, b, -(a * m[0][2] + b * m[1][2])], [c, d, -(c * m[0][2] + d * m[1][2])], [0d, 0d, 1d]] as double[][]
    }

    static double[][] scale(Calibration cal) {
        boolean s = cal != null && cal.scaled()
        return [[s ? cal.pixelWidth : 1d, 0d, 0d], [0d, s ? cal.pixelHeight : 1d, 0d], [0d, 0d, 1d]] as double[][]
    }

    static double[][] checked(List rows, String what) {
        if (rows == null || rows.size() < 2 || rows.size() > 3 || rows.any { !(it instanceof List) || it.size() != 3 })
            throw new IllegalArgumentException("$what is not a 3x3 matrix")
        double[][] m = (rows.collect { r -> r.collect { it as double } } + (rows.size() == 2 ? [[0d, 0d, 1d]] : [])) as double[][]
        if (m.flatten().any { Double.isNaN(it as double) || Double.isInfinite(it as double) })
            throw new IllegalArgumentException("$what is not finite")
        inverse(m)
        return m
    }

    /** Least squares dst ~ A src (mpicbg AffineModel2D.fit closed form). */
    static double[][] fitAffine(List<double[]> src, List<double[]> dst) {
        int n = src.size()
        String msg = "an affine needs at least 3 active landmark pairs that are not on one line"
        if (n < 3) throw new IllegalArgumentException(msg)
        double cx = src.sum { it[0] } / n, cy = src.sum { it[1] } / n, qx = dst.sum { it[0] } / n, qy = dst.sum { it[1] } / n
        double a00 = 0, a01 = 0, a11 = 0, b00 = 0, b01 = 0, b10 = 0, b11 = 0
        for (int i = 0; i < n; i++) {
            double px = src[i][0] - cx, py = src[i][1] - cy, tx = dst[i][0] - qx, ty = dst[i][1] - qy
            a00 += px * px; a01 += px * py; a11 += py * py
            b00 += px * tx; b01 += px * ty; b10 += py * tx; b11 += py * ty
        }
        double det = a00 * a11 - a01 * a01
        if (Math.abs(det) <= 1e-12 * Math.max(a00 * a11, 1e-300)) throw new IllegalArgumentException(msg)
        double m00 = (a11 * b00 - a01 * b10) / det, m01 = (a00 * b10 - a01 * b00) / det
        double m10 = (a11 * b01 - a01 * b11) / det, m11 = (a00 * b11 - a01 * b01) / det
        return [[m00, m01, qx - m00 * cx - m01 * cy], [m10, m11, qy - m10 * cx - m11 * cy], [0d, 0d, 1d]] as double[][]
    }

    static String text(String path) {
        File f = new File(path)
        if (!f.isFile()) throw new IllegalArgumentException("transform file not found: $path")
        return f.getText("UTF-8")
    }

    /** [moving, fixed] points of the active rows of a BigWarp landmarks CSV with ``fields`` fields a row. */
    static List<List<double[]>> landmarkRows(String path, int fields, String what) {
        List<double[]> moving = [], fixed = []
        int half = (fields - 2).intdiv(2)
        text(path).readLines().eachWithIndex { String line, int i ->
            if (!line.trim()) return
            def row = line.split(",").collect { it.trim().replaceAll(/^"|"$/, "") }
            if (row.size() != fields) throw new IllegalArgumentException("$path row ${i + 1} has ${row.size()} fields; $what")
            if (!row[1].equalsIgnoreCase("true")) return
            double[] v
            try { v = row[2..<fields].collect { Double.parseDouble(it) } as double[] }
            catch (NumberFormatException e) { throw new IllegalArgumentException("$path is not a BigWarp landmarks CSV (non-numeric coordinate in row ${i + 1})") }
            if (v.any { Double.isInfinite(it) || Double.isNaN(it) }) throw new IllegalArgumentException("$path has active landmarks with an unset (infinite) point")
            moving << (v[0..<half] as double[]); fixed << (v[half..<(2 * half)] as double[])
        }
        return [moving, fixed]
    }

    static int csvFields(String path) {
        String first = text(path).readLines().find { it.trim() }
        return first == null ? 0 : first.split(",").length
    }

    static double[][] readBigWarpCsv(String path, Calibration fixedCal, Calibration movingCal) {
        def (moving, fixed) = landmarkRows(path, 6, "a 2-D BigWarp landmarks CSV has 6")
        def world = fitAffine(moving, fixed)
        return inverse(matmul(matmul(inverse(scale(fixedCal)), world), scale(movingCal)))
    }

    // --- 3-D: 4x4 affines over voxel (x, y, z) -------------------------------------------------

    /** Inverse of a 3x3 matrix; null when singular relative to its scale. */
    static double[][] inv3(double[][] m) {
        double[][] c = new double[3][3]
        for (int i = 0; i < 3; i++) for (int j = 0; j < 3; j++) {
            int a = (i + 1) % 3, b = (i + 2) % 3, p = (j + 1) % 3, q = (j + 2) % 3
            c[i][j] = m[p][a] * m[q][b] - m[p][b] * m[q][a]
        }
        double det = m[0][0] * c[0][0] + m[0][1] * c[1][0] + m[0][2] * c[2][0]
        double s = Math.pow(m.flatten().collect { Math.abs(it as double) }.max() as double, 3)
        if (s == 0 || Math.abs(det) <= 1e-12 * s) return null
        return c.collect { r -> r.collect { it / det } } as double[][]
    }

    static double[][] inverse4(double[][] m) {
        double[][] li = inv3(m[0..2].collect { it[0..2] } as double[][])
        if (li == null) throw new IllegalArgumentException("the transform is singular (it collapses the image)")
        return (0..2).collect { i -> (li[i] as List) + [-(0..2).sum { k -> li[i][k] * m[k][3] }] } + [[0d, 0d, 0d, 1d]] as double[][]
    }

    static double[][] matmul4(double[][] a, double[][] b) {
        double[][] c = new double[4][4]
        for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) for (int k = 0; k < 4; k++) c[i][j] += a[i][k] * b[k][j]
        return c
    }

    /** Voxel (x, y, z) -> world of a Calibration (1 where uncalibrated, as BigWarp). */
    static double[][] voxel(Calibration cal) {
        boolean s = cal != null && cal.scaled()
        return [[s ? cal.pixelWidth : 1d, 0d, 0d, 0d], [0d, s ? cal.pixelHeight : 1d, 0d, 0d],
                [0d, 0d, s ? cal.pixelDepth : 1d, 0d], [0d, 0d, 0d, 1d]] as double[][]
    }

    /** Least squares 4x4 affine with dst ~ A src; >= 4 points not in one plane (centred normal equations). */
    static double[][] fitAffine3d(List<double[]> src, List<double[]> dst) {
        int n = src.size()
        String msg = "a 3-D affine needs at least 4 active landmark pairs that are not in one plane"
        if (n < 4) throw new IllegalArgumentException(msg)
        double[] ps = (0..2).collect { i -> src.sum { it[i] } / n } as double[], qs = (0..2).collect { i -> dst.sum { it[i] } / n } as double[]
        double[][] ss = new double[3][3], qp = new double[3][3]
        for (int k = 0; k < n; k++) for (int i = 0; i < 3; i++) for (int j = 0; j < 3; j++) {
            ss[i][j] += (src[k][i] - ps[i]) * (src[k][j] - ps[j])
            qp[i][j] += (dst[k][i] - qs[i]) * (src[k][j] - ps[j])
        }
        double[][] si = inv3(ss)
        if (si == null) throw new IllegalArgumentException(msg)
        double[][] a = new double[4][4]
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 3; j++) for (int k = 0; k < 3; k++) a[i][j] += qp[i][k] * si[k][j]
            a[i][3] = qs[i] - (0..2).sum { int k -> a[i][k] * ps[k] }
        }
        a[3][3] = 1d
        return a
    }

    /** fixed_to_moving (4x4, voxels) of a 3-D BigWarp landmarks CSV, as clem_bridge.export3d.read_bigwarp_csv3d. */
    static double[][] readBigWarpCsv3d(String path, Calibration fixedCal, Calibration movingCal) {
        def (moving, fixed) = landmarkRows(path, 8, "a 3-D BigWarp landmarks CSV has 8")
        return inverse4(matmul4(matmul4(inverse4(voxel(fixedCal)), fitAffine3d(moving, fixed)), voxel(movingCal)))
    }

    static double[][] readBigWarpXml(String path, Calibration fixedCal) {
        def doc
        try { doc = DocumentBuilderFactory.newInstance().newDocumentBuilder().parse(new File(path)) }
        catch (Exception e) { throw new IllegalArgumentException("cannot read XML file $path: ${e.message}") }
        def regs = doc.getElementsByTagName("ViewRegistration")
        if (doc.documentElement.tagName != "SpimData" || regs.length == 0) throw new IllegalArgumentException("$path is not a SpimData XML with a ViewRegistration")
        double[][] model = scale(null)
        def affines = regs.item(0).getElementsByTagName("affine")
        for (int i = 0; i < affines.length; i++) {
            def v = affines.item(i).textContent.trim().split(/\s+/)
            if (v.length != 12) throw new IllegalArgumentException("$path: a ViewTransform <affine> must hold 12 numbers")
            double[] d = v.collect { Double.parseDouble(it) } as double[]
            model = matmul(model, [[d[0], d[1], d[3]], [d[4], d[5], d[7]], [0d, 0d, 1d]] as double[][])
        }
        return inverse(matmul(inverse(scale(fixedCal)), model))
    }

    static double[][] mpicbgModel(String cls, String data) {
        double[] v
        try { v = data.trim().split(/\s+/).collect { Double.parseDouble(it) } as double[] }
        catch (NumberFormatException e) { throw new IllegalArgumentException("non-numeric data in mpicbg transform $cls") }
        String kind = cls.tokenize(".").last()
        Map n = [AffineModel2D: 6, SimilarityModel2D: 4, RigidModel2D: 3, TranslationModel2D: 2]
        if (n[kind] != v.length) throw new IllegalArgumentException("unsupported mpicbg transform $cls with ${v.length} values")
        switch (kind) {
            case "AffineModel2D": return [[v[0], v[2], v[4]], [v[1], v[3], v[5]], [0d, 0d, 1d]] as double[][]
            case "SimilarityModel2D": return [[v[0], -v[1], v[2]], [v[1], v[0], v[3]], [0d, 0d, 1d]] as double[][]
            case "RigidModel2D": return [[Math.cos(v[0]), -Math.sin(v[0]), v[1]], [Math.sin(v[0]), Math.cos(v[0]), v[2]], [0d, 0d, 1d]] as double[][]
            default: return [[1d, 0d, v[0]], [0d, 1d, v[1]], [0d, 0d, 1d]] as double[][]
        }
    }

    static double[][] readMpicbgXml(String path) {
        double[][] total = scale(null)
        boolean found = false
        text(path).readLines().each { String line ->
            def m = line =~ /class="([^"]+)"\s+\w+="([^"]*)"/
            if (m.find() && !line.contains("transform_list")) {
                total = matmul(mpicbgModel(m.group(1), m.group(2)), total)
                found = true
            }
        }
        if (!found) throw new IllegalArgumentException("$path has no mpicbg transform (a line with class=\"...\" data=\"...\")")
        return inverse(total)
    }

    // Our transform JSON is parsed with patterns: Fiji does not always ship groovy-json.
    static final String NUM = /-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?/

    /** The rows of numbers of the JSON matrix ``key`` (a list of lists), or null when there is none. */
    static List<List<String>> jsonRows(String json, String key) {
        String row = /\[\s*$NUM(?:\s*,\s*$NUM)*\s*\]/
        def m = json =~ /"$key"\s*:\s*\[\s*($row(?:\s*,\s*$row)*)\s*\]/
        if (!m.find()) return null
        return (m.group(1) =~ row).collect { r -> (r =~ NUM).collect { it } }
    }

    static int jsonNdim(String json) {
        def m = json =~ /"ndim"\s*:\s*(\d+)/
        return m.find() ? (m.group(1) as int) : 2
    }

    /** fixed_to_moving (3x3) of our 2-D transform JSON. */
    static double[][] readJson(String path) {
        String json = text(path)
        if (jsonNdim(json) == 3) throw new IllegalArgumentException("$path is a 3-D transform (ndim 3); apply it to stacks")
        List rows = jsonRows(json, "fixed_to_moving")
        if (rows == null) throw new IllegalArgumentException("$path is not a clem-bridge transform JSON")
        return checked(rows, "fixed_to_moving in $path")
    }

    /** fixed_to_moving (4x4 over voxel x, y, z) of our 3-D transform JSON: finite, last row 0 0 0 1, invertible. */
    static double[][] readJson3d(String json, String path) {
        List<List<String>> rows = jsonRows(json, "fixed_to_moving")
        String msg = "fixed_to_moving in $path is not a finite 4x4 matrix with last row 0 0 0 1"
        if (rows == null || rows.size() != 4 || rows.any { it.size() != 4 }) throw new IllegalArgumentException(msg)
        double[][] m = rows.collect { r -> r.collect { it as double } } as double[][]
        if (m.flatten().any { Double.isNaN(it as double) || Double.isInfinite(it as double) } || m[3] != [0d, 0d, 0d, 1d] as double[])
            throw new IllegalArgumentException(msg)
        double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        if (Math.abs(det) < 1e-12) throw new IllegalArgumentException("the transform is singular (it collapses the image)")
        return m
    }

    /** The stack's [depth, height, width] must be the record's ``key`` shape when the record gives it. */
    static void checkShape(String json, String key, ImagePlus imp, String what, String path) {
        def m = json =~ /"$key"\s*:\s*\[([^\]]*)\]/
        if (!m.find()) return
        List<Integer> want = (m.group(1) =~ /\d+/).collect { it as int }, got = [imp.NSlices, imp.height, imp.width]
        if (want != got)
            throw new IllegalArgumentException("${new File(path).name} is for a ${want.join('x')} $what stack (depth x height x width), but ${imp.title} is ${got.join('x')}")
    }

    /** An LM stack warped onto the EM stack's voxel grid with a 3-D transform JSON (ndim 3) or BigWarp CSV. */
    static ImagePlus warpStack(ImagePlus lm, String path, ImagePlus em) {
        boolean csv = path.toLowerCase().endsWith(".csv")
        String json = csv ? "{}" : text(path)
        double[][] m = csv ? readBigWarpCsv3d(path, em.calibration, lm.calibration) : readJson3d(json, path)
        [[em, "EM"], [lm, "LM"]].each { ImagePlus imp, String what ->
            if (imp.NFrames > 1) throw new IllegalArgumentException("the $what image ${imp.title} is a time series; a 3-D transform takes z stacks")
        }
        checkShape(json, "fixed_shape", em, "EM", path)
        checkShape(json, "moving_shape", lm, "LM", path)
        return ClemWarp.warpStack(lm, m, em, "warped_" + lm.title)
    }

    /** fixed_to_moving from our JSON, a BigWarp CSV, a SpimData XML or an mpicbg XML. */
    static double[][] readTransform(String path, Calibration fixedCal, Calibration movingCal) {
        String low = path.toLowerCase()
        if (low.endsWith(".json")) return readJson(path)
        if (low.endsWith(".csv")) return readBigWarpCsv(path, fixedCal, movingCal)
        if (low.endsWith(".xml")) {
            String head = text(path)
            return head.substring(0, Math.min(4096, head.length())).contains("<SpimData") ? readBigWarpXml(path, fixedCal) : readMpicbgXml(path)
        }
        throw new IllegalArgumentException("unknown transform file type ${new File(path).name}; expected .json, .csv or .xml")
    }

    /** Every channel of lm (red, green, blue of an RGB image) warped onto em's canvas, with em's calibration. */
    static ImagePlus warpImage(ImagePlus lm, double[][] f2m, ImagePlus em) {
        List<ImageProcessor> procs = (1..lm.stackSize).collect { lm.stack.getProcessor(it) }
        if (lm.type == ImagePlus.COLOR_RGB) procs = procs.collectMany { ip -> (1..3).collect { ((ij.process.ColorProcessor) ip).getChannel(it, null) } }
        def stack = new ImageStack(em.width, em.height)
        procs.eachWithIndex { ImageProcessor ip, int i ->
            ij.IJ.showStatus("CLEM: warping channel ${i + 1}/${procs.size()}")
            ij.IJ.showProgress(i, procs.size())
            stack.addSlice("C$i", ClemWarp.warp(ip, f2m, em.width, em.height))
        }
        ij.IJ.showProgress(1.0)
        def out = new ImagePlus("warped_" + lm.title, stack)
        if (stack.size > 1) out.setDimensions(stack.size, 1, 1)
        out.setCalibration(em.calibration.copy())
        return out
    }
}
