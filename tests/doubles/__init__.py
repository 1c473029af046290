"""Test doubles of programs the tests cannot run (a Stable Diffusion WebUI, ...).

Each double follows the upstream formats exactly and says so in its name: it is never the
real program, only a stand-in that answers like it.
"""
