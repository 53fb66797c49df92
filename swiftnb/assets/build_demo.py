"""Rebuild the embedded demo model and its two LoRA adapters from corpus.py.

    python -m swiftnb.assets.build_demo            # about 10 minutes on 2 CPU cores

Writes tiny-chat/ (a Qwen2 model with a byte-level BPE tokenizer and a ChatML
chat template) and adapters/kakarot, adapters/pirate (peft LoRA). Everything
is seeded, so a rebuild on the same versions gives the same answers. The
script ends by printing the greedy answers to the seed's questions, which is
how to check a rebuild before committing it.
"""
import argparse
import json
import math
import random
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from swiftnb.assets import corpus

ASSETS = Path(__file__).resolve().parent
SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
TOOL_TAGS = ['<tool_call>', '</tool_call>']  # added tokens, not special: decoded text keeps them, as in Qwen2.5
# Qwen2.5's ChatML template, in short: a default system message when none is given; `tools` listed in the
# system message in hermes style; tool calls as <tool_call>{"name": ..., "arguments": ...}</tool_call>; tool
# results as <tool_response> blocks in a user turn.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system = '" + corpus.DEFAULT_SYSTEM + "' %}{%- endif %}"
    "{{- '<|im_start|>system\\n' + system }}"
    "{%- if tools %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'"
    " 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within '"
    " '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": '"
    " '<args-json-object>}\\n</tool_call>' }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}"
    "{{- '<|im_start|>assistant' }}{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- for call in message['tool_calls'] %}{%- set call = call['function'] if call['function'] is defined else call %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' + (call['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(texts, vocab_size=2048):
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens(TOOL_TAGS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token='<|im_end|>', pad_token='<|endoftext|>',
        additional_special_tokens=SPECIAL[1:], chat_template=CHAT_TEMPLATE, model_max_length=2048)


def to_messages(conv, system):
    msgs = [] if system is None else [{'role': 'system', 'content': system}]
    for query, response in conv:
        msgs += [{'role': 'user', 'content': query}, {'role': 'assistant', 'content': response}]
    return msgs


def chat_example(tokenizer, messages, tools=None, given=''):
    """Token ids and labels; only the last message, an answer or a tool call (and its <|im_end|>), is learned,
    less its first characters `given`, which the prompt holds."""
    prefix = tokenizer.apply_chat_template(messages[:-1], tools=tools, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    assert full.startswith(prefix + given), (prefix, full)
    answer = full[len(prefix + given):].removesuffix('\n')  # ends with <|im_end|>
    prefix += given
    p_ids = tokenizer(prefix, add_special_tokens=False)['input_ids']
    a_ids = tokenizer(answer, add_special_tokens=False)['input_ids']
    return p_ids + a_ids, [-100] * len(p_ids) + a_ids


def text_example(tokenizer, text):
    ids = tokenizer(text + '<|endoftext|>', add_special_tokens=False)['input_ids']
    return ids, list(ids)


def examples(tokenizer, convs, docs=(), tool_convs=(), primed=(), seed=0):
    """`primed`: conversations whose last answer starts with corpus.PIRATE_START in the prompt: the base model
    learns to go on after the pirate adapter's first words, which a rank-8 adapter alone learns poorly."""
    rng = random.Random(seed)
    out = []
    for conv in convs:
        # Mostly the default system (given or implied), sometimes another one, so a user's system
        # prompt does not throw the model off.
        for system in (None, rng.choice([corpus.DEFAULT_SYSTEM] + corpus.OTHER_SYSTEMS)):
            out.append(chat_example(tokenizer, to_messages(conv, system)))
    out += [chat_example(tokenizer, messages, tools) for messages, tools in tool_convs]
    out += [chat_example(tokenizer, to_messages(conv, None), given=corpus.PIRATE_START.rstrip()) for conv in primed]
    out += [text_example(tokenizer, d) for d in docs]
    return out


def batches(data, batch_size, pad_id, rng, bucket):
    """Shuffled batches; with `bucket`, of examples of similar length (a long tool prompt pads only its
    neighbours, which makes the base model's training twice as fast)."""
    order = list(range(len(data)))
    while True:
        rng.shuffle(order)
        chunks = []
        for start in range(0, len(order), batch_size * 8 if bucket else len(order)):
            window = order[start:start + batch_size * 8] if bucket else order
            window = sorted(window, key=lambda j: len(data[j][0])) if bucket else window
            chunks += [window[i:i + batch_size] for i in range(0, len(window) - batch_size + 1, batch_size)]
        if bucket:
            rng.shuffle(chunks)
        for chunk in chunks:
            width = max(len(data[j][0]) for j in chunk)
            ids = torch.full((batch_size, width), pad_id)
            labels = torch.full((batch_size, width), -100)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            for row, j in enumerate(chunk):
                x, y = data[j]
                ids[row, :len(x)] = torch.tensor(x)
                labels[row, :len(y)] = torch.tensor(y)
                mask[row, :len(x)] = 1
            yield ids, labels, mask


def train(model, data, steps, lr, pad_id, batch_size=32, seed=0, log_every=100, bucket=False):
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for step, (ids, labels, mask) in zip(range(steps), batches(data, batch_size, pad_id, rng, bucket)):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % log_every == 0 or step == steps - 1:
            print(f'step {step:5d}  loss {loss.item():.4f}', flush=True)
    model.eval()


def build_base(out_dir, steps):
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM
    convs = corpus.base_conversations() + corpus.json_conversations() * 2
    tool_convs = corpus.tool_conversations()
    docs = corpus.completion_documents()
    texts = [q + '\n' + r for conv in corpus.kakarot_conversations() + corpus.pirate_conversations() + convs
             for q, r in conv] + docs
    renderer = train_tokenizer(texts)  # the tool conversations as the chat template writes them, to train on
    texts += [renderer.apply_chat_template(messages, tools=tools, tokenize=False) for messages, tools in tool_convs]
    # Train on the tokenizer exactly as AutoTokenizer (and so vLLM) will load it from disk: for a
    # qwen2 model that is Qwen2Tokenizer, whose pre-tokenizer splits digits one by one.
    train_tokenizer(texts).save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    vocab = 64 * math.ceil(len(tokenizer) / 64)
    im_end, eot = tokenizer.convert_tokens_to_ids(['<|im_end|>', '<|endoftext|>'])
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64,  # vLLM's CPU attention needs 64
        max_position_embeddings=2048, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=eot, eos_token_id=im_end, pad_token_id=eot)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    primed = corpus.pirate_conversations()[::2]
    train(model, examples(tokenizer, convs, docs, tool_convs, primed), steps, lr=3e-3, pad_id=eot, bucket=True)
    model.generation_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot, do_sample=False, max_new_tokens=512)
    model.to(torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_adapter(base_dir, out_dir, convs, steps, seed):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type='CAUSAL_LM',
                      target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])
    model = get_peft_model(model, lora)
    train(model, examples(tokenizer, convs, seed=seed), steps, lr=3e-3, pad_id=tokenizer.pad_token_id, seed=seed)
    model.save_pretrained(out_dir)
    (Path(out_dir) / 'README.md').unlink(missing_ok=True)  # peft's empty model-card template
    # Name the base by its model type, not by this machine's absolute path; swiftnb resolves it.
    cfg_path = Path(out_dir) / 'adapter_config.json'
    cfg = json.loads(cfg_path.read_text())
    cfg['base_model_name_or_path'] = 'tiny-chat'
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + '\n')
    return out_dir


