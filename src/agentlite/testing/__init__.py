"""Test helpers that also ship with the product.

:mod:`agentlite.testing.model_server` is a scripted, offline stand-in for the Anthropic and OpenAI
model APIs. Tests point the real agent CLIs at it, and the product uses it as its offline demo model.
"""
