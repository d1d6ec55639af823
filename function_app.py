"""Azure Functions entry: composes the app. No logic here (see handlers/)."""

from __future__ import annotations

import azure.functions as func

from composition import Container
from handlers import functions
from handlers.api import create_api
from models.settings import Settings

container = Container(Settings())
# Anonymous at the Functions level: App Service Authentication (infra/modules/functionapp.bicep) answers
# 401 to callers without an Entra token, and chat requests carry their platforms' signatures. No key.
app = func.AsgiFunctionApp(app=create_api(lambda: container), http_auth_level=func.AuthLevel.ANONYMOUS)


@app.function_name("onboarding")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%OnboardingQueueName%", connection="ServiceBusConnection")
def onboarding(msg: func.ServiceBusMessage) -> None:
    """Turn an onboarding message into workspace requests."""
    functions.onboarding_message(msg, container)


@app.function_name("steps")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%StepsQueueName%", connection="ServiceBusConnection")
def steps(msg: func.ServiceBusMessage) -> None:
    """Run one provisioning step."""
    functions.step_message(msg, container)


@app.function_name("notifications")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%NotificationsQueueName%", connection="ServiceBusConnection")
def notifications(msg: func.ServiceBusMessage) -> None:
    """Post a finished request's result to its callback URL."""
    functions.notification_message(msg, container)


@app.function_name("deadletters")
@app.timer_trigger(arg_name="timer", schedule="%DeadLetterSchedule%", run_on_startup=False)
def deadletters(timer: func.TimerRequest) -> None:
    """Record what dead-lettered messages mean, so none is a silent grave."""
    functions.dead_letters(timer, container)


@app.function_name("lifecycle")
@app.timer_trigger(arg_name="timer", schedule="%LifecycleSchedule%", run_on_startup=False)
def lifecycle(timer: func.TimerRequest) -> None:
    """Remind of coming expiries, tear down expired workspaces, and look for drift."""
    functions.lifecycle(timer, container)


@app.function_name("sweeper")
@app.timer_trigger(arg_name="timer", schedule="%SweepSchedule%", run_on_startup=False)
def sweeper(timer: func.TimerRequest) -> None:
    """Repair what crashes and lost messages left behind."""
    functions.sweep(timer, container)
