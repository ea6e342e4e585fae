# The control plane: registry, fleet, rollouts, signed update repository (TUF).
#   docker build -f deploy/control.Dockerfile -t edgeloop-control .
#   docker run -v edgeloop-control:/var/lib/edgeloop -p 8700:8700 edgeloop-control
# Replicas: run several on one PostgreSQL database (--db postgresql+psycopg://...) sharing one
# home volume (keys, artifact store) behind a load balancer.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[control,postgres]'

FROM python:3.11-slim
RUN useradd --system --home-dir /var/lib/edgeloop --create-home edgeloop
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'edgeloop[control,postgres]' \
    && rm -rf /wheels
USER edgeloop
ENV EDGELOOP_HOME=/var/lib/edgeloop
VOLUME ["/var/lib/edgeloop"]
EXPOSE 8700
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8700/healthz', timeout=2)"
ENTRYPOINT ["edgeloop", "control", "--host", "0.0.0.0", "--port", "8700"]
