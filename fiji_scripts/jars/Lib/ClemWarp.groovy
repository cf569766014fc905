// clem-bridge warp kernels, compiled (@CompileStatic) and shared by the Jython library
// (clem_bridge_transforms.py) and the Groovy helper (ClemBridgeFiji.groovy).
// 2-D: same values and valid region as clem_bridge.transforms.warp_image(order="bilinear") + valid_mask:
// pixel centres at integers, out(x, y) = bilinear LM at fixed_to_moving * (x, y) where that point lies in
// [0, w-1] x [0, h-1] (1e-6 tolerance), else 0; any invertible affine, mirrored (det < 0) included.
// 3-D: the same for stacks, as clem_bridge.transforms3d.warp_volume(order="linear") + valid_mask3d:
// voxel centres at integers, fixed_to_moving 4x4 over voxel (x, y, z), trilinear inside the LM volume, 0 outside.
import groovy.transform.CompileStatic
import ij.CompositeImage
import ij.IJ
import ij.ImagePlus
import ij.ImageStack
import ij.process.ColorProcessor
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
        return typed(ip, dst, width, height)
    }

    /** ``dst`` as a processor of ``like``'s type (8/16-bit: rounded and clipped by setPixels). */
    static ImageProcessor typed(ImageProcessor like, float[] dst, int width, int height) {
        ImageProcessor out = like.createProcessor(width, height)
        out.setPixels(0, new FloatProcessor(width, height, dst))
        return out
    }

    /** One LM volume (its z slices, any grey type) resampled onto a width x height x depth grid: trilinear at
     *  fixed_to_moving (4x4) * (x, y, z) inside [0, w-1] x [0, h-1] x [0, d-1] (1e-6 tolerance), else 0. */
    static ImageProcessor[] warp3d(ImageProcessor[] slices, double[][] a, int width, int height, int depth) {
        int w = slices[0].width, h = slices[0].height, d = slices.length
        float[][] src = new float[d][]
        for (int k = 0; k < d; k++) src[k] = (float[]) slices[k].toFloat(0, null).pixels
        double xmax = w - 1, ymax = h - 1, zmax = d - 1
        int xlast = Math.max(w - 2, 0), ylast = Math.max(h - 2, 0), zlast = Math.max(d - 2, 0)
        ImageProcessor[] out = new ImageProcessor[depth]
        for (int z = 0; z < depth; z++) {
            float[] dst = new float[width * height]
            for (int y = 0; y < height; y++) {
                double bx = a[0][1] * y + a[0][2] * z + a[0][3], by = a[1][1] * y + a[1][2] * z + a[1][3]
                double bz = a[2][1] * y + a[2][2] * z + a[2][3]
                int row = y * width
                for (int x = 0; x < width; x++) {
                    double xm = a[0][0] * x + bx, ym = a[1][0] * x + by, zm = a[2][0] * x + bz
                    if (xm < -EPS || xm > xmax + EPS || ym < -EPS || ym > ymax + EPS || zm < -EPS || zm > zmax + EPS) continue
                    xm = Math.min(Math.max(xm, 0d), xmax)
                    ym = Math.min(Math.max(ym, 0d), ymax)
                    zm = Math.min(Math.max(zm, 0d), zmax)
                    int x0 = Math.min((int) xm, xlast), y0 = Math.min((int) ym, ylast), z0 = Math.min((int) zm, zlast)
                    int x1 = Math.min(x0 + 1, w - 1), y1 = Math.min(y0 + 1, h - 1), z1 = Math.min(z0 + 1, d - 1)
                    double fx = xm - x0, fy = ym - y0, fz = zm - z0
                    int i00 = y0 * w + x0, i01 = y0 * w + x1, i10 = y1 * w + x0, i11 = y1 * w + x1
                    float[] s0 = src[z0], s1 = src[z1]
                    double near = (s0[i00] * (1 - fx) + s0[i01] * fx) * (1 - fy) + (s0[i10] * (1 - fx) + s0[i11] * fx) * fy
                    double far = (s1[i00] * (1 - fx) + s1[i01] * fx) * (1 - fy) + (s1[i10] * (1 - fx) + s1[i11] * fx) * fy
                    dst[row + x] = (float) (near * (1 - fz) + far * fz)
                }
            }
            out[z] = typed(slices[0], dst, width, height)
            IJ.showProgress(z + 1, depth)
        }
        return out
    }

    /** Every channel of an LM stack (hyperstack C x Z, or a plain stack = one channel; RGB = 3 channels)
     *  warped onto the EM stack's voxel grid: a C x Z hyperstack with the EM calibration (z spacing included). */
    static ImagePlus warpStack(ImagePlus lm, double[][] a, ImagePlus em, String title) {
        int nc = lm.getNChannels(), nz = lm.getNSlices(), depth = em.getNSlices()
        boolean rgb = lm.type == ImagePlus.COLOR_RGB
        int channels = rgb ? 3 : nc
        ImageStack stack = new ImageStack(em.width, em.height)
        ImageProcessor[][] warped = new ImageProcessor[channels][]
        for (int c = 0; c < channels; c++) {
            ImageProcessor[] slices = new ImageProcessor[nz]
            for (int z = 0; z < nz; z++) {
                ImageProcessor ip = lm.getStack().getProcessor(rgb ? z + 1 : lm.getStackIndex(c + 1, z + 1, 1))
                slices[z] = rgb ? (ImageProcessor) ((ColorProcessor) ip).getChannel(c + 1, null) : ip
            }
            IJ.showStatus("CLEM: warping channel " + (c + 1) + "/" + channels)
            warped[c] = warp3d(slices, a, em.width, em.height, depth)
        }
        for (int z = 0; z < depth; z++)
            for (int c = 0; c < channels; c++) stack.addSlice("C" + c + " Z" + z, warped[c][z])
        ImagePlus out = new ImagePlus(title, stack)
        out.setDimensions(channels, depth, 1)
        if (channels > 1) {
            out.setOpenAsHyperStack(true)
            out = new CompositeImage(out, CompositeImage.COMPOSITE)
        }
        out.setCalibration(em.getCalibration().copy())
        return out
    }
}
