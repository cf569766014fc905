// clem-bridge warp kernel, compiled (@CompileStatic) and shared by the Jython library
// (clem_bridge_transforms.py) and the Groovy helper (ClemBridgeFiji.groovy).
// Same values and valid region as clem_bridge.transforms.warp_image(order="bilinear") + valid_mask:
// pixel centres at integers, out(x, y) = bilinear LM at fixed_to_moving * (x, y) where that point lies in
// [0, w-1] x [0, h-1] (1e-6 tolerance), else 0; any invertible affine, mirrored (det < 0) included.
import groovy.transform.CompileStatic
import ij.IJ
import ij.process.FloatProcessor
import ij.process.ImageProcessor

@CompileStatic
class ClemWarp {
    static final double EPS = 1e-6

    /** ``ip`` (any ImageJ 1 grey type) resampled onto a width x height grid; the result has ip's type
     *  (8/16-bit: rounded and clipped by ImageProcessor.setPixels). */
    static ImageProcessor warp(ImageProcessor ip, double[][] a, int width, int height) {
        int w = ip.width, h = ip.height
        float[] src = (float[]) ip.toFloat(0, null).pixels
        float[] dst = new float[width * height]
        double xmax = w - 1, ymax = h - 1
        int xlast = Math.max(w - 2, 0), ylast = Math.max(h - 2, 0)
        for (int y = 0; y < height; y++) {
            double bx = a[0][1] * y + a[0][2], by = a[1][1] * y + a[1][2]
            int row = y * width
            for (int x = 0; x < width; x++) {
                double xm = a[0][0] * x + bx, ym = a[1][0] * x + by
                if (xm < -EPS || xm > xmax + EPS || ym < -EPS || ym > ymax + EPS) continue
                xm = Math.min(Math.max(xm, 0d), xmax)
                ym = Math.min(Math.max(ym, 0d), ymax)
                int x0 = Math.min((int) xm, xlast), y0 = Math.min((int) ym, ylast)
                int x1 = Math.min(x0 + 1, w - 1), y1 = Math.min(y0 + 1, h - 1)
                double fx = xm - x0, fy = ym - y0
                double top = src[y0 * w + x0] * (1 - fx) + src[y0 * w + x1] * fx
                double bottom = src[y1 * w + x0] * (1 - fx) + src[y1 * w + x1] * fx
                dst[row + x] = (float) (top * (1 - fy) + bottom * fy)
            }
            if ((y & 255) == 0) IJ.showProgress(y, height)
        }
        IJ.showProgress(1.0d)
        ImageProcessor out = ip.createProcessor(width, height)
        out.setPixels(0, new FloatProcessor(width, height, dst))
        return out
    }
}
