"""What the decision service does, between its transport and its domain.

`campaigns` keeps each campaign and its experiment in line; `decide` runs
the fan-out of a Decide. Both take protobuf messages where a peer or the
catalog speaks them, and raise Tessera's own errors; the servicer only
converts. Nothing is imported here, so the transport's converter and these
modules can import each other's names without a cycle.
"""
