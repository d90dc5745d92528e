"""Models: architectures, training, evaluation, artifacts, serving runtimes.

Importing the package registers every architecture (the tutorial's in
``architectures``, ours in ``modern``) in ``registry.ARCHITECTURES``.
"""

from . import architectures, modern  # noqa: F401  (they register their builders)
