"""The Gradio app: Chat (multi-turn, images of any size, grounding boxes, generated images inline, a
"force image generation" switch), Text-to-image, Edit and Reconstruct tabs over one `Service`.

Each browser session has its own conversation (`gr.State`). Every event joins one queue with one worker
(`concurrency_id="models"`): concurrent requests wait their turn instead of failing. A refused request is
one error line in the page; the request's inputs stay where they were. The events are Gradio's client
API too (`api_name`s below; `gradio_client.Client(url).view_api()` lists them).
"""
from __future__ import annotations

import contextlib
import contextvars
import html
import os
import threading
import uuid
from typing import Iterator

import gradio as gr

from seedx_jax.diffusion.schedulers import SOLVERS
from seedx_jax.progress import Progress
from seedx_jax.serve.service import Answer, ModelError, RequestError, Service

RENDER_FIELDS = ("steps", "guidance_scale", "image_guidance_scale", "seed", "height", "width", "solver")
QUEUE = "models"  # every event's concurrency id: one request on the models at a time


class PageProgress(Progress):
    """The pipelines' stages and step counters (LLM decoding, sampler steps) on the page's progress bar.

    Step counters arrive on XLA's callback threads, where Gradio's context variables (which event the
    bar belongs to) are unset and its updates would be dropped: they run in the request's context."""

    def __init__(self, bar: gr.Progress):
        super().__init__(quiet=True)
        self._bar, self._context, self._lock = bar, contextvars.copy_context(), threading.Lock()

    def _show(self, value, desc: str) -> None:
        with self._lock:  # a Context is entered by one thread at a time
            self._context.run(self._bar, value, desc=desc)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._show(0, name)
        with super().stage(name):
            yield

    def step(self, i: int, total: int, label: str) -> None:
        self._show((i, total), label)


def _refusal(err: Exception) -> gr.Error:
    # Gradio renders the message as HTML: a typed "<img>" in it must show as text, not become an element
    return gr.Error(html.escape(str(err)), print_exception=False)


def _details(answer: Answer) -> dict:
    return {"text": answer.text, "raw_text": answer.raw_text, "token_ids": answer.token_ids,
            "boxes": [list(b) for b in answer.boxes], "images": len(answer.images), "note": answer.note}


class App:
    """The event handlers, bound to one `Service` and the folder the server writes its images to."""

    def __init__(self, service: Service, images_folder: str):
        self.service, self.folder = service, images_folder
        os.makedirs(images_folder, exist_ok=True)

    def _save(self, image) -> str:
        path = os.path.join(self.folder, f"{uuid.uuid4().hex}.png")
        image.save(path, format="PNG")
        return path

    def _settings(self, values) -> object:
        return self.service.settings(**{k: v for k, v in zip(RENDER_FIELDS, values) if v is not None})

    def _upload(self, path: str | None, name: str):
        if not path:
            raise RequestError(f"{name}: no image uploaded")
        return self.service.load_image(path, os.path.basename(path))

    def chat(self, message, history, conversation, grounding, force_image, max_new_tokens, *render,
             progress=gr.Progress()):
        message = message or {}
        text, files = message.get("text") or "", message.get("files") or []
        try:
            settings = self._settings(render)
            images = [self.service.load_image(f, os.path.basename(f)) for f in files]
            answer, conversation = self.service.chat(
                text, images, conversation, grounding=grounding, force_image=force_image,
                max_new_tokens=max_new_tokens, settings=settings, progress=PageProgress(progress))
        except (RequestError, ModelError) as err:
            raise _refusal(err) from None
        history = list(history or [])
        history += [{"role": "user", "content": {"path": f}} for f in files]
        history.append({"role": "user", "content": text})
        shown = [answer.boxed_image] if answer.boxed_image is not None else []
        reply = [answer.text] if answer.text else [] if shown or answer.images else ["(no text)"]
        reply += [{"path": self._save(image)} for image in shown + answer.images]
        if answer.note:
            reply.append(f"({answer.note})")
        history.append({"role": "assistant", "content": reply})
        return {"text": "", "files": []}, history, conversation, _details(answer)

    def clear(self):
        return {"text": "", "files": []}, [], None, {}

    def text_to_image(self, prompt, force_image, max_new_tokens, *render, progress=gr.Progress()):
        try:
            answer = self.service.text_to_image(prompt or "", force_image=force_image, max_new_tokens=max_new_tokens,
                                                settings=self._settings(render), progress=PageProgress(progress))
        except (RequestError, ModelError) as err:
            raise _refusal(err) from None
        return (answer.images[0] if answer.images else None), _shown_text(answer), _details(answer)

    def edit(self, source, instruction, force_image, max_new_tokens, *render, progress=gr.Progress()):
        try:
            settings = self._settings(render)
            image = self._upload(source, "source image")
            answer = self.service.edit(image, instruction or "", force_image=force_image,
                                       max_new_tokens=max_new_tokens, settings=settings,
                                       progress=PageProgress(progress))
        except (RequestError, ModelError) as err:
            raise _refusal(err) from None
        return image, (answer.images[0] if answer.images else None), _shown_text(answer), _details(answer)

    def reconstruct(self, source, *render, progress=gr.Progress()):
        try:
            settings = self._settings(render)
            image = self._upload(source, "image")
            return image, self.service.reconstruct(image, settings=settings, progress=PageProgress(progress))
        except (RequestError, ModelError) as err:
            raise _refusal(err) from None


def _shown_text(answer: Answer) -> str:
    return answer.text + (f"\n({answer.note})" if answer.note else "")


