"""The built-in offline model: a scripted stand-in for the Anthropic and OpenAI model APIs.

The product runs on it when no model endpoint is configured (the README's first command, ``agentlite
chat``'s demo); tests point the real agent CLIs at it (through :mod:`agentlite.testing`).
"""
