"""Telemetry for Azure Monitor: custom events, metrics, one trace per request, logs correlated and redacted.

With `APPLICATIONINSIGHTS_CONNECTION_STRING` set, `configure` sets up OpenTelemetry through
`azure-monitor-opentelemetry` and:

- every status event (DESIGN §8) becomes an Application Insights custom event with its dimensions
  (`TelemetryEventSink`, fed by the same `EventFanout` as the local sinks);
- metrics: request and step durations (histograms), step outcomes and retries (counters), and the
  time a step's message waited between being due and being started (histogram);
- each door (HTTP, queue message, chat command) opens a span or continues the caller's
  `traceparent`; the trace context rides in every step message and each step's work is a span
  under it, so a request's whole provisioning is one operation in Application Insights;
- log records carry the request id they were written for, and every log record, span attribute
  and event has its secrets masked (`models/redact.py`).

Without the setting nothing is exported and no OpenTelemetry SDK is imported; the trace context
is still made up at the door and carried, so logs and messages correlate the same way. Telemetry
never blocks or fails provisioning: exporters run on their own threads, and an exporter that
cannot reach its endpoint is reported once.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from models.events import EventName, StatusEvent
from models.redact import redact, register

if TYPE_CHECKING:
    from models.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = "workspace-vending"
CUSTOM_EVENT_NAME = "microsoft.custom_event.name"  # what the Azure Monitor log exporter turns into a custom event
_REQUEST_ID: ContextVar[str | None] = ContextVar("vending_request_id", default=None)
_configured: dict[str, Telemetry] = {}  # one per process, under "telemetry"
_configure_lock = threading.Lock()
SpanKind = Literal["server", "consumer", "producer", "internal"]
TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def new_traceparent() -> str:
    """Start a W3C trace context: a new trace id and span id, sampled."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current_request_id() -> str | None:
    """Return the request being worked on in this context, if any."""
    return _REQUEST_ID.get()


# ----- logs ---------------------------------------------------------------------------------------


_FORMATTER = logging.Formatter()


def _mask(record: logging.LogRecord) -> None:
    """Mask secrets in a record's text and traceback, before any handler formats it."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is left as it is
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact(_FORMATTER.formatException(record.exc_info))


class _CorrelatingFilter(logging.Filter):
    """Stamp a record with the request id being worked on, for handlers that export structured logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = _REQUEST_ID.get()
            if request_id:
                record.request_id = request_id
        return True


_FILTER = _CorrelatingFilter()


def install_log_filters(*handlers: logging.Handler) -> None:
    """Mask secrets in every log record as it is made; stamp records with the request id on these handlers.

    Without handlers given, the request id goes on every root handler (the console, the exporter).
    """
    current = logging.getLogRecordFactory()
    if not getattr(current, "masks_secrets", False):

        def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = current(*args, **kwargs)
            _mask(record)
            return record

        make.masks_secrets = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(make)
    for handler in handlers or tuple(logging.getLogger().handlers):
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


