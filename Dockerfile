# syntax=docker/dockerfile:1
#
# httpscale's one image: `httpscale interceptor|scaler|operator` (manifests/ runs it).
#
#   docker build -t ghcr.io/httpscale/httpscale:0.1.0 .
#
# Three stages on one base:
#   python   Debian's own Python 3.11: built with PGO and LTO and a static libpython, it runs the
#            proxy's hot path ~25 % faster than a default build (docs/benchmarks.md), and it is
#            the interpreter the benchmarks and the test suite run on (scripts/bootstrap picks it)
#   build    + a C compiler: installs httpscale into /opt/httpscale, compiles the hot path with
#            mypyc, profile-guided (scripts/compile), and fails unless that build is the one
#            imported
#   runtime  python + /opt/httpscale, nothing else: no compiler, no pip, not root
#
# Not built on the machine this was written on (it has no container engine); every step of
# the build stage was run there by hand against the same Debian Python (docs/kubernetes.md).

ARG DEBIAN=debian:bookworm-slim

FROM ${DEBIAN} AS python
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*

FROM python AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev python3-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY httpscale/ httpscale/
COPY scripts/compile scripts/pgo_train.py scripts/
# The runtime venv: httpscale and its dependencies, installed (not editable); pip compiles
# their bytecode now, since the running containers cannot write it (read-only root).
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/httpscale \
 && /opt/httpscale/bin/pip install /src
# A build-only venv for mypyc (mypy ships it) and the training run, which imports httpscale
# from /src. scripts/compile builds the hot path next to its sources in /src: once
# instrumented, then trained by scripts/pgo_train.py (a few seconds of traffic through an
# interceptor on loopback), then with the profile (about 90 s in all).
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/build \
 && /opt/build/bin/pip install /src "mypy>=1.10" "setuptools>=68" wheel \
 && /opt/build/bin/python scripts/compile
# Into the runtime venv go the extensions, the build manifest (_dataplane.json: the hash of
# every source compiled, checked at each start) and the C sources that hash covers. Then the
# build must be the one that runs: httpscale falls back to the Python source (about half as
# fast) if anything is missing or stale, and that must fail here, not in production. A
# profile-guided build is required too, unless EXPECT_PROFILE=none says otherwise (a plain
# build is what scripts/compile falls back to when the training run fails).
ARG EXPECT_PROFILE=trained
RUN <<'EOF'
set -eu
site=$(/opt/httpscale/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
find httpscale \( -name '*.so' -o -name '*.c' -o -name '_dataplane.json' \) \
    -exec cp --parents {} "$site/" \;
cd /
EXPECT_PROFILE=$EXPECT_PROFILE /opt/httpscale/bin/python - <<'PY'
import json, os
import httpscale
from httpscale import dataplane
active = dataplane.active()
assert httpscale.__file__.startswith("/opt/httpscale/"), httpscale.__file__
assert active.compiled, f"hot path not compiled: {active.reason}"
profile = json.loads(dataplane.MANIFEST.read_text())["profile"]
assert profile == os.environ["EXPECT_PROFILE"], f"build profile {profile}"
print(f"dataplane: {active.name}, profile {profile} ({active.reason})")
PY
/opt/httpscale/bin/httpscale --help >/dev/null
/opt/httpscale/bin/python -m pip uninstall -y -q pip setuptools
EOF

FROM python AS runtime
RUN groupadd --gid 65532 httpscale \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin httpscale
COPY --from=build /opt/httpscale /opt/httpscale
# PYTHONDONTWRITEBYTECODE: the bytecode was written at build time; the root filesystem is
# read-only in the pods (manifests/), so nothing tries to write it again.
ENV PATH=/opt/httpscale/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# interceptor proxy and admin, scaler gRPC and admin, operator admin
EXPOSE 8080 9090 9091 9092 8081
ENTRYPOINT ["httpscale"]
CMD ["--help"]
LABEL org.opencontainers.image.title="httpscale" \
      org.opencontainers.image.description="HTTP scale-to-zero for Kubernetes: interceptor, KEDA external scaler, operator" \
      org.opencontainers.image.licenses="Apache-2.0"
