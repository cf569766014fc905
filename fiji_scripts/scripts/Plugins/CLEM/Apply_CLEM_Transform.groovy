#@ File (label="Image to transform (LM, all channels)", style="file") image_file
#@ File (label="Target image (EM: canvas size and calibration)", style="file") target_file
#@ File (label="Transform (.json, BigWarp .csv, BigWarp or mpicbg .xml)", style="file") transform_file
#@ File (label="Output TIFF", style="save") out_file
#@output ImagePlus warped
// Apply CLEM transform: warp any image onto the EM canvas with a saved clem-bridge, BigWarp or mpicbg transform.
def plugins = System.getProperty("plugins.dir")  // PyImageJ sets only this one: <Fiji.app>/plugins
def app = System.getProperty("imagej.dir") ?: System.getProperty("fiji.dir") ?: System.getProperty("ij.dir") ?:
        (plugins ? new File(plugins).parent : ij.IJ.getDirectory("imagej"))
def lib = new File(app, "jars/Lib")
warped = null
if (new File(lib, "ClemBridgeFiji.groovy").isFile()) {
    def loader = new GroovyClassLoader(getClass().classLoader)
    loader.addClasspath(lib.path)
    warped = loader.loadClass("ClemBridgeFiji").applyTransform(image_file, target_file, transform_file, out_file,
                                                                "Apply_CLEM_Transform.groovy")
} else {
    ij.IJ.error("CLEM", "the clem-bridge helper is missing in $lib; run clem-bridge install-fiji again")
}
