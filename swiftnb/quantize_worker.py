"""Quantize one model folder with llm-compressor: run by swiftnb.quantize in its own environment, where
llm-compressor's pins (transformers, compressed-tensors) live apart from vLLM's. It imports nothing of swiftnb.

    python quantize_worker.py REQUEST.json

REQUEST: {"model": folder, "output": folder, "scheme": "W4A16" | "W8A8" | "FP8_DYNAMIC", "method": "gptq" |
"awq" | "rtn", "smoothquant": bool, "texts": [calibration text, ...], "max_length": int}. It prints one JSON
object a line on stdout: {"stage": ...} as it goes, {"error": ...} with the root cause if it fails, {"done": ...}.
The output folder is written by llm-compressor's save_pretrained (compressed-tensors, which vLLM detects).
"""
import json
import sys


def say(**message) -> None:
    print(json.dumps(message), flush=True)


def recipe(request: dict):
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    scheme, ignore = request['scheme'], ['lm_head']
    steps = []
    if request.get('smoothquant'):
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
        steps.append(SmoothQuantModifier(smoothing_strength=0.8))
    if request['method'] == 'gptq':
        steps.append(GPTQModifier(targets='Linear', scheme=scheme, ignore=ignore))
    elif request['method'] == 'awq':
        from llmcompressor.modifiers.awq import AWQModifier
        steps.append(AWQModifier(targets='Linear', scheme=scheme, ignore=ignore))
    else:  # round to nearest: no calibration data
        steps.append(QuantizationModifier(targets='Linear', scheme=scheme, ignore=ignore))
    return steps


def main(path: str) -> int:
    request = json.loads(open(path).read())
    try:
        say(stage='loading llm-compressor')
        from datasets import Dataset
        from llmcompressor import oneshot
        from transformers import AutoModelForCausalLM, AutoTokenizer
        say(stage='loading the model')
        model = AutoModelForCausalLM.from_pretrained(request['model'], dtype='auto')
        tokenizer = AutoTokenizer.from_pretrained(request['model'])
        texts = request.get('texts') or []
        dataset = None
        if texts:
            dataset = Dataset.from_dict({'text': texts}).map(
                lambda row: tokenizer(row['text'], truncation=True, max_length=request['max_length'],
                                      add_special_tokens=False), remove_columns=['text'])
        say(stage='quantizing', samples=len(texts))
        if dataset is None:  # a recipe that needs no data (fp8's dynamic activations)
            oneshot(model=model, recipe=recipe(request))
        else:
            oneshot(model=model, dataset=dataset, recipe=recipe(request), max_seq_length=request['max_length'],
                    num_calibration_samples=len(texts))
        say(stage='saving')
        model.save_pretrained(request['output'], save_compressed=True)
        tokenizer.save_pretrained(request['output'])
    except Exception as error:  # the root cause, as one line for the caller to show
        cause = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        message = f'{type(cause).__name__}: {cause}'.strip().splitlines()[0]
        if 'accelerator' in message and request['method'] == 'awq':
            message += "; llm-compressor's AWQ runs on a GPU: pick gptq on this machine"
        say(error=message)
        return 1
    say(done=request['output'])
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
