"""A1111 infotext ("parameters"): writing and parsing, exactly as stable-diffusion-webui v1.10.1.

Pure text logic, no torch. Writing (:mod:`.write`): :func:`infotext_params` builds A1111's ordered field
mapping from :class:`InfotextSettings`; :func:`create_infotext` renders prompt, negative prompt and that
mapping. Parsing (:mod:`.parse`, with :mod:`.params`, :mod:`.attention` and :mod:`.versions`):
:func:`parse_infotext` returns A1111's dict (``parse_generation_parameters``), and
:func:`infotext_to_request_fields` (:mod:`.fields`) maps it to snake_case request fields.
"""

from sdlab.infotext.attention import attention_pieces, split_break, uses_emphasis
from sdlab.infotext.fields import REQUEST_FIELDS, FieldMapping, infotext_to_request_fields, parse_hashes
from sdlab.infotext.params import (
    ParseOptions,
    PromptStyle,
    extract_styles,
    param_pairs,
    parse_param_line,
    split_infotext,
    unquote,
)
from sdlab.infotext.parse import old_hires_first_pass_size, parse_infotext
from sdlab.infotext.versions import VersionKey, apply_backcompat, infotext_version, version_key
from sdlab.infotext.write import (
    ENSD_SAMPLERS,
    InfotextSettings,
    create_infotext,
    format_params,
    infotext_params,
    quote,
    sampler_uses_ensd,
)

__all__ = [
    "ENSD_SAMPLERS", "REQUEST_FIELDS", "FieldMapping", "InfotextSettings", "ParseOptions", "PromptStyle",
    "VersionKey", "apply_backcompat", "attention_pieces", "create_infotext", "extract_styles", "format_params",
    "infotext_params", "infotext_to_request_fields", "infotext_version", "old_hires_first_pass_size",
    "param_pairs", "parse_hashes", "parse_infotext", "parse_param_line", "quote", "sampler_uses_ensd",
    "split_break", "split_infotext", "unquote", "uses_emphasis", "version_key",
]
