"""Generated tessera.bench API (see v1/)."""
