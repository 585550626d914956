"""llama-cpp-python's OpenAI-compatible server, started so that it runs on every CPU.

``python -m llama_cpp.server`` loads its model with llama.cpp's extra CPU buffer types, and
on CPUs with AMX the first decode then crashes (see
:func:`simworld.llm.providers.local_engine.use_extra_bufts`); the server has no option to
turn them off. This wrapper decides as simworld's own ``local/`` provider does
(``--extra-bufts auto``: off on AMX hosts), then runs the server unchanged. Every other
option is the server's own; without ``--model`` it serves the packaged Gemma 3 270M file
(with ``--chat_format gemma`` unless told otherwise).

It also accepts OpenAI's ``response_format: {"type": "json_schema", ...}`` (what simworld
and litellm send for structured output), which the server itself rejects: the schema is
handed to the server's own ``json_object`` grammar, so answers still follow the schema.

Example (the server needs the ``server`` extra of llama-cpp-python)::

    python -m simworld.llm.providers.llama_server --host 127.0.0.1 --port 8080 \
        --model_alias gemma
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXTRA_BUFTS_CHOICES = ("auto", "on", "off")
OWN_HELP = """\
simworld's option (every other option below is llama-cpp-python's server's own):
  --extra-bufts {auto,on,off}
                        llama.cpp's extra CPU buffer types (AMX, repacked weights):
                        auto (the default) turns them off on CPUs with AMX, where the
                        first answer otherwise crashes the server
"""


def keep_extra_bufts(choice: str) -> bool:
    """Whether the server's model keeps llama.cpp's extra buffer types (``auto``: not on
    CPUs with AMX)."""
    from simworld.llm.providers.local_engine import use_extra_bufts

    return use_extra_bufts(choice)


def json_schema_as_json_object(response_format: Any) -> Any:
    """OpenAI's ``json_schema`` response format as the server's ``json_object`` + schema
    (anything else unchanged)."""
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_object", **({"schema": schema} if schema is not None else {})}
    return response_format


def accept_json_schema() -> None:
    """Let the server take ``response_format`` of type ``json_schema`` (see the module)."""
    from llama_cpp.server.types import CreateChatCompletionRequest

    CreateChatCompletionRequest.model_fields["response_format"].annotation = Any
    CreateChatCompletionRequest.model_rebuild(force=True)
    import llama_cpp

    create = llama_cpp.Llama.create_chat_completion

    def create_chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "response_format" in kwargs:
            kwargs["response_format"] = json_schema_as_json_object(kwargs["response_format"])
        return create(self, *args, **kwargs)

    llama_cpp.Llama.create_chat_completion = create_chat_completion  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """Parse ``--extra-bufts``, fill in ``--model``, then run ``llama_cpp.server``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--extra-bufts", choices=EXTRA_BUFTS_CHOICES, default="auto")
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if "-h" in rest or "--help" in rest:
        print(OWN_HELP)  # the server's help follows, and exits
    if not any(a == "--model" or a.startswith("--model=") for a in rest):
        from simworld.llm.providers.local import model_cache_dir, packaged_model_path

        rest = ["--model", str(packaged_model_path(model_cache_dir())), *rest]
        if not any(a == "--chat_format" or a.startswith("--chat_format=") for a in rest):
            rest += ["--chat_format", "gemma"]
    from llama_cpp.server.__main__ import main as serve

    from simworld.llm.providers.local_engine import extra_bufts_set

    accept_json_schema()
    sys.argv = ["python -m llama_cpp.server", *rest]
    with extra_bufts_set(keep_extra_bufts(ours.extra_bufts)):  # the server loads its models inside
        serve()


if __name__ == "__main__":
    main()
