# The seed's "VLLM & LoRA / Single sample inference" example. Changed: the import (swift.llm ->
# swiftnb), the model type (llama2_7b_chat -> tiny_chat) and the checkpoint (the embedded
# identity adapter, trained on tiny-chat to answer "who are you?" as Kakarot).
import os
os.environ['CUDA_VISIBLE_DEVICES'] = '0'
import torch
from swiftnb import (
    ModelType, get_vllm_engine, get_default_template_type,
    get_template, inference_stream_vllm, LoRARequest, inference_vllm
)
from swiftnb import DEMO_ADAPTERS

lora_checkpoint = str(DEMO_ADAPTERS['kakarot'])
lora_request = LoRARequest('default-lora', 1, lora_checkpoint)

model_type = ModelType.tiny_chat
llm_engine = get_vllm_engine(model_type, torch.float16, enable_lora=True,
                             max_loras=1, max_lora_rank=16)
template_type = get_default_template_type(model_type)
template = get_template(template_type, llm_engine.hf_tokenizer)
# Interface similar to `transformers.GenerationConfig`
llm_engine.generation_config.max_new_tokens = 256

# using lora
request_list = [{'query': 'who are you?'}]
query = request_list[0]['query']
resp_list = inference_vllm(llm_engine, template, request_list, lora_request=lora_request)
response = resp_list[0]['response']
print(f'query: {query}')
print(f'response: {response}')

# without lora
gen = inference_stream_vllm(llm_engine, template, request_list)
query = request_list[0]['query']
print(f'query: {query}\nresponse: ', end='')
print_idx = 0
for resp_list in gen:
    response = resp_list[0]['response']
    print(response[print_idx:], end='', flush=True)
    print_idx = len(response)
print()
