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
from serving.manuscript_ui import ManuscriptTab
from serving.schemas import PRESET_DESCRIPTIONS
from serving.story_sync import StorySync
from serving.ui_helpers import CONTROLS, Controls, provenance_line, request_for, shown_errors
from workspace.traffic import FeedbackIn, new_request_id

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


def settings_panel(config: ServingConfig) -> Controls:
    """The prompt, form and genre, the sampling accordion, the number of drafts and the seed (shared by both tabs)."""
    limits, defaults = config.limits, config.defaults
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
                length = gr.Slider(0, max(10, int(limits.max_new_tokens / 1.35) // 10 * 10), value=0, step=10,
                                   elem_id="target-words",
                                   label="Length in words (0 = the model's choice; the piece winds down near it)")
                preset = gr.Dropdown([("(none)", ""), *((f"{k}: {v}", k) for k, v in PRESET_DESCRIPTIONS.items())],
                                     value="", label="Preset (sets the sliders below)", elem_id="preset")
                sliders = dict(zip(SAMPLING_FIELDS, sampling_sliders(defaults), strict=True))
                stop = gr.Textbox(label="Stop at (one per line; the text ends before it)", lines=2, elem_id="stop")
                banned = gr.Textbox(label="Banned phrases (one per line; never written: the model goes back and "
                                          "writes something else)", lines=2, elem_id="banned-phrases",
                                    placeholder="shivers down her spine")
                word_bias = gr.Textbox(label="Word bias (one per line: a word and -100 … 100; -100 keeps it out, "
                                             "a few points make it likelier)", lines=2, elem_id="word-bias",
                                       placeholder="suddenly -100\nlantern 3")
            drafts = gr.Slider(1, limits.max_drafts, value=1, step=1, label="Drafts side by side", elem_id="drafts-n")
            with gr.Row():
                seed = gr.Number(value=None, precision=0, minimum=0, label="Seed", elem_id="seed")
                reuse = gr.Checkbox(False, label="Reuse seed", elem_id="reuse-seed")
    fields = {"prompt": prompt, "form": form, "genre": genre, "max_new_tokens": max_new, "target_words": length,
              "preset": preset, **sliders,
              "stop": stop, "banned_phrases": banned, "word_bias": word_bias, "num_drafts": drafts}
    preset.change(use_preset, preset, list(sliders.values()))  # in SAMPLING_FIELDS' order
    return Controls({name: fields[name] for name in CONTROLS}, seed, reuse)


def use_preset(name: str) -> list[Any]:
    """The preset's values into the sliders, in ``SAMPLING_FIELDS``' order (the writer may still move them)."""
    if not name:
        return [gr.update() for _ in SAMPLING_FIELDS]
    values = preset_values(name)  # a preset sets the five classic knobs; DRY and XTC stay as they are
    return [gr.update(value=values[k]) if k in values else gr.update() for k in SAMPLING_FIELDS]


class DraftsTab:
    """The Drafts tab: drafts streamed side by side, Continue, Regenerate, download and the attention heatmap.

    Args:
        get_engine: Returns the engine of the service the UI is mounted on.
        config: The serving profile.
        controls: The shared controls above the tabs.
    """

    def __init__(self, get_engine: Callable[[], Engine], config: ServingConfig, controls: Controls,
                 sync: StorySync | None = None) -> None:
        self.get_engine, self.controls, self.max_drafts = get_engine, controls, config.limits.max_drafts
        self.sync = sync
        self.state = gr.State({})
        with gr.Row():
            self.generate = gr.Button("Generate", variant="primary", elem_id="generate")
            self.cont = gr.Button("Continue", elem_id="continue")
            self.regen = gr.Button("Regenerate", elem_id="regenerate")
        with gr.Row(elem_id="drafts"):
            self.outputs = [gr.Textbox(label=f"Draft {i + 1}", lines=12, interactive=False, visible=i == 0,
                                       elem_id=f"draft-{i}") for i in range(self.max_drafts)]
        self.provenance = gr.Markdown(elem_id="provenance")
        with gr.Row(visible=sync is not None):  # writers' verdicts become preference pairs for training (DPO)
            self.which = gr.Radio([f"Draft {i + 1}" for i in range(self.max_drafts)], value="Draft 1",
                                  label="Your verdict on", elem_id="verdict-draft", scale=2)
            self.keep = gr.Button("Keep it (better than the others)", elem_id="keep", scale=1)
            self.good = gr.Button("Good", elem_id="thumb-up", scale=0)
            self.poor = gr.Button("Poor", elem_id="thumb-down", scale=0)
        with gr.Row():
            self.fmt = gr.Radio(list(FORMATS), value="txt", label="Download as", elem_id="download-format")
            self.download = gr.DownloadButton("Download", elem_id="download")
        self.heatmap = gr.Image(label="Attention: generated words (rows) over prompt words (columns)",
                                visible=False, elem_id="attention", type="pil")
        self.wire()

    def shown(self, texts: list[str], count: int) -> dict[Any, Any]:
        """The draft boxes: the first ``count`` visible, with their texts."""
        return {box: gr.update(value=texts[i] if i < len(texts) else "", visible=i < count)
                for i, box in enumerate(self.outputs)}

    def write(self, request: Any, base: list[str] | None = None, original_prompt: str = "") -> Iterator[dict]:
        """Streams every draft in turn; ``base`` texts (Continue) are kept in front of the new text."""
        engine = self.get_engine()
        plan = engine.plan(request)
        texts = list(base) if base else [""] * len(plan.seeds)
        key = new_request_id()  # every draft of one click from one model when a challenger is served
        prov = engine.loaded.provenance.as_dict()
        ids = []
        for i, seed in enumerate(plan.seeds):
            _, pieces = engine.stream(request.model_copy(update={"seed": seed, "num_drafts": 1}), endpoint="ui",
                                      story_id=key)
            if base:
                texts[i] = texts[i].rstrip() + " "
            for piece in pieces:
                texts[i] += piece
                yield self.shown(texts, len(plan.seeds))
            prov = pieces.provenance.as_dict()
            ids.append(pieces.request_id)
        state = {"prompt": original_prompt or request.prompt, "texts": texts, "seeds": plan.seeds,
                 "settings": plan.settings.model_dump(), "provenance": prov, "request_ids": ids,
                 "form": request.form, "genre": request.genre}
        heatmap = attention_image(engine, request.prompt, plan.settings) if not base else None
        yield {**self.shown(texts, len(plan.seeds)), self.provenance: provenance_line(prov, state["settings"]),
               self.state: state, self.controls.seed: plan.seeds[0],
               self.heatmap: gr.update(value=heatmap, visible=heatmap is not None)}

    def fresh(self, given: dict[Any, Any]) -> Iterator[dict]:
        """Generate: new drafts for the prompt."""
        yield from self.write(self.controls.request(self.get_engine().planner, given))

    def again(self, given: dict[Any, Any]) -> Iterator[dict]:
        """Regenerate: the same settings with new seeds."""
        request = request_for(self.get_engine().planner, self.controls.values(given), random.randrange(0, 2**31))
        yield from self.write(request)

    def write_on(self, given: dict[Any, Any]) -> Iterator[dict]:
        """Continue: the first draft written on from its end."""
        current = given[self.state]
        if not current or not current.get("texts"):
            raise gr.Error("nothing to continue yet: generate a draft first", print_exception=False)
        request = self.controls.request(self.get_engine().planner, given,
                                        prompt=continuation_prompt(current["texts"][0]), num_drafts=1)
        yield from self.write(request, current["texts"][:1], current.get("prompt", ""))

    def verdict(self, kind: str, which: str, state: dict[str, Any], request: gr.Request = None) -> None:  # type: ignore[assignment]
        """Sends the writer's verdict on a draft (kept over the others, good or poor) to the workspace."""
        state = state if isinstance(state, dict) else {}
        texts = [t for t in state.get("texts") or [] if isinstance(t, str)]
        if not texts or not state.get("request_ids"):
            raise gr.Error("write drafts first: a verdict is about drafts on the page", print_exception=False)
        named = re.fullmatch(r"Draft (\d{1,2})", str(which or ""))
        if named is None:
            raise gr.Error("choose a draft (Draft 1, Draft 2, …) for the verdict", print_exception=False)
        i = int(named.group(1)) - 1
        if not 0 <= i < len(texts) or not texts[i].strip():
            raise gr.Error(f"there is no draft {i + 1} on the page", print_exception=False)
        others = [t for j, t in enumerate(texts) if j != i and t.strip() and t != texts[i]] if kind == "kept" else []
        if kind == "kept" and not others:
            raise gr.Error("keeping one draft needs another to compare: set 'Drafts side by side' to 2 or more",
                           print_exception=False)
        try:
            verdict = FeedbackIn(request_id=str(state["request_ids"][min(i, len(state["request_ids"]) - 1)]),
                                 kind=kind, draft=i, prompt=str(state.get("prompt") or "")[:4000],
                                 form=str(state.get("form") or "story"), genre=str(state.get("genre") or ""),
                                 text=texts[i][:20_000], others=[o[:20_000] for o in others])
        except ValidationError as exc:
            raise gr.Error(f"this verdict cannot be kept: {exc.errors()[0]['msg']}", print_exception=False) from None
        said = (self.sync.feedback(verdict, self.sync.writer_of(request)) if self.sync is not None
                else "not kept: no workspace")
        (gr.Warning if said.startswith("not kept") else gr.Info)(said)

    def verdict_for(self, kind: str) -> Callable[..., None]:
        """The handler of one verdict button (it asks Gradio for the request: whose verdict it is)."""
        def handler(which: str, state: dict[str, Any], request: gr.Request) -> None:
            self.verdict(kind, which, state, request)

        return handler

    def wire(self) -> None:
        """Connects the buttons (and Enter in the prompt box) to the handlers."""
        for button, kind in ((self.keep, "kept"), (self.good, "up"), (self.poor, "down")):
            button.click(self.verdict_for(kind), [self.which, self.state], None)
        written = [*self.outputs, self.provenance, self.state, self.controls.seed, self.heatmap]
        inputs = self.controls.inputs
        self.generate.click(shown_errors(self.fresh), inputs, written, concurrency_limit=4)
        self.controls.fields["prompt"].submit(shown_errors(self.fresh), inputs, written, concurrency_limit=4)
        self.regen.click(shown_errors(self.again), inputs, written, concurrency_limit=4)
        self.cont.click(shown_errors(self.write_on), {*inputs, self.state}, written, concurrency_limit=4)
        self.state.change(export, [self.state, self.fmt], self.download)
        self.fmt.change(export, [self.state, self.fmt], self.download)


def build_ui(get_engine: Callable[[], Engine], config: ServingConfig, sync: StorySync | None = None) -> gr.Blocks:
    """The writing UI; ``get_engine()`` returns the engine of the service it is mounted on.

    ``sync`` keeps the Manuscript tab's stories on the server (None: in the browser only).
    """
    with gr.Blocks(title="Creative writer", analytics_enabled=False) as blocks:
        gr.Markdown("# Creative writer\nWrite a prompt, pick a form, and let the champion model draft it. "
                    "Drafts stream in side by side; **Continue** writes on, **Regenerate** tries new seeds.")
        controls = settings_panel(config)
        if config.ui.examples:
            gr.Examples([list(row) for row in config.ui.examples],
                        inputs=[controls.fields["prompt"], controls.fields["form"], controls.fields["genre"]],
                        label="Try one")
        with gr.Tabs():
            with gr.Tab("Drafts", elem_id="tab-drafts"):
                drafts = DraftsTab(get_engine, config, controls, sync)
            with gr.Tab("Manuscript", elem_id="tab-manuscript") as manuscript_page:
                manuscript = ManuscriptTab(get_engine, config, controls, sync)

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

        blocks.load(known_controls, None, [controls.fields["form"], controls.fields["genre"], drafts.provenance])
        blocks.drafts_tab, blocks.manuscript_tab = drafts, manuscript  # type: ignore[attr-defined]  # tests, embedding
        blocks.load(manuscript.list_saved, [manuscript.stories], [manuscript.saved])
        # the stories are read again when the tab is opened (another tab or device may have saved)
        manuscript_page.select(manuscript.list_saved, [manuscript.stories], [manuscript.saved])
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