class _ExportFailuresOnce(logging.Filter):
    """Let the exporter's first failure through, reworded; count and drop the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self._reported = False
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        with self._lock:
            if self._reported:
                self.dropped += 1
                return False
            self._reported = True
        cause = redact(record.getMessage())[:300]
        record.msg = (
            "telemetry export to Azure Monitor failed (%s); provisioning goes on, telemetry is lost until the "
            "endpoint answers again. Reported once."
        )
        record.args = (cause,)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


EXPORT_FAILURES = _ExportFailuresOnce()


# ----- spans --------------------------------------------------------------------------------------


@dataclass
class SpanHandle:
    """A door's or a step's span: its trace context to pass on, and a way to add attributes."""

    traceparent: str
    span: Any = None

    def set(self, **attributes: str | int | float | bool | None) -> None:
        """Add attributes (namespaced `vending.`); secrets in text values are masked."""
        if self.span is None:
            return
        for key, value in attributes.items():
            if value is not None:
                self.span.set_attribute(f"vending.{key}", redact(value) if isinstance(value, str) else value)

    def set_standard(self, attributes: dict[str, str | int | float | bool]) -> None:
        """Add attributes under their standard (semantic convention) names, e.g. `http.route`."""
        if self.span is not None:
            for key, value in attributes.items():
                self.span.set_attribute(key, redact(value) if isinstance(value, str) else value)


def _format_traceparent(context: Any) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def redacting_span_processor() -> Any:
    """Build a span processor that masks secrets in span attributes as spans start (client spans carry URLs)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class RedactingSpanProcessor(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for key, value in dict(span.attributes or {}).items():
                if isinstance(value, str):
                    clean = redact(value)
                    if clean != value:
                        span.set_attribute(key, clean)

    return RedactingSpanProcessor()


# ----- the service's telemetry ----------------------------------------------------------------------


@dataclass
class Telemetry:
    """Spans for doors and steps; `enabled` when exporting to Azure Monitor."""

    enabled: bool = False
    _tracer: Any = None
    _providers: list[Any] = field(default_factory=list)

    @contextmanager
    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
        request_id: str | None = None,
        attributes: dict[str, str | int | float | bool | None] | None = None,
    ) -> Iterator[SpanHandle]:
        """Run a block in a span under `parent` (a traceparent) or the current span; mark errors.

        The request id is set for the block, so log records written in it carry it.
        """
        token = _REQUEST_ID.set(request_id) if request_id else None
        try:
            if not self.enabled:
                yield SpanHandle(traceparent=parent or new_traceparent())
                return
            from opentelemetry import trace
            from opentelemetry.trace import SpanKind as OtelKind
            from opentelemetry.trace import Status, StatusCode
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            context = None
            if parent and not trace.get_current_span().get_span_context().is_valid:
                context = TraceContextTextMapPropagator().extract({"traceparent": parent})
            kinds = {
                "server": OtelKind.SERVER,
                "consumer": OtelKind.CONSUMER,
                "producer": OtelKind.PRODUCER,
                "internal": OtelKind.INTERNAL,
            }
            with self._tracer.start_as_current_span(
                name, context=context, kind=kinds[kind], record_exception=False, set_status_on_exception=False
            ) as span:
                handle = SpanHandle(traceparent=_format_traceparent(span.get_span_context()), span=span)
                handle.set(request_id=request_id, **(attributes or {}))
                try:
                    yield handle
                except BaseException as exc:
                    span.set_status(Status(StatusCode.ERROR, redact(f"{type(exc).__name__}: {exc}")[:500]))
                    raise
        finally:
            if token is not None:
                _REQUEST_ID.reset(token)

    def current_traceparent(self, fallback: str | None = None) -> str:
        """Return the traceparent of the current span, else `fallback`, else a new trace."""
        if self.enabled:
            from opentelemetry import trace

            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                return _format_traceparent(context)
        return fallback or new_traceparent()

    def flush(self, timeout_s: float = 10.0) -> None:
        """Export what is buffered (at shutdown)."""
        for provider in self._providers:
            try:
                provider.force_flush(int(timeout_s * 1000))
            except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
                log.warning("telemetry flush failed: %s", exc)


