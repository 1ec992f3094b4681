"""The Gradio writing UI, mounted on the BentoML service at ``/ui``.

It calls the engine of the service it is mounted on (no second copy of the model). The **Drafts** tab:
drafts stream in side by side; **Continue** writes on from the end of the first draft; **Regenerate**
writes again with new seeds; the seed can be reused; the provenance of the text is shown under it; the
piece downloads as ``.txt``, ``.md`` or ``.json`` (text, settings and provenance); for an attention
seq2seq champion the attention of the first draft's words over the prompt's is drawn as a heatmap. The
**Manuscript** tab is :mod:`serving.manuscript_ui`. Every failure is shown as a short message, never a
stack trace.
"""

from __future__ import annotations

import json
import logging
import random
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import ValidationError

from models.params import SAMPLING_FIELDS, SamplingParams, bounds, step
from models.presets import preset_values
from serving.config import ServingConfig
from serving.engine import Engine, NotReadyError
from serving.manuscript_ui import list_saved, manuscript_tab
from serving.planner import RequestError
from serving.schemas import PRESET_DESCRIPTIONS
from serving.ui_helpers import provenance_line, readable, request_for

log = logging.getLogger(__name__)

FORMATS = ("txt", "md", "json")
CONTINUE_CHARS = 400  # how much of the draft's end becomes the prompt of a continuation

CSS = """
#drafts textarea { font-family: Georgia, 'Times New Roman', serif; font-size: 1.02rem; line-height: 1.5; }
#provenance, #ms-provenance, #budget { font-size: 0.9rem; opacity: 0.85; }
#manuscript textarea { font-family: Georgia, 'Times New Roman', serif; font-size: 1.05rem; line-height: 1.6; }
#probs .probs-text { font-family: Georgia, serif; line-height: 1.9; white-space: pre-wrap; }
#probs .tok { border-radius: 3px; }
#probs .tok.unsure { text-decoration: underline wavy rgba(200, 40, 40, 0.8); }
#probs-legend { font-size: 0.85rem; opacity: 0.8; margin-bottom: 0.4rem; }
"""


def continuation_prompt(text: str, limit: int = CONTINUE_CHARS) -> str:
    """The end of a draft, cut at a sentence (or word) start, to write on from."""
    tail = text.strip()[-limit:]
    if len(text.strip()) > limit:
        match = re.search(r"(?<=[.!?])\s+", tail)
        tail = tail[match.end():] if match and match.end() < len(tail) - 20 else tail.split(" ", 1)[-1]
    return tail


def export(state: dict[str, Any], fmt: str, folder: Path | None = None) -> str | None:
    """Writes the current piece as ``.txt``, ``.md`` or ``.json``; returns the file path (None if empty)."""
    if not state or not state.get("texts"):
        return None
    if fmt not in FORMATS:
        raise ValueError(f"unknown download format '{fmt}'; choose one of {', '.join(FORMATS)}")
    folder = folder or Path(tempfile.mkdtemp(prefix="cw-piece-"))
    prov = state.get("provenance", {})
    path = folder / f"piece.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps({"prompt": state["prompt"], "drafts": [
            {"text": t, "seed": s} for t, s in zip(state["texts"], state["seeds"], strict=True)],
            "settings": state.get("settings", {}), "provenance": prov}, indent=2, ensure_ascii=False))
    elif fmt == "md":
        body = "\n\n".join(f"## Draft {i + 1} (seed {s})\n\n{t}"
                           for i, (t, s) in enumerate(zip(state["texts"], state["seeds"], strict=True)))
        path.write_text(f"# {state['prompt']}\n\n{body}\n\n---\n_{provenance_line(prov)}_\n")
    else:
        path.write_text("\n\n---\n\n".join(state["texts"]) + "\n")
    return str(path)


SLIDER_IDS = {"temperature": "temperature", "min_p": "min-p"}  # the browser tests find these by id


def sampling_sliders(defaults: Any) -> list[gr.Slider]:
    """One slider per preset knob (in ``SAMPLING_FIELDS``' order), ranged by the API's own bounds.

    Range, step and label come from :class:`models.params.SamplingParams`; the value is the profile's default.
    """
    return [gr.Slider(*bounds(name), value=getattr(defaults, name), step=step(name),
                      label=SamplingParams.model_fields[name].title, elem_id=SLIDER_IDS.get(name))
            for name in SAMPLING_FIELDS]


