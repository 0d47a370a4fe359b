"""OpenAI ``messages`` -> the arguments of a model's ``chat(query, history, images, ...)``.

* ``system`` / ``developer`` messages (text only) are joined into one system text.
* The other messages must alternate user/assistant, starting and ending with a user message
  (consecutive messages of one role are joined with a newline).
* A message's content parts are joined with newlines; each ``image_url`` part becomes the image
  mark (``<ImageHere>``) at its place. A mark typed literally by a client is removed, so only
  real images open image slots.
* ``query`` is the last user message, ``history`` the earlier (user, assistant) pairs, and the
  image URLs are listed in the order their marks appear in the whole conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mm_serve.schemas import APIError, ChatMessage, ImagePart


@dataclass
class ChatCall:
    """What a model's ``chat`` receives for one request (images still as URLs)."""

    query: str
    history: list[tuple[str, str]] = field(default_factory=list)
    image_urls: list[tuple[str, str]] = field(default_factory=list)  # (url, request field it came from)
    system: str | None = None

    def texts(self) -> list[str]:
        """Every text of the conversation, oldest first (for counting prompt tokens)."""
        return [*(t for pair in self.history for t in pair), self.query]


def to_chat_call(messages: list[ChatMessage], image_mark: str) -> ChatCall:
    """Convert validated OpenAI messages; :class:`APIError` (400) for a conversation a chat
    model cannot take."""
    system: list[str] = []
    turns: list[list[str]] = []  # [role, text]
    image_urls: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        text = _content_text(message, index, image_mark, image_urls)
        if message.role in ("system", "developer"):
            system.append(text)
        elif turns and turns[-1][0] == message.role:
            turns[-1][1] += "\n" + text
        else:
            turns.append([message.role, text])
    if not turns or turns[0][0] != "user":
        raise APIError(400, "the conversation must start with a user message (after any system messages)",
                       code="invalid_conversation", param="messages")
    if turns[-1][0] != "user":
        raise APIError(400, "the last message must be a user message: the model answers it",
                       code="invalid_conversation", param="messages")
    history = [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns) - 1, 2)]
    return ChatCall(turns[-1][1], history, image_urls, "\n".join(system) if system else None)


def _content_text(message: ChatMessage, index: int, image_mark: str, image_urls: list[tuple[str, str]]) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content.replace(image_mark, "")
    pieces = []
    for part_index, part in enumerate(content):
        param = f"messages[{index}].content[{part_index}]"
        if isinstance(part, ImagePart):
            if message.role != "user":
                raise APIError(400, f"{param}: only user messages may carry images, not {message.role} ones",
                               code="invalid_conversation", param=param)
            image_urls.append((part.image_url.url, f"{param}.image_url"))
            pieces.append(image_mark)
        else:
            pieces.append(part.text.replace(image_mark, ""))
    return "\n".join(pieces)
