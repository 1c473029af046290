// Video Stylize tab helpers, loaded by the WebUI with its other javascript/ files.
// - Ctrl+Enter (Cmd+Enter) in the tab clicks Render. The WebUI's own Ctrl+Enter handler looks
//   for txt2img-style Generate/Interrupt buttons, which this tab does not have, so this one runs
//   first (capture phase) and stops the key there.
// - The "Latest frames" gallery keeps its newest frame (the last one) in view as frames arrive,
//   unless the user has scrolled back to look at older ones.
(function() {
    "use strict";

    function root() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function vidstyleTab() {
        var tab = root().querySelector("#tab_vidstyle");
        // The WebUI hides inactive tabs with display: none.
        return tab && tab.offsetParent !== null ? tab : null;
    }

    function onKeyDown(event) {
        var isEnter = event.key === "Enter" || event.keyCode === 13;
        if (!isEnter || !(event.ctrlKey || event.metaKey)) {
            return;
        }
        var tab = vidstyleTab();
        if (!tab) {
            return;
        }
        var button = tab.querySelector("#vidstyle_render");
        if (!button || button.disabled) {
            return;
        }
        button.click();
        event.preventDefault();
        event.stopPropagation();
    }

    function scroller(gallery) {
        // gradio 3.41 and 4.x both wrap the thumbnails in .grid-wrap, the element that scrolls.
        return gallery.querySelector(".grid-wrap") || gallery;
    }

    function atEnd(element) {
        return element.scrollHeight - element.scrollTop - element.clientHeight < 8 &&
            element.scrollWidth - element.scrollLeft - element.clientWidth < 8;
    }

    function followNewest(gallery) {
        var following = true;
        gallery.addEventListener("scroll", function() {
            following = atEnd(scroller(gallery));
        }, true);
        new MutationObserver(function() {
            if (!following) {
                return;
            }
            var element = scroller(gallery);
            element.scrollTop = element.scrollHeight;
            element.scrollLeft = element.scrollWidth;
        }).observe(gallery, {childList: true, subtree: true});
    }

    function setUp() {
        var gallery = root().querySelector("#vidstyle_gallery");
        if (gallery && !gallery.dataset.vidstyleFollow) {
            gallery.dataset.vidstyleFollow = "1";
            followNewest(gallery);
        }
    }

    window.addEventListener("keydown", onKeyDown, true);
    if (typeof onUiLoaded === "function") {
        onUiLoaded(setUp);
    } else {
        document.addEventListener("DOMContentLoaded", setUp);
    }
}());
