"""`seedx-jax serve`: the SEED-X pipelines in a browser (Gradio) and over HTTP (JSON).

- `service.py`: requests checked against the served models and the server's limits, then run one at a
  time (the accelerator runs one program at a time); the only module that calls the pipelines.
- `models.py`: which pipelines are served (a checkpoint, the last `make demo`, or tiny random ones).
- `ui.py`: the Gradio Blocks (Chat, Text-to-image, Edit, Reconstruct) and their client API.
- `http_api.py`: the plain JSON endpoints (`/api/v1/...`, images as base64 PNG).
- `app.py`: both on one FastAPI app; `cli.py`: the command line.
"""
