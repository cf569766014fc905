#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="") token
#@output String status
"""CLEM server status: device, version, queue and loaded models from /v1/health."""
import clem_bridge_fiji as clem

status = None


def main():
    global status
    h = clem.Server(server_url, token, timeout_s=10).get_json("/v1/health")
    status = ("CLEM server %s: status %s, version %s, device %s, queue %s queued / %s running, models: %s"
              % (server_url, h.get("status"), h.get("version"), h.get("device"), h.get("queued"),
                 h.get("running"), ", ".join(h.get("models") or []) or "none loaded"))
    clem.log(status)
    if not clem.is_headless():
        from ij import IJ
        IJ.showMessage("CLEM server status", status.replace(": ", ":\n", 1).replace(", ", "\n"))


clem.run_main(main)
