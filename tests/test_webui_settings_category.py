"""Settings > Video Stylize sits under a category, not "Uncategorized" (issue 9 item 6).

A1111 1.7+ files each settings section under a category (`OptionInfo.category_id`,
registered ids in modules/shared_options.py); the page heads sections without one
"Uncategorized". Older WebUIs have no categories: there the settings must still register.
Uses the WebUI doubles of tests/test_webui_glue.py.
"""

from __future__ import annotations

import json

import pytest
from test_webui_glue import WebUI, doubles, webui  # noqa: F401  (fixtures)


def _categories_of(section_label: str) -> list:
    from modules import shared

    pairs = json.loads(shared.opts.dumpjson())["_categories"]
    return [category for section, category in pairs if section == section_label]


def test_settings_section_is_filed_under_stable_diffusion(webui: WebUI) -> None:  # noqa: F811
    pytest.importorskip("gradio")
    from modules import script_callbacks, shared

    glue = webui.load_glue()
    script_callbacks.ui_settings_callback()
    ours = [info for key, info in shared.opts.data_labels.items() if key.startswith("vidstyle_")]
    assert ours and {info.category_id for info in ours} == {"sd"}
    assert {info.section for info in ours} == {glue.SECTION}  # still (id, label): what every WebUI reads
    # The settings page puts a category heading above the first section of each category:
    # ours is not the first "Stable Diffusion" section, so it gets no heading of its own.
    assert _categories_of("Video Stylize") == []
    assert "Uncategorized" not in [category for _, category in json.loads(shared.opts.dumpjson())["_categories"]]


class OptionInfoBeforeCategories:
    """TEST DOUBLE of modules/shared.py OptionInfo in A1111 v1.6.0: no `category_id` parameter."""

    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label, url):
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label, js_func):
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self):
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


def test_settings_register_on_a_webui_without_categories(webui: WebUI, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    pytest.importorskip("gradio")
    from modules import script_callbacks, shared

    monkeypatch.setattr(shared, "OptionInfo", OptionInfoBeforeCategories)
    webui.load_glue()
    script_callbacks.ui_settings_callback()
    ours = {key: info for key, info in shared.opts.data_labels.items() if key.startswith("vidstyle_")}
    core = {"vidstyle_output_dir", "vidstyle_default_preset", "vidstyle_gallery_size", "vidstyle_keep_intermediate"}
    assert core <= set(ours) and all(isinstance(info, OptionInfoBeforeCategories) for info in ours.values())
    assert shared.opts.vidstyle_default_preset == "anime-canny-sd15"
