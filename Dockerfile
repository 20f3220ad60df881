# One image for all four services; each Deployment picks its service:
#   docker build -t tessera:dev .     (--build-arg SERVICES=profiles for one service)
#   docker run --rm -p 50052:50052 -e TESSERA_HOST=0.0.0.0 \
#     -e TESSERA_ALLOW_UNAUTHENTICATED=true tessera:dev serve profiles
# In Kubernetes the container args are ["serve", "<service>"] (see k8s/).

# --- build: generate the protos, install the project into a venv ------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# grpcio-tools and mypy-protobuf first and alone: protoc is needed before
# the distributions are built (generated code lives inside them), and this
# layer rarely changes.
RUN pip install "grpcio-tools>=1.66" "mypy-protobuf>=3.6"

# Only what the packages need; tests, bench, caches and local venvs stay out.
COPY protos/ protos/
COPY tools/ tools/
COPY runtime/ runtime/
COPY services/ services/

# Generated code is never committed: build it here, from the protos above,
# then install the runtime and the services named by SERVICES (all four by
# default; an image of profiles, segments or experiments needs only that
# one, while decision evaluates the others' rules in process and so needs
# all four named). The import check runs
# with -P so the source folders cannot stand in for the installed packages.
ARG SERVICES="profiles segments experiments decision"
RUN python tools/protogen.py \
    && pip install ./runtime $(for s in $SERVICES; do echo ./services/$s; done) \
    && pip uninstall -y grpcio-tools mypy-protobuf \
    && python -P -c "import tessera.cli, importlib; [importlib.import_module(f'tessera.{s}.server') for s in '$SERVICES'.split()]"

# --- runtime: the venv on a clean slim image, as a non-root user -----------
FROM python:3.11-slim

# A fixed numeric uid/gid so Kubernetes can check runAsNonRoot without
# resolving names; k8s/base uses the same ids.
RUN groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tessera \
    && mkdir -p /var/lib/tessera \
    && chown tessera:tessera /var/lib/tessera

COPY --from=build /opt/venv /opt/venv

# Bytecode was compiled at install time; the root filesystem is read-only in
# Kubernetes, so never try to write more.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TESSERA_DATA_DIR=/var/lib/tessera

USER 10001:10001
WORKDIR /var/lib/tessera
EXPOSE 50051 50052 50053 50054

ENTRYPOINT ["tessera"]
CMD ["--help"]