def entra_credential(authentication: str | None) -> Any:
    """Return the credential `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` asks for, or None for key-based ingestion.

    The value is `Authorization=AAD` with an optional `ClientId=<user-assigned identity>`, as the
    Functions host reads it; Application Insights with local authentication off accepts only this.
    """
    parts = dict(p.split("=", 1) for p in (authentication or "").split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from cloud.credentials import azure_credential

    return azure_credential(parts.get("ClientId") or None)


def configure(settings: Settings) -> Telemetry:
    """Set up logging filters and, with a connection string, OpenTelemetry to Azure Monitor (once per process)."""
    install_log_filters()
    with _configure_lock:
        if "telemetry" in _configured:
            return _configured["telemetry"]
        secret = settings.applicationinsights_connection_string
        if secret is None:
            _configured["telemetry"] = Telemetry()
            return _configured["telemetry"]
        connection_string = secret.get_secret_value()
        register(connection_string)
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry import metrics, trace
        from opentelemetry._logs import get_logger_provider
        from opentelemetry.sdk.resources import Resource

        for name in ("azure.monitor.opentelemetry.exporter.export._base",):
            logging.getLogger(name).addFilter(EXPORT_FAILURES)
        configure_azure_monitor(
            connection_string=connection_string,
            credential=entra_credential(settings.applicationinsights_authentication_string),
            logger_name="",
            resource=Resource.create({"service.name": SERVICE_NAME, "service.namespace": "vending"}),
            sampling_ratio=settings.telemetry_sampling_ratio,
            enable_live_metrics=settings.telemetry_live_metrics,
            enable_performance_counters=False,
            span_processors=[redacting_span_processor()],
            # FastAPI opens the HTTP door's span itself and the queue doors open theirs (handlers/).
            # Outgoing HTTP (ARM, Tables, callbacks) is traced as dependencies by the requests, urllib3
            # and httpx instrumentations; Azure SDK spans are off, since they would add an "exception"
            # for every expected 404 of a reconcile's existence check.
            instrumentation_options={
                "azure_sdk": {"enabled": False},
                "fastapi": {"enabled": False},
                "flask": {"enabled": False},
                "django": {"enabled": False},
                "psycopg2": {"enabled": False},
            },
        )
        install_log_filters()  # the OpenTelemetry handler was just added to the root logger
        for handler in logging.getLogger().handlers:
            if type(handler).__name__ == "LoggingHandler":
                # Status events go as custom events; their console lines would only repeat them.
                handler.addFilter(lambda record: record.name != "vending.events")
        telemetry = Telemetry(
            enabled=True,
            _tracer=trace.get_tracer("vending"),
            _providers=[trace.get_tracer_provider(), metrics.get_meter_provider(), get_logger_provider()],
        )
        _configured["telemetry"] = telemetry
        log.info("telemetry goes to Azure Monitor (sampling %s)", settings.telemetry_sampling_ratio)
        return telemetry


# ----- events and metrics ---------------------------------------------------------------------------

_OUTCOMES = {
    EventName.STEP_SUCCEEDED: "succeeded",
    EventName.STEP_FAILED: "failed",
    EventName.STEP_WAITING: "waiting",
    EventName.STEP_RETRYING: "retrying",
}


class TelemetryEventSink:
    """Status events as Application Insights custom events, and the metrics they imply."""

    def __init__(self) -> None:
        from opentelemetry import metrics
        from opentelemetry._logs import get_logger_provider
        from opentelemetry.instrumentation.logging.handler import LoggingHandler

        self._handler = LoggingHandler(logger_provider=get_logger_provider())
        meter = metrics.get_meter("vending")
        self.request_duration = meter.create_histogram(
            "vending.request.duration", unit="ms", description="From accepted to provisioned or failed."
        )
        self.step_duration = meter.create_histogram(
            "vending.step.duration", unit="ms", description="From a step's first start to its end, by kind."
        )
        self.step_outcomes = meter.create_counter("vending.step.outcomes", description="Step outcomes by kind.")
        self.step_retries = meter.create_counter("vending.step.retries", description="Retries by kind and error code.")
        self.queue_latency = meter.create_histogram(
            "vending.step.queue_latency", unit="ms", description="From a step message being due to its start."
        )

    def emit(self, event: StatusEvent) -> None:
        """Send one custom event and record its metrics."""
        dimensions = {
            # `message` is a reserved log record attribute: the sentence travels as `detail`.
            ("detail" if key == "message" else key): value
            for key, value in event.model_dump(mode="json", exclude={"name", "time"}).items()
            if value is not None and value != ""
        }
        record = logging.LogRecord(
            name="vending.events",
            level=logging.INFO,
            pathname=__file__,
            lineno=0,
            msg=event.name.value,
            args=None,
            exc_info=None,
        )
        record.__dict__.update(dimensions)
        record.__dict__[CUSTOM_EVENT_NAME] = event.name.value
        self._handler.handle(record)
        self._measure(event)

    def _measure(self, event: StatusEvent) -> None:
        kind = event.kind or ""
        if event.name in _OUTCOMES:
            self.step_outcomes.add(1, {"kind": kind, "outcome": _OUTCOMES[event.name]})
        if event.name == EventName.STEP_RETRYING:
            self.step_retries.add(1, {"kind": kind, "error_code": event.error_code or ""})
        if event.duration_ms is None:
            return
        if event.name == EventName.STEP_STARTED:
            self.queue_latency.record(event.duration_ms, {"kind": kind})
        elif event.name in (EventName.STEP_SUCCEEDED, EventName.STEP_FAILED):
            self.step_duration.record(event.duration_ms, {"kind": kind, "outcome": _OUTCOMES[event.name]})
        elif event.name in (EventName.PROVISIONED, EventName.PROVISIONING_FAILED):
            status = "succeeded" if event.name == EventName.PROVISIONED else "failed"
            self.request_duration.record(
                event.duration_ms, {"team": event.team, "environment": event.environment, "status": status}
            )
