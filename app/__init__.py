"""The Lumiere creator app: Gradio UI (``app.ui``) + model management (``app.model_manager``).

No model math lives here: every generation is one call into ``lumiere.LumierePipeline``.

Run locally::

    python app.py                          # http://127.0.0.1:7860, the bundled model (assets/lumiere-tiny)
    python app.py --model DIR_OR_HUB_REPO --port 8000 --memory-budget 6GB
    python app.py --host 0.0.0.0 --share   # expose on the network / via a gradio.live link

On a Hugging Face Space, ``python app.py`` binds 0.0.0.0 (SPACE_ID is set) and honours PORT /
GRADIO_SERVER_PORT; on ZeroGPU the generation call is wrapped with ``spaces.GPU`` (``app.gpu``).
Building the UI reads the model's JSON configs only; weights load on the first generation.

Modules: ``ui`` (one class per tab: its layout, validation and Generate endpoint; Stop, seeds,
gallery), ``serving`` (per-client limit on the Generate line, refusal of unusable requests),
``components`` (inputs that hand raw values to ``inputs``), ``inputs`` (server-side validation), ``examples`` (each tab's
examples and their pre-rendered results), ``model_manager`` (device/dtype, LRU memory budget, lock, OOM
retry, cancellation, status), ``outputs`` (unique mp4/GIF files in the app's cache), ``gpu`` (ZeroGPU
decorator), ``make_examples`` (renders assets/examples).
Tests: ``tests/test_app.py`` (gradio_client), ``tests/test_app_model_manager.py`` (unit),
``tests/test_app_browser.py`` (Playwright + Chromium; ``LUMIERE_SCREENSHOT=1`` refreshes the screenshots in
assets/screenshots/).
"""
