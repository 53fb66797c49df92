"""swiftnb: vLLM inference acceleration and deployment, made for notebooks.

The seed's names work as they are; porting from ms-swift is a change of import:

    from swiftnb import (ModelType, get_vllm_engine, get_default_template_type,
                         get_template, inference_vllm, inference_stream_vllm)

Importing swiftnb does not import vLLM; the first engine does. `get_pt_engine` (or
`get_engine(infer_backend='pt')`) gives the transformers + peft backend, which
every function here takes as well.

ms-swift 3.x/4.x's API is here too, as `swift` and `swift.infer_engine` have it (swiftnb.infer_engine):

    from swiftnb import InferRequest, RequestConfig, TransformersEngine, VllmEngine
"""
__version__ = '0.1.0'

from swiftnb.client import (get_model_list_client, get_model_list_client_async, inference_client,
                            inference_client_async)
from swiftnb.divergence import divergence
from swiftnb.engine import Delta, Engine, LoRARequest, check_adapter, get_engine, get_pt_engine, get_vllm_engine
from swiftnb.errors import (AdapterError, EngineAsleepError, EngineClosedError, EngineStartError, ModelNotFoundError,
                            PromptTooLongError, SettingsError, SwiftnbError, UnknownModelError, UsageError)
from swiftnb.infer_engine import (AdapterRequest, BaseArguments, InferEngine, InferRequest, InferStats, PtEngine,
                                  RequestConfig, TransformersEngine, VllmEngine)
from swiftnb.infer import (inference_stream_vllm, inference_stream_vllm_async, inference_vllm,
                           inference_vllm_async)
from swiftnb.logs import show_vllm_logs
from swiftnb.model_types import DEMO_ADAPTERS, DEMO_MODEL_DIR, ModelType, get_default_template_type
from swiftnb.parity import check_parity
from swiftnb.quant_report import quant_report
from swiftnb.quantization import quantize
from swiftnb.server import BackgroundServer, serve
from swiftnb.settings import GenerationConfig, XRequestConfig
from swiftnb.template import Template, get_template
from swiftnb.engine.interrupts import wake_the_kernel_on_interrupt as _wake_the_kernel_on_interrupt
from swiftnb.tracebacks import install as _install_short_tracebacks

__all__ = [
    'AdapterError', 'AdapterRequest', 'BackgroundServer', 'BaseArguments', 'DEMO_ADAPTERS', 'DEMO_MODEL_DIR', 'Delta',
    'Engine', 'EngineAsleepError', 'EngineClosedError', 'EngineStartError', 'GenerationConfig', 'InferEngine',
    'InferRequest', 'InferStats', 'LoRARequest', 'ModelNotFoundError', 'ModelType', 'PromptTooLongError', 'PtEngine',
    'RequestConfig', 'SettingsError', 'SwiftnbError', 'Template', 'TransformersEngine', 'UnknownModelError',
    'UsageError', 'VllmEngine', 'XRequestConfig', 'check_adapter', 'check_parity', 'divergence',
    'get_default_template_type', 'get_engine', 'get_model_list_client', 'get_model_list_client_async',
    'get_pt_engine', 'get_template', 'get_vllm_engine', 'inference_client', 'inference_client_async',
    'inference_stream_vllm', 'inference_stream_vllm_async', 'inference_vllm', 'inference_vllm_async', 'quant_report',
    'quantize', 'serve', 'show_vllm_logs',
]

_install_short_tracebacks()  # in IPython: a SwiftnbError shows the user's frames and its message, not swiftnb's
_wake_the_kernel_on_interrupt()  # in ipykernel: an interrupt stops an awaiting cell at once


def load_ipython_extension(ipython):
    """`%load_ext swiftnb`: the %swiftnb and %%chat magics (see swiftnb.magics)."""
    from swiftnb.magics import SwiftnbMagics
    ipython.register_magics(SwiftnbMagics)
