"""``wordformer serve``: the chapter live in a browser, and an OpenAI-compatible completion API.

Modules: :mod:`.app` (the FastAPI application factory, safety middleware, health and model list),
:mod:`.registry` (checkpoints loaded once, by id), :mod:`.errors` (OpenAI-shaped error responses),
:mod:`.batching` (the one model thread that decodes concurrent requests together), :mod:`.openai_api`
(completions and chat completions), :mod:`.text` (streamed text, stop strings), :mod:`.inspect` (the page's
own endpoints), :mod:`.command` (the ``wordformer serve`` command). Nothing here is imported by
``wordformer --help`` except :mod:`.command`, which imports neither FastAPI nor torch at module level.
"""
