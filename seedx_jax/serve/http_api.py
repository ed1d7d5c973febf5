"""Plain HTTP JSON endpoints over the same `Service` as the web app (README "Serving" has the schema).

POST /api/v1/chat, /api/v1/text_to_image, /api/v1/edit, /api/v1/reconstruct; GET /api/v1/health.
Images travel as base64 PNG (or any format PIL reads; a `data:` URL prefix is accepted). A refused
request is a 400 with `{"error": "<one line>"}` (an unknown field, a value of the wrong JSON type, a body over the size limit
(413) included); a model that produced NaN/Inf is a 500 with the same shape. Requests run one at a time
(the service's lock), after the web app's queued ones or before them, never at once.
"""
from __future__ import annotations

import base64
import binascii
import io

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from seedx_jax.exits import error_line
from seedx_jax.serve.service import Answer, ModelError, RequestError, Service

PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 2 ** 20  # a 25 MP image as base64 PNG fits; anything larger is refused unread


class Render(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" is not a seed, "yes" not a boolean
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    solver: str | None = None


class ChatRequest(Render):
    question: str
    images: list[str] = []
    grounding: bool = False
    force_image: bool = False
    max_new_tokens: int | None = None


class TextToImageRequest(Render):
    prompt: str
    force_image: bool = False
    max_new_tokens: int | None = None


class EditRequest(Render):
    image: str
    instruction: str
    force_image: bool = False
    image_guidance_scale: float | None = None
    max_new_tokens: int | None = None


class ReconstructRequest(Render):
    image: str
    image_guidance_scale: float | None = None


def decode_image(data: str, name: str, service: Service) -> Image.Image:
    """A base64 (or `data:` URL) image field -> RGB PIL image, with the server's pixel limit."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{name}: not base64 (send the image file's bytes base64-encoded)") from None
    return service.load_image(raw, name)


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _answer_json(answer: Answer) -> dict:
    return {"text": answer.text, "raw_text": answer.raw_text, "token_ids": answer.token_ids,
            "boxes": [list(b) for b in answer.boxes],
            "boxed_image": encode_png(answer.boxed_image) if answer.boxed_image is not None else None,
            "images": [encode_png(im) for im in answer.images], "note": answer.note}


def _settings(service: Service, request: Render):
    return service.settings(**request.model_dump(include=set(Render.model_fields) | {"image_guidance_scale"},
                                                 exclude_none=True))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request to the API whose body passes `MAX_BODY_BYTES` gets a 413, whether it
    announces its length or streams in chunks (counted as they arrive; the rest is never read)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return await _error(413, f"request body of {int(length)} bytes exceeds {MAX_BODY_BYTES}")(scope, receive,
                                                                                                       send)
        received, too_large = 0, False

        async def counted():
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                too_large = True
                raise _TooLarge
            return message

        async def unless_too_large(message):  # FastAPI turns the failed read into a 400 of its own
            if not too_large:
                await send(message)

        try:
            await self.app(scope, counted, unless_too_large)
        except _TooLarge:
            pass
        if too_large:
            await _error(413, f"request body exceeds {MAX_BODY_BYTES} bytes")(scope, receive, send)


def add_routes(app: FastAPI, service: Service) -> None:
    """The endpoints and their error responses on `app`."""

    app.add_middleware(BodyLimit)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):  # an unreadable body
        if not request.url.path.startswith(PREFIX):  # the Gradio app's own routes answer as Gradio expects
            return await http_exception_handler(request, err)
        return _error(err.status_code, f"{request.method} {request.url.path}: {err.detail}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError):
        return _error(400, str(err))

    @app.exception_handler(ModelError)
    async def failed(request: Request, err: ModelError):
        return _error(500, str(err))

    @app.exception_handler(Exception)
    async def broke(request: Request, err: Exception):  # a fault of ours: said in one line, the server goes on
        return _error(500, f"internal error: {type(err).__name__}: {error_line(err)}")

    @app.get(f"{PREFIX}/health")
    def health() -> dict:
        return {"chat": service.chat_pipe is not None, "edit": service.edit_pipe is not None,
                "banner": service.banner, "defaults": service.defaults.__dict__}

    @app.post(f"{PREFIX}/chat")
    def chat(request: ChatRequest) -> dict:
        settings = _settings(service, request)
        images = [decode_image(data, f"images[{i}]", service) for i, data in enumerate(request.images)]
        answer, _ = service.chat(request.question, images, grounding=request.grounding,
                                 force_image=request.force_image, max_new_tokens=request.max_new_tokens,
                                 settings=settings)
        return _answer_json(answer)

    @app.post(f"{PREFIX}/text_to_image")
    def text_to_image(request: TextToImageRequest) -> dict:
        answer = service.text_to_image(request.prompt, force_image=request.force_image,
                                       max_new_tokens=request.max_new_tokens, settings=_settings(service, request))
        return _answer_json(answer)

    @app.post(f"{PREFIX}/edit")
    def edit(request: EditRequest) -> dict:
        settings = _settings(service, request)
        answer = service.edit(decode_image(request.image, "image", service), request.instruction,
                              force_image=request.force_image, max_new_tokens=request.max_new_tokens,
                              settings=settings)
        return _answer_json(answer)

    @app.post(f"{PREFIX}/reconstruct")
    def reconstruct(request: ReconstructRequest) -> dict:
        settings = _settings(service, request)
        image = service.reconstruct(decode_image(request.image, "image", service), settings=settings)
        return {"image": encode_png(image)}

    endpoints = {route.path for route in app.routes if route.path.startswith(PREFIX)}

    @app.api_route(PREFIX + "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def elsewhere(request: Request, rest: str):  # before the Gradio app, mounted at /, answers it as a page
        if request.url.path in endpoints:
            return _error(405, f"{request.method} {request.url.path}: use "
                               f"{'GET' if request.url.path.endswith('/health') else 'POST'}")
        return _error(404, f"{request.method} {request.url.path}: no such endpoint; see the README's \"Serving\"")
