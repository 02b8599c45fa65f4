"""``ansm serve``: a local web page where an analyst opens one image and sees the mask without and with ANSM.

Needs the ``serve`` extra (Starlette + uvicorn): ``pip install -e ".[serve]"``. :func:`create_app` builds the app
from a localizer and an ANSM already in memory (tests drive it with Starlette's ``TestClient``, no socket)."""

from ansm.serve.app import ServeLimits, UploadError, create_app, decode_upload

__all__ = ["ServeLimits", "UploadError", "create_app", "decode_upload"]
