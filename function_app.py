"""Azure Functions entry: composes the app. No logic here (see handlers/).

The worker imports this module to index the functions before any runs, so it loads only what decides
whether the service can start: its settings and, in cloud=azure, the policy and its tenant
(`engine.policy.startup_check`). A deployment that fails them fails the indexing, so no function runs
and no message is taken from its queue. The container, the HTTP app (FastAPI and most models) and the
handlers are built on first use (handlers/lazy.py), or by the warm-up trigger when scale-out adds the
instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.functions as func
from azure.functions.warmup import WarmUpContext

from handlers.lazy import Lazy, LazyAsgi
from models.settings import Settings

if TYPE_CHECKING:
    from composition import Container
    from engine.policy import Startup
    from handlers.lazy import AsgiApp


SETTINGS = Settings()
STARTUP: Startup | None = None
if SETTINGS.cloud == "azure":
    from engine.policy import startup_check

    STARTUP = startup_check(SETTINGS)


def _build_container() -> Container:
    from composition import Container

    # What the import checked, not read a second time (a policy file changed since would differ from it); on
    # the emulator nothing was read, and the container reads the policy on first use.
    return Container(
        SETTINGS,
        policy=STARTUP.policy if STARTUP else None,
        auth_settings=STARTUP.auth_settings if STARTUP else None,
    )


_container = Lazy(_build_container)


def _build_api() -> AsgiApp:
    from handlers.api import create_api

    return create_api(_container.get)


_api = LazyAsgi(_build_api)
# Anonymous at the Functions level: App Service Authentication (infra/modules/functionapp.bicep) answers
# 401 to callers without an Entra token, and chat requests carry their platforms' signatures. No key.
app = func.AsgiFunctionApp(app=_api, http_auth_level=func.AuthLevel.ANONYMOUS)


def __getattr__(name: str) -> Any:
    # `function_app.container`: the one container, built on first use (the tests and tools reach it this way).
    if name == "container":
        return _container.get()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@app.function_name("warmup")
@app.warm_up_trigger(arg_name="warmup")
def warmup(warmup: WarmUpContext) -> None:
    """Build the container, the HTTP app and intake when scale-out adds this instance, before it takes traffic.

    Not the step SDKs: the HTTP path never imports azure.ai.ml (DESIGN section 6), and an instance that runs
    steps meets them at its first step, as it would after a restart (the trigger runs on scale-out only).
    """
    _api.app.get()
    _container.get().warm(steps=False)


@app.function_name("onboarding")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%OnboardingQueueName%", connection="ServiceBusConnection")
def onboarding(msg: func.ServiceBusMessage) -> None:
    """Turn an onboarding message into workspace requests."""
    from handlers import functions

    functions.onboarding_message(msg, _container.get())


@app.function_name("steps")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%StepsQueueName%", connection="ServiceBusConnection")
def steps(msg: func.ServiceBusMessage) -> None:
    """Run one provisioning step."""
    from handlers import functions

    functions.step_message(msg, _container.get())


@app.function_name("notifications")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%NotificationsQueueName%", connection="ServiceBusConnection")
def notifications(msg: func.ServiceBusMessage) -> None:
    """Post a finished request's result to its callback URL."""
    from handlers import functions

    functions.notification_message(msg, _container.get())


@app.function_name("deadletters")
@app.timer_trigger(arg_name="timer", schedule="%DeadLetterSchedule%", run_on_startup=False)
def deadletters(timer: func.TimerRequest) -> None:
    """Record what dead-lettered messages mean, so none is a silent grave."""
    from handlers import functions

    functions.dead_letters(timer, _container.get())


@app.function_name("lifecycle")
@app.timer_trigger(arg_name="timer", schedule="%LifecycleSchedule%", run_on_startup=False)
def lifecycle(timer: func.TimerRequest) -> None:
    """Remind of coming expiries, tear down expired workspaces, and look for drift."""
    from handlers import functions

    functions.lifecycle(timer, _container.get())


@app.function_name("sweeper")
@app.timer_trigger(arg_name="timer", schedule="%SweepSchedule%", run_on_startup=False)
def sweeper(timer: func.TimerRequest) -> None:
    """Repair what crashes and lost messages left behind."""
    from handlers import functions

    functions.sweep(timer, _container.get())
