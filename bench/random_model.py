"""Models of real size with random weights, for benchmarks on machines with no hub (the GPU machine).

    random_qwen2(folder, '0.5b')   Qwen2-0.5B's configuration (24 layers, hidden 896, vocab 151936)
    random_qwen2(folder, '1.5b')   Qwen2-1.5B's (28 layers, hidden 1536, vocab 151936)
    random_qwen2(folder, '7b')     Qwen2-7B's layers (28, hidden 3584; 7.1B parameters with the tied embedding)

The tokenizer is Qwen2's kind (byte-level BPE) with a made-up vocabulary as large as Qwen2's
(`word_tokenizer`): the 256 bytes, then every ' a' ... ' zzz' and four-letter words with a leading space,
each merged from the one a letter shorter, then '<unk>', '<s>', '</s>'. So every token a random model
writes decodes to text: a serving benchmark times each streamed token, and with a smaller tokenizer (the
demo model's 1280 ids) most of them would decode to nothing and never be sent. `tokenizer='demo'` takes
the demo model's tokenizer instead (for prompts written as sentences).
"""
from pathlib import Path

QWEN2 = {
    '0.5b': dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    '1.5b': dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
    '7b': dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4),
}
VOCAB = 151936
COMMON = dict(vocab_size=VOCAB, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True,
              bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 3)
LETTERS = 'abcdefghijklmnopqrstuvwxyz'


def word_tokenizer(vocab_size: int = VOCAB):
    """Qwen2's tokenizer class over `vocab_size` ids: bytes, then ' a' ... words, then '<unk>', '<s>', '</s>'."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    byte_chars = bytes_to_unicode()
    vocab = {char: i for i, char in enumerate(byte_chars.values())}
    merges, words = [], [byte_chars[ord(' ')]]  # byte-level BPE writes the leading space as 'Ġ'
    room = vocab_size - 3
    while len(vocab) < room:  # breadth first, so shorter words merge first
        longer = []
        for word in words:
            for letter in LETTERS[:room - len(vocab)]:
                vocab[word + letter] = len(vocab)
                merges.append((word, letter))
                longer.append(word + letter)
        words = longer
    for special in ('<unk>', '<s>', '</s>'):
        vocab[special] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token='<unk>', bos_token='<s>', eos_token='</s>',
                          pad_token='<unk>', model_max_length=COMMON['max_position_embeddings'])


def random_words(tokenizer, n: int, seed: int = 0) -> str:
    """n random words of the word tokenizer's, as text (n tokens when encoded)."""
    import random
    rng = random.Random(seed)
    return tokenizer.decode([rng.randrange(256 + 26, len(tokenizer) - 3) for _ in range(n)])


def random_qwen2(folder: Path, size: str = '0.5b', tokenizer: str = 'words', adapters=(),
                 vocab: int = VOCAB) -> tuple[Path, dict]:
    """A Qwen2 of `size` with random weights (bf16) in folder/model, and random LoRA adapters (r=8 on q/v/o)
    named `adapters`, each in folder/NAME; (model dir, {name: adapter dir}). `vocab`: the word tokenizer's size
    and the model's (1280, the demo model's, makes each step short, so that the front end's share shows)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from swiftnb import DEMO_MODEL_DIR
    folder = Path(folder)
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN2[size], **{**COMMON, 'vocab_size': vocab, 'bos_token_id': vocab - 2,
                                           'eos_token_id': vocab - 1, 'pad_token_id': vocab - 3})
    model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(folder / 'model')
    tokens = word_tokenizer(config.vocab_size) if tokenizer == 'words' else AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    tokens.save_pretrained(folder / 'model')
    made = {}
    for seed, name in enumerate(adapters):
        from peft import LoraConfig, get_peft_model
        torch.manual_seed(100 + seed)
        peft_model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(
            r=8, lora_alpha=32, target_modules=['q_proj', 'v_proj', 'o_proj'], init_lora_weights=False))
        peft_model.save_pretrained(folder / name)
        made[name] = str(folder / name)
    return folder / 'model', made
