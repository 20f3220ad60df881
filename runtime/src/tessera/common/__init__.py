"""Generated tessera.common API (see v1/)."""
