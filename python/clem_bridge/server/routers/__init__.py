"""One router per resource: health, register (jobs creation), jobs, apply."""
from ..schemas import ErrorBody

ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 413, 422)}
