"""Models: architectures, training, evaluation, artifacts, serving runtimes."""
