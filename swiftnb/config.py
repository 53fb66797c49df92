"""Generation settings, and the one place that turns them into backend sampling parameters.

`GenerationConfig` looks like `transformers.GenerationConfig` (the seed sets
`engine.generation_config.max_new_tokens = 256`), but it validates every
assignment, so `temperature = -1` fails on the line that wrote it, not deep in
the engine. pydantic does the validation; its errors are ValueErrors.
"""
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class GenerationConfig(BaseModel):
    model_config = ConfigDict(validate_assignment=True, extra='forbid')

    max_new_tokens: int = Field(512, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, ge=0.0)
    top_k: int = Field(-1, ge=-1)  # -1 or 0: no top-k
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    n: int = Field(1, ge=1)
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def merged(self, **overrides) -> 'GenerationConfig':
        """A validated copy with some fields replaced (None means: keep this config's value).

        A temperature given without do_sample decides it, as vLLM and the OpenAI API read it:
        above 0 samples, 0 is greedy.
        """
        changes = {k: v for k, v in overrides.items() if v is not None}
        if 'temperature' in changes and 'do_sample' not in changes:
            changes['do_sample'] = changes['temperature'] > 0
        return GenerationConfig(**{**self.model_dump(), **changes})

    @classmethod
    def from_hf(cls, hf_config) -> 'GenerationConfig':
        """Defaults from a model's generation_config.json (a transformers.GenerationConfig)."""
        fields = {}
        for name in ('max_new_tokens', 'do_sample', 'temperature', 'top_k', 'top_p', 'repetition_penalty'):
            value = getattr(hf_config, name, None) if hf_config is not None else None
            if value is not None:
                fields[name] = value
        if fields.get('top_k') == 0:
            fields['top_k'] = -1
        return cls(**fields)


def hf_generation_config(model_dir: str):
    """The model's generation_config.json as transformers reads it (None if it has none)."""
    from transformers import GenerationConfig as HFGenerationConfig
    try:
        return HFGenerationConfig.from_pretrained(model_dir)
    except OSError:
        return None


def stop_list(config: GenerationConfig) -> list[str]:
    if config.stop is None:
        return []
    return [config.stop] if isinstance(config.stop, str) else list(config.stop)


def to_vllm(config: GenerationConfig, max_tokens: int, delta: bool = True):
    """vLLM SamplingParams for one request; `max_tokens` is already fitted to the context."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind
    return SamplingParams(
        n=config.n,
        temperature=0.0 if config.greedy else config.temperature,
        top_k=config.top_k if config.top_k > 0 else 0,
        top_p=config.top_p,
        repetition_penalty=config.repetition_penalty,
        presence_penalty=config.presence_penalty,
        frequency_penalty=config.frequency_penalty,
        seed=config.seed,
        stop=stop_list(config) or None,
        max_tokens=max_tokens,
        logprobs=config.logprobs,
        ignore_eos=config.ignore_eos,
        output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
    )


def to_transformers(config: GenerationConfig, num_prompt_tokens: int):
    """transformers logits processors for one pt-backend request, in the order vLLM applies the same
    settings: penalties, then temperature, top-k, top-p (the warpers only when sampling)."""
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)
    from swiftnb.engine.pt_sampling import OutputPenaltyLogitsProcessor
    processors = LogitsProcessorList()
    if config.repetition_penalty != 1.0:  # vLLM and transformers both count prompt and output tokens here
        processors.append(RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty)))
    if config.presence_penalty or config.frequency_penalty:
        processors.append(OutputPenaltyLogitsProcessor(config.presence_penalty, config.frequency_penalty,
                                                       num_prompt_tokens))
    if not config.greedy:
        if config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k > 0:
            processors.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p))
    return processors


_OPENAI_NAMES = {'max_new_tokens': 'max_tokens'}  # how requests (and the widgets) name a field


def validation_message(error) -> tuple[str, Optional[str]]:
    """('field: problem', field) for the first problem pydantic (or FastAPI) found, in the OpenAI names."""
    first = error.errors()[0]
    names = [str(p) for p in first['loc'] if isinstance(p, str) and p != 'body']
    param = '.'.join(_OPENAI_NAMES.get(n, n) for n in names) or None
    return (f'{param}: {first["msg"]}' if param else first['msg']), param


def describe_error(error: BaseException) -> str:
    """One line for the user: pydantic's several-line report cut to its first problem."""
    return validation_message(error)[0] if isinstance(error, ValidationError) else str(error)
