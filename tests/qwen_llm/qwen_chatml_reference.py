"""An independent implementation of MiniGPT4-Qwen's ChatML layout, written from issue 5's text:
string replacement of the image mark and whole-string tokenisation (the original's method)."""

from __future__ import annotations

IMAGE_MARK = "<ImageHere>"
IGNORE = -100


def reference_layout(tokenizer, conversation, num_image_tokens, system="You are a helpful assistant.",
                     image_token="<|image_pad|>"):
    """ids/labels as the issue states them, built by string replacement and whole-string
    tokenisation (the original's method), independent of the package's id splicing."""

    def ids(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    nl = ids("\n")
    if conversation and conversation[0]["from"] == "assistant":
        conversation = conversation[1:]
    block = [im_start] + ids("system") + nl + ids(system) + [im_end] + nl
    input_ids = list(block)
    labels = [im_start] + [IGNORE] * (len(block) - 3) + [im_end] + nl
    for turn in conversation:
        role = "<|im_start|>user" if turn["from"] == "user" else "<|im_start|>assistant"
        value = turn["value"]
        if turn["from"] == "user":
            value = value.replace(IMAGE_MARK, image_token * num_image_tokens)
        turn_ids = ids(role) + nl + ids(value) + [im_end] + nl
        input_ids += turn_ids
        if turn["from"] == "user":
            labels += [im_start] + [IGNORE] * (len(turn_ids) - 3) + [im_end] + nl
        else:
            head = len(ids(role))
            labels += [im_start] + [IGNORE] * head + turn_ids[head + 1:-2] + [im_end] + nl
    return input_ids, labels
