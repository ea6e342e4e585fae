# The edge agent: serves inference, applies signed model updates, ships telemetry. No torch.
# Multi-arch friendly: only wheels that exist for linux/amd64 and linux/arm64 (onnxruntime,
# numpy, tuf, fastapi); build with `docker buildx build --platform linux/amd64,linux/arm64`.
#   docker build -f deploy/agent.Dockerfile -t edgeloop-agent .
#   docker run -v edgeloop-agent:/var/lib/edgeloop -p 8000:8000 \
#     -e EDGELOOP_ENROLL_TOKEN=... edgeloop-agent --control https://control.example:8700
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[agent]'

FROM python:3.11-slim
RUN useradd --system --home-dir /var/lib/edgeloop --create-home edgeloop
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'edgeloop[agent]' \
    && rm -rf /wheels \
    && python -c "import sys, edgeloop.agent.process; sys.exit('torch' in sys.modules)"
USER edgeloop
ENV EDGELOOP_HOME=/var/lib/edgeloop
VOLUME ["/var/lib/edgeloop"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=2)"
ENTRYPOINT ["edgeloop", "agent", "--host", "0.0.0.0", "--port", "8000"]
