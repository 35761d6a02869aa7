"""`clipforge serve`: a local web page and HTTP API to search an index and classify images, safe by default.

    service = SearchService(SearchIndex("photos.index"), model, preprocess, tokenizer, model_name="...")
    run_server(service, "127.0.0.1", 8765, ServeOptions(token=None))

Layers: `service` (search, classify, thumbnails; no HTTP) uses `worker` (one model thread,
micro-batches) and `clipforge.tasks`; `app` (Starlette routes, the guard, uvicorn) sits on top;
`urls` is the policy for the optional `image_url` fetching. Only `app` imports the optional HTTP
libraries (`pip install 'clipforge[serve]'`), and only when it is imported, so the rest of
clipforge never needs them. See docs/serve.md for the API and the security model.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SearchService": "clipforge.serve.service",
    "Limits": "clipforge.serve.service",
    "BatchingEncoder": "clipforge.serve.worker",
    "ServeOptions": "clipforge.serve.app",
    "create_app": "clipforge.serve.app",
    "run_server": "clipforge.serve.app",
    "check_bind": "clipforge.serve.app",
    "UrlPolicy": "clipforge.serve.urls",
    "check_url": "clipforge.serve.urls",
    "fetch_url": "clipforge.serve.urls",
    "is_public_address": "clipforge.serve.urls",
    "ApiError": "clipforge.serve.errors",
    "ServeError": "clipforge.serve.errors",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clipforge.serve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
