"""A text box where Enter sends and Shift+Enter starts a new line.

ipywidgets' Textarea cannot tell Enter from Shift+Enter (both only change its
value), so this one small view is our own, written as an anywidget ES module
(no frontend build step). It stops key events from reaching JupyterLab, whose
notebook shortcuts (Shift+Enter runs the cell, `a`/`b`/`d` edit cells) would
otherwise fire while the user types. Every streaming widget has one, so its module also hides the widgets'
static snapshots (StreamingWidget.snapshot_html) wherever the live widgets run.
"""
from typing import Callable

import anywidget
import traitlets

_ESM = """
function render({ model, el }) {
  if (!document.getElementById('swiftnb-static-style')) {  // where the widget runs, its snapshot is not shown
    const style = document.createElement('style');
    style.id = 'swiftnb-static-style';
    style.textContent = '.swiftnb-static { display: none } .jp-OutputArea-child:has(.swiftnb-static) { display: none }';
    document.head.appendChild(style);
  }
  const area = document.createElement('textarea');
  area.className = 'swiftnb-prompt';
  area.rows = 2;
  area.style.cssText = 'width:100%;box-sizing:border-box;font:inherit;padding:4px 6px;resize:vertical';
  area.setAttribute('data-lm-suppress-shortcuts', 'true');
  const sync = () => {
    area.value = model.get('value');
    area.placeholder = model.get('placeholder');
    area.disabled = model.get('disabled');
  };
  sync();
  model.on('change:value', () => { if (area.value !== model.get('value')) area.value = model.get('value'); });
  model.on('change:placeholder', sync);
  model.on('change:disabled', sync);
  area.addEventListener('input', () => { model.set('value', area.value); model.save_changes(); });
  area.addEventListener('keydown', (event) => {
    event.stopPropagation();
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      model.send({ event: 'submit', value: area.value });
    }
  });
  el.appendChild(area);
}
export default { render };
"""


class PromptBox(anywidget.AnyWidget):
    _esm = _ESM
    value = traitlets.Unicode('').tag(sync=True)
    placeholder = traitlets.Unicode('').tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

    def on_submit(self, callback: Callable[[str], None]) -> None:
        """Call `callback(text)` when the user presses Enter (without Shift)."""
        def handle(_, content, buffers):
            if isinstance(content, dict) and content.get('event') == 'submit':
                self.value = content.get('value', self.value)
                callback(self.value)
        self.on_msg(handle)
