"""LoRA training with kohya sd-scripts: dataset prep, configs, launcher, reports.

Never imports the WebUI or gradio; sd-scripts runs as a subprocess, never imported.
"""

__version__ = "0.1.0"
