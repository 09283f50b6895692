"""Credentials and transport security: API key files, TLS files, rate limits."""
