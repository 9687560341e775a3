"""Stand-in for `modules.script_callbacks`: callbacks are recorded, never run automatically."""

callbacks_ui_settings = []
callbacks_app_started = []


def on_ui_settings(callback, *, name=None):
    callbacks_ui_settings.append(callback)


def on_app_started(callback, *, name=None):
    callbacks_app_started.append(callback)
