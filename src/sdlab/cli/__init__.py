"""The ``sdlab`` command line: argv -> request -> engine -> files. No generation logic lives here."""
