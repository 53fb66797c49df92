"""swiftnb.widgets: the notebook UI (ipywidgets) over the kernel's engine or any OpenAI-compatible URL.

    from swiftnb.widgets import ChatWidget, CompareWidget
    ChatWidget(engine)                                        # a streaming chat
    CompareWidget(engine, variants=[None, 'kakarot', 'pirate'])  # base vs adapters, side by side

Installed as `swiftnb.widgets`; the core package never imports it, so `import swiftnb`
works without ipywidgets (`pip install swiftnb[notebook]` brings it).
"""
from swiftnb.widgets.chat import ChatWidget
from swiftnb.widgets.compare import CompareWidget

__all__ = ['ChatWidget', 'CompareWidget']
