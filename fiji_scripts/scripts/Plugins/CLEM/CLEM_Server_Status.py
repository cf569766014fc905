#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="", style="password", persist=false) token
#@output String status
"""CLEM server status: device, version, queue and loaded models from /v1/health (starts a local server
when none answers)."""
import clem_bridge_fiji as clem

status = clem.run_command("CLEM_Server_Status.py", lambda: clem.server_status(server_url, token))
