"""imagery-admin: the operator's command line. Bootstrap, identities, audit and migrations go
straight to Postgres; projects and keys go through ProjectService like any other client."""

import os

# gRPC's core logs handshake and connection trouble to stderr itself; the command reports every
# failure in one sentence of its own. Set GRPC_VERBOSITY to see the core's lines again.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
