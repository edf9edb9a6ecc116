"""Model files, detection, loading and conversion (single-file checkpoints, fully offline).

Import from the submodules: ``files`` (headers, safe loading, hashes), ``paths`` (models folder),
``families`` / ``detect`` (what a file is), ``derive`` (configs from shapes), ``load`` (modules),
``convert`` (back to the single-file layout), ``listing`` (checkpoints in a models folder).
"""
