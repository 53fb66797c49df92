"""A strip that turns key presses into votes, for BlindCompare: A, B, ... the better answer, T a tie, N none good.

Keys count only while the strip has focus (click it once; it keeps focus from vote to vote), and it keeps them
from JupyterLab, whose command-mode shortcuts (`a`, `b`: insert a cell) would fire otherwise. ipywidgets has no
view that reports key presses, so this one is our own, an anywidget ES module as the prompt box is.
"""
from typing import Callable

import anywidget
import traitlets

_ESM = """
function render({ model, el }) {
  const strip = document.createElement('div');
  strip.className = 'swiftnb-vote-keys';
  strip.tabIndex = 0;
  strip.setAttribute('data-lm-suppress-shortcuts', 'true');
  strip.style.cssText = 'padding:4px 8px;margin:4px 0;border:1px dashed #888;border-radius:4px;cursor:pointer';
  const sync = () => { strip.textContent = model.get('label'); };
  sync();
  model.on('change:label', sync);
  strip.addEventListener('focus', () => { strip.style.borderStyle = 'solid'; });
  strip.addEventListener('blur', () => { strip.style.borderStyle = 'dashed'; });
  strip.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.key.length !== 1) return;
    event.stopPropagation();
    event.preventDefault();
    model.send({ event: 'key', key: event.key.toUpperCase() });
  });
  el.appendChild(strip);
}
export default { render };
"""


class VoteKeys(anywidget.AnyWidget):
    _esm = _ESM
    label = traitlets.Unicode('').tag(sync=True)

    def on_key(self, callback: Callable[[str], None]) -> None:
        """Call `callback(key)`, the key upper-cased, for each key pressed while the strip has focus."""
        def handle(_, content, buffers):
            if isinstance(content, dict) and content.get('event') == 'key':
                callback(str(content.get('key', '')))
        self.on_msg(handle)
