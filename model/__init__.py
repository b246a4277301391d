"""dieguard's library: data, model, training, evaluation and export."""

from model.allocator import keep_freed_memory

keep_freed_memory()  # before the first tensor: every entry point imports this package