def _render_controls(service: Service, tab: str, *, image_guidance: bool) -> list:
    """The sampler settings of one tab, in `RENDER_FIELDS` order; element ids `<tab>-<field>`."""
    d, f = service.defaults, service.pixel_factor
    with gr.Accordion("Sampling", open=False, elem_id=f"{tab}-sampling"):
        with gr.Row():
            steps = gr.Slider(1, service.limits.max_steps, value=d.steps, step=1, label="steps")
            guidance = gr.Number(d.guidance_scale, label="guidance scale")
            image_cfg = gr.Number(d.image_guidance_scale, label="image guidance scale", visible=image_guidance)
            solver = gr.Dropdown(list(SOLVERS), value=d.solver, label="solver")
        with gr.Row():
            seed = gr.Number(d.seed, precision=0, label="seed", elem_id=f"{tab}-seed")
            height = gr.Number(d.height, precision=0, step=f, label=f"height (multiple of {f})")
            width = gr.Number(d.width, precision=0, step=f, label=f"width (multiple of {f})")
    return [steps, guidance, image_cfg, seed, height, width, solver]


def build(service: Service, images_folder: str) -> gr.Blocks:
    """The app's Blocks (queued, one worker) over `service`; generated images are written to `images_folder`."""
    app = App(service, images_folder)
    has_chat, has_edit = service.chat_pipe is not None, service.edit_pipe is not None
    with gr.Blocks(title="SEED-X (seedx_jax)") as blocks:
        gr.Markdown("## SEED-X in JAX: chat with images, grounding, text-to-image, editing")
        if service.banner:
            gr.Markdown(f"**{service.banner}**", elem_id="banner")
        with gr.Tab("Chat", visible=has_chat):
            conversation = gr.State(None)  # per browser session
            chatbot = gr.Chatbot(label="conversation", elem_id="chatbot", height=480)
            message = gr.MultimodalTextbox(placeholder="Ask about images (attach any size), or ask for one",
                                           file_types=["image"], file_count="multiple", elem_id="message",
                                           show_label=False)
            with gr.Row():
                grounding = gr.Checkbox(label="grounding (boxes on the first image; first turn)")
                force_image = gr.Checkbox(label="force image generation")
                max_tokens = gr.Number(512, precision=0, label="max new tokens")
                clear = gr.Button("Clear conversation")
            render = _render_controls(service, "chat", image_guidance=False)
            details = gr.JSON(label="last answer (token ids, boxes)", visible=False)
            message.submit(app.chat, [message, chatbot, conversation, grounding, force_image, max_tokens, *render],
                           [message, chatbot, conversation, details], api_name="chat", concurrency_id=QUEUE,
                           show_progress_on=[chatbot])  # the message box stays usable after a refusal
            clear.click(app.clear, None, [message, chatbot, conversation, details], api_name="clear",
                        concurrency_id=QUEUE)
            chatbot.clear(app.clear, None, [message, chatbot, conversation, details], api_name=False)  # its bin icon
        with gr.Tab("Text-to-image", visible=has_chat):
            prompt = gr.Textbox(label="prompt", elem_id="t2i-prompt")
            with gr.Row():
                t2i_force = gr.Checkbox(label="force image generation")
                t2i_tokens = gr.Number(120, precision=0, label="max new tokens")
            render = _render_controls(service, "t2i", image_guidance=False)
            go = gr.Button("Generate", variant="primary")
            t2i_image = gr.Image(label="image", type="pil", format="png", elem_id="t2i-image")
            t2i_text = gr.Textbox(label="the model's answer")
            t2i_details = gr.JSON(label="details", visible=False)
            go.click(app.text_to_image, [prompt, t2i_force, t2i_tokens, *render], [t2i_image, t2i_text, t2i_details],
                     api_name="text_to_image", concurrency_id=QUEUE, show_progress_on=[t2i_image])
        with gr.Tab("Edit", visible=has_edit):
            source = gr.File(label="source image", file_types=["image"], type="filepath", elem_id="edit-source")
            instruction = gr.Textbox(label="instruction", elem_id="edit-instruction")
            with gr.Row():
                edit_force = gr.Checkbox(label="force image generation")
                edit_tokens = gr.Number(512, precision=0, label="max new tokens")
            render = _render_controls(service, "edit", image_guidance=True)
            go = gr.Button("Edit", variant="primary")
            with gr.Row():
                shown = gr.Image(label="source", type="pil", format="png", interactive=False)
                edited = gr.Image(label="edited", type="pil", format="png", interactive=False, elem_id="edit-image")
            edit_text = gr.Textbox(label="the model's answer")
            edit_details = gr.JSON(label="details", visible=False)
            go.click(app.edit, [source, instruction, edit_force, edit_tokens, *render], [shown, edited, edit_text, edit_details],
                     api_name="edit", concurrency_id=QUEUE, show_progress_on=[edited])
        with gr.Tab("Reconstruct"):
            rec_source = gr.File(label="image", file_types=["image"], type="filepath", elem_id="rec-source")
            render = _render_controls(service, "rec", image_guidance=True)
            go = gr.Button("Reconstruct", variant="primary")
            with gr.Row():
                rec_shown = gr.Image(label="input", type="pil", format="png", interactive=False)
                rec_out = gr.Image(label="reconstruction", type="pil", format="png", interactive=False)
            go.click(app.reconstruct, [rec_source, *render], [rec_shown, rec_out], api_name="reconstruct",
                     concurrency_id=QUEUE, show_progress_on=[rec_out])
    return blocks.queue(default_concurrency_limit=1)
