"""LoRA / LyCORIS networks and textual-inversion embeddings from local files, with A1111 v1.10.1 semantics.

* :mod:`.networks`: module types (registry) and delta formulas; :data:`.networks.DEVIATIONS`.
* :mod:`.keymap`: file keys -> diffusers modules (kohya, LDM and PEFT naming).
* :mod:`.lora_file`: reading/validating a network file; family and rank detection; resolution.
* :mod:`.apply`: :func:`.apply.applied_networks`, the per-generation context manager (bit-exact undo).
* :mod:`.embeddings`: textual inversion and the prompt package's embedding lookup.
* :mod:`.hashes`, :mod:`.catalog`: A1111 hashes, infotext values, listing the models folder.
"""
