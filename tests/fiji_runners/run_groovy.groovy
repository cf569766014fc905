// Groovy side of tests/fiji_utils.run_script: bind the inputs like SciJava, run the script text.
// ``--each runs.json`` (tests/fiji_utils.run_scripts): several scripts in turn, as a running Fiji runs commands,
// each followed by an END_OF_SCRIPT line on stdout and stderr.
import groovy.json.JsonSlurper

def bindAndRun(String bindingsPath, File script) {
    def binding = new Binding()
    new JsonSlurper().parse(new File(bindingsPath)).each { name, tv ->
        def (type, value) = tv
        if (value != null) {
            switch (type) {
                case "File": value = new File(value as String); break
                case ["Integer", "int", "Long", "long"]: value = value as Integer; break
                case ["Double", "double", "Float", "float"]: value = value as Double; break
                case ["Boolean", "boolean"]: value = value as Boolean; break
                default: value = value as String
            }
        }
        binding.setVariable(name, value)
    }
    new GroovyShell(binding).evaluate(script.text, script.name)
}

if (args[0] == "--each") {
    new JsonSlurper().parse(new File(args[1])).each { bindingsPath, script ->
        bindAndRun(bindingsPath, new File(script))
        [System.out, System.err].each { it.println("END_OF_SCRIPT"); it.flush() }
    }
} else {
    bindAndRun(args[0], new File(args[-2]))  // args: bindings.json [--headless --run] script args
}
println("HOST_STILL_RUNNING")
