// clem-bridge Groovy helper for the Fiji scripts (ImageJ 1 API and the JDK only), loaded at run time:
//   def Clem = new GroovyClassLoader(getClass().classLoader).parseClass(new File(<Fiji.app>, "jars/Lib/ClemBridgeFiji.groovy"))
// Same convention and file formats as clem_bridge_fiji.py: fixed_to_moving maps EM pixel -> LM pixel,
// pixel centres at integers. Problems are IllegalArgumentException with a one-sentence message.
import ij.ImagePlus
import ij.ImageStack
import ij.measure.Calibration
import ij.process.ImageProcessor
import javax.xml.parsers.DocumentBuilderFactory

class ClemBridgeFiji {
    static final double EPS = 1e-6

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

    static double[][] readBigWarpCsv(String path, Calibration fixedCal, Calibration movingCal) {
        List<double[]> moving = [], fixed = []
        text(path).readLines().eachWithIndex { String line, int i ->
            if (!line.trim()) return
            def row = line.split(",").collect { it.trim().replaceAll(/^"|"$/, "") }
            if (row.size() != 6) throw new IllegalArgumentException("$path row ${i + 1} has ${row.size()} fields; a 2-D BigWarp landmarks CSV has 6")
            if (!row[1].equalsIgnoreCase("true")) return
            double[] v
            try { v = row[2..5].collect { Double.parseDouble(it) } as double[] }
            catch (NumberFormatException e) { throw new IllegalArgumentException("$path is not a BigWarp landmarks CSV (non-numeric coordinate in row ${i + 1})") }
            if (v.any { Double.isInfinite(it) || Double.isNaN(it) }) throw new IllegalArgumentException("$path has active landmarks with an unset (infinite) point")
            moving << ([v[0], v[1]] as double[]); fixed << ([v[2], v[3]] as double[])
        }
        def world = fitAffine(moving, fixed)
        return inverse(matmul(matmul(inverse(scale(fixedCal)), world), scale(movingCal)))
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

    /** fixed_to_moving of our transform JSON (parsed with a pattern: Fiji does not always ship groovy-json). */
    static double[][] readJson(String path) {
        String num = /-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?/
        String row = /\[\s*$num\s*,\s*$num\s*,\s*$num\s*\]/
        def m = text(path) =~ /"fixed_to_moving"\s*:\s*\[\s*($row)\s*,\s*($row)\s*(?:,\s*($row)\s*)?\]/
        if (!m.find()) throw new IllegalArgumentException("$path is not a clem-bridge transform JSON")
        List rows = (1..3).collect { m.group(it) }.findAll { it != null }.collect { r -> (r =~ num).collect { it } }
        return checked(rows, "fixed_to_moving in $path")
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

    /** Same values and valid region as clem_bridge.transforms.warp_image(order="bilinear"), 0 outside. */
    static ImageProcessor warp(ImageProcessor ip, double[][] a, int width, int height) {
        int w = ip.width, h = ip.height
        ImageProcessor out = ip.createProcessor(width, height)
        out.setValue(0); out.fill()
        ip.setInterpolationMethod(ImageProcessor.BILINEAR)
        double xmax = w - 1 + EPS, ymax = h - 1 + EPS
        for (int y = 0; y < height; y++) {
            double bx = a[0][1] * y + a[0][2], by = a[1][1] * y + a[1][2]
            for (int x = 0; x < width; x++) {
                double xm = a[0][0] * x + bx, ym = a[1][0] * x + by
                if (xm >= -EPS && xm <= xmax && ym >= -EPS && ym <= ymax) out.putPixelValue(x, y, ip.getInterpolatedValue(xm, ym))
            }
        }
        return out
    }

    /** Every channel of lm (red, green, blue of an RGB image) warped onto em's canvas, with em's calibration. */
    static ImagePlus warpImage(ImagePlus lm, double[][] f2m, ImagePlus em) {
        List<ImageProcessor> procs = (1..lm.stackSize).collect { lm.stack.getProcessor(it) }
        if (lm.type == ImagePlus.COLOR_RGB) procs = procs.collectMany { ip -> (1..3).collect { ((ij.process.ColorProcessor) ip).getChannel(it, null) } }
        def stack = new ImageStack(em.width, em.height)
        procs.eachWithIndex { ImageProcessor ip, int i ->
            ij.IJ.showStatus("CLEM: warping channel ${i + 1}/${procs.size()}")
            ij.IJ.showProgress(i, procs.size())
            stack.addSlice("C$i", warp(ip, f2m, em.width, em.height))
        }
        ij.IJ.showProgress(1.0)
        def out = new ImagePlus("warped_" + lm.title, stack)
        if (stack.size > 1) out.setDimensions(stack.size, 1, 1)
        out.setCalibration(em.calibration.copy())
        return out
    }
}
