"""Bridges to other engines (Ray Data); each imports its engine lazily and is optional."""
