"""Evaluation of the methods side by side: the end-to-end demo, the method benchmark,
comparison tables and report figures.

* :mod:`.demo` -- ``retsam demo``: synthetic or DRIVE data through GAN, zero-shot and
  fine-tuned SAM and Frangi, one report folder;
* :mod:`.benchmark` -- ``retsam benchmark``: every method on a dataset split, one table;
* :mod:`.comparison` -- the comparison table (rows of methods, FOV-masked metrics);
* :mod:`.figures` -- error overlays, ROC plots, PNG writing (matplotlib inside).

Importing the package imports nothing heavy; torch loads inside the functions that need it.
"""