def build_ui(get_engine: Callable[[], Engine], config: ServingConfig) -> gr.Blocks:
    """The writing UI; ``get_engine()`` returns the engine of the service it is mounted on."""
    limits, defaults = config.limits, config.defaults
    examples = [list(row) for row in config.ui.examples]

    def run(prompt: str, form: str, genre: str, max_new: float, preset: str, temperature: float, top_k: float,
            top_p: float, min_p: float, rep: float, stop: str, drafts: float, seed: Any, reuse: bool,
            base: list[str] | None = None, original_prompt: str = "") -> Iterator[tuple[Any, ...]]:
        """Streams every draft in turn; ``base`` texts (Continue) are kept in front of the new text."""
        try:
            engine = get_engine()
            request = request_for(engine.planner, prompt, form, genre, max_new, preset, temperature, top_k, top_p,
                                  min_p, rep, stop, drafts, seed if reuse else random.randrange(0, 2**31))
            plan = engine.plan(request)
            seeds, settings = plan.seeds, plan.settings
            texts = list(base) if base else [""] * len(seeds)
            for i, s in enumerate(seeds):
                _, pieces = engine.stream(request.model_copy(update={"seed": s, "num_drafts": 1}))
                if base:
                    texts[i] = texts[i].rstrip() + " "
                for piece in pieces:
                    texts[i] += piece
                    yield (*_draft_updates(texts, len(seeds)), gr.update(), gr.update(), gr.update(), gr.update())
            prov = engine.loaded.provenance.as_dict()
            state = {"prompt": original_prompt or request.prompt, "texts": texts, "seeds": seeds,
                     "settings": settings.model_dump(), "provenance": prov}
            heatmap = attention_image(engine, request.prompt, settings) if not base else None
            yield (*_draft_updates(texts, len(seeds)), provenance_line(prov, state["settings"]), state, seeds[0],
                   gr.update(value=heatmap, visible=heatmap is not None))
        except (ValidationError, RequestError, NotReadyError) as exc:
            raise gr.Error(readable(exc), print_exception=False) from None
        except Exception as exc:  # a readable message in the UI, the traceback in the log
            log.exception("UI generation failed")
            raise gr.Error(readable(exc), print_exception=False) from None

    def _draft_updates(texts: list[str], shown: int) -> list[Any]:
        return [gr.update(value=texts[i] if i < len(texts) else "", visible=i < shown)
                for i in range(limits.max_drafts)]

    with gr.Blocks(title="Creative writer", analytics_enabled=False) as blocks:
        gr.Markdown("# Creative writer\nWrite a prompt, pick a form, and let the champion model draft it. "
                    "Drafts stream in side by side; **Continue** writes on, **Regenerate** tries new seeds.")
        state = gr.State({})
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=3, max_length=limits.max_prompt_chars, elem_id="prompt",
                                    placeholder="A lighthouse keeper finds a message in a bottle...")
                with gr.Row():
                    form = gr.Dropdown(["story", "fable", "poem"], value="story", label="Form", elem_id="form",
                                       allow_custom_value=True)
                    genre = gr.Dropdown(["", "fantasy", "science fiction", "mystery", "adventure"], value="",
                                        label="Genre", elem_id="genre", allow_custom_value=True)
            with gr.Column(scale=2):
                with gr.Accordion("Sampling", open=False):
                    max_new = gr.Slider(16, limits.max_new_tokens, value=defaults.max_new_tokens, step=8,
                                        label="Max new tokens")
                    preset = gr.Dropdown([("(none)", ""), *((f"{k}: {v}", k) for k, v in PRESET_DESCRIPTIONS.items())],
                                         value="", label="Preset (sets the sliders below)", elem_id="preset")
                    temperature, top_k, top_p, min_p, rep = sampling_sliders(defaults)
                    stop = gr.Textbox(label="Stop at (one per line; the text ends before it)", lines=2,
                                      elem_id="stop")
                drafts = gr.Slider(1, limits.max_drafts, value=1, step=1, label="Drafts side by side",
                                   elem_id="drafts-n")
                with gr.Row():
                    seed = gr.Number(value=None, precision=0, minimum=0, label="Seed", elem_id="seed")
                    reuse = gr.Checkbox(False, label="Reuse seed", elem_id="reuse-seed")
        if examples:
            gr.Examples(examples, inputs=[prompt, form, genre], label="Try one")
        with gr.Tabs():
            with gr.Tab("Drafts", elem_id="tab-drafts"):
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    cont = gr.Button("Continue", elem_id="continue")
                    regen = gr.Button("Regenerate", elem_id="regenerate")
                with gr.Row(elem_id="drafts"):
                    outputs = [gr.Textbox(label=f"Draft {i + 1}", lines=12, interactive=False, visible=i == 0,
                                          elem_id=f"draft-{i}") for i in range(limits.max_drafts)]
                provenance = gr.Markdown(elem_id="provenance")
                with gr.Row():
                    fmt = gr.Radio(list(FORMATS), value="txt", label="Download as", elem_id="download-format")
                    download = gr.DownloadButton("Download", elem_id="download")
                heatmap = gr.Image(label="Attention: generated words (rows) over prompt words (columns)",
                                   visible=False, elem_id="attention", type="pil")
            with gr.Tab("Manuscript", elem_id="tab-manuscript") as manuscript_page:
                shared = [prompt, form, genre, max_new, preset, temperature, top_k, top_p, min_p, rep, stop, drafts]
                stories, saved = manuscript_tab(get_engine, config, shared, seed, reuse,
                                                lambda *values: request_for(get_engine().planner, *values))

        def known_controls() -> tuple[Any, Any, str]:
            """The served model's forms and genres, and what is served (on page load)."""
            try:
                engine = get_engine()
                controls = engine.loaded.controls
            except NotReadyError as exc:
                return gr.update(), gr.update(), f"⚠ {exc}"
            genres = [""] + [g for g in controls["genre"] if g != "none"]
            return (gr.update(choices=controls["form"]), gr.update(choices=genres),
                    provenance_line(engine.loaded.provenance.as_dict()).replace("Written by", "Serving"))

        blocks.load(known_controls, None, [form, genre, provenance])
        blocks.load(list_saved, [stories], [saved])
        manuscript_page.select(list_saved, [stories], [saved])  # the browser's stories are surely read by then

        def use_preset(name: str) -> tuple[Any, ...]:
            """The preset's values into the sliders (the writer may still move them)."""
            if not name:
                return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
            values = preset_values(name)
            return tuple(gr.update(value=values[k]) for k in SAMPLING_FIELDS)

        preset.change(use_preset, [preset], [temperature, top_k, top_p, min_p, rep])  # in SAMPLING_FIELDS' order
        settings_inputs = [prompt, form, genre, max_new, preset, temperature, top_k, top_p, min_p, rep, stop, drafts]
        written = [*outputs, provenance, state, seed, heatmap]

        def fresh(*args: Any) -> Iterator[tuple[Any, ...]]:
            *values, seed_value, reuse_value = args
            yield from run(*values, seed_value, reuse_value, None)

        def again(*args: Any) -> Iterator[tuple[Any, ...]]:
            *values, _seed, _reuse = args
            yield from run(*values, None, False, None)

        def write_on(*args: Any) -> Iterator[tuple[Any, ...]]:
            *values, seed_value, reuse_value, current = args
            if not current or not current.get("texts"):
                raise gr.Error("nothing to continue yet: generate a draft first", print_exception=False)
            values[0] = continuation_prompt(current["texts"][0])
            values[-1] = 1
            yield from run(*values, seed_value, reuse_value, current["texts"][:1], current.get("prompt", ""))

        generate.click(fresh, [*settings_inputs, seed, reuse], written, concurrency_limit=4)
        prompt.submit(fresh, [*settings_inputs, seed, reuse], written, concurrency_limit=4)
        regen.click(again, [*settings_inputs, seed, reuse], written, concurrency_limit=4)
        cont.click(write_on, [*settings_inputs, seed, reuse, state], written, concurrency_limit=4)
        state.change(export, [state, fmt], download)
        fmt.change(export, [state, fmt], download)
    return blocks


def attention_image(engine: Engine, prompt: str, settings: Any) -> Any:
    """The attention heatmap of the first draft when the model is an attention seq2seq (else None)."""
    model = engine.loaded.model
    if not hasattr(model, "attention_map"):
        return None
    try:
        from training.plots import attention_heatmaps

        src, out, weights = model.attention_map(prompt, settings)
        return attention_heatmaps([(f"seed {settings.seed}: {prompt}", src, out, weights)])
    except ValueError:  # trained without attention
        return None


def prepare_for_mount(blocks: gr.Blocks) -> gr.Blocks:
    """Does the theme and config set-up that Gradio 6 moved into ``launch()``/``gr.mount_gradio_app``.

    ``bentoml.gradio.mount_gradio_app`` calls neither, and the page then answers 500 (jinja2: ``'None' has
    no attribute 'get'``). This touches Gradio internals: gradio is pinned and ``/ui/`` is tested.
    """
    from gradio import utils

    blocks.theme = utils.get_theme(None)
    blocks.css = CSS
    blocks.js = ""
    blocks.head = ""
    blocks.head_paths = []
    blocks.css_paths = []
    blocks._set_html_css_theme_variables()
    blocks.transpile_to_js()
    blocks.config = blocks.get_config_file()
    return blocks
