"""Qt widgets of SD Studio: main window, prompt panel, canvases, gallery, dialogs.

Never imports torch, diffusers, transformers or ``sdstudio.engine``.
"""
