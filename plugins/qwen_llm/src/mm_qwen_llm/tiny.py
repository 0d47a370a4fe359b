"""The offline tiny Qwen2: a byte-level BPE tokenizer trained by this project and a small config.

The ``tiny`` model type of ``minigpt4qwen`` must build without the Hugging Face hub, so this
package ships ``assets/tiny_qwen2/`` (``tokenizer.json``, ``tokenizer_config.json``,
``config.json``). Everything there is regenerated, byte for byte, by::

    python -m mm_qwen_llm.tiny            # rewrite the shipped assets
    python -m mm_qwen_llm.tiny --check    # exit 1 if the shipped assets differ

The tokenizer follows Qwen2's design on a small scale: Qwen2's pre-tokenizer split (digits one
by one, letters in runs, newlines on their own), byte-level BPE over a corpus generated here
from fixed templates, and the ChatML special tokens ``<|endoftext|>`` (padding and end of
text), ``<|im_start|>``, ``<|im_end|>`` plus Qwen2-VL's ``<|vision_start|>``,
``<|vision_end|>`` and ``<|image_pad|>`` (the image placeholder).
"""

from __future__ import annotations

import argparse
import filecmp
import itertools
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path

TINY_ASSET = "assets/tiny_qwen2"
#: ``llm_model`` value that names the shipped tiny directory (see :func:`mm_qwen_llm.qwen.resolve_llm_path`).
TINY_LLM_MODEL = f"mm_qwen_llm:{TINY_ASSET}"

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
)
VOCAB_SIZE = 1024

#: Qwen2's pre-tokenization pattern (contractions, letter runs, single digits, punctuation runs,
#: newline runs, whitespace).
PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: ChatML as a Jinja chat template, so ``tokenizer.apply_chat_template`` works on the tiny one.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_QWEN2_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "use_cache": True,
}

_COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "pink"]
_SHAPES = ["circle", "square", "triangle", "rectangle", "star", "ellipse", "line", "dot"]
_PLACES = ["top left", "top right", "bottom left", "bottom right", "center", "left side", "right side"]
_SIZES = ["small", "large", "tiny", "big", "medium"]
_QUESTIONS = [
    "Describe this image in detail.",
    "What shape is in the picture?",
    "What color is the shape?",
    "Where is the shape?",
    "How many shapes are there?",
    "Describe the image briefly.",
    "What do you see?",
    "Please tell me about this picture.",
    "Is there a {color} {shape} in the image?",
    "Compare the two images.",
    "What is different between the images?",
]
_ANSWERS = [
    "The image shows a {size} {color} {shape} in the {place}.",
    "There is a {color} {shape} on a white background.",
    "Yes, there is a {color} {shape}.",
    "No, I do not see a {color} {shape}.",
    "It is a {shape}.",
    "The shape is {color}.",
    "The {shape} is in the {place} of the picture.",
    "I can see {count} shapes: a {color} {shape} and a {size} one.",
    "The first image has a {shape}, the second one has a {color} {shape}.",
]
_SYSTEM = ["You are a helpful assistant.", "You are a careful assistant that describes images."]
_EXTRA = [
    "Hello! How can I help you today?",
    "Thank you for the question, I am happy to help.",
    "The quick brown fox jumps over the lazy dog.",
    "A photo of a cat sitting on a sofa next to a dog.",
    "A man is riding a bike down a street in the city.",
    "user", "assistant", "system", "image", "video", "frame", "picture", "question", "answer",
    "0 1 2 3 4 5 6 7 8 9 10 100 2024", "Hello, world!", "What's that? It's mine; they'll go.",
]


def training_corpus() -> list[str]:
    """The deterministic text the tiny tokenizer is trained on (ChatML-formatted turns)."""
    lines = list(_SYSTEM) + list(_EXTRA)
    combos = itertools.product(_COLORS, _SHAPES, _PLACES[:3], _SIZES[:2])
    for i, (color, shape, place, size) in enumerate(combos):
        fill = {"color": color, "shape": shape, "place": place, "size": size, "count": i % 5 + 1}
        question = _QUESTIONS[i % len(_QUESTIONS)].format(**fill)
        answer = _ANSWERS[i % len(_ANSWERS)].format(**fill)
        lines.append(
            f"<|im_start|>system\n{_SYSTEM[i % 2]}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{answer}<|im_end|>\n"
        )
    return lines


def build_tokenizer():
    """Train the tiny byte-level BPE tokenizer (a ``tokenizers.Tokenizer``)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return tokenizer


def write_tiny_assets(out_dir: str | Path) -> Path:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``config.json`` into ``out_dir``."""
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=TINY_QWEN2_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        for saved in sorted(Path(tmp).iterdir()):
            if saved.suffix == ".json":
                # Re-serialised with sorted keys so the files stay byte-stable.
                _write_json(out / saved.name, json.loads(saved.read_text(encoding="utf-8")))
            else:
                (out / saved.name).write_bytes(saved.read_bytes())
    config = dict(TINY_QWEN2_CONFIG)
    config.update(
        vocab_size=len(fast),
        bos_token_id=None,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
    )
    _write_json(out / "config.json", config)
    return out


def shipped_tiny_dir() -> Path:
    """Directory of the tiny assets shipped in this package."""
    return Path(str(resources.files("mm_qwen_llm").joinpath(TINY_ASSET)))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="output directory (default: the shipped assets)")
    parser.add_argument("--check", action="store_true", help="compare with the shipped assets instead")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = write_tiny_assets(tmp)
            names = sorted(p.name for p in fresh.iterdir())
            differ = [n for n in names if not filecmp.cmp(fresh / n, shipped_tiny_dir() / n, shallow=False)]
        print("tiny assets differ: " + ", ".join(differ) if differ else "tiny assets are up to date")
        return 1 if differ else 0
    print(write_tiny_assets(args.out or shipped_tiny_dir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
