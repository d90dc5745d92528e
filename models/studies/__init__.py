"""Runnable studies (``python -m harstream.models.studies.<name>``): each
measures one question on the embedded HAPT recordings and prints the table
that docs/BENCHMARKS.md records with its command."""
