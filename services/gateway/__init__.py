"""Gateway: REST API, WebSocket fan-out of the audio, the WAV stream and the web player."""
