#@ File (label="Image to transform (LM, all channels)", style="file") image_file
#@ File (label="Target image (EM: canvas size and calibration)", style="file") target_file
#@ File (label="Transform (.json, BigWarp .csv, BigWarp or mpicbg .xml)", style="file") transform_file
#@ File (label="Output TIFF", style="save") out_file
#@output ImagePlus warped
// Apply CLEM transform: warp any image onto the EM canvas with a saved clem-bridge, BigWarp or mpicbg transform.
import ij.IJ
import ij.io.FileSaver
import java.awt.GraphicsEnvironment

def fail(String msg) {
    IJ.showStatus("")
    if (System.getProperty("clem_bridge.raise") == "true") throw new IllegalArgumentException(msg)
    if (GraphicsEnvironment.isHeadless()) { System.err.println("error: " + msg); System.exit(2) }
    IJ.error("CLEM", msg)
}

def open(File f, String what) {
    if (f == null || !f.isFile()) throw new IllegalArgumentException("$what file not found: $f")
    def imp = IJ.openImage(f.path)
    if (imp == null) throw new IllegalArgumentException("ImageJ cannot open the $what file $f")
    return imp
}

warped = null
try {
    def plugins = System.getProperty("plugins.dir")  // PyImageJ sets only this one: <Fiji.app>/plugins
    def app = System.getProperty("imagej.dir") ?: System.getProperty("fiji.dir") ?: System.getProperty("ij.dir") ?:
            (plugins ? new File(plugins).parent : IJ.getDirectory("imagej"))
    def helper = new File(app, "jars/Lib/ClemBridgeFiji.groovy")
    if (!helper.isFile()) throw new IllegalArgumentException("the clem-bridge helper $helper is missing; run clem-bridge install-fiji again")
    def Clem = new GroovyClassLoader(getClass().classLoader).parseClass(helper)
    def lm = open(image_file, "image")
    def em = open(target_file, "target image")
    def f2m = Clem.readTransform(transform_file?.path ?: "", em.calibration, lm.calibration)
    warped = Clem.warpImage(lm, f2m, em)
    if (out_file != null && !new FileSaver(warped).saveAsTiff(out_file.path)) throw new IllegalArgumentException("could not save $out_file")
    def line = "CLEM: applied ${transform_file.name} to ${lm.title}; saved ${out_file}"
    if (GraphicsEnvironment.isHeadless()) println(line) else IJ.log(line)
} catch (IllegalArgumentException | IOException e) {
    fail(e.message)
}
