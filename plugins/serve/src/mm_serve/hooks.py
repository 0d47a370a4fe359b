"""Registration hooks of mm-plugin-serve: its ``mmrun`` commands, as lazy targets."""

from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"


@hookimpl
def register_commands() -> dict:
    return {
        "serve": {"target": "mm_serve.cli:main",
                  "help": "serve a chat model: OpenAI-compatible API and a web chat page"},
        "chat": {"target": "mm_serve.chat_cli:main",
                 "help": "chat with a model in the terminal (images by path; scripted from stdin)"},
        "predict": {"target": "mm_serve.predict.cli:main",
                    "help": "batch inference over a folder, glob, records file or dataset split (resumable, torchrun)"},
    }
