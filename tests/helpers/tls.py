"""Throwaway certificates for the TLS tests (made per test; shared with the benchmarks)."""

from benchmarks.certificates import Authority, Issued, make_authority

__all__ = ["Authority", "Issued", "make_authority"]
