"""The generation settings a widget shows (temperature, max tokens, seed) and the ones it keeps.

A blank field means the model's default. Settings not shown (top_p, top_k, stop, ...) come from
the widget's keyword arguments. All of them are swiftnb's one settings model (XRequestConfig,
GenerationConfig's fields), which checks them the same way every door does.
"""
import ipywidgets as widgets

from swiftnb.errors import UsageError
from swiftnb.settings import GenerationConfig, XRequestConfig

SHOWN = ('temperature', 'max_tokens', 'seed')


class SettingsBar:
    def __init__(self, **generation):
        unknown = set(generation) - set(GenerationConfig.model_fields)
        if unknown:
            raise UsageError(f'unknown generation setting(s) {", ".join(sorted(unknown))}; '
                             f'known: {", ".join(GenerationConfig.model_fields)}')
        self.hidden = {k: v for k, v in generation.items() if k not in SHOWN and v is not None}
        XRequestConfig(**self.hidden)  # checked now, not at the first Send
        self.fields = {name: widgets.Text(value='' if generation.get(name) is None else str(generation[name]),
                                          placeholder='default', description=name.replace('_', ' '),
                                          layout=widgets.Layout(width='170px'),
                                          style={'description_width': 'initial'})
                       for name in SHOWN}
        self.box = widgets.HBox(list(self.fields.values()))

    def request_config(self) -> XRequestConfig:
        """The settings as they stand (blank fields not given); a bad field raises SettingsError naming it."""
        shown = {name: field.value.strip() for name, field in self.fields.items() if field.value.strip()}
        return XRequestConfig(**self.hidden, **shown)
