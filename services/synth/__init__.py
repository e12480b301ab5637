"""Synth: renders the notes of the channels it owns to PCM with FluidSynth, paced in real time."""
