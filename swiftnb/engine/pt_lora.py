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
        except Exception as error:  # whatever peft raises for a bad adapter (OSError, ValueError, TypeError, ...)
            self._forget(name)
            raise AdapterError(f'peft cannot load the adapter at {lora.lora_path!r}: {error}') from error
        self.model.eval()
        return name

    def _forget(self, name: str) -> None:
        """Take out what a load that failed left: peft puts an adapter's layers into the model before it loads the
        weights, and leaves them there when that fails (for the first adapter, in the plain model itself): every
        later adapter then held them too, and was refused for it."""
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTunerLayer
        if isinstance(self.model, PeftModel):  # a later adapter: peft registered it, and deletes it as any other
            if name in self.model.peft_config:
                self._delete(name)
            # where peft failed half-way through putting the layers in (a rank of 0 for one module), it took the
            # adapter's config out again and left the layers it had made
            for module in self.model.modules():
                if isinstance(module, BaseTunerLayer):
                    module.delete_adapter(name)
            return
        # the plain model: no tuner layer belongs in it
        _unwrap(self.model, lambda child: child.get_base_layer() if isinstance(child, BaseTunerLayer) else None)
        if hasattr(self.model, 'peft_config'):
            del self.model.peft_config

    def load_checked(self, lora: LoRARequest) -> None:
        """Load `lora` and prove that it applies as saved, or refuse it: the weights peft now holds for it are the
        file's, all of them and nothing else (peft leaves a tensor whose name it does not expect unused, and a
        module it expected at its initial value, which is no adapter at all), and a forward pass with it runs (a
        string lora_alpha fails only there)."""
        import torch
        from peft import get_peft_model_state_dict
        from peft.utils import load_peft_weights
        from peft.utils.constants import EMBEDDING_LAYER_NAMES
        name = self.name(lora)
        try:
            saved = load_peft_weights(lora.lora_path, device='cpu')
            # Whole embedding layers are in the file where training resized the vocabulary: then they are compared
            # too. Told, not guessed: peft's 'auto' asks the Hub for the base model's config (and warns in the cell
            # where it cannot reach it).
            held = get_peft_model_state_dict(self.model, adapter_name=name, save_embedding_layers=False)
            if any(any(layer in key for layer in EMBEDDING_LAYER_NAMES) for key in set(saved) - set(held)):
                held = get_peft_model_state_dict(self.model, adapter_name=name, save_embedding_layers=True)
            problem = _difference(saved, held)
            if problem is None:
                device = next(self.model.parameters()).device
                one = torch.ones((1, 1), dtype=torch.long, device=device)
                with torch.inference_mode():
                    self.forward([name], input_ids=one, attention_mask=one)
        except Exception as error:
            problem = f'a forward pass with it fails ({type(error).__name__}: {error})'
        if problem is not None:
            self.unload(lora)
            raise AdapterError(f'the adapter at {lora.lora_path!r} does not apply as saved: {problem}')

    def unload(self, lora: LoRARequest) -> None:
        """Free an adapter's weights (the caller makes sure no running row uses it)."""
        name = self._names.pop(lora, None)
        if name is None:
            return
        if self._names:
            self._delete(name)
        else:  # the last one: back to the plain model, as a PeftModel left with no adapter breaks in
            self.model = self.model.unload()  # forward (it looks the deleted adapter's config up)

    def _delete(self, name: str) -> None:
        """One adapter out of the PeftModel, the others kept. peft wraps a module that an adapter trains whole
        (`modules_to_save`, e.g. lm_head) and keeps the wrapper when the adapter goes; one with no adapter left
        sends every later adapter's rows to a copy it does not have (KeyError of the adapter's name: after a refused
        adapter that named lm_head, every pt adapter was refused), so the wrapped module goes back in its place."""
        from peft.utils.other import AuxiliaryTrainingWrapper
        with warnings.catch_warnings():  # rows pick their adapters; peft's "active" one is not used
            warnings.filterwarnings('ignore', message='Adapter .* was active which is now deleted')
            self.model.delete_adapter(name)
        _unwrap(self.model, lambda child: child.original_module  # `_adapters`: peft's set of the wrapper's adapters
                if isinstance(child, AuxiliaryTrainingWrapper) and not child._adapters else None)

    def forward(self, names: list[str], **inputs):
        if self._names:
            return self.model(**inputs, adapter_names=names)
        return self.model(**inputs)


def _unwrap(model, inner) -> None:
    """Each module of `model` for which `inner(module)` gives a module is replaced by that one, in its parent."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            replacement = inner(child)
            if replacement is not None:
                setattr(parent, child_name, replacement)


def _difference(saved: dict, held: dict):
    """What differs between an adapter's file and the weights peft holds for it (both in the file's names); None
    where they are the same."""
    unused, unloaded = sorted(set(saved) - set(held)), sorted(set(held) - set(saved))
    if unused:
        return f'{len(unused)} of its tensors are not used ({unused[0]}, ...: not a name peft expects here)'
    if unloaded:
        return f'{len(unloaded)} of the weights peft made for it are not in its file ({unloaded[0]}, ...)'
    changed = [key for key in saved if not (held[key].cpu() == saved[key].to(held[key].dtype)).all()]
    if changed:
        return f'{changed[0]} does not hold the saved values'
    return None
