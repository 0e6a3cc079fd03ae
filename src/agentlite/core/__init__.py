"""Foundations every layer uses: errors, names, safe file access, time, config, logging, supervision."""
