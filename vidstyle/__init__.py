"""Vidstyle: 3D/MMD render -> anime-styled video with SD img2img + LoRA + ControlNet.

The engine package. It never imports the WebUI (`modules`) or gradio; heavy optional
libraries (torch, diffusers) are imported only by the backend that needs them.
"""

__version__ = "0.1.0"
