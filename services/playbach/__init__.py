"""Play Bach's shared contracts: vocabulary, model directory, step model, settings, MIDI files.

Every service imports these; none copies them."""
