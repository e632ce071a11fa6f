"""Planning a load: the hardware as plain data (`hardware`), memory from a config alone (`memory`), loading presets
resolved against the hardware (`presets`), and `plan_memory` on top of both (`plan`).

Nothing here but the planning's one default, which the command line's `--help` shows without importing the planners.
"""

# Context length memory is planned for when none is given (load_model, resolve_preset, `plan` and `demo` without
# --context): a long chat, well inside every Mistral's window (see `memory.default_context_length`).
DEFAULT_CONTEXT_LENGTH = 4096
