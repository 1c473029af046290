"""TEST DOUBLE of modules/scripts.py (A1111 v1.10.1): Script, ScriptRunner and the img2img runner.

ScriptRunner keeps upstream's argument layout (slot 0 = selectable script index, each
script owning `p.script_args[args_from:args_to]`), its hooks run every always-on script
that overrides the hook (reporting, not raising, a script's exception), and
setup_scrips() skips `setup_for_ui_only` scripts for API requests (`is_ui=False`).
`scripts_img2img` starts empty; tests fill it like the WebUI's UI build does.
"""

from __future__ import annotations

from modules import errors

AlwaysVisible = object()


class _Control:
    """Test hook: stands in for a gradio component in ScriptRunner.inputs (only `.value` is read)."""

    def __init__(self, value):
        self.value = value


class Script:
    name = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    setup_for_ui_only = False
    controls = None

    def title(self):
        """this function should return the title of the script."""
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass


class ScriptBuiltinUI(Script):
    setup_for_ui_only = True

    def show(self, is_img2img):
        return AlwaysVisible


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.titles = []
        self.inputs = [None]

    def _add(self, script, is_img2img=True):
        """Test hook doing what initialize_scripts() + setup_ui() do for one script."""
        script.is_img2img = is_img2img
        script.alwayson = script.show(is_img2img) is AlwaysVisible
        self.scripts.append(script)
        (self.alwayson_scripts if script.alwayson else self.selectable_scripts).append(script)
        script.args_from = len(self.inputs)
        controls = script.ui(is_img2img) or []
        script.controls = controls
        self.inputs += list(controls)
        script.args_to = len(self.inputs)
        return script

    def _each(self, method_name):
        return [
            s
            for s in self.alwayson_scripts
            if getattr(s.__class__, method_name, None) is not getattr(Script, method_name, None)
        ]

    def before_process(self, p):
        for script in self._each("before_process"):
            try:
                script.before_process(p, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running before_process: {script.filename}", exc_info=True)

    def process(self, p):
        for script in self._each("process"):
            try:
                script.process(p, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running process: {script.filename}", exc_info=True)

    def process_batch(self, p, **kwargs):
        for script in self._each("process_batch"):
            try:
                script.process_batch(p, *p.script_args[script.args_from : script.args_to], **kwargs)
            except Exception:
                errors.report(f"Error running process_batch: {script.filename}", exc_info=True)

    def postprocess(self, p, processed):
        for script in self._each("postprocess"):
            try:
                script.postprocess(p, processed, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running postprocess: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        for script in self._each("setup"):
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script.setup(p, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)


scripts_txt2img: ScriptRunner = ScriptRunner()
scripts_img2img: ScriptRunner = ScriptRunner()
