// Groovy side of tests/fiji_utils.run_script: bind the inputs like SciJava, run the script text.
import groovy.json.JsonSlurper

def bindings = new JsonSlurper().parse(new File(args[0]))
def binding = new Binding()
bindings.each { name, tv ->
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
def script = new File(args[-2])  // args: bindings.json [--headless --run] script args
new GroovyShell(binding).evaluate(script.text, script.name)
println("HOST_STILL_RUNNING")
