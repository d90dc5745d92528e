"""Replays recordings as live 50 Hz devices on the bus."""
