"""Transports: own REST, own gRPC, the Open Inference Protocol (v2) and the web page.

Each transport only parses, calls the serving core and converts the result.
"""
