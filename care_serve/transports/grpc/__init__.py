"""The gRPC transport: servicer (thin) and server (health, reflection, graceful stop)."""
