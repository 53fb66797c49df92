"""Generation settings, declared once: `GenerationConfig`.

One pydantic model holds every setting that shapes an answer, in the names of OpenAI's API and
vLLM (max_tokens, temperature, top_p, ..., response_format, structured_outputs); the seed's
transformers names work too (`max_new_tokens`, `do_sample`). The same class is

- the engine's defaults, `engine.generation_config`, read from the model's generation_config.json;
- what a call sets on top of them: a dict given to `inference_vllm`, the client's `XRequestConfig`,
  the pt server's request bodies, the widgets' settings bar, the CLI and magic flags (all built
  from the fields below). `settings.apply(defaults)` keeps the defaults for every field the call did
  not give, as vLLM's `request.to_sampling_params(defaults)` does; pydantic's `model_fields_set`
  tells "not given" from "given as None".

The sampling rule, the same at every door: a temperature above 0 samples and 0 is greedy, as in
OpenAI's API and vLLM, unless `do_sample=False` is given, which is greedy whatever the
temperature (a warning names the contradiction when both are given). A model whose
generation_config.json says `"do_sample": false` gets temperature 0 as its default, so it answers
greedily until a temperature is given, as transformers reads that file.

Every value is checked where it is set (`config.temperature = -1` fails on that line) and a bad one
raises SettingsError with one line: `temperature: Input should be ... (got -1)`.
"""
import json
import re
import typing
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from swiftnb.errors import SettingsError

INT64 = 2 ** 63
NULLABLE = {'max_tokens', 'max_new_tokens', 'do_sample', 'seed', 'stop', 'top_logprobs', 'prompt_logprobs',
            'response_format', 'structured_outputs'}
