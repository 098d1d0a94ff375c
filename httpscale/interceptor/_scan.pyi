# The C module built by scripts/compile from _scan.c (see there and http1.scan_response_head).

def scan_response(
    data: bytes, /
) -> tuple[int, int, bool, int, int, int, int, bool, int] | None: ...
def scan_request(
    data: bytes, max_line: int, max_fields_bytes: int, max_fields: int, /
) -> tuple[
    int, int, list[bytes], bytes, bytes | None, bool, bool, bool, int, bytes, bool
] | None: ...
