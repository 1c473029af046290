"""TEST DOUBLE of modules/script_callbacks.py (A1111 v1.10.1): registering and running callbacks.

The runners (ui_tabs_callback, ...) catch and report each callback's exception exactly as
upstream does, so one broken extension cannot stop the WebUI.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from modules import errors


def report_exception(c, job):
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: any
    name: str = "unnamed"


callback_map = dict(
    callbacks_app_started=[],
    callbacks_ui_tabs=[],
    callbacks_ui_settings=[],
    callbacks_script_unloaded=[],
)


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"
    callback_name = f"{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f"/{name}"
    callbacks.append(ScriptCallback(filename, fun, callback_name))


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def app_started_callback(demo: Any | None, app: Any):
    for c in callback_map["callbacks_app_started"]:
        try:
            c.callback(demo, app)
        except Exception:
            report_exception(c, "app_started_callback")


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception:
            report_exception(c, "ui_tabs_callback")
    return res


def ui_settings_callback():
    for c in callback_map["callbacks_ui_settings"]:
        try:
            c.callback()
        except Exception:
            report_exception(c, "ui_settings_callback")


def script_unloaded_callback():
    for c in reversed(callback_map["callbacks_script_unloaded"]):
        try:
            c.callback()
        except Exception:
            report_exception(c, "script_unloaded")


def on_app_started(callback, *, name=None):
    """register a function to be called when the webui started, the gradio `Block` component and
    fastapi `FastAPI` object are passed as the arguments"""
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_ui_tabs(callback, *, name=None):
    """register a function to be called when the UI is creating new tabs: it returns None or a list
    of (gradio_component, title, elem_id) tuples"""
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name, category="ui_tabs")


def on_ui_settings(callback, *, name=None):
    """register a function to be called before UI settings are populated"""
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_script_unloaded(callback, *, name=None):
    """register a function to be called before the script is unloaded"""
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")
