"""The model-agnostic LLM layer: the ChatModel protocol, providers, fallback, and the router."""
