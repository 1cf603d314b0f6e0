"""The LLM endpoint and its layers: the settings (`settings`), the one constructor from options
(`connect`), the endpoint (`endpoint`) over retries, limits, adaptive concurrency, the response
cache and the transport, and the embedded llama.cpp server (`local_server`).

Nothing is imported here: `anabranch.llm.settings` stays cheap for the CLI's help, and the
top level (`anabranch.Endpoint`, `anabranch.Limits`, ...) names what a newcomer needs.
"""