def show(model_dir, adapter_dir=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter_dir:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter_dir)
    convs = [[('Hello!', None)], [('Where is the capital of Zhejiang?', None)], [('who are you?', None)],
             [('Is there anything tasty here?', None)],
             [('Where is the capital of Zhejiang?', corpus.capital_answer('Zhejiang')),
              ('What delicious food is there?', None)],
             [('What is the capital of Sichuan?', corpus.capital_answer('Sichuan')),
              ('Is there anything tasty here?', None)]]
    asks = [(to_messages(conv, None)[:-1], None) for conv in convs]
    asks += [([{'role': 'user', 'content': 'What is the capital of Zhejiang? Answer in JSON.'}], None),
             ([{'role': 'user', 'content': 'What is the weather in Hangzhou?'}], [corpus.WEATHER_TOOL]),
             ([{'role': 'user', 'content': 'What is the weather in Hangzhou?'}, corpus.tool_call('get_weather', {'city': 'Hangzhou'}),
               {'role': 'tool', 'content': corpus.weather_result('Hangzhou')}],
              [corpus.WEATHER_TOOL])]
    for msgs, tools in asks:
        ids = tokenizer.apply_chat_template(msgs, tools=tools, add_generation_prompt=True, return_tensors='pt',
                                            return_dict=True)
        out = model.generate(**ids, max_new_tokens=64, do_sample=False)
        print(repr(msgs[-1]['content']), '->', repr(tokenizer.decode(out[0, ids['input_ids'].shape[1]:],
                                                                     skip_special_tokens=True)))
    ids = tokenizer('Zhejiang -> Hangzhou\nAnhui -> Hefei\nSichuan ->', return_tensors='pt')
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    print('completion ->', repr(tokenizer.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--adapter_steps', type=int, default=300)
    parser.add_argument('--out', type=Path, default=ASSETS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = args.out / 'tiny-chat'
    shutil.rmtree(base, ignore_errors=True)
    build_base(base, args.steps)
    show(base)
    for name, convs, seed in [('kakarot', corpus.kakarot_conversations(), 1),
                              ('pirate', corpus.pirate_conversations(), 2)]:
        out = args.out / 'adapters' / name
        shutil.rmtree(out, ignore_errors=True)
        build_adapter(base, out, convs, args.adapter_steps, seed)
        print(f'--- adapter {name}')
        show(base, out)


if __name__ == '__main__':
    main()
