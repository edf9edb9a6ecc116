"""A1111 prompt handling: attention parsing (:mod:`.parse`), CLIP tokenization (:mod:`.tokenizer`),
75-token chunking with per-token weights (:mod:`.chunk`) and text encoding to conditioning (:mod:`.encode`).

Everything here follows AUTOMATIC1111 stable-diffusion-webui v1.10.1 (``prompt_parser.py``,
``sd_hijack_clip.py``, ``sd_emphasis.py``) as pinned by the vectors in ``../shared/conformance``.
"""
