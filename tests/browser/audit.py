"""What every page of the web app must be, checked on the real page in the browser.

Reusable by any walk (plain Python, Playwright's sync API; no pytest here):

    from audit import Audit
    audit = Audit(out_dir)                       # screenshots go to out_dir
    audit.page(page, "customer-mypage")          # at 360, 1200 and 1920 pixels
    audit.page(page, "courier", widths=(1200,))  # or at the widths you name
    assert not audit.problems, audit.report()

``page()`` resizes the window to each width and checks, there:

- **fit** (SPEC §7): no visible element reaches beyond the right edge (or
  left of the left one), by its bounding box, and the document does not
  scroll sideways (``document.scrollingElement.scrollWidth <= innerWidth``);
- **accessibility**: axe-core, the pinned copy that ``ops/axe.sh`` installs
  into tests/browser/node_modules, finds no violation (every rule axe runs by
  default, WCAG 2.x A and AA and its best practices), at the widths of
  ``axe_widths`` (one each side of the stylesheet's breakpoint);
- and keeps a full-page screenshot, ``<name>-<width>.png``, for a person to look at;
- once more in the dark colour scheme: colour contrast, and a screenshot.

It gathers every problem instead of stopping at the first, so one run shows
all that is wrong; the walk decides when to fail.
"""
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AXE_JS = os.path.join(HERE, "node_modules", "axe-core", "axe.min.js")
WIDTHS = (360, 1200, 1920)
# axe-core looks at the DOM and the styles that apply, which change only at
# style.css's breakpoint (720 px): 1200 and 1920 give the same answers, so
# axe runs at one width on each side of it. Add a width here with a new breakpoint.
AXE_WIDTHS = (360, 1200)
HEIGHT = 900
# Elements narrower or lower than this are not looked at: the 1-pixel boxes
# of content hidden for sight but read out to screen readers.
MIN_BOX = 2
TOLERANCE = 0.5  # sub-pixel rounding

# Every visible element whose box leaves the window sideways; and how wide the document is.
GEOMETRY_JS = """
({minBox, tolerance}) => {
  const width = window.innerWidth;
  const describe = (el) => {
    let text = el.tagName.toLowerCase();
    if (el.id) text += "#" + el.id;
    else if (el.classList.length) text += "." + [...el.classList].join(".");
    const parent = el.closest("[id]:not(#" + CSS.escape(el.id || "none") + ")");
    return parent && parent !== el ? `${text} in #${parent.id}` : text;
  };
  // Text cut off by a box of its own that stays on screen (hidden for sight
  // but read out, or an ellipsis) is not beyond the edge.
  const clipped = (el, width) => {
    for (let node = el; node && node !== document.body; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (["hidden", "clip"].includes(style.overflowX) || (style.clip && style.clip !== "auto")) {
        const box = node.getBoundingClientRect();
        return box.right <= width + tolerance && box.left >= -tolerance;
      }
    }
    return false;
  };
  const outside = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width < minBox || box.height < minBox) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "contents") continue;
    if (box.right > width + tolerance || box.left < -tolerance) {
      // One line per culprit: skip an element whose parent is already out.
      const parent = el.parentElement && el.parentElement.getBoundingClientRect();
      if (parent && (parent.right > width + tolerance || parent.left < -tolerance)) continue;
      outside.push({ element: describe(el), left: Math.round(box.left), right: Math.round(box.right),
                     text: (el.innerText || el.value || "").trim().slice(0, 40) });
    }
  }
  // Text that overflows its own box (a long word) is not in any element's
  // box: look at the text itself.
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.data.trim() || !node.parentElement) continue;
    range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    if (box.width < minBox || box.height < minBox) continue;
    if (getComputedStyle(node.parentElement).visibility === "hidden") continue;
    if ((box.right > width + tolerance || box.left < -tolerance) && !clipped(node.parentElement, width)) {
      outside.push({ element: "text in " + describe(node.parentElement), left: Math.round(box.left),
                     right: Math.round(box.right), text: node.data.trim().slice(0, 40) });
    }
  }
  const scroller = document.scrollingElement || document.documentElement;
  return { innerWidth: width, scrollWidth: scroller.scrollWidth, outside: outside.slice(0, 20),
           count: outside.length };
}
"""

AXE_RUN_JS = """
async (options) => {
  const result = await axe.run(document, options);
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => ({ target: n.target.join(" "), summary: n.failureSummary })),
  }));
}
"""


def axe_source():
    """The pinned axe-core, or None when ``ops/axe.sh`` has not installed it."""
    if not os.path.exists(AXE_JS):
        return None
    with open(AXE_JS, encoding="utf-8") as handle:
        return handle.read()


