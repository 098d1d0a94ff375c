"""``--workers N``: a parent process supervising N interceptor workers on one port."""
