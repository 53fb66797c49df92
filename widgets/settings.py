"""The generation settings a widget shows (temperature, max tokens, seed) and the ones it keeps.

A blank field means the model's default. Settings not shown (top_p, top_k, stop, ...)
come from the widget's keyword arguments; all of them become the client layer's
XRequestConfig, which both sources take.
"""
from dataclasses import fields
from typing import Callable, Optional

import ipywidgets as widgets

from swiftnb.client import XRequestConfig

_SHOWN = {'temperature': float, 'max_tokens': int, 'seed': int}
_KNOWN = {f.name for f in fields(XRequestConfig)} - {'stream', 'n', 'logprobs', 'top_logprobs'}


class SettingsBar:
    def __init__(self, **generation):
        unknown = set(generation) - _KNOWN
        if unknown:
            raise TypeError(f'unknown generation setting(s) {", ".join(sorted(unknown))}; '
                            f'known: {", ".join(sorted(_KNOWN))}')
        self.hidden = {k: v for k, v in generation.items() if k not in _SHOWN}
        self.fields = {name: widgets.Text(value='' if generation.get(name) is None else str(generation[name]),
                                          placeholder='default', description=name.replace('_', ' '),
                                          layout=widgets.Layout(width='170px'),
                                          style={'description_width': 'initial'})
                       for name in _SHOWN}
        self.box = widgets.HBox(list(self.fields.values()))

    def request_config(self) -> XRequestConfig:
        """The settings as they stand; a field that is not a number raises ValueError naming it."""
        return XRequestConfig(**self.hidden, **{name: _parse(name, self.fields[name].value) for name in _SHOWN})


def _parse(name: str, text: str) -> Optional[float]:
    kind: Callable = _SHOWN[name]
    if not text.strip():
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f'{name.replace("_", " ")}: {text!r} is not {"an integer" if kind is int else "a number"}') \
            from None
