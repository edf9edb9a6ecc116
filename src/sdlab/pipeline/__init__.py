"""Generation passes: pure planning (:mod:`.plan`) then the passes that run models (txt2img, ...)."""
