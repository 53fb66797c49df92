"""swiftnb.widgets: the notebook UI (ipywidgets) over the kernel's engine or any OpenAI-compatible URL.

    from swiftnb.widgets import ChatWidget, CompareWidget
    ChatWidget(engine)                                        # a streaming chat
    CompareWidget(engine, variants=[None, 'kakarot', 'pirate'])  # base vs adapters, side by side
    BlindCompare(engine, variants=[None, 'kakarot'])          # names hidden; votes -> preference data

Installed as `swiftnb.widgets`; the core package never imports it, so `import swiftnb`
works without ipywidgets (`pip install swiftnb[notebook]` brings it).
"""
from swiftnb.widgets.blind import BlindCompare
from swiftnb.widgets.chat import ChatWidget
from swiftnb.widgets.compare import CompareWidget

__all__ = ['BlindCompare', 'ChatWidget', 'CompareWidget']