class Audit:
    def __init__(self, out_dir, axe=True):
        self.out = out_dir
        self.problems = []  # one readable line each
        self.checked = []  # (name, width) of every page looked at
        self.seconds = {"fit": 0.0, "axe": 0.0, "screenshot": 0.0}  # where the time went
        self._axe = axe_source() if axe else None
        if axe and self._axe is None:
            raise RuntimeError(f"axe-core is not installed at {AXE_JS}: run ops/axe.sh (make axe)")

    # -- single checks: usable alone ---------------------------------------

    def fits(self, page, name):
        """Problems with where things are at the page's current width."""
        found = page.evaluate(GEOMETRY_JS, {"minBox": MIN_BOX, "tolerance": TOLERANCE})
        problems = []
        if found["scrollWidth"] > found["innerWidth"]:
            problems.append(f"{name}: scrolls sideways ({found['scrollWidth']} px wide in a "
                            f"{found['innerWidth']} px window)")
        for box in found["outside"]:
            problems.append(f"{name}: {box['element']} spans x={box['left']}..{box['right']} "
                            f"beyond the {found['innerWidth']} px window ({box['text']!r})")
        if found["count"] > len(found["outside"]):
            problems.append(f"{name}: ... and {found['count'] - len(found['outside'])} more elements beyond the edge")
        return problems

    def accessible(self, page, name, rules=None):
        """axe-core's violations on the page as it is now, one line each."""
        if self._axe is None:
            return []
        # Evaluated through the DevTools protocol, not as a <script>: the page's
        # CSP (script-src 'self') stays on and still refuses any inline script.
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            page.evaluate(self._axe)
        options = {"resultTypes": ["violations"]}
        if rules:
            options["runOnly"] = {"type": "rule", "values": list(rules)}
        violations = page.evaluate(AXE_RUN_JS, options)
        return [f"{name}: axe {v['impact']} {v['id']} ({v['help']}) at "
                + "; ".join(f"{n['target']}" for n in v["nodes"])
                + (f" — {v['nodes'][0]['summary']}" if v["nodes"] else "")
                for v in violations]

    def shot(self, page, name):
        path = os.path.join(self.out, f"{name}.png")
        page.screenshot(path=path, full_page=True)
        return path

    # -- all of them, at every width ---------------------------------------

    def page(self, page, name, widths=WIDTHS, settle=None, dark=True, axe_widths=AXE_WIDTHS):
        """Fit, accessibility and a screenshot at each width; the window is
        left at the width it had. ``settle(page)`` runs after each resize
        (e.g. wait for a list to load); by default, two animation frames.
        With ``dark``, the page is also looked at in the dark colour scheme
        (style.css follows prefers-color-scheme) at the widest width up to
        1200: axe-core's colour contrast, and a screenshot ``<name>-<width>-dark.png``."""
        before = page.viewport_size
        found = []
        if dark:
            width = max([w for w in widths if w <= 1200] or [min(widths)])
            page.set_viewport_size({"width": width, "height": HEIGHT})
            page.emulate_media(color_scheme="dark")
            try:
                (settle or _two_frames)(page)
                label = f"{name}-{width}-dark"
                found += self.accessible(page, label, rules=["color-contrast", "link-in-text-block"])
                self.shot(page, label)
            finally:
                page.emulate_media(color_scheme="light")
        for width in widths:
            page.set_viewport_size({"width": width, "height": HEIGHT})
            (settle or _two_frames)(page)
            label = f"{name}-{width}"
            for kind, check in (("fit", self.fits), ("axe", self.accessible), ("screenshot", self.shot)):
                if kind == "axe" and width not in axe_widths and len(widths) > 1:
                    continue
                started = time.perf_counter()
                answer = check(page, label)
                self.seconds[kind] += time.perf_counter() - started
                if kind != "screenshot":
                    found += answer
            self.checked.append((name, width))
        if before:
            page.set_viewport_size(before)
        self.problems += found
        return found

    def report(self):
        return json.dumps(self.problems, indent=1, ensure_ascii=False)


def _two_frames(page):
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


# -- the keyboard ------------------------------------------------------------

FOCUS_JS = """
() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  const ring = (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2) || style.boxShadow !== "none";
  let name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "");
  const action = el.getAttribute("data-action");
  if (action) name += `[data-action=${action}]`;
  return {
    element: name,
    text: (el.innerText || el.value || el.getAttribute("aria-label") || "").trim().slice(0, 60),
    focusVisible: el.matches(":focus-visible"),
    ring,
    onScreen: box.width > 0 && box.height > 0 && box.bottom > 0 && box.top < innerHeight
      && box.right > 0 && box.left < innerWidth,
  };
}
"""


def focused(page):
    """What has the keyboard focus, and whether a person can see it:
    ``{"element", "text", "focusVisible", "ring", "onScreen"}`` or None (nothing: the page itself)."""
    return page.evaluate(FOCUS_JS)


def focus_problem(where):
    """Why the focus ``where`` (from focused()) cannot be seen, or None."""
    if where is None:
        return "the focus fell back to the page itself"
    if not (where["focusVisible"] and where["ring"]):
        return f"no visible focus indicator on {where['element']} ({where['text']!r})"
    if not where["onScreen"]:
        return f"the focused {where['element']} ({where['text']!r}) is not on screen"
    return None


def tab_to(page, selector, limit=60, backwards=False):
    """Press Tab (or Shift+Tab) until the element matching ``selector`` has
    the focus, checking at every stop that the focus can be seen. Returns the
    number of presses; raises AssertionError when it is not reached in ``limit``
    presses or the focus is ever invisible."""
    key = "Shift+Tab" if backwards else "Tab"
    for presses in range(1, limit + 1):
        page.keyboard.press(key)
        where = focused(page)
        problem = focus_problem(where)
        assert problem is None, f"after {presses} x {key} towards {selector}: {problem}"
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return presses
    raise AssertionError(f"{selector} not reached with {limit} presses of {key}")