MAX_N = 16384  # vLLM's default VLLM_MAX_N_SEQUENCES


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`."""
    model_config = ConfigDict(extra='ignore', populate_by_name=True)
    name: str = 'response'
    description: Optional[str] = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias='schema')
    strict: Optional[bool] = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: plain text, any JSON object, or JSON that follows a schema."""
    model_config = ConfigDict(extra='forbid')
    type: Literal['text', 'json_object', 'json_schema']
    json_schema: Optional[JsonSchemaFormat] = None

    @model_validator(mode='after')
    def _schema_given(self):
        if self.type == 'json_schema':
            if self.json_schema is None:
                raise ValueError("type 'json_schema' needs a json_schema: {'name': ..., 'schema': {...}}")
            _check_grammar(StructuredOutputs.model_construct(json_schema=self.json_schema.json_schema))
        return self


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: the answer must match exactly one of these."""
    model_config = ConfigDict(extra='forbid', populate_by_name=True)
    json_schema: Optional[Union[dict[str, Any], str]] = Field(None, alias='json')
    regex: Optional[str] = None
    choice: Optional[list[str]] = Field(None, min_length=1)
    grammar: Optional[str] = None
    json_object: Optional[bool] = None

    @model_validator(mode='after')
    def _one_constraint(self):
        given = [name for name, value in self.constraints().items() if value not in (None, False)]
        if len(given) != 1:
            raise ValueError(f'give exactly one of json, regex, choice, grammar, json_object (got '
                             f'{", ".join(given) or "none"})')
        _check_grammar(self)
        return self

    def constraints(self) -> dict:
        return {'json': self.json_schema, 'regex': self.regex, 'choice': self.choice, 'grammar': self.grammar,
                'json_object': self.json_object}

    def to_vllm_dict(self) -> dict:
        """The fields of vLLM's StructuredOutputsParams."""
        return {name: value for name, value in self.constraints().items() if value not in (None, False)}


def _check_grammar(structured: StructuredOutputs) -> None:
    """Refuse a schema, regex or grammar that cannot be compiled, where it is given (xgrammar is the
    grammar library vLLM uses; here it only parses, no tokenizer needed)."""
    try:
        import xgrammar
    except ImportError:  # without xgrammar the backend reports it when the request runs
        return
    try:
        if structured.json_schema is not None:
            schema = structured.json_schema
            xgrammar.Grammar.from_json_schema(schema if isinstance(schema, str) else json.dumps(schema))
        elif structured.regex is not None:
            xgrammar.Grammar.from_regex(structured.regex)
        elif structured.grammar is not None:
            xgrammar.Grammar.from_ebnf(structured.grammar)
    except Exception as error:  # xgrammar raises RuntimeError/ValueError: '[time] file.cc:line: message'
        message = re.sub(r'^\[[\d:]+\] \S+:\d+: ', '', str(error).strip().splitlines()[0])
        raise ValueError(f'not a valid constraint: {message}') from None


class GenerationConfig(BaseModel):
    """Generation settings. `GenerationConfig(temperature=0.7, max_tokens=64)`; `max_new_tokens` and
    `do_sample` (the seed's transformers names) work too."""
    model_config = ConfigDict(validate_assignment=True, extra='forbid', populate_by_name=True)

    max_tokens: Optional[int] = Field(
        None, ge=1, validation_alias=AliasChoices('max_tokens', 'max_new_tokens'),
        description='most tokens to generate (default: what the model and context allow)')
    do_sample: Optional[bool] = Field(
        None, description='False: greedy whatever the temperature (default: the temperature decides)')
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False, description='0 is greedy; above 0 samples')
    top_p: float = Field(1.0, gt=0.0, le=1.0, description='nucleus sampling: keep the most likely tokens up to p')
    top_k: int = Field(-1, ge=-1, description='keep the k most likely tokens (-1 or 0: all)')
    repetition_penalty: float = Field(1.0, gt=0.0, allow_inf_nan=False,
                                      description='above 1 discourages tokens already in prompt or answer')
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: Optional[int] = Field(None, ge=-INT64, lt=INT64, description='sampling seed: the same seed, the same answer')
    stop: Optional[Union[str, list[str]]] = Field(None, description='strings that end the answer (not included)')
    n: int = Field(1, ge=1, le=MAX_N, description='answers per prompt')
    logprobs: bool = Field(False, description='return the log-probability of each generated token')
    top_logprobs: Optional[int] = Field(None, ge=0, le=20, description='and of the k most likely tokens at each step')
    prompt_logprobs: Optional[int] = Field(None, ge=0, le=20, description="the prompt tokens' log-probabilities too")
    ignore_eos: bool = Field(False, description='keep generating after the end-of-sequence token')
    response_format: Optional[ResponseFormat] = Field(None, description="OpenAI's: {'type': 'json_object'} ...")
    structured_outputs: Optional[StructuredOutputs] = Field(
        None, description="vLLM's: {'json': schema} | {'regex': ...} | {'choice': [...]} | {'grammar': ...}")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise SettingsError(*describe(error)) from None

    def __setattr__(self, name, value):
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise SettingsError(*describe(error)) from None

    @property
    def max_new_tokens(self) -> Optional[int]:
        """The seed's (transformers') name for max_tokens."""
        return self.max_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, value: Optional[int]) -> None:
        try:
            self.max_tokens = value
        except SettingsError as error:  # named as the caller named it
            raise SettingsError(str(error).replace('max_tokens', 'max_new_tokens', 1), 'max_new_tokens') from None

    @model_validator(mode='before')
    @classmethod
    def _none_is_not_given(cls, data):
        """`temperature: null` means the default, as OpenAI's API and vLLM read it; None stays a value only
        where it says something (no seed, no stop strings, no limit on max_tokens, no constraint)."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if v is not None or k in NULLABLE or k not in cls.model_fields}
        return data

    @model_validator(mode='after')
    def _check(self):
        if self.stop is not None and not all(self.stop if isinstance(self.stop, list) else [self.stop]):
            raise ValueError('stop: a stop string cannot be empty')
        if self.top_logprobs is not None and not self.logprobs:  # vLLM's rule, at every door
            raise ValueError('top_logprobs: only with logprobs=true')
        given = self.model_fields_set
        if self.do_sample is False and 'do_sample' in given and 'temperature' in given and self.temperature > 0:
            warnings.warn(f'do_sample=False with temperature={self.temperature}: the answer is greedy and the '
                          'temperature is ignored; leave do_sample out to sample', UserWarning, stacklevel=4)
        return self

    @property
    def greedy(self) -> bool:
        return self.do_sample is False or self.temperature == 0

    @property
    def structured(self) -> Optional[StructuredOutputs]:
        """The constraint the answer must follow, from response_format or structured_outputs (response_format
        wins, as in vLLM)."""
        rf = self.response_format
        if rf is None or rf.type == 'text':
            return self.structured_outputs
        if rf.type == 'json_object':  # (checked when response_format was set)
            return StructuredOutputs.model_construct(json_object=True)
        return StructuredOutputs.model_construct(json_schema=rf.json_schema.json_schema)

    @property
    def num_logprobs(self) -> Optional[int]:
        """vLLM's `logprobs`: None for none, k for the chosen token and the k most likely ones."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def given(self) -> dict:
        """The settings this object was given (at construction or by assignment), by name."""
        return {name: getattr(self, name) for name in GenerationConfig.model_fields if name in self.model_fields_set}

    def apply(self, defaults: 'GenerationConfig') -> 'GenerationConfig':
        """`defaults` with the settings given here on top; a temperature given without do_sample decides."""
        given = self.given()
        if 'temperature' in given and 'do_sample' not in given:
            given['do_sample'] = None
        return GenerationConfig.model_construct(
            _fields_set=defaults.model_fields_set | set(given),
            **{**{name: getattr(defaults, name) for name in GenerationConfig.model_fields}, **given})

    @classmethod
    def from_model(cls, model_dir: Union[str, Path]) -> 'GenerationConfig':
        """The defaults a model's generation_config.json declares (vLLM reads the same fields)."""
        path = Path(model_dir) / 'generation_config.json'
        hf = json.loads(path.read_text()) if path.is_file() else {}
        return cls.from_hf(hf)

    @classmethod
    def from_hf(cls, hf) -> 'GenerationConfig':
        """From a transformers GenerationConfig or its dict: temperature, top_p, top_k, repetition_penalty,
        max_new_tokens, and `do_sample: false` read as temperature 0."""
        if hf is None:
            hf = {}
        elif not isinstance(hf, dict):  # a transformers GenerationConfig: do_sample False is its default
            hf = {**hf.to_diff_dict(), 'do_sample': hf.do_sample}
        fields = {name: hf[name] for name in ('max_new_tokens', 'temperature', 'top_p', 'top_k', 'repetition_penalty')
                  if hf.get(name) is not None}
        if fields.get('top_k') == 0:
            fields['top_k'] = -1
        if hf.get('do_sample') is False:
            fields['temperature'] = 0.0
        return cls(**fields)


class XRequestConfig(GenerationConfig):
    """The seed's client settings, `XRequestConfig(stream=True, seed=42)`: the generation settings plus
    `stream`. Only what is given is sent."""
    stream: bool = False

    def request_fields(self) -> tuple[dict, dict]:
        """(OpenAI fields, vLLM's extra fields) of what was given, for the openai SDK's create call."""
        given = self.given()
        if given.pop('do_sample', None) is False:  # servers know no do_sample: greedy is temperature 0
            given['temperature'] = 0.0
        if 'max_tokens' in given and given['max_tokens'] is None:
            del given['max_tokens']
        for name in ('response_format', 'structured_outputs'):
            if given.get(name) is not None:
                given[name] = given[name].model_dump(by_alias=True, exclude_none=True)
        extra = {name: given.pop(name) for name in VLLM_EXTRA if name in given}
        if 'stream' in self.model_fields_set:
            given['stream'] = self.stream
        return given, extra


SERVED_DEFAULTS = ('max_tokens', 'do_sample', 'temperature', 'top_p', 'top_k', 'repetition_penalty',
                   'presence_penalty', 'frequency_penalty')
"""What a server takes from `engine.generation_config` as each request's defaults: the fields vLLM's server
reads from a model's generation_config.json (a seed or stop list set there stays a Python-API default)."""


def served_defaults(config: GenerationConfig) -> GenerationConfig:
    return GenerationConfig.model_construct(_fields_set=config.model_fields_set & set(SERVED_DEFAULTS),
                                            **{name: getattr(config, name) for name in SERVED_DEFAULTS})


VLLM_EXTRA = ('top_k', 'repetition_penalty', 'ignore_eos', 'prompt_logprobs', 'structured_outputs')
"""Fields that OpenAI's API does not define and vLLM's server reads (the SDK sends them in extra_body)."""


def describe(error: ValidationError) -> tuple[str, Optional[str]]:
    """('field: problem (got value)', field) for the first problem pydantic (or FastAPI) found."""
    first = error.errors()[0]
    # loc holds field names, list indexes, 'body' (FastAPI) and union members' tags ("literal['a','b']")
    names = [p for p in first['loc'] if isinstance(p, str) and p != 'body' and '[' not in p]
    param = '.'.join(names) or None
    message = first['msg'].removeprefix('Value error, ')
    if first.get('type') not in ('missing', 'extra_forbidden', 'value_error', 'json_invalid') and 'input' in first:
        shown = repr(first['input'])
        message += f' (got {shown if len(shown) <= 40 else shown[:37] + "..."})'
    return (f'{param}: {message}' if param else message), param


def describe_error(error: BaseException) -> str:
    """One line for the user: pydantic's several-line report cut to its first problem."""
    return describe(error)[0] if isinstance(error, ValidationError) else str(error)


# -- flags: the CLI's and the magics' generation flags, built from the fields above --------------

def _flag_type(name: str):
    annotation = GenerationConfig.model_fields[name].annotation
    for kind in (int, float):
        if annotation is kind or kind in typing.get_args(annotation):
            return kind
    return str


def add_flags(parser, names=('max_tokens', 'temperature', 'top_p', 'top_k', 'repetition_penalty', 'seed')) -> None:
    """--NAME flags for these settings; `--max_new_tokens` is the seed's spelling of --max_tokens."""
    group = parser.add_argument_group("generation (default: the model's generation_config.json)")
    for name in names:
        spellings = [f'--{name}'] + (['--max_new_tokens'] if name == 'max_tokens' else [])
        group.add_argument(*spellings, dest=name, type=_flag_type(name),
                           help=GenerationConfig.model_fields[name].description)


def from_flags(args, names=tuple(GenerationConfig.model_fields)) -> GenerationConfig:
    """The settings among `names` that were given on the command line (argparse leaves the others None)."""
    return GenerationConfig(**{name: value for name in names if (value := getattr(args, name, None)) is not None})
