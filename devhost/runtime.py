"""The embedded runtime: the ARM emulator, queue workers, the sweeper and the API, in one process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from composition import Container
from devhost.workers import QueueWorkers
from emulator.faults import Scenario, load_scenario
from emulator.server import EmulatorServer
from emulator.state import Config
from engine.ports import ReceivedMessage
from engine.redelivery import RetryPolicy
from handlers.queues import notification_received, onboarding_received, step_received
from models.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything the devhost runs besides the HTTP server."""

    settings: Settings
    container: Container
    emulator: EmulatorServer | None
    workers: list[QueueWorkers] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sweeper: threading.Thread | None = None

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        """Start the emulator (when the cloud is the emulator), the workers and the sweeper."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        emulator = None
        # VENDING_EMULATOR_URL (with VENDING_EMULATOR_CA_BUNDLE) names an emulator already running, in a
        # process of its own (the benchmarks measure the service's CPU apart from the cloud's that way).
        if settings.cloud == "emulator" and settings.emulator_url is None:
            scenario = load_scenario(settings.emulator_faults) if settings.emulator_faults else Scenario()
            emulator = EmulatorServer(
                data_dir=settings.data_dir,
                port=settings.emulator_port,
                config=Config(
                    latency_s=settings.emulator_latency_s,
                    quota={r.lower(): q for r, q in scenario.quota.items()},
                    unregistered=[n.lower() for n in scenario.unregistered],
                ),
                faults=scenario.faults,
            ).start()
            update: dict[str, object] = {"emulator_url": emulator.url, "emulator_ca_bundle": emulator.ca_bundle}
            if "poll_s" not in settings.model_fields_set:
                # Look again about when the emulator will be done, not Azure's five seconds.
                update["poll_s"] = max(0.2, settings.emulator_latency_s / 2)
            settings = settings.model_copy(update=update)
        container = Container(settings)
        container.telemetry  # noqa: B018 - before anything logs: filters, and the exporters when configured
        container.store  # noqa: B018 - a store that cannot be reached stops the start with its reason
        rt = cls(settings=settings, container=container, emulator=emulator)
        if settings.workers == 0:
            log.warning(
                "VENDING_WORKERS=0: this process takes requests but runs no step; a devhost with workers on the same "
                "data directory (%s) must run them",
                settings.data_dir,
            )
        rt.workers = queue_workers(container)
        for w in rt.workers:
            w.start()
        rt._sweeper = threading.Thread(target=rt._sweep_loop, name="sweeper", daemon=True)
        rt._sweeper.start()
        threading.Thread(target=rt._lifecycle_loop, name="lifecycle", daemon=True).start()
        # Load the Azure SDKs now, off the request path, so the first step does not pay for the import,
        # and build intake's ARM reader, so the first submission does not either.
        threading.Thread(target=lambda: _warm(container), name="warm-up", daemon=True).start()
        return rt

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                repaired = self.container.engine.sweep()
                if repaired:
                    log.warning("sweeper repaired %d steps or requests", repaired)
                recorded = self.container.deadletters.process()
                if recorded:
                    log.warning("recorded %d dead-lettered messages", recorded)
            except Exception:
                log.exception("sweep failed")

    def _lifecycle_loop(self) -> None:
        while not self._stop.wait(self.settings.lifecycle_interval_s):
            c = self.container
            for tick in (c.approvals.expire_due, c.lifecycle.expire_due, c.lifecycle.check_drift):
                try:
                    tick()
                except Exception:
                    log.exception("lifecycle timer failed")

    def stop(self) -> None:
        """Stop workers, sweeper and emulator."""
        self._stop.set()
        for w in self.workers:
            w.stop()
        if self.emulator:
            self.emulator.stop()
        self.container.telemetry.flush()


def queue_workers(container: Container) -> list[QueueWorkers]:
    """Build (not start) the workers of the three queues, each settling as `handlers.queues.settle_for` says."""
    settings = container.settings
    retry = RetryPolicy.from_settings(settings)

    def workers(queue: str, threads: int, received: Callable[[ReceivedMessage, Container], object]) -> QueueWorkers:
        return QueueWorkers(
            bus=container.bus,
            queue=queue,
            handle=lambda m: received(m, container),
            threads=threads,
            name=queue,
            retry=retry,
            clock=container.clock,
        )

    return [
        workers(settings.steps_queue, settings.workers, step_received),
        workers(settings.notifications_queue, 2, notification_received),
        workers(settings.onboarding_queue, 2, onboarding_received),
    ]


def _warm(container: Container) -> None:
    """Build intake with its ARM reader, and where steps run the provider and the SDKs they use, off the request path.

    A failure here is logged and left to the first request or step, which meets it again and says so.
    """
    try:
        # An intake-only process runs no step: azure.ai.ml's 1-2 s are not its.
        container.warm(steps=container.settings.workers > 0)
    except Exception:
        log.exception("warming up failed; the first request or step will build what is missing")
