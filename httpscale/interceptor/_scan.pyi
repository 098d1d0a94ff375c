# The C module built by scripts/compile from _scan.c (see there and scan.py, its Python twin).

from httpscale.interceptor.scan import RequestScan, ResponseScan

def scan_response(data: bytes, /) -> ResponseScan | None: ...
def scan_request(
    data: bytes, max_line: int, max_fields_bytes: int, max_fields: int, /
) -> RequestScan | None: ...
