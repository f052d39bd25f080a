"""The console scripts, one module each: ``main(argv) -> int`` under :func:`~clipvg_hf.commands.errors.report_usage_errors`.

A command parses its arguments, checks them before any work and calls the libraries; a library raises a typed
:class:`~clipvg_hf.errors.UsageError` that the one decorator shows as ``error: ...`` with exit status 2. Importing
this package imports no command.
"""
