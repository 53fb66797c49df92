"""peft LoRA adapters on one transformers model, several at once, chosen per row of a batch.

peft does the work: the first adapter wraps the model in a PeftModel, later ones
are added to it in place (no reload of the model), and `adapter_names` in the
forward call applies each row's own adapter ('__base__': none) in one pass.
Only the pt engine's batch thread calls this, between forward passes.
"""
import itertools
import warnings
from typing import Optional

from swiftnb.engine.base import LoRARequest
from swiftnb.errors import AdapterError

BASE = '__base__'  # peft's name for "no adapter" in adapter_names


class PeftAdapters:
    def __init__(self, model):
        self.model = model  # becomes a peft.PeftModel when the first adapter loads
        self._names: dict[LoRARequest, str] = {}
        # peft keeps adapters in a torch ModuleDict, whose keys cannot hold the dots of a path or name.
        self._counter = itertools.count()

    def name(self, lora: Optional[LoRARequest]) -> str:
        """peft's name for the adapter, loading it on first use."""
        if lora is None:
            return BASE
        if lora not in self._names:
            self._names[lora] = self._load(lora)
        return self._names[lora]

    def _load(self, lora: LoRARequest) -> str:
        from peft import PeftModel
        name = f'lora_{next(self._counter)}'
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(lora.lora_path, adapter_name=name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, lora.lora_path, adapter_name=name)
        except (OSError, ValueError, RuntimeError, KeyError) as error:  # peft's own errors for a bad adapter
            raise AdapterError(f'could not load adapter {lora.lora_name!r} from {lora.lora_path!r}: {error}') from error
        self.model.eval()
        return name

    def unload(self, lora: LoRARequest) -> None:
        """Free an adapter's weights (the caller makes sure no running row uses it)."""
        name = self._names.pop(lora, None)
        if name is None:
            return
        if self._names:
            with warnings.catch_warnings():  # rows pick their adapters; peft's "active" one is not used
                warnings.filterwarnings('ignore', message='Adapter .* was active which is now deleted')
                self.model.delete_adapter(name)
        else:  # the last one: back to the plain model, as a PeftModel left with no adapter breaks in
            self.model = self.model.unload()  # forward (it looks the deleted adapter's config up)

    def forward(self, names: list[str], **inputs):
        if self._names:
            return self.model(**inputs, adapter_names=names)
        return self.model(**inputs)
