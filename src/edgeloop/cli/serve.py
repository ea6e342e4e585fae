"""``edgeloop serve MODEL...``: the inference server alone (Open Inference Protocol v2 + /predict).

Progress goes to stderr. Once every model is loaded, ``--format json`` prints one JSON object on
stdout (url, pid, models, idle RSS, whether torch is imported) so a script can wait for it;
``--format table`` prints the same as a table on stderr's neighbour, stdout.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console, na
from edgeloop.cli.tls import TlsCert, TlsClientCa, TlsKey

if TYPE_CHECKING:
    from edgeloop.serving.capture import CaptureSpec
    from edgeloop.serving.cascade import CascadeSpec
    from edgeloop.serving.routing import Routing
    from edgeloop.serving.server import ReadyInfo

DEFAULT_CAPTURE_BYTES = 16 << 20  # serving.capture.DEFAULT_MAX_BYTES (numpy-free CLI start)


def serve(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model files (served as their file stem), model folders (NAME/VERSION/"
            "model.onnx), a repository root holding model folders, or registry refs "
            "NAME[:VERSION] (served as NAME, version VERSION).",
        ),
    ],
    port: Annotated[int, typer.Option("--port", help="TCP port; 0 picks a free one.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    name: Annotated[
        str | None, typer.Option("--name", help="Serve a single model under this name.")
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Largest dynamic batch (1: no batching).")
    ] = 1,
    max_delay_ms: Annotated[
        float, typer.Option("--max-delay-ms", help="Longest wait for a batch to fill.")
    ] = 0.0,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Requests admitted per model; beyond: 429.")
    ] = 64,
    max_queue_delay_ms: Annotated[
        float,
        typer.Option(
            "--max-queue-delay-ms",
            help="Longest wait before a request's turn (event loop or model queue); "
            "beyond: 429. 0: no bound.",
        ),
    ] = 1000.0,
    early_refusal: Annotated[
        bool,
        typer.Option(
            "--early-refusal/--no-early-refusal",
            help="Refuse inference requests past the queue limits from their headers, before "
            "their bodies are read (--no-early-refusal: refuse in the app, the old path).",
        ),
    ] = True,
    memory_budget_mb: Annotated[
        float | None,
        typer.Option("--memory-budget-mb", help="Resident memory for loaded models [no limit]."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="ONNX Runtime intra-op threads per model [usable CPUs]."),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="Run .onnx files on this engine: onnxruntime or openvino (the winner "
            "`edgeloop tune` recorded) [by file suffix].",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Per-request timeout in seconds (then 504).")
    ] = 10.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", help="Largest request body (then 413).")
    ] = 16.0,
    ab: Annotated[
        list[str] | None,
        typer.Option("--ab", help="A/B split MODEL=V:W,V:W (sticky by X-Request-Key)."),
    ] = None,
    shadow: Annotated[
        list[str] | None,
        typer.Option("--shadow", help="MODEL=V: version V gets a copy of each routed request."),
    ] = None,
    cascade: Annotated[
        list[str] | None,
        typer.Option(
            "--cascade",
            help="SMALL=LARGE@THRESHOLD: rows SMALL is less confident of than THRESHOLD "
            "(0..1) are answered by served model LARGE.",
        ),
    ] = None,
    cascade_url: Annotated[
        list[str] | None,
        typer.Option(
            "--cascade-url",
            help="SMALL=http://HOST:PORT/v2/models/NAME@THRESHOLD: send them to a parent "
            "tier's v2 endpoint instead (SMALL's answer stands when it fails).",
        ),
    ] = None,
    cascade_timeout: Annotated[
        float, typer.Option("--cascade-timeout", help="Seconds to wait for a parent tier.")
    ] = 2.0,
    power_budget_w: Annotated[
        float | None,
        typer.Option(
            "--power-budget-w",
            help="Watts: each model with variants serves the best variant within it.",
        ),
    ] = None,
    variant_power: Annotated[
        list[str] | None,
        typer.Option(
            "--variant-power",
            help="[MODEL:]VARIANT=WATTS: a device profile's stated figure (a meter's "
            "measurement replaces it while the variant serves).",
        ),
    ] = None,
    power_interval: Annotated[
        float, typer.Option("--power-interval", help="Seconds per power meter reading.")
    ] = 5.0,
    inline_below_ms: Annotated[
        float,
        typer.Option(
            "--inline-below-ms",
            help="Unbatched models faster than this run on the event loop (0: never).",
        ),
    ] = 1.0,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Accept NaN/Inf in float inputs.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the A/B draw for unkeyed requests.")
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            help="MODEL=PATH: the reference profile that model is monitored against "
            "[default: STEM.profile.npz beside the model file, if present].",
        ),
    ] = None,
    monitor_sample_rate: Annotated[
        float,
        typer.Option("--monitor-sample-rate", help="Share of requests the drift monitor sees."),
    ] = 1.0,
    capture: Annotated[
        str | None,
        typer.Option(
            "--capture",
            help="Capture policy: uncertain[:T],margin[:T],drift[:S],random[:P] "
            "(docs/data.md#capture) [off].",
        ),
    ] = None,
    capture_max_bytes: Annotated[
        int, typer.Option("--capture-max-bytes", help="Bytes of captures kept per version.")
    ] = DEFAULT_CAPTURE_BYTES,
    capture_per_class: Annotated[
        int | None,
        typer.Option("--capture-per-class", help="Captured rows per predicted class [no quota]."),
    ] = None,
    capture_out: Annotated[
        Path, typer.Option("--capture-out", help="JSON Lines file the captures are appended to.")
    ] = Path("captures.jsonl"),
    header_timeout_s: Annotated[
        float,
        typer.Option(
            "--header-timeout-s",
            help="Seconds for a request's line and headers to arrive; then 408 and closed.",
        ),
    ] = 10.0,
    body_timeout_s: Annotated[
        float,
        typer.Option(
            "--body-timeout-s", help="Seconds to receive a whole request body; then closed."
        ),
    ] = 60.0,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            help="Open connections; a newcomer closes the longest-idle one, 503 when all are busy.",
        ),
    ] = 1000,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "warning",
    home: Annotated[
        Path | None, typer.Option("--home", help="edgeloop home for registry refs.")
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json (printed once ready)")
    ] = OutputFormat.TABLE,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
) -> None:
    """Serve models over HTTP until interrupted (Ctrl-C or SIGTERM finish requests first).

    The load / unload / power-budget routes are open unless EDGELOOP_SERVE_ADMIN_TOKEN is set
    (16+ characters); then they need ``Authorization: Bearer <token>``.
    """
    from edgeloop.core.errors import ConfigError
    from edgeloop.core.tls import TlsConfig
    from edgeloop.serving.config import ServerConfig
    from edgeloop.serving.connections import ConnectionLimits
    from edgeloop.serving.power import parse_variant_power
    from edgeloop.serving.repository import scan
    from edgeloop.serving.server import run

    if max_body_mb <= 0:
        raise ConfigError(f"--max-body-mb {max_body_mb} must be positive")
    check_port(port)
    tls = TlsConfig(cert=tls_cert, key=tls_key, client_ca=tls_client_ca)
    config = ServerConfig(
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        max_queue=max_queue,
        max_queue_delay_ms=max_queue_delay_ms,
        early_refusal=early_refusal,
        memory_budget_mb=memory_budget_mb,
        threads=threads,
        engine=engine,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        timeout_s=timeout,
        allow_nonfinite=allow_nonfinite,
        inline_below_ms=inline_below_ms,
        seed=seed,
        routing=routing_from_flags(ab or [], shadow or []),
        cascades=cascades_from_flags(cascade or [], cascade_url or []),
        cascade_timeout_s=cascade_timeout,
        power_budget_w=power_budget_w,
        variant_power=tuple(parse_variant_power(text) for text in variant_power or []),
        power_interval_s=power_interval,
        profiles=profiles_from_flags(profile or []),
        monitor_sample_rate=monitor_sample_rate,
        capture=capture_spec(capture, capture_max_bytes, capture_per_class, seed),
        capture_out=capture_out if capture is not None else None,
        connections=ConnectionLimits(
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            max_connections=max_connections,
        ),
    )

    def on_ready(info: ReadyInfo) -> None:
        emit(info.to_dict(), format, lambda console: _render(console, info))

    # Registry refs are linked into a model repository that lives as long as the server
    # (made only when some argument is not a path, so plain files leave nothing behind).
    refs = any(not Path(text).exists() for text in models)
    folder = tempfile.TemporaryDirectory(prefix="edgeloop-serve-refs-") if refs else None
    with folder or contextlib.nullcontext():
        root = Path(folder.name) if folder is not None else Path()
        origins = scan(model_paths(models, home, root), name)
        try:
            run(
                origins,
                config,
                host=host,
                port=port,
                announce=lambda line: err_console.print(line, highlight=False),
                on_ready=on_ready,
                log_level=log_level,
                tls=tls,
            )
        except KeyboardInterrupt:
            err_console.print("stopped")


def model_paths(models: list[str], home: Path | None, root: Path) -> list[Path]:
    """Paths as given; each registry ref linked as ``root/NAME/VERSION/model.<ext>`` and
    served through the model folder ``root/NAME`` (so ``m:1 m:2`` serves both versions of m).

    Raises:
        NotFoundError: neither a path nor a registered model (the message lists what exists).
        ConfigError: a malformed ref, or a version whose format does not run here.
    """
    from edgeloop.core.settings import Settings
    from edgeloop.registry.resolve import checkout, resolve_model

    paths: list[Path] = []
    settings = Settings.load(home)
    for text in models:
        path, version = resolve_model(text, settings)
        if version is not None:
            path = checkout(version, path, root).parent.parent
        if path not in paths:
            paths.append(path)
    return paths


def capture_spec(
    text: str | None, max_bytes: int, per_class: int | None, seed: int | None
) -> CaptureSpec | None:
    """``--capture`` and its bounds as a policy (None: capture off). Raises ConfigError."""
    from edgeloop.serving.capture import CaptureSpec

    if text is None:
        return None
    return CaptureSpec.parse(text, max_bytes=max_bytes, per_class=per_class, seed=seed or 0)


def profiles_from_flags(flags: list[str]) -> dict[str, Path]:
    """``--profile MODEL=PATH`` flags -> the profile file per model.

    Raises:
        ConfigError: a flag without ``=``, a model named twice, or a file that does not exist.
    """
    from edgeloop.core.errors import ConfigError

    profiles: dict[str, Path] = {}
    for text in flags:
        model, sep, path = text.partition("=")
        if not sep or not model or not path:
            raise ConfigError(
                f"--profile {text!r} is not MODEL=PATH",
                hint="e.g. --profile digits=digits.profile.npz",
            )
        if model in profiles:
            raise ConfigError(f"--profile names model {model!r} twice")
        if not Path(path).is_file():
            raise ConfigError(
                f"--profile {text!r}: no file at {path}",
                hint="a reference profile is made at registration (docs/monitoring.md)",
            )
        profiles[model] = Path(path)
    return profiles


def check_port(port: int, flag: str = "--port") -> None:
    """Refuse a port outside TCP's 0-65535 before anything loads (``bind`` raises
    OverflowError, not OSError, for those).

    Raises:
        ConfigError: naming the port and the range.
    """
    from edgeloop.core.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(
            f"{flag} {port} is not a TCP port; expected 0-65535",
            hint=f"pass {flag} 8000, say, or {flag} 0 to pick a free one",
        )


def routing_from_flags(ab: list[str], shadow: list[str]) -> dict[str, Routing]:
    """``--ab`` and ``--shadow`` flags -> routing per model.

    Raises:
        ConfigError: a malformed flag, or a model given twice to the same flag.
    """
    from edgeloop.core.errors import ConfigError
    from edgeloop.serving.routing import Routing, parse_shadow, parse_split

    routing: dict[str, Routing] = {}
    for text in ab:
        model, split = parse_split(text)
        if model in routing and routing[model].split is not None:
            raise ConfigError(f"--ab names model {model!r} twice")
        routing[model] = Routing(split, routing.get(model, Routing()).shadow)
    for text in shadow:
        model, version = parse_shadow(text)
        if routing.get(model, Routing()).shadow is not None:
            raise ConfigError(f"--shadow names model {model!r} twice")
        routing[model] = Routing(routing.get(model, Routing()).split, version)
    return routing


def cascades_from_flags(cascade: list[str], cascade_url: list[str]) -> dict[str, CascadeSpec]:
    """``--cascade`` and ``--cascade-url`` flags -> where each small model's unsure rows go.

    Raises:
        ConfigError: a malformed flag, or a small model given twice.
    """
    from edgeloop.core.errors import ConfigError
    from edgeloop.serving.cascade import parse_cascade, parse_cascade_url

    specs: dict[str, CascadeSpec] = {}
    parsed = [parse_cascade(t) for t in cascade] + [parse_cascade_url(t) for t in cascade_url]
    for small, spec in parsed:
        if small in specs:
            raise ConfigError(
                f"--cascade/--cascade-url name model {small!r} twice",
                hint="a small model escalates to one tier",
            )
        specs[small] = spec
    return specs


def _render(console: Console, info: ReadyInfo) -> None:
    table = Table(title=f"edgeloop serve at {info.url}", title_justify="left")
    for column in ("model", "versions", "serving"):
        table.add_column(column)
    for report in info.models:
        table.add_row(report.model, ", ".join(report.loaded), report.serving or "n/a")
    console.print(table)
    console.print(
        f"pid {info.pid}; idle RSS {na(info.idle_rss_mb, '{:.1f}')} MiB; "
        f"torch imported: {'yes' if info.torch_imported else 'no'}",
        highlight=False,
    )
    console.print(
        f"try: curl -s {info.url}/v2/models/{info.models[0].model}" if info.models else "",
        highlight=False,
    )


if __name__ == "__main__":  # `python -m edgeloop.cli.serve ...`: the same command, same errors
    import sys

    from edgeloop.cli.app import app, main

    app.command("serve")(serve)
    sys.argv.insert(1, "serve")
    main()
