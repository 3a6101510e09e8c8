"""``umm serve RUN/model``: a web demo of one trained system (Gradio, the optional ``umm[demo]`` extra).

Like the anchors' demos (Janus ``demo/app_januspro.py``, Emu3 ``gradio_demo.py``, MAR's ``demo/gradio_app.py``),
one page with a tab per thing the system can do, and only those:

- text -> images, with seed / steps / CFG controls, and beside each image the ShapesWorld judge's verdict
  (does it satisfy the prompt, and what does the judge read there);
- image -> caption; image + question -> answer;
- text -> the nearest ShapesWorld test images, for the embedding (multi-expert) systems.

Everything goes through the Python API (``umm.api.Pipeline``), so the page shows exactly what ``umm.load``
gives a notebook. Nothing is fetched from the network: Gradio's analytics are switched off before it loads.
"""

from __future__ import annotations

import os

from umm import UmmError
from umm.api import Pipeline
from umm.data.grid import to_pil

VIEW = 192  # generated canvases are 16-48 px; shown enlarged with nearest-neighbour so pixels stay sharp
GALLERY = "shapes:test:100"  # the retrieval tab's gallery: the first 100 ShapesWorld test scenes


def _enlarge(image):
    from PIL import Image

    return image.resize((VIEW, VIEW), Image.Resampling.NEAREST)


def build_app(pipe: Pipeline):
    """The Gradio Blocks app for ``pipe``; a tab per capability."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise UmmError("umm serve needs Gradio: pip install 'umm[demo]' (or pip install gradio)") from None

    can = set(pipe.capabilities)
    # a generation or understanding task the recipe never trained gets no tab (the t2i-only demo cannot caption)
    untrained = {c for c in ("t2i", "caption", "qa") if pipe.trained is not None and c not in pipe.trained} & can
    can -= untrained
    note = f" Not trained by its recipe, so not shown: {', '.join(sorted(untrained))}." if untrained else ""
    with gr.Blocks(title=f"umm: {pipe.family}") as app:
        gr.Markdown(f"# umm · {pipe.family}\nA trained {pipe.family} system at {pipe.image_size} px. "
                    f"It can: {', '.join(c for c in pipe.capabilities if c in can)}.{note}")  # fmt: skip
        if "t2i" in can:
            with gr.Tab("Text → image"):
                with gr.Row():
                    prompt = gr.Textbox(label="prompt", value="a red circle", elem_id="prompt")
                    n = gr.Slider(1, 8, value=4, step=1, label="images")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed")
                    steps = gr.Slider(1, 100, value=pipe.defaults.get("steps", 25), step=1, label="steps")
                    cfg = gr.Slider(0.0, 8.0, value=pipe.defaults.get("cfg_scale", 3.0), step=0.25, label="CFG scale")
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                gallery = gr.Gallery(label="samples", columns=4, elem_id="samples")
                verdicts = gr.Markdown(elem_id="verdicts")

                def generate(prompt, n, seed, steps, cfg):
                    images = pipe.generate([prompt], n=int(n), seed=int(seed), steps=int(steps), cfg=float(cfg))
                    rows = ["| # | judge | what it reads |", "|---|---|---|"]
                    for i, v in enumerate(pipe.judge(images, prompt)):
                        rows.append(f"| {i + 1} | {'✓ satisfies the prompt' if v.ok else '✗ does not'} | {v.read} |")
                    return [_enlarge(x) for x in images], "\n".join(rows)

                go.click(generate, [prompt, n, seed, steps, cfg], [gallery, verdicts])
        if "caption" in can:
            with gr.Tab("Image → caption"):
                image = gr.Image(type="pil", label="image")
                caption = gr.Textbox(label="caption")
                gr.Button("Caption").click(lambda im: pipe.caption(im)[0], image, caption)
        if "qa" in can:
            with gr.Tab("Ask about an image"):
                image = gr.Image(type="pil", label="image")
                question = gr.Textbox(label="question", value="what colour is the object?")
                answer = gr.Textbox(label="answer")
                gr.Button("Answer").click(lambda im, q: pipe.answer(im, q)[0], [image, question], answer)
        if "embed" in can and {"text", "image"} <= set(pipe.system.embed_modalities):
            with gr.Tab("Retrieve"):
                query = gr.Textbox(label="text query", value="a red circle")
                found = gr.Gallery(label=f"nearest of {GALLERY}", columns=5)
                cache: dict = {}

                def retrieve(text):
                    from umm.pipelines.embed import load_inputs

                    if "gallery" not in cache:
                        inputs = load_inputs(pipe.system, "image", [GALLERY])
                        cache["gallery"] = (inputs.raw, pipe.embed("image", [GALLERY]))
                    raw, vectors = cache["gallery"]
                    scores = (pipe.embed("text", [text]) @ vectors.T)[0]
                    top = scores.topk(5)
                    return [(_enlarge(to_pil(raw[i])), f"{s:.3f}") for s, i in zip(top.values.tolist(), top.indices.tolist())]

                gr.Button("Search").click(retrieve, query, found)
    return app


def serve(model_dir: str, port: int = 7860, host: str = "127.0.0.1", device: str = "cpu") -> None:
    """Load the system in ``model_dir`` and serve its app until interrupted."""
    from umm.api import load

    app = build_app(load(model_dir, device=device))
    print(f"umm serve: http://{host}:{port}", flush=True)
    app.launch(server_name=host, server_port=port, share=False, show_error=True)
