# Test double of kohya sd-scripts' `library` package. Upstream's library/__init__.py is empty:
# sd-scripts keeps no version string in its files (the launcher reads `git describe` and probes
# the sources instead), and this double does the same.
