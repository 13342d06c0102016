"""The Lumiere creator app: Gradio UI (``app.ui``) + model management (``app.model_manager``).

No model math lives here: every generation is one call into ``lumiere.LumierePipeline``.
``python app.py`` is the entry point (flags: --host, --port, --model, --share).
"""
